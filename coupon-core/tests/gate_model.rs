//! Property test: the memory gate behaves like a plain sequential model of the
//! admission rules, for any sequence of operations.

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, Utc};
use coupon_core::memory::MemoryGate;
use coupon_core::{Admission, CampaignId, GateCampaign, IssueGate, ReservationKey, UserId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Admit(u8),
    Release(u8, u32),
    Settle(u8, u32),
    Restore(Vec<(u8, u32)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8).prop_map(Op::Admit),
        2 => (0u8..8, 1u32..4).prop_map(|(u, n)| Op::Release(u, n)),
        2 => (0u8..8, 1u32..4).prop_map(|(u, n)| Op::Settle(u, n)),
        1 => prop::collection::vec((0u8..8, 1u32..4), 0..4).prop_map(Op::Restore),
    ]
}

/// The rules, written as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    total: u64,
    limit: u32,
    remaining: u64,
    held: HashMap<u8, u32>,
    ledger: BTreeMap<(u8, u32), ()>,
}

impl Model {
    fn admit(&mut self, u: u8) -> Admission {
        let held = self.held.get(&u).copied().unwrap_or(0);
        if held >= self.limit {
            Admission::AlreadyIssued
        } else if self.remaining == 0 {
            Admission::SoldOut
        } else {
            self.remaining -= 1;
            self.held.insert(u, held + 1);
            self.ledger.insert((u, held + 1), ());
            Admission::Admitted {
                nth: held + 1,
                remaining: self.remaining,
            }
        }
    }

    fn release(&mut self, u: u8, n: u32) -> bool {
        if self.ledger.remove(&(u, n)).is_none() {
            return false;
        }
        self.remaining = (self.remaining + 1).min(self.total);
        let h = self.held.entry(u).or_default();
        *h = h.saturating_sub(1);
        true
    }

    fn settle(&mut self, u: u8, n: u32) -> u64 {
        u64::from(self.ledger.remove(&(u, n)).is_some())
    }

    fn restore(&mut self, holders: &[(u8, u32)]) {
        for (u, n) in holders {
            let h = self.held.get(u).copied().unwrap_or(0);
            if *n > h {
                self.held.insert(*u, *n);
                self.remaining = self.remaining.saturating_sub(u64::from(n - h));
            }
        }
    }
}

fn user(u: u8) -> UserId {
    UserId::new(format!("user-{u}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memory_gate_matches_the_sequential_model(
        total in 1u64..6,
        limit in 1u32..3,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let gate = MemoryGate::new();
            let now = Utc::now();
            let spec = GateCampaign {
                id: CampaignId::new(),
                total_quantity: total,
                per_user_limit: limit,
                issue_starts_at: now - Duration::hours(1),
                issue_ends_at: now + Duration::hours(1),
            };
            gate.open(&spec).await.unwrap();
            let mut model = Model { total, limit, remaining: total, ..Model::default() };
            for op in &ops {
                match op {
                    Op::Admit(u) => {
                        prop_assert_eq!(gate.admit(&spec.id, &user(*u), now).await.unwrap(), model.admit(*u));
                    }
                    Op::Release(u, n) => {
                        let key = ReservationKey { user_id: user(*u), nth: *n };
                        prop_assert_eq!(gate.release(&spec.id, &key).await.unwrap(), model.release(*u, *n));
                    }
                    Op::Settle(u, n) => {
                        let key = ReservationKey { user_id: user(*u), nth: *n };
                        prop_assert_eq!(gate.settle(&spec.id, &[key]).await.unwrap(), model.settle(*u, *n));
                    }
                    Op::Restore(holders) => {
                        let h: Vec<_> = holders.iter().map(|(u, n)| (user(*u), *n)).collect();
                        gate.restore(&spec, &h).await.unwrap();
                        model.restore(holders);
                    }
                }
                let counts = gate.counts(&spec.id).await.unwrap().unwrap();
                prop_assert_eq!(counts.remaining, model.remaining);
                prop_assert_eq!(counts.pending, model.ledger.len() as u64);
                prop_assert!(counts.remaining <= total, "I1: never more stock than the total");
                for u in 0..8u8 {
                    let held = gate.holding(&spec.id, &user(u)).await.unwrap();
                    prop_assert_eq!(held, model.held.get(&u).copied().unwrap_or(0));
                }
            }
            Ok(())
        })?;
    }
}
