//! The checker: judges one run's history, its samples and the database after the
//! consumers drained and the reconciler passed, against I1-I6 of `docs/PROTOCOL.md`.
//! Each verdict carries the history lines and rows that prove a failure.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::clients::{Entry, Op};
use crate::faults::FaultRecord;
use crate::system::GATE_TIMEOUT_MS;

/// The bound on a 503 from a gate that is down (I5): the gate timeout plus a margin for
/// a loaded two-core machine.
pub const FAIL_FAST_BOUND_MS: u64 = GATE_TIMEOUT_MS + 1_500;

/// One reading of the counts during the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When, in milliseconds since the run started.
    pub t_ms: u64,
    /// Admissions the gate counts (`issued` of the campaign's view).
    pub gate_issued: Option<u64>,
    /// Coupons the store holds, read straight from the database.
    pub db_stored: Option<u64>,
}

/// One stored coupon.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Coupon id.
    pub id: String,
    /// Holder.
    pub user: String,
    /// `issued` or `redeemed`.
    pub state: String,
    /// The order that redeemed it.
    pub order_id: Option<String>,
}

/// What one run observed.
#[derive(Debug)]
pub struct Observed {
    /// The campaign's stock.
    pub stock: u64,
    /// Coupons per user.
    pub per_user_limit: u32,
    /// `after-log`, `after-gate` or `after-store`.
    pub ack: String,
    /// Every request.
    pub history: Vec<Entry>,
    /// Counts read during the run.
    pub samples: Vec<Sample>,
    /// Every stored coupon of the campaign.
    pub rows: Vec<Row>,
    /// Admissions the store voided.
    pub voids: u64,
    /// The campaign's view at the end: (`remaining`, `stored`, `pending`).
    pub final_counts: Option<(u64, u64, u64)>,
    /// Whether stored + remaining reached the stock with nothing pending within the bound.
    pub settled: bool,
    /// The faults.
    pub faults: Vec<FaultRecord>,
    /// Events the recorders refused because the gate went back in time.
    pub fenced_by_rollback: u64,
    /// The scenario rolls the gate back (protocol section 5a).
    pub rolls_back_the_gate: bool,
}

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `I1`..`I6`, or another check.
    pub name: &'static str,
    /// Held.
    pub pass: bool,
    /// The figures behind it.
    pub detail: String,
    /// History lines and rows that prove a failure.
    pub proof: Vec<String>,
}

/// The figures of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Requests sent.
    pub requests: usize,
    /// Answers by status and code.
    pub answers: BTreeMap<String, usize>,
    /// Requests with no answer or a 5xx.
    pub unknown_outcomes: usize,
    /// Issue answers 201.
    pub acknowledged: usize,
    /// Coupons stored.
    pub stored: usize,
    /// Acknowledged coupons not stored.
    pub lost: usize,
    /// Stock neither stored nor back in the gate.
    pub leaked: i64,
    /// Admissions voided.
    pub voids: u64,
    /// p99 of the gate's 503 answers, in milliseconds.
    pub fail_fast_p99_ms: Option<u64>,
    /// Longest time from a fault's heal to the next decided answer, in milliseconds.
    pub worst_recovery_ms: Option<u64>,
}

/// Judges `observed`.
pub fn check(observed: &Observed) -> (Figures, Vec<Verdict>) {
    let mut figures = Figures {
        requests: observed.history.len(),
        stored: observed.rows.len(),
        voids: observed.voids,
        ..Figures::default()
    };
    for entry in &observed.history {
        *figures
            .answers
            .entry(format!("{:?} {}", entry.op, entry.answer()))
            .or_default() += 1;
    }
    figures.unknown_outcomes = observed.history.iter().filter(|e| e.unknown_outcome()).count();
    let verdicts = vec![
        no_over_issue(observed),
        no_duplicate(observed),
        no_lost_acknowledgement(observed, &mut figures),
        no_phantom(observed),
        bounded_under_issue(observed, &mut figures),
        fail_fast(observed, &mut figures),
        use_once(observed),
    ];
    figures.worst_recovery_ms = observed
        .faults
        .iter()
        .filter_map(|f| recovery_ms(&observed.history, f))
        .max();
    (figures, verdicts)
}

fn line(entry: &Entry) -> String {
    serde_json::to_string(entry).unwrap_or_default()
}

