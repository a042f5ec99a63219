//! Property test: the memory gate, alone and behind the batcher, behaves like the plain
//! sequential model of the admission rules (`conformance::model`), for any sequence of
//! operations.

use coupon_core::conformance::model::{check_against_model, gate_ops};
use std::sync::Arc;

use coupon_core::memory::MemoryGate;
use coupon_core::{BatchConfig, BatchingGate};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memory_gate_matches_the_sequential_model(total in 1u64..6, limit in 1u32..3, ops in gate_ops()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let gate = MemoryGate::new();
        let result = rt.block_on(check_against_model(&gate, total, limit, &ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn batched_memory_gate_matches_the_sequential_model(total in 1u64..6, limit in 1u32..3, ops in gate_ops()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = rt.block_on(async {
            let gate = BatchingGate::new(Arc::new(MemoryGate::new()), BatchConfig::default());
            check_against_model(&gate, total, limit, &ops).await
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
