//! A plain sequential model of the gate's rules, and a runner that checks any
//! [`IssueGate`] against it operation by operation (for property tests: every
//! backend crate feeds it sequences from [`gate_ops`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Duration, Utc};
use proptest::prelude::*;

use super::support::untimed;
use crate::Admission;
use crate::domain::{CampaignId, CouponId, GateCampaign, ReservationKey, UserId};
use crate::gate::IssueGate;

/// One operation on a campaign, over 8 users. Admissions are numbered in the order
/// they were made; `Release(i)` and friends pick admission `i` modulo that count.
#[derive(Debug, Clone)]
pub enum GateOp {
    /// Admit user `u` as a fresh admission.
    Admit(u8),
    /// Release admission `i` (again, if it already was: a no-op).
    Release(usize),
    /// Release a stale copy of admission `i`: same user and `nth`, another coupon id
    /// (what a reconciler working from an old page would hold). Must change nothing.
    ReleaseStale(usize),
    /// Settle admission `i`.
    Settle(usize),
    /// Restore from these stored `(user, nth)` slots, numbering on above this floor.
    Restore(Vec<(u8, u32)>, u64),
    /// Fence the campaign (admissions answer fenced until a restore).
    Fence,
}

/// Sequences of operations, mostly admissions.
pub fn gate_ops() -> impl Strategy<Value = Vec<GateOp>> {
    let op = prop_oneof![
        6 => (0u8..8).prop_map(GateOp::Admit),
        2 => any::<usize>().prop_map(GateOp::Release),
        1 => any::<usize>().prop_map(GateOp::ReleaseStale),
        2 => any::<usize>().prop_map(GateOp::Settle),
        1 => (prop::collection::vec((0u8..8, 1u32..4), 0..4), 0u64..30).prop_map(|(s, f)| GateOp::Restore(s, f)),
        1 => Just(GateOp::Fence),
    ];
    prop::collection::vec(op, 1..60)
}

/// The rules, written as plainly as possible.
#[derive(Debug, Default)]
pub struct GateModel {
    total: u64,
    limit: u32,
    remaining: u64,
    held: HashMap<u8, BTreeSet<u32>>,
    // Pending admissions by number: (user, nth).
    ledger: BTreeMap<usize, (u8, u32)>,
    // The last admission number given, and whether admissions are fenced.
    seq: u64,
    fenced: bool,
    // Every admission that was admitted, and where it ended: settled (stored) or
    // released (voided); neither means still pending.
    admitted: BTreeSet<usize>,
    settled: BTreeSet<usize>,
    released: BTreeSet<usize>,
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

    fn admit(&mut self, admission: usize, u: u8) -> Admission {
        let held = self.held.entry(u).or_default();
        if self.fenced {
            Admission::Fenced
        } else if held.len() as u32 >= self.limit {
            Admission::AlreadyIssued
        } else if self.remaining == 0 {
            Admission::SoldOut
        } else {
            self.remaining -= 1;
            let nth = (1..).find(|n| !held.contains(n)).expect("a free nth");
            held.insert(nth);
            self.ledger.insert(admission, (u, nth));
            self.admitted.insert(admission);
            self.seq += 1;
            Admission::Admitted {
                nth,
                remaining: self.remaining,
                seq: self.seq,
                // Compared without the time (the model has no clock): see `untimed`.
                admitted_at: chrono::DateTime::UNIX_EPOCH,
            }
        }
    }

    fn release(&mut self, admission: usize) -> bool {
        let Some((u, nth)) = self.ledger.remove(&admission) else {
            return false;
        };
        self.released.insert(admission);
        self.remaining = (self.remaining + 1).min(self.total);
        self.held.entry(u).or_default().remove(&nth);
        true
    }

    fn settle(&mut self, admission: usize) -> u64 {
        let present = self.ledger.remove(&admission).is_some();
        if present {
            self.settled.insert(admission);
        }
        u64::from(present)
    }

    fn restore(&mut self, slots: &[(u8, u32)], seq_floor: u64) {
        for (u, n) in slots {
            if self.held.entry(*u).or_default().insert(*n) {
                self.remaining = self.remaining.saturating_sub(1);
            }
        }
        self.seq = self.seq.max(seq_floor);
        self.fenced = false;
    }

