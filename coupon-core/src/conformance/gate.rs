//! Checks every [`IssueGate`] must pass.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;

use super::support::{admit, admit_keyed, now_ms, open_campaign, untimed, user};
use crate::domain::{Admission, CouponId, ReservationKey};
use crate::gate::{AdmitRequest, IssueGate};

fn admitted(a: Admission) -> (u32, u64) {
    match a {
        Admission::Admitted { nth, remaining, .. } => (nth, remaining),
        other => panic!("expected an admission, got {other:?}"),
    }
}

/// Admits exactly the stock, counting down, then answers sold out.
pub async fn admits_until_sold_out(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(3, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let now = now_ms();
    for i in 0..3 {
        let (nth, remaining) = admitted(admit(&*gate, &c.id, &user(&c.id, i), now).await);
        assert_eq!((nth, remaining), (1, 2 - i as u64));
    }
    assert_eq!(admit(&*gate, &c.id, &user(&c.id, 3), now).await, Admission::SoldOut);
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending), (0, 3));
}

/// With a limit of 1 the second attempt of a user is refused and costs no stock.
pub async fn one_coupon_per_user(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(10, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let u = user(&c.id, 0);
    admitted(admit(&*gate, &c.id, &u, now_ms()).await);
    assert_eq!(admit(&*gate, &c.id, &u, now_ms()).await, Admission::AlreadyIssued);
    assert_eq!(gate.counts(&c.id).await.unwrap().unwrap().remaining, 9);
    assert_eq!(gate.holding(&c.id, &u).await.unwrap(), vec![1]);
}

/// With a limit of N a user gets coupons 1..=N, then is refused.
pub async fn per_user_limit_above_one(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(10, 3);
    gate.open(&c.gate_spec()).await.unwrap();
    let u = user(&c.id, 0);
    for expected in 1..=3 {
        assert_eq!(admitted(admit(&*gate, &c.id, &u, now_ms()).await).0, expected);
    }
    assert_eq!(admit(&*gate, &c.id, &u, now_ms()).await, Admission::AlreadyIssued);
    assert_eq!(gate.holding(&c.id, &u).await.unwrap(), vec![1, 2, 3]);
}

/// Before the window: not open; after it: closed; an unknown campaign: not open.
pub async fn window_and_unknown_campaign(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(10, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let u = user(&c.id, 0);
    let before = c.issue_starts_at - Duration::seconds(1);
    let after = c.issue_ends_at;
    assert_eq!(admit(&*gate, &c.id, &u, before).await, Admission::NotOpen);
    assert_eq!(admit(&*gate, &c.id, &u, after).await, Admission::Closed);
    let unknown = open_campaign(1, 1);
    assert_eq!(admit(&*gate, &unknown.id, &u, now_ms()).await, Admission::NotOpen);
    assert_eq!(gate.counts(&unknown.id).await.unwrap(), None);
    assert_eq!(
        gate.counts(&c.id).await.unwrap().unwrap().remaining,
        10,
        "refusals cost no stock"
    );
}

/// Opening again never resets the stock or the holders.
pub async fn open_is_idempotent(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(5, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let u = user(&c.id, 0);
    admitted(admit(&*gate, &c.id, &u, now_ms()).await);
    gate.open(&c.gate_spec()).await.unwrap();
    assert_eq!(gate.counts(&c.id).await.unwrap().unwrap().remaining, 4);
    assert_eq!(admit(&*gate, &c.id, &u, now_ms()).await, Admission::AlreadyIssued);
}

/// Release gives the stock and the user's slot back, once; unknown keys change nothing.
pub async fn release_returns_stock_once(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(1, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let u = user(&c.id, 0);
    let (admission, key) = admit_keyed(&*gate, &c.id, &u, now_ms()).await;
    admitted(admission);
    let other_admission = ReservationKey {
        coupon_id: CouponId::new(),
        ..key.clone()
    };
    assert!(
        !gate.release(&c.id, &other_admission).await.unwrap(),
        "another admission of the same user and nth is not this one"
    );
    assert!(gate.release(&c.id, &key).await.unwrap());
    assert!(
        !gate.release(&c.id, &key).await.unwrap(),
        "a second release changes nothing"
    );
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending), (1, 0));
    assert!(gate.holding(&c.id, &u).await.unwrap().is_empty());
    let stranger = ReservationKey {
        coupon_id: CouponId::new(),
        user_id: user(&c.id, 9),
        nth: 1,
    };
    assert!(!gate.release(&c.id, &stranger).await.unwrap());
    assert!(!gate.release(&open_campaign(1, 1).id, &key).await.unwrap());
    assert_eq!(
        admitted(admit(&*gate, &c.id, &u, now_ms()).await).0,
        1,
        "the user may try again"
    );
}

/// Each admission is in the ledger with its time until settled.
pub async fn ledger_records_admissions_and_settle_clears_them(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(10, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    // Ledger times come from the gate's own clock, not the caller's.
    let t0 = gate.clock().await.unwrap();
    let mut keys = Vec::new();
    let mut times = Vec::new();
    for i in 0..4 {
        let (admission, key) = admit_keyed(&*gate, &c.id, &user(&c.id, i), now_ms()).await;
        admitted(admission);
        keys.push(key);
        // Wait until the gate's clock moves on, so the four entries have distinct times.
        let at = gate.clock().await.unwrap();
        while gate.clock().await.unwrap() <= at {
            tokio::task::yield_now().await;
        }
        times.push(at);
    }
    let t1 = gate.clock().await.unwrap();
    let all = gate.reservations(&c.id, t1 + Duration::seconds(1), 100).await.unwrap();
    assert_eq!(all.len(), 4);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.key, keys[i], "oldest first");
        assert!(
            r.admitted_at >= t0 - Duration::milliseconds(1) && r.admitted_at <= t1,
            "{r:?} within [{t0}, {t1}]"
        );
    }
    let older = gate.reservations(&c.id, all[2].admitted_at, 100).await.unwrap();
    assert_eq!(older.len(), 2, "only entries admitted before the bound");
    assert_eq!(
        gate.reservations(&c.id, t1 + Duration::seconds(1), 3)
            .await
            .unwrap()
            .len(),
        3,
        "limit"
    );
    let settled = gate
        .settle(&c.id, &[all[0].key.clone(), all[1].key.clone()])
        .await
        .unwrap();
    assert_eq!(settled, 2);
    assert_eq!(gate.settle(&c.id, &[all[0].key.clone()]).await.unwrap(), 0);
    let left = gate.reservations(&c.id, t1 + Duration::seconds(1), 100).await.unwrap();
    assert_eq!(
        left.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        vec![all[2].key.clone(), all[3].key.clone()]
    );
    assert_eq!(gate.counts(&c.id).await.unwrap().unwrap().pending, 2);
}

/// Once settled (stored), an admission can never be released.
pub async fn settled_entries_are_never_released(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(1, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let u = user(&c.id, 0);
    let (admission, key) = admit_keyed(&*gate, &c.id, &u, now_ms()).await;
    admitted(admission);
    gate.settle(&c.id, std::slice::from_ref(&key)).await.unwrap();
    assert!(!gate.release(&c.id, &key).await.unwrap());
    assert_eq!(gate.counts(&c.id).await.unwrap().unwrap().remaining, 0);
    assert_eq!(admit(&*gate, &c.id, &u, now_ms()).await, Admission::AlreadyIssued);
}

/// A campaign the gate lost is rebuilt from the store's holders.
pub async fn restore_rebuilds_a_lost_campaign(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(10, 2);
    let holders = vec![(user(&c.id, 0), 1), (user(&c.id, 0), 2), (user(&c.id, 1), 2)];
    let report = gate.restore(&c.gate_spec(), &holders, 0).await.unwrap();
    assert!(report.created);
    assert_eq!((report.users_restored, report.stock_taken, report.remaining), (2, 3, 7));
    assert_eq!(gate.holding(&c.id, &user(&c.id, 1)).await.unwrap(), vec![2]);
    assert_eq!(
        admit(&*gate, &c.id, &user(&c.id, 0), now_ms()).await,
        Admission::AlreadyIssued
    );
    assert_eq!(
        admitted(admit(&*gate, &c.id, &user(&c.id, 1), now_ms()).await),
        (1, 6),
        "the lowest free nth"
    );
    assert_eq!(
        gate.counts(&c.id).await.unwrap().unwrap().pending,
        1,
        "restored holdings are not pending"
    );
}

/// F17: a restore reports the stock it really took: with more stored slots than stock
/// (a gate that had over-admitted), it takes what is left, not one unit per slot.
pub async fn restore_reports_only_the_stock_it_took(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(2, 1);
    let holders: Vec<_> = (0..3).map(|i| (user(&c.id, i), 1)).collect();
    let report = gate.restore(&c.gate_spec(), &holders, 0).await.unwrap();
    assert_eq!(
        (report.users_restored, report.stock_taken, report.remaining),
        (3, 2, 0),
        "{report:?}"
    );
    assert_eq!(gate.counts(&c.id).await.unwrap().unwrap().remaining, 0);
}

/// On a campaign the gate holds, restore only adds what it forgot, once.
pub async fn restore_only_adds(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(10, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let (known, forgotten) = (user(&c.id, 0), user(&c.id, 1));
    admitted(admit(&*gate, &c.id, &known, now_ms()).await);
    let holders = vec![(known.clone(), 1), (forgotten.clone(), 1)];
    let report = gate.restore(&c.gate_spec(), &holders, 0).await.unwrap();
    assert!(!report.created);
    assert_eq!((report.users_restored, report.stock_taken, report.remaining), (1, 1, 8));
    let again = gate.restore(&c.gate_spec(), &holders, 0).await.unwrap();
    assert_eq!((again.users_restored, again.stock_taken, again.remaining), (0, 0, 8));
    assert_eq!(
        admit(&*gate, &c.id, &forgotten, now_ms()).await,
        Admission::AlreadyIssued
    );
}

/// Admissions are numbered 1, 2, 3, ... per campaign; a fence stops admissions (and
/// nothing else) until a restore, which also numbers on above the floor it is given.
pub async fn numbers_admissions_and_fences_until_restore(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(10, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let seq_of = |a: Admission| match a {
        Admission::Admitted { seq, .. } => seq,
        other => panic!("expected an admission, got {other:?}"),
    };
    let mut keys = Vec::new();
    for i in 0..3 {
        let (admission, key) = admit_keyed(&*gate, &c.id, &user(&c.id, i), now_ms()).await;
        assert_eq!(seq_of(admission), i as u64 + 1);
        keys.push(key);
    }
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.seq, counts.fenced), (3, false));

    gate.fence(&c.id).await.unwrap();
    assert_eq!(admit(&*gate, &c.id, &user(&c.id, 5), now_ms()).await, Admission::Fenced);
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!(
        (counts.remaining, counts.pending, counts.seq, counts.fenced),
        (7, 3, 3, true)
    );
    // The reconciler's work goes on behind the fence.
    assert!(gate.release(&c.id, &keys[0]).await.unwrap());
    assert_eq!(gate.settle(&c.id, &keys[1..2]).await.unwrap(), 1);
    assert_eq!(
        gate.reservations(&c.id, now_ms() + Duration::days(1), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let report = gate.restore(&c.gate_spec(), &[(user(&c.id, 1), 1)], 40).await.unwrap();
    assert!(report.unfenced);
    assert_eq!(seq_of(admit(&*gate, &c.id, &user(&c.id, 6), now_ms()).await), 41);
    // A lower floor never takes numbers back; a restore of an unfenced campaign lifts nothing.
    let again = gate.restore(&c.gate_spec(), &[], 5).await.unwrap();
    assert!(!again.unfenced);
    assert_eq!(seq_of(admit(&*gate, &c.id, &user(&c.id, 7), now_ms()).await), 42);

    // Fencing a campaign the gate does not hold changes nothing: it stays unknown.
    let unknown = open_campaign(1, 1);
    gate.fence(&unknown.id).await.unwrap();
    assert_eq!(gate.counts(&unknown.id).await.unwrap(), None);
    assert_eq!(
        admit(&*gate, &unknown.id, &user(&unknown.id, 0), now_ms()).await,
        Admission::NotOpen
    );
}

/// F13: close is final. Admissions answer closed (410, not 409 `not_open`), holders and
/// ledger are freed, and neither open nor restore (a sync that read the campaign as open
/// just before the close) re-creates it. A campaign the gate never held, closed, answers
/// closed as well. Forget (a loss of data) differs: not open until a sync rebuilds it.
pub async fn close_is_final(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(5, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    admitted(admit(&*gate, &c.id, &user(&c.id, 0), now_ms()).await);
    gate.close(&c.id).await.unwrap();
    assert_eq!(gate.counts(&c.id).await.unwrap().map_or(0, |n| n.pending), 0);
    assert!(gate.holding(&c.id, &user(&c.id, 0)).await.unwrap().is_empty());
    assert!(
        gate.reservations(&c.id, now_ms() + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(admit(&*gate, &c.id, &user(&c.id, 1), now_ms()).await, Admission::Closed);
    let e = gate
        .restore(&c.gate_spec(), &[(user(&c.id, 0), 1)], 1)
        .await
        .unwrap_err();
    assert_eq!(e.kind, crate::ErrorKind::Rejected, "{e}");
    assert!(e.to_string().contains("closed"), "{e}");
    gate.open(&c.gate_spec()).await.unwrap();
    assert_eq!(admit(&*gate, &c.id, &user(&c.id, 2), now_ms()).await, Admission::Closed);
    gate.forget(&c.id).await.unwrap();
    assert_eq!(admit(&*gate, &c.id, &user(&c.id, 3), now_ms()).await, Admission::Closed);
    gate.close(&c.id).await.unwrap();

    let never_held = open_campaign(5, 1);
    gate.close(&never_held.id).await.unwrap();
    assert_eq!(
        admit(&*gate, &never_held.id, &user(&never_held.id, 0), now_ms()).await,
        Admission::Closed
    );
    assert!(gate.restore(&never_held.gate_spec(), &[], 0).await.is_err());

    let lost = open_campaign(5, 1);
    gate.open(&lost.gate_spec()).await.unwrap();
    admitted(admit(&*gate, &lost.id, &user(&lost.id, 0), now_ms()).await);
    gate.forget(&lost.id).await.unwrap();
    assert_eq!(gate.counts(&lost.id).await.unwrap(), None);
    assert_eq!(
        admit(&*gate, &lost.id, &user(&lost.id, 1), now_ms()).await,
        Admission::NotOpen
    );
    let report = gate
        .restore(&lost.gate_spec(), &[(user(&lost.id, 0), 1)], 1)
        .await
        .unwrap();
    assert!(report.created && report.stock_taken == 1, "{report:?}");
}

/// The batch form answers each request as if admitted one by one, in order.
pub async fn admit_many_answers_in_order(gate: Arc<dyn IssueGate>) {
    let (a, b) = (open_campaign(2, 1), open_campaign(1, 1));
    gate.open(&a.gate_spec()).await.unwrap();
    gate.open(&b.gate_spec()).await.unwrap();
    let req = |c: &crate::domain::Campaign, i| AdmitRequest {
        campaign_id: c.id,
        user_id: user(&c.id, i),
        coupon_id: CouponId::new(),
    };
    let unknown = open_campaign(1, 1);
    let requests = vec![
        req(&a, 0),
        req(&a, 0),
        req(&b, 0),
        req(&a, 1),
        req(&a, 2),
        req(&b, 1),
        req(&unknown, 0),
    ];
    let got: Vec<Admission> = gate
        .admit_many(&requests, now_ms())
        .await
        .unwrap()
        .into_iter()
        .map(untimed)
        .collect();
    assert_eq!(
        got,
        vec![
            Admission::Admitted {
                nth: 1,
                remaining: 1,
                seq: 1,
                admitted_at: chrono::DateTime::UNIX_EPOCH,
            },
            Admission::AlreadyIssued,
            Admission::Admitted {
                nth: 1,
                remaining: 0,
                seq: 1,
                admitted_at: chrono::DateTime::UNIX_EPOCH,
            },
            Admission::Admitted {
                nth: 1,
                remaining: 0,
                seq: 2,
                admitted_at: chrono::DateTime::UNIX_EPOCH,
            },
            Admission::SoldOut,
            Admission::SoldOut,
            Admission::NotOpen,
        ]
    );
    assert!(gate.admit_many(&[], now_ms()).await.unwrap().is_empty());
}

/// Many tasks hammering one campaign: exactly the stock is admitted, nobody twice.
pub async fn concurrent_admissions_never_oversell(gate: Arc<dyn IssueGate>) {
    let c = open_campaign(100, 1);
    gate.open(&c.gate_spec()).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let gate = gate.clone();
            let id = c.id;
            tokio::spawn(async move {
                let mut won = Vec::new();
                for i in 0..40 {
                    // 300 users, each tried several times by different tasks.
                    let u = user(&id, (t * 7 + i * 13) % 300);
                    if let Admission::Admitted { .. } = admit(&*gate, &id, &u, now_ms()).await {
                        won.push(u);
                    }
                }
                won
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = winners.iter().collect();
    assert_eq!(winners.len(), 100, "exactly the stock is admitted");
    assert_eq!(distinct.len(), winners.len(), "nobody admitted twice");
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending), (0, 100));
}

/// One campaign selling out does not touch another.
pub async fn campaigns_are_independent(gate: Arc<dyn IssueGate>) {
    let (a, b) = (open_campaign(1, 1), open_campaign(1, 1));
    gate.open(&a.gate_spec()).await.unwrap();
    gate.open(&b.gate_spec()).await.unwrap();
    let u = user(&a.id, 0);
    admitted(admit(&*gate, &a.id, &u, now_ms()).await);
    assert_eq!(
        admit(&*gate, &a.id, &user(&a.id, 1), now_ms()).await,
        Admission::SoldOut
    );
    assert_eq!(admitted(admit(&*gate, &b.id, &u, now_ms()).await), (1, 0));
    gate.close(&a.id).await.unwrap();
    assert_eq!(gate.counts(&b.id).await.unwrap().unwrap().remaining, 0);
}
