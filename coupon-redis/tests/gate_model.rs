//! Property test: the Redis gate, standalone and on the cluster, alone and behind the
//! batcher, behaves like the plain sequential model of the admission rules, for any
//! sequence of operations.

mod common;

use std::sync::Arc;

use coupon_core::conformance::model::{check_against_model, gate_ops};
use coupon_core::{BatchConfig, BatchingGate, IssueGate};
use proptest::prelude::*;

fn check(make: impl std::future::Future<Output = Option<std::sync::Arc<dyn IssueGate>>>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(gate) = rt.block_on(make) else { return };
    proptest!(ProptestConfig::with_cases(64), |(total in 1u64..6, limit in 1u32..3, ops in gate_ops())| {
        let result = rt.block_on(check_against_model(&*gate, total, limit, &ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    });
}

#[test]
fn standalone_redis_gate_matches_the_sequential_model() {
    check(common::standalone_gate());
}

#[test]
fn cluster_redis_gate_matches_the_sequential_model() {
    check(common::cluster_gate());
}

#[test]
fn batched_cluster_redis_gate_matches_the_sequential_model() {
    check(async {
        let gate = common::cluster_gate().await?;
        Some(Arc::new(BatchingGate::new(gate, BatchConfig::default())) as Arc<dyn IssueGate>)
    });
}
