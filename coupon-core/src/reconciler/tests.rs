//! Every branch of the reconciler, with mocked backends.

use chrono::Duration as ChronoDuration;
use mockall::Sequence;

use super::*;
use crate::domain::{CouponId, Reservation, ReservationKey, UserId, VoidOutcome, timestamp_now};
use crate::gate::{GateCounts, MockIssueGate};
use crate::log::MockEventLog;
use crate::store::MockIssueStore;
use crate::test_support::*;

/// The admission of `user`'s first coupon, with a coupon id derived from the name.
fn key(user: &str) -> ReservationKey {
    let mut bytes = [0u8; 16];
    for (b, c) in bytes.iter_mut().zip(user.bytes()) {
        *b = c;
    }
    ReservationKey {
        coupon_id: CouponId::from_uuid(uuid::Uuid::from_bytes(bytes)),
        user_id: UserId::new(user).unwrap(),
        nth: 1,
    }
}

/// Ledger entries admitted `age_secs` ago (before `now`).
fn gate_with_entries(now: DateTime<Utc>, entries: Vec<(&'static str, i64)>, seq: &mut Sequence) -> MockIssueGate {
    let mut gate = MockIssueGate::new();
    gate.expect_backend().return_const("mock");
    let list: Vec<Reservation> = entries
        .into_iter()
        .map(|(u, age)| Reservation {
            key: key(u),
            admitted_at: now - ChronoDuration::seconds(age),
        })
        .collect();
    gate.expect_reservations()
        .times(1)
        .in_sequence(seq)
        .return_once(move |_, _, _| Ok(list));
    gate
}

fn log_horizon(horizon: Option<DateTime<Utc>>, seq: &mut Sequence) -> MockEventLog {
    let mut log = MockEventLog::new();
    log.expect_oldest_uncommitted()
        .times(1)
        .in_sequence(seq)
        .returning(move |_| Ok(horizon));
    log
}

#[tokio::test]
async fn an_old_entry_neither_stored_nor_in_flight_is_released() {
    let now = timestamp_now();
    let mut seq = Sequence::new();
    let log = log_horizon(None, &mut seq);
    let mut gate = gate_with_entries(now, vec![("a", 120)], &mut seq);
    let mut store = MockIssueStore::new();
    store
        .expect_void()
        .withf(|_, k| k == [key("a")])
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, k| Ok(vec![VoidOutcome::Voided; k.len()]));
    gate.expect_release()
        .withf(|_, k| *k == key("a"))
        .times(1)
        .returning(|_, _| Ok(true));
    let r = Reconciler::new(arc(gate), arc(store)).with_log(arc(log), "recorders");
    let report = r.reconcile(&CampaignId::new(), now).await.unwrap();
    assert_eq!(
        report,
        ReconcileReport {
            examined: 1,
            released: 1,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn a_stored_entry_is_settled_never_released() {
    let now = timestamp_now();
    let mut seq = Sequence::new();
    let log = log_horizon(None, &mut seq);
    let mut gate = gate_with_entries(now, vec![("a", 120), ("b", 100)], &mut seq);
    let mut store = MockIssueStore::new();
    store
        .expect_void()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(vec![VoidOutcome::Stored, VoidOutcome::Voided]));
    gate.expect_settle()
        .withf(|_, k| k == [key("a")])
        .times(1)
        .returning(|_, _| Ok(1));
    gate.expect_release()
        .withf(|_, k| *k == key("b"))
        .times(1)
        .returning(|_, _| Ok(true));
    let r = Reconciler::new(arc(gate), arc(store)).with_log(arc(log), "recorders");
    let report = r.reconcile(&CampaignId::new(), now).await.unwrap();
    assert_eq!((report.settled, report.released), (1, 1));
}

#[tokio::test]
async fn an_entry_the_log_may_still_deliver_is_kept() {
    let now = timestamp_now();
    let mut seq = Sequence::new();
    // The consumer group is still behind events published 90 s ago.
    let log = log_horizon(Some(now - ChronoDuration::seconds(90)), &mut seq);
    // Admitted 120 s ago: its publish may be among the uncommitted (120 - 60 s grace < 90).
    let mut gate = gate_with_entries(now, vec![("old", 200), ("a", 120)], &mut seq);
    let mut store = MockIssueStore::new();
    store
        .expect_void()
        .withf(|_, k| k == [key("old")])
        .times(1)
        .returning(|_, k| Ok(vec![VoidOutcome::Voided; k.len()]));
    store
        .expect_stored_keys()
        .withf(|_, k| k == [key("a")])
        .times(1)
        .returning(|_, k| Ok(vec![false; k.len()]));
    gate.expect_release()
        .withf(|_, k| *k == key("old"))
        .times(1)
        .returning(|_, _| Ok(true));
    let r = Reconciler::new(arc(gate), arc(store)).with_log(arc(log), "recorders");
    let report = r.reconcile(&CampaignId::new(), now).await.unwrap();
    assert_eq!((report.released, report.kept), (1, 1));
}

#[tokio::test]
async fn nothing_old_enough_means_nothing_to_do() {
    let now = timestamp_now();
    let mut seq = Sequence::new();
    let log = log_horizon(None, &mut seq);
    let mut gate = MockIssueGate::new();
    gate.expect_reservations()
        .withf(move |_, before, _| *before == now - ChronoDuration::seconds(60))
        .returning(|_, _, _| Ok(Vec::new()));
    gate.expect_release().never();
    let mut store = MockIssueStore::new();
    store.expect_stored_keys().never();
    store.expect_void().never();
    let r = Reconciler::new(arc(gate), arc(store)).with_log(arc(log), "recorders");
    assert_eq!(
        r.reconcile(&CampaignId::new(), now).await.unwrap(),
        ReconcileReport::default()
    );
}

#[tokio::test]
async fn sync_refuses_to_rebuild_a_lost_gate_while_events_are_in_flight() {
    let c = campaign(CampaignState::Open);
    let mut gate = MockIssueGate::new();
    gate.expect_counts().returning(|_| Ok(None));
    gate.expect_restore().never();
    let mut log = MockEventLog::new();
    log.expect_oldest_uncommitted().returning(|_| Ok(Some(timestamp_now())));
    let r = Reconciler::new(arc(gate), arc(MockIssueStore::new())).with_log(arc(log), "recorders");
    let e = r.sync(&c, timestamp_now()).await.unwrap_err();
    assert!(matches!(e, Error::SyncRefused { .. }), "{e}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn sync_refuses_to_lift_a_fence_while_events_are_in_flight() {
    let c = campaign(CampaignState::Open);
    let mut gate = MockIssueGate::new();
    gate.expect_counts().returning(|_| {
        Ok(Some(GateCounts {
            remaining: 5,
            pending: 3,
            seq: 9,
            fenced: true,
        }))
    });
    gate.expect_restore().never();
    let mut log = MockEventLog::new();
    log.expect_oldest_uncommitted().returning(|_| Ok(Some(timestamp_now())));
    let r = Reconciler::new(arc(gate), arc(MockIssueStore::new())).with_log(arc(log), "recorders");
    let e = r.sync(&c, timestamp_now()).await.unwrap_err();
    assert!(
        matches!(e, Error::SyncRefused { ref reason, .. } if reason.contains("went back in time")),
        "{e}"
    );
}

#[tokio::test]
async fn sync_restores_from_the_store_then_reconciles() {
    let c = campaign(CampaignState::Open);
    let mut gate = MockIssueGate::new();
    gate.expect_counts().returning(|_| {
        Ok(Some(GateCounts {
            remaining: 5,
            pending: 0,
            seq: 2,
            fenced: false,
        }))
    });
    gate.expect_restore()
        .withf(|_, holders, floor| holders.len() == 2 && *floor == 7)
        .times(1)
        .returning(|_, _, _| {
            Ok(RestoreReport {
                users_restored: 1,
                stock_taken: 1,
                remaining: 4,
                created: false,
                unfenced: false,
            })
        });
    gate.expect_reservations().returning(|_, _, _| Ok(Vec::new()));
    let mut store = MockIssueStore::new();
    store
        .expect_holders()
        .times(1)
        .returning(|_| Ok(vec![(UserId::new("a").unwrap(), 1), (UserId::new("b").unwrap(), 1)]));
    store.expect_highest_admission_seq().times(1).returning(|_| Ok(7));
    let r = Reconciler::new(arc(gate), arc(store));
    let report = r.sync(&c, timestamp_now()).await.unwrap();
    assert_eq!(report.restore.stock_taken, 1);
}

#[tokio::test]
async fn sync_of_a_campaign_that_is_not_open_is_refused() {
    let r = Reconciler::new(arc(MockIssueGate::new()), arc(MockIssueStore::new()));
    for state in [CampaignState::Draft, CampaignState::Closed] {
        assert!(matches!(
            r.sync(&campaign(state), timestamp_now()).await,
            Err(Error::SyncRefused { .. })
        ));
    }
}

#[cfg(feature = "metrics")]
#[test]
fn a_pass_exports_its_releases_and_the_campaigns_stored_count_beside_its_stock() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use crate::memory::{MemoryGate, MemoryStore};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let campaign = campaign(CampaignState::Open);
    ::metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let (gate, store) = (Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()));
            store.create_campaign(&campaign).await.unwrap();
            gate.open(&campaign.gate_spec()).await.unwrap();
            // Admitted, never published nor stored: the pass releases it.
            let admitted = gate
                .admit(&campaign.id, &alice(), &CouponId::new(), timestamp_now())
                .await
                .unwrap();
            assert!(matches!(admitted, crate::Admission::Admitted { .. }));
            let reconciler = Reconciler::new(gate, store).with_grace(std::time::Duration::ZERO);
            assert_eq!(reconciler.reconcile_open().await.unwrap().released, 1);
        });
    });

    let (label, snapshot) = (campaign.id.to_string(), snapshotter.snapshot().into_vec());
    let value = |name: &str| {
        snapshot
            .iter()
            .find(|(key, ..)| {
                key.key().name() == name && key.key().labels().any(|l| l.key() == "campaign" && l.value() == label)
            })
            .map(|(.., value)| value)
            .unwrap_or_else(|| panic!("{name} was not exported"))
    };
    assert_eq!(value("coupon_reconciler_released_total"), &DebugValue::Counter(1));
    assert_eq!(value("coupon_campaign_stored"), &DebugValue::Gauge(0.0.into()));
    assert_eq!(value("coupon_campaign_total"), &DebugValue::Gauge(10.0.into()));
}
