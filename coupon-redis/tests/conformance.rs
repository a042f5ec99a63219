//! The coupon-core gate conformance suite on standalone Redis, on the Redis Cluster,
//! and through the micro-batching wrapper on both.

mod common;

use std::sync::Arc;

use coupon_core::{BatchConfig, BatchingGate, IssueGate};

mod standalone {
    use super::*;
    coupon_core::gate_conformance!(common::standalone_gate().await);
}

mod cluster {
    use super::*;
    coupon_core::gate_conformance!(common::cluster_gate().await);
}

fn batched(gate: Option<Arc<dyn IssueGate>>) -> Option<Arc<dyn IssueGate>> {
    gate.map(|g| Arc::new(BatchingGate::new(g, BatchConfig::default().with_max_batch(32))) as Arc<dyn IssueGate>)
}

mod standalone_batched {
    use super::*;
    coupon_core::gate_conformance!(batched(common::standalone_gate().await));
}

mod cluster_batched {
    use super::*;
    coupon_core::gate_conformance!(batched(common::cluster_gate().await));
}
