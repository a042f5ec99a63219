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

/// Issue 11: the flash sale of `concurrency.rs` under protocol v2's faults (publish
/// failures, crashes, a two-minute pause, two concurrent reconcilers and syncs), with
/// per-user limits 1 and 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_under_faults_keeps_every_invariant_with_limits_one_and_three() {
    for limit in [1, 3] {
        let figures = coupon_core::conformance::protocol::flash_sale_under_faults(
            Arc::new(MemoryGate::new()),
            Arc::new(MemoryStore::new()),
            1_500,
            limit,
            2_000,
        )
        .await;
        println!("memory gate and store, limit {limit}: {figures:?}");
        assert!(figures.publish_failures > 0 && figures.syncs > 0, "{figures:?}");
    }
}