    /// I2 inside the gate: no user holds more than the limit, and no two pending
    /// admissions of one user share an `nth`. Every admission is exactly one of pending,
    /// settled (stored) or released (voided).
    fn check_invariants(&self) -> Result<(), String> {
        for a in &self.admitted {
            let places = [
                self.ledger.contains_key(a),
                self.settled.contains(a),
                self.released.contains(a),
            ];
            if places.iter().filter(|p| **p).count() != 1 {
                return Err(format!(
                    "admission {a} is (pending, settled, released) = {places:?}: not exactly one"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (u, nth) in self.ledger.values() {
            if !seen.insert((*u, *nth)) {
                return Err(format!("two pending admissions of user {u} hold nth {nth}"));
            }
            if !self.held.get(u).is_some_and(|h| h.contains(nth)) {
                return Err(format!(
                    "a pending admission of user {u} holds nth {nth}, which is not held"
                ));
            }
        }
        Ok(())
    }
}

fn user(campaign: &CampaignId, u: u8) -> UserId {
    super::support::user(campaign, u as usize)
}

/// Opens a fresh campaign on `gate` and applies `ops` to gate and model alike,
/// comparing every answer, the counts and every holding after each step. Time moves
/// on at every step.
pub async fn check_against_model(gate: &dyn IssueGate, total: u64, limit: u32, ops: &[GateOp]) -> Result<(), String> {
    let start = Utc::now();
    let spec = GateCampaign {
        id: CampaignId::new(),
        total_quantity: total,
        per_user_limit: limit,
        issue_starts_at: start - Duration::hours(1),
        issue_ends_at: start + Duration::hours(1),
    };
    gate.open(&spec).await.map_err(|e| e.to_string())?;
    let mut model = GateModel::new(total, limit);
    let id = spec.id;
    // Every admission made so far, admitted or not: its key as the gate would know it.
    let mut admissions: Vec<ReservationKey> = Vec::new();
    let result = async {
        for (step, op) in ops.iter().enumerate() {
            let fail = |what: String| format!("step {step} {op:?}: {what}");
            let now = start + Duration::milliseconds(step as i64);
            let pick = |i: usize| (!admissions.is_empty()).then(|| i % admissions.len());
            match op {
                GateOp::Admit(u) => {
                    let coupon_id = CouponId::new();
                    let got = gate
                        .admit(&id, &user(&id, *u), &coupon_id, now)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    let want = model.admit(admissions.len(), *u);
                    if untimed(got) != want {
                        return Err(fail(format!("gate answered {got:?}, the model {want:?}")));
                    }
                    let nth = match got {
                        Admission::Admitted { nth, .. } => nth,
                        _ => 0,
                    };
                    admissions.push(ReservationKey {
                        coupon_id,
                        user_id: user(&id, *u),
                        nth,
                    });
                }
                GateOp::Release(i) => {
                    let Some(i) = pick(*i) else { continue };
                    let got = gate
                        .release(&id, &admissions[i])
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    let want = model.release(i);
                    if got != want {
                        return Err(fail(format!("gate released {got}, the model {want}")));
                    }
                }
                GateOp::ReleaseStale(i) => {
                    let Some(i) = pick(*i) else { continue };
                    let stale = ReservationKey {
                        coupon_id: CouponId::new(),
                        ..admissions[i].clone()
                    };
                    if gate.release(&id, &stale).await.map_err(|e| fail(e.to_string()))? {
                        return Err(fail("a stale key released another admission (F1)".into()));
                    }
                }
                GateOp::Settle(i) => {
                    let Some(i) = pick(*i) else { continue };
                    let got = gate
                        .settle(&id, std::slice::from_ref(&admissions[i]))
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    let want = model.settle(i);
                    if got != want {
                        return Err(fail(format!("gate settled {got}, the model {want}")));
                    }
                }
                GateOp::Restore(slots, floor) => {
                    let h: Vec<_> = slots.iter().map(|(u, n)| (user(&id, *u), *n)).collect();
                    gate.restore(&spec, &h, *floor).await.map_err(|e| fail(e.to_string()))?;
                    model.restore(slots, *floor);
                }
                GateOp::Fence => {
                    gate.fence(&id).await.map_err(|e| fail(e.to_string()))?;
                    model.fenced = true;
                }
            }
            model.check_invariants().map_err(fail)?;
            let counts = gate
                .counts(&id)
                .await
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail("campaign gone".into()))?;
            let want = (model.remaining, model.ledger.len() as u64, model.seq, model.fenced);
            if (counts.remaining, counts.pending, counts.seq, counts.fenced) != want {
                return Err(fail(format!(
                    "gate counts {counts:?}, the model (remaining, pending, seq, fenced) {want:?}"
                )));
            }
            if counts.remaining > total {
                return Err(fail("I1: more stock than the total".into()));
            }
            // The gate's ledger holds exactly the model's pending admissions, by identity.
            let ledger: BTreeSet<CouponId> = gate
                .reservations(&id, now + Duration::days(1), 10_000)
                .await
                .map_err(|e| fail(e.to_string()))?
                .into_iter()
                .map(|r| r.key.coupon_id)
                .collect();
            let pending: BTreeSet<CouponId> = model.ledger.keys().map(|&i| admissions[i].coupon_id).collect();
            if ledger != pending {
                return Err(fail(format!(
                    "the gate's ledger holds {} admissions, the model {} pending; they differ by identity",
                    ledger.len(),
                    pending.len()
                )));
            }
            for u in 0..8u8 {
                let got = gate
                    .holding(&id, &user(&id, u))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let want: Vec<u32> = model
                    .held
                    .get(&u)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default();
                if got != want {
                    return Err(fail(format!(
                        "user {u} holds {got:?} in the gate, {want:?} in the model"
                    )));
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = gate.close(&id).await;
    result
}