fn no_over_issue(o: &Observed) -> Verdict {
    let mut proof = Vec::new();
    if o.rows.len() as u64 > o.stock {
        proof.push(format!(
            "the store holds {} coupons of a stock of {}",
            o.rows.len(),
            o.stock
        ));
    }
    for s in &o.samples {
        if s.gate_issued.is_some_and(|n| n > o.stock) || s.db_stored.is_some_and(|n| n > o.stock) {
            proof.push(serde_json::to_string(s).unwrap_or_default());
        }
    }
    let max_gate = o.samples.iter().filter_map(|s| s.gate_issued).max().unwrap_or(0);
    let max_db = o.samples.iter().filter_map(|s| s.db_stored).max().unwrap_or(0);
    Verdict {
        name: "I1",
        pass: proof.is_empty(),
        detail: format!(
            "stored {} <= stock {}; {} samples, highest gate count {max_gate}, highest store count {max_db}",
            o.rows.len(),
            o.stock,
            o.samples.len()
        ),
        proof: truncate(proof),
    }
}

fn no_duplicate(o: &Observed) -> Verdict {
    let mut per_user: HashMap<&str, Vec<&Row>> = HashMap::new();
    for row in &o.rows {
        per_user.entry(row.user.as_str()).or_default().push(row);
    }
    let mut proof = Vec::new();
    for (user, rows) in &per_user {
        if rows.len() > o.per_user_limit as usize {
            for row in rows {
                proof.push(format!(
                    "{user} holds {}",
                    serde_json::to_string(row).unwrap_or_default()
                ));
            }
        }
    }
    Verdict {
        name: "I2",
        pass: proof.is_empty(),
        detail: format!("{} holders, none above {} coupon(s)", per_user.len(), o.per_user_limit),
        proof: truncate(proof),
    }
}

fn no_lost_acknowledgement(o: &Observed, figures: &mut Figures) -> Verdict {
    let stored: HashSet<&str> = o.rows.iter().map(|r| r.id.as_str()).collect();
    let acked: Vec<&Entry> = o
        .history
        .iter()
        .filter(|e| e.op == Op::Issue && e.status == 201)
        .collect();
    let lost: Vec<&Entry> = acked
        .iter()
        .copied()
        .filter(|e| e.coupon.as_deref().is_none_or(|c| !stored.contains(c)))
        .collect();
    figures.acknowledged = acked.len();
    figures.lost = lost.len();
    let (pass, why) = if lost.is_empty() {
        (true, String::new())
    } else if o.ack == "after-gate" {
        (
            true,
            " (after-gate answers before the log: reported, not a violation)".to_owned(),
        )
    } else if o.rolls_back_the_gate && lost.len() as u64 <= o.fenced_by_rollback {
        (
            true,
            format!(
                " (acknowledged by the rolled-back gate and refused by the store's fences: {} refused; \
                 PROTOCOL.md section 5a)",
                o.fenced_by_rollback
            ),
        )
    } else {
        (false, String::new())
    };
    Verdict {
        name: "I3",
        pass,
        detail: format!(
            "{} acknowledged, {} stored, {} acknowledged and not stored{why}",
            acked.len(),
            o.rows.len(),
            lost.len()
        ),
        proof: if pass {
            Vec::new()
        } else {
            truncate(lost.iter().map(|e| line(e)).collect())
        },
    }
}

/// Every stored coupon belongs to a user who was told "issued" or whose request's
/// outcome was left open (a 503 or no answer): the store holds nothing nobody asked for.
fn no_phantom(o: &Observed) -> Verdict {
    let acked: HashSet<&str> = o
        .history
        .iter()
        .filter(|e| e.op == Op::Issue && e.status == 201)
        .filter_map(|e| e.coupon.as_deref())
        .collect();
    let open_users: HashSet<&str> = o
        .history
        .iter()
        .filter(|e| e.op == Op::Issue && e.unknown_outcome())
        .map(|e| e.user.as_str())
        .collect();
    let phantoms: Vec<String> = o
        .rows
        .iter()
        .filter(|r| !acked.contains(r.id.as_str()) && !open_users.contains(r.user.as_str()))
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    let unacked_stored = o.rows.iter().filter(|r| !acked.contains(r.id.as_str())).count();
    Verdict {
        name: "origin",
        pass: phantoms.is_empty(),
        detail: format!(
            "{unacked_stored} stored coupons were never acknowledged (their requests' outcome was open); \
             {} belong to nobody who asked",
            phantoms.len()
        ),
        proof: truncate(phantoms),
    }
}

