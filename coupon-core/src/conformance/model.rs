//! A plain sequential model of the gate's rules, and a runner that checks any
//! [`IssueGate`] against it operation by operation (for property tests: every
//! backend crate feeds it sequences from [`gate_ops`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, Utc};
use proptest::prelude::*;

use crate::Admission;
use crate::domain::{CampaignId, GateCampaign, ReservationKey, UserId};
use crate::gate::IssueGate;

/// One operation on a campaign, over 8 users and nth up to 3.
#[derive(Debug, Clone)]
pub enum GateOp {
    /// Admit user `u`.
    Admit(u8),
    /// Release user `u`'s `nth`.
    Release(u8, u32),
    /// Settle user `u`'s `nth`.
    Settle(u8, u32),
    /// Restore from these `(user, highest nth)` holders.
    Restore(Vec<(u8, u32)>),
}

/// Sequences of operations, mostly admissions.
pub fn gate_ops() -> impl Strategy<Value = Vec<GateOp>> {
    let op = prop_oneof![
        6 => (0u8..8).prop_map(GateOp::Admit),
        2 => (0u8..8, 1u32..4).prop_map(|(u, n)| GateOp::Release(u, n)),
        2 => (0u8..8, 1u32..4).prop_map(|(u, n)| GateOp::Settle(u, n)),
        1 => prop::collection::vec((0u8..8, 1u32..4), 0..4).prop_map(GateOp::Restore),
    ];
    prop::collection::vec(op, 1..60)
}

/// The rules, written as plainly as possible.
#[derive(Debug, Default)]
pub struct GateModel {
    total: u64,
    limit: u32,
    remaining: u64,
    held: HashMap<u8, u32>,
    ledger: BTreeMap<(u8, u32), ()>,
}

impl GateModel {
    /// A fresh campaign.
    pub fn new(total: u64, limit: u32) -> Self {
        Self {
            total,
            limit,
            remaining: total,
            ..Self::default()
        }
    }

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

fn user(campaign: &CampaignId, u: u8) -> UserId {
    super::support::user(campaign, u as usize)
}

/// Opens a fresh campaign on `gate` and applies `ops` to gate and model alike,
/// comparing every answer, the counts and every holding after each step.
pub async fn check_against_model(gate: &dyn IssueGate, total: u64, limit: u32, ops: &[GateOp]) -> Result<(), String> {
    let now = Utc::now();
    let spec = GateCampaign {
        id: CampaignId::new(),
        total_quantity: total,
        per_user_limit: limit,
        issue_starts_at: now - Duration::hours(1),
        issue_ends_at: now + Duration::hours(1),
    };
    gate.open(&spec).await.map_err(|e| e.to_string())?;
    let mut model = GateModel::new(total, limit);
    let id = spec.id;
    let result = async {
        for (step, op) in ops.iter().enumerate() {
            let fail = |what: String| format!("step {step} {op:?}: {what}");
            match op {
                GateOp::Admit(u) => {
                    let got = gate
                        .admit(&id, &user(&id, *u), now)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    let want = model.admit(*u);
                    if got != want {
                        return Err(fail(format!("gate answered {got:?}, the model {want:?}")));
                    }
                }
                GateOp::Release(u, n) => {
                    let key = ReservationKey {
                        user_id: user(&id, *u),
                        nth: *n,
                    };
                    let got = gate.release(&id, &key).await.map_err(|e| fail(e.to_string()))?;
                    let want = model.release(*u, *n);
                    if got != want {
                        return Err(fail(format!("gate released {got}, the model {want}")));
                    }
                }
                GateOp::Settle(u, n) => {
                    let key = ReservationKey {
                        user_id: user(&id, *u),
                        nth: *n,
                    };
                    let got = gate.settle(&id, &[key]).await.map_err(|e| fail(e.to_string()))?;
                    let want = model.settle(*u, *n);
                    if got != want {
                        return Err(fail(format!("gate settled {got}, the model {want}")));
                    }
                }
                GateOp::Restore(holders) => {
                    let h: Vec<_> = holders.iter().map(|(u, n)| (user(&id, *u), *n)).collect();
                    gate.restore(&spec, &h).await.map_err(|e| fail(e.to_string()))?;
                    model.restore(holders);
                }
            }
            let counts = gate
                .counts(&id)
                .await
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail("campaign gone".into()))?;
            if (counts.remaining, counts.pending) != (model.remaining, model.ledger.len() as u64) {
                return Err(fail(format!(
                    "gate counts {counts:?}, the model remaining {} pending {}",
                    model.remaining,
                    model.ledger.len()
                )));
            }
            if counts.remaining > total {
                return Err(fail("I1: more stock than the total".into()));
            }
            for u in 0..8u8 {
                let got = gate
                    .holding(&id, &user(&id, u))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let want = model.held.get(&u).copied().unwrap_or(0);
                if got != want {
                    return Err(fail(format!("user {u} holds {got} in the gate, {want} in the model")));
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = gate.close(&id).await;
    result
}
