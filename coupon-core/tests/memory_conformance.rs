//! The conformance suite on the in-memory backends.

use std::sync::Arc;

use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
use coupon_core::{EventLog, IssueGate, IssueStore};

mod gate {
    use super::*;
    coupon_core::gate_conformance!(Some(Arc::new(MemoryGate::new()) as Arc<dyn IssueGate>));
}

mod log {
    use super::*;
    coupon_core::log_conformance!(Some(Arc::new(MemoryLog::new()) as Arc<dyn EventLog>));
}

mod store {
    use super::*;
    coupon_core::store_conformance!(Some(Arc::new(MemoryStore::new()) as Arc<dyn IssueStore>));
}

mod batching_gate {
    use super::*;
    use coupon_core::{BatchConfig, BatchingGate};
    coupon_core::gate_conformance!(Some(Arc::new(BatchingGate::new(
        Arc::new(MemoryGate::new()),
        BatchConfig::default().with_max_batch(16)
    )) as Arc<dyn IssueGate>));
}

mod protocol {
    use super::*;
    coupon_core::protocol_conformance!(Some((
        Arc::new(MemoryGate::new()) as Arc<dyn IssueGate>,
        Arc::new(MemoryStore::new()) as Arc<dyn IssueStore>
    )));
}