fn bounded_under_issue(o: &Observed, figures: &mut Figures) -> Verdict {
    let Some((remaining, stored, pending)) = o.final_counts else {
        return Verdict {
            name: "I4",
            pass: false,
            detail: "the campaign's counts could not be read at the end".into(),
            proof: Vec::new(),
        };
    };
    figures.leaked = o.stock as i64 - stored as i64 - remaining as i64;
    Verdict {
        name: "I4",
        pass: o.settled && figures.leaked == 0 && pending == 0,
        detail: format!(
            "stored {stored} + remaining {remaining} = {} of stock {}, pending {pending}, {} voided",
            stored + remaining,
            o.stock,
            o.voids
        ),
        proof: Vec::new(),
    }
}

fn fail_fast(o: &Observed, figures: &mut Figures) -> Verdict {
    let mut latencies: Vec<(u64, &Entry)> = o
        .history
        .iter()
        .filter(|e| e.status == 503 && (e.code == "gate_unavailable" || e.code == "gate_fenced"))
        .map(|e| (e.end_ms - e.start_ms, e))
        .collect();
    if latencies.is_empty() {
        return Verdict {
            name: "I5",
            pass: true,
            detail: "no 503 from the gate".into(),
            proof: Vec::new(),
        };
    }
    latencies.sort_by_key(|(ms, _)| *ms);
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1].0;
    figures.fail_fast_p99_ms = Some(p99);
    let slow: Vec<String> = latencies
        .iter()
        .rev()
        .take_while(|(ms, _)| *ms > FAIL_FAST_BOUND_MS)
        .map(|(_, e)| line(e))
        .collect();
    Verdict {
        name: "I5",
        pass: p99 <= FAIL_FAST_BOUND_MS,
        detail: format!(
            "{} answers 503 from the gate, p99 {p99} ms, max {} ms (bound {FAIL_FAST_BOUND_MS} ms)",
            latencies.len(),
            latencies.last().map(|(ms, _)| *ms).unwrap_or(0)
        ),
        proof: if p99 <= FAIL_FAST_BOUND_MS {
            Vec::new()
        } else {
            truncate(slow)
        },
    }
}

fn use_once(o: &Observed) -> Verdict {
    let mut winners: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in o.history.iter().filter(|e| e.op == Op::Redeem && e.status == 200) {
        if let (Some(coupon), Some(order)) = (e.coupon.as_deref(), e.order.as_deref()) {
            winners.entry(coupon).or_default().insert(order);
        }
    }
    let rows: HashMap<&str, &Row> = o.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut proof = Vec::new();
    for (coupon, orders) in &winners {
        if orders.len() > 1 {
            proof.push(format!("{coupon} redeemed by {} orders: {orders:?}", orders.len()));
        }
        match rows.get(coupon) {
            Some(row) if row.state == "redeemed" && orders.contains(row.order_id.as_deref().unwrap_or("")) => {}
            row => proof.push(format!(
                "{coupon} answered redeemed by {orders:?}; the store has {row:?}"
            )),
        }
    }
    let races = o
        .history
        .iter()
        .filter(|e| e.op == Op::Redeem && e.order.as_deref().is_some_and(|o| o.contains("-race-")))
        .count();
    Verdict {
        name: "I6",
        pass: proof.is_empty(),
        detail: format!(
            "{} coupons redeemed, {} redemption requests of which {races} raced; each won once",
            winners.len(),
            o.history.iter().filter(|e| e.op == Op::Redeem).count()
        ),
        proof: truncate(proof),
    }
}

/// From the heal to the end of the first decided issue answer sent after it.
fn recovery_ms(history: &[Entry], fault: &FaultRecord) -> Option<u64> {
    history
        .iter()
        .filter(|e| e.op == Op::Issue && e.start_ms >= fault.healed_ms && matches!(e.status, 201 | 409 | 410))
        .map(|e| e.end_ms - fault.healed_ms)
        .min()
}

/// Recovery per fault, for the report.
pub fn recoveries(history: &[Entry], faults: &[FaultRecord]) -> Vec<(String, Option<u64>)> {
    faults
        .iter()
        .map(|f| (f.fault.name(), recovery_ms(history, f)))
        .collect()
}

fn truncate(mut proof: Vec<String>) -> Vec<String> {
    let total = proof.len();
    if total > 20 {
        proof.truncate(20);
        proof.push(format!("... and {} more", total - 20));
    }
    proof
}
