//! Every branch of the hot path, with mocked backends.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{
    Admission, Campaign, CampaignState, CouponId, GateCampaign, Reservation, ReservationKey, VoidOutcome,
};
use crate::gate::{AdmitRequest, GateCounts, MockIssueGate, RestoreReport};
use crate::log::MockEventLog;
use crate::store::MockIssueStore;
use crate::test_support::*;

fn gate_admitting(nth: u32) -> MockIssueGate {
    let mut gate = MockIssueGate::new();
    gate.expect_backend().return_const("mock");
    gate.expect_admit().times(1).returning(move |_, _, _, _| {
        Ok(Admission::Admitted {
            nth,
            remaining: 5,
            seq: 1,
            admitted_at: crate::domain::timestamp_now(),
        })
    });
    gate
}

/// `store_serving`, also voiding whatever it is asked to (the fenced release path).
fn store_voiding(campaign: &Campaign) -> MockIssueStore {
    let mut store = store_serving(campaign);
    store
        .expect_void()
        .times(1)
        .returning(|_, keys| Ok(vec![VoidOutcome::Voided; keys.len()]));
    store
}

fn issuer(gate: MockIssueGate, log: Option<MockEventLog>, store: MockIssueStore, ack: AckMode) -> Issuer {
    let store: Arc<dyn IssueStore> = arc(store);
    let log = log.map(|l| arc(l) as Arc<dyn EventLog>);
    Issuer::new(
        arc(gate),
        log,
        store.clone(),
        CampaignCache::new(store),
        IssuerConfig::default().with_ack(ack),
    )
    .unwrap()
}

fn log_publishing(result: fn() -> Result<(), BackendError>) -> MockEventLog {
    let mut log = MockEventLog::new();
    log.expect_backend().return_const("mock");
    log.expect_publish().times(1).returning(move |_| result());
    log
}

#[tokio::test]
async fn after_log_answers_issued_once_the_log_accepted() {
    let c = campaign(CampaignState::Open);
    let log = log_publishing(|| Ok(()));
    let i = issuer(gate_admitting(1), Some(log), store_serving(&c), AckMode::AfterLog);
    match i.issue(&c.id, &alice()).await.unwrap() {
        IssueOutcome::Issued(coupon) => {
            assert_eq!((coupon.campaign_id, coupon.user_id, coupon.nth), (c.id, alice(), 1));
            assert_eq!(coupon.valid_until, c.validity.valid_until(coupon.issued_at));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn publish_failure_releases_the_reservation_and_says_log() {
    let c = campaign(CampaignState::Open);
    let mut gate = gate_admitting(1);
    gate.expect_release()
        .withf(move |id, key| *id == c.id && (key.user_id.clone(), key.nth) == (alice(), 1))
        .times(1)
        .returning(|_, _| Ok(true));
    let log = log_publishing(|| Err(err(Component::Log, ErrorKind::Unavailable)));
    let i = issuer(gate, Some(log), store_voiding(&c), AckMode::AfterLog);
    let e = i.issue(&c.id, &alice()).await.unwrap_err();
    assert!(matches!(&e, Error::Backend(b) if b.component == Component::Log), "{e}");
}

#[tokio::test]
async fn publish_with_unknown_outcome_leaves_the_reservation_to_the_reconciler() {
    let c = campaign(CampaignState::Open);
    let mut gate = gate_admitting(1);
    gate.expect_release().never();
    let log = log_publishing(|| Err(err(Component::Log, ErrorKind::OutcomeUnknown)));
    let i = issuer(gate, Some(log), store_serving(&c), AckMode::AfterLog);
    let e = i.issue(&c.id, &alice()).await.unwrap_err();
    assert!(e.is_retryable());
}

#[tokio::test]
async fn gate_unavailable_fails_without_publishing() {
    let c = campaign(CampaignState::Open);
    let mut gate = MockIssueGate::new();
    gate.expect_admit()
        .returning(|_, _, _, _| Err(err(Component::Gate, ErrorKind::Unavailable)));
    let mut log = MockEventLog::new();
    log.expect_publish().never();
    let i = issuer(gate, Some(log), store_serving(&c), AckMode::AfterLog);
    let e = i.issue(&c.id, &alice()).await.unwrap_err();
    assert!(matches!(&e, Error::Backend(b) if b.component == Component::Gate), "{e}");
}

/// A gate that never answers (a paused Redis, say).
struct HangingGate;

#[async_trait]
impl IssueGate for HangingGate {
    fn backend(&self) -> &'static str {
        "hanging"
    }
    async fn open(&self, _: &GateCampaign) -> Result<(), BackendError> {
        unreachable!()
    }
    async fn admit(
        &self,
        _: &CampaignId,
        _: &UserId,
        _: &CouponId,
        _: DateTime<Utc>,
    ) -> Result<Admission, BackendError> {
        std::future::pending().await
    }
    async fn admit_many(&self, _: &[AdmitRequest], _: DateTime<Utc>) -> Result<Vec<Admission>, BackendError> {
        std::future::pending().await
    }
    async fn release(&self, _: &CampaignId, _: &ReservationKey) -> Result<bool, BackendError> {
        unreachable!()
    }
    async fn settle(&self, _: &CampaignId, _: &[ReservationKey]) -> Result<u64, BackendError> {
        unreachable!()
    }
    async fn reservations(&self, _: &CampaignId, _: DateTime<Utc>, _: usize) -> Result<Vec<Reservation>, BackendError> {
        unreachable!()
    }
    async fn counts(&self, _: &CampaignId) -> Result<Option<GateCounts>, BackendError> {
        unreachable!()
    }
    async fn holding(&self, _: &CampaignId, _: &UserId) -> Result<Vec<u32>, BackendError> {
        unreachable!()
    }
    async fn restore(&self, _: &GateCampaign, _: &[(UserId, u32)], _: u64) -> Result<RestoreReport, BackendError> {
        unreachable!()
    }
    async fn fence(&self, _: &CampaignId) -> Result<(), BackendError> {
        unreachable!()
    }
    async fn close(&self, _: &CampaignId) -> Result<(), BackendError> {
        unreachable!()
    }
    async fn forget(&self, _: &CampaignId) -> Result<(), BackendError> {
        unreachable!()
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_gate_fails_fast_at_the_gate_timeout() {
    let c = campaign(CampaignState::Open);
    let store: Arc<dyn IssueStore> = arc(store_serving(&c));
    let config = IssuerConfig::default().with_gate_timeout(Duration::from_millis(200));
    let i = Issuer::new(
        arc(HangingGate),
        Some(arc(MockEventLog::new())),
        store.clone(),
        CampaignCache::new(store),
        config,
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    let e = i.issue(&c.id, &alice()).await.unwrap_err();
    // Virtual time: exactly the configured timeout passed, not a real-time measurement.
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    match e {
        Error::Backend(b) => {
            assert_eq!(
                (b.component, b.kind, b.operation),
                (Component::Gate, ErrorKind::OutcomeUnknown, "admit")
            );
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn refusals_from_the_gate_publish_nothing() {
    let c = campaign(CampaignState::Open);
    for (admission, outcome) in [
        (Admission::SoldOut, IssueOutcome::SoldOut),
        (Admission::AlreadyIssued, IssueOutcome::AlreadyIssued),
        (Admission::Closed, IssueOutcome::Closed),
    ] {
        let mut gate = MockIssueGate::new();
        gate.expect_admit().times(1).returning(move |_, _, _, _| Ok(admission));
        let mut log = MockEventLog::new();
        log.expect_publish().never();
        let i = issuer(gate, Some(log), store_serving(&c), AckMode::AfterLog);
        assert_eq!(i.issue(&c.id, &alice()).await.unwrap(), outcome);
    }
}

#[tokio::test]
async fn the_campaign_check_answers_without_the_gate() {
    let open = campaign(CampaignState::Open);
    let cases = [
        (campaign(CampaignState::Draft), None, IssueOutcome::NotOpen),
        (campaign(CampaignState::Closed), None, IssueOutcome::Closed),
        (
            open.clone(),
            Some(open.issue_starts_at - chrono::Duration::seconds(1)),
            IssueOutcome::NotOpen,
        ),
        (open.clone(), Some(open.issue_ends_at), IssueOutcome::Closed),
    ];
    for (c, at, outcome) in cases {
        let mut gate = MockIssueGate::new();
        gate.expect_admit().never();
        let i = issuer(gate, Some(MockEventLog::new()), store_serving(&c), AckMode::AfterLog);
        let at = at.unwrap_or_else(crate::domain::timestamp_now);
        assert_eq!(i.issue_at(&c.id, &alice(), at).await.unwrap(), outcome);
    }
    let mut store = MockIssueStore::new();
    store.expect_campaign().times(1).returning(|_| Ok(None));
    let mut gate = MockIssueGate::new();
    gate.expect_admit().never();
    let i = issuer(gate, Some(MockEventLog::new()), store, AckMode::AfterLog);
    let missing = CampaignId::new();
    assert_eq!(
        i.issue(&missing, &alice()).await.unwrap(),
        IssueOutcome::CampaignNotFound
    );
    assert_eq!(
        i.issue(&missing, &alice()).await.unwrap(),
        IssueOutcome::CampaignNotFound,
        "negative answer cached"
    );
}

#[tokio::test]
async fn store_unreachable_while_loading_the_campaign_is_a_store_error() {
    let mut store = MockIssueStore::new();
    store
        .expect_campaign()
        .returning(|_| Err(err(Component::Store, ErrorKind::Unavailable)));
    let mut gate = MockIssueGate::new();
    gate.expect_admit().never();
    let i = issuer(gate, Some(MockEventLog::new()), store, AckMode::AfterLog);
    let e = i.issue(&CampaignId::new(), &alice()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Backend(b) if b.component == Component::Store),
        "{e}"
    );
}

#[tokio::test]
async fn after_gate_answers_first_and_releases_if_the_background_publish_fails() {
    let c = campaign(CampaignState::Open);
    let mut gate = gate_admitting(1);
    gate.expect_release().times(1).returning(|_, _| Ok(true));
    let log = log_publishing(|| Err(err(Component::Log, ErrorKind::Unavailable)));
    let i = issuer(gate, Some(log), store_voiding(&c), AckMode::AfterGate);
    assert!(matches!(
        i.issue(&c.id, &alice()).await.unwrap(),
        IssueOutcome::Issued(_)
    ));
    i.flush().await; // the mock's `times(1)` is checked when it drops
}

#[tokio::test]
async fn after_store_records_then_settles() {
    let c = campaign(CampaignState::Open);
    let mut gate = gate_admitting(1);
    gate.expect_settle().times(1).returning(|_, keys| Ok(keys.len() as u64));
    let mut store = store_serving(&c);
    store
        .expect_record()
        .times(1)
        .returning(|events| Ok(vec![RecordOutcome::Stored; events.len()]));
    let i = issuer(gate, None, store, AckMode::AfterStore);
    assert!(matches!(
        i.issue(&c.id, &alice()).await.unwrap(),
        IssueOutcome::Issued(_)
    ));
}

#[tokio::test]
async fn after_store_rejection_releases() {
    let c = campaign(CampaignState::Open);
    let mut gate = gate_admitting(1);
    gate.expect_release().times(1).returning(|_, _| Ok(true));
    gate.expect_settle().never();
    let mut store = store_voiding(&c);
    store.expect_record().times(1).returning(|_| {
        Ok(vec![RecordOutcome::Rejected {
            reason: crate::domain::RejectReason::OutsideWindow,
        }])
    });
    let i = issuer(gate, None, store, AckMode::AfterStore);
    let e = i.issue(&c.id, &alice()).await.unwrap_err();
    assert!(matches!(&e, Error::Backend(b) if b.kind == ErrorKind::Rejected), "{e}");
}

#[test]
fn log_modes_need_a_log() {
    let store: Arc<dyn IssueStore> = arc(MockIssueStore::new());
    let made = Issuer::new(
        arc(MockIssueGate::new()),
        None,
        store.clone(),
        CampaignCache::new(store),
        IssuerConfig::default(),
    );
    assert!(matches!(made, Err(Error::Validation(_))));
    assert_eq!("after-gate".parse::<AckMode>().unwrap(), AckMode::AfterGate);
    assert!("sometime".parse::<AckMode>().is_err());
}

/// An event log whose publish is acknowledged only after the process was "paused" for
/// two minutes (virtual time jumps while the publish is in flight, as a SIGSTOP would).
struct PausedDuringPublish;

#[async_trait]
impl EventLog for PausedDuringPublish {
    fn backend(&self) -> &'static str {
        "paused"
    }
    async fn publish(&self, _: &IssueEvent) -> Result<(), BackendError> {
        tokio::time::advance(Duration::from_secs(120)).await;
        Ok(())
    }
    async fn publish_raw(&self, _: &[u8]) -> Result<(), BackendError> {
        unreachable!()
    }
    async fn subscribe(&self, _: &str) -> Result<Box<dyn crate::log::EventSource>, BackendError> {
        unreachable!()
    }
    async fn subscribe_dead_letters(&self, _: &str) -> Result<Box<dyn crate::log::EventSource>, BackendError> {
        unreachable!()
    }
    async fn oldest_uncommitted(&self, _: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
        unreachable!()
    }
}

/// F3: a reconciler may void an admission while its process is paused; an issuer that
/// resumes past its acknowledgement deadline must not answer "issued" for it.
#[tokio::test(start_paused = true)]
async fn f3_an_acknowledgement_past_the_deadline_is_not_answered_issued() {
    let c = campaign(CampaignState::Open);
    let store: Arc<dyn IssueStore> = arc(store_serving(&c));
    let i = Issuer::new(
        arc(gate_admitting(1)),
        Some(arc(PausedDuringPublish)),
        store.clone(),
        CampaignCache::new(store),
        IssuerConfig::default(),
    )
    .unwrap();
    let e = i.issue(&c.id, &alice()).await.unwrap_err();
    match e {
        Error::Backend(b) => assert_eq!(
            (b.component, b.kind),
            (Component::Log, ErrorKind::OutcomeUnknown),
            "{b}"
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn a_grace_shorter_than_twice_the_ack_deadline_is_refused() {
    let config = IssuerConfig::default();
    assert_eq!(config.ack_deadline(), Duration::from_millis(5_500));
    let e = config.check_grace(Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("reconcile_grace"), "{e}");
    config.check_grace(Duration::from_secs(11)).unwrap();
}

/// F4: the store says open and in the window, the gate answers "not open": it lost the
/// campaign. The issuer fails closed with its own error (503 `gate_fenced` in the server)
/// instead of telling the user the campaign is not open.
#[tokio::test]
async fn a_gate_that_lost_an_open_campaign_fails_closed() {
    let c = campaign(CampaignState::Open);
    let mut gate = MockIssueGate::new();
    gate.expect_admit()
        .times(1)
        .returning(|_, _, _, _| Ok(Admission::NotOpen));
    let mut log = MockEventLog::new();
    log.expect_publish().never();
    let i = issuer(gate, Some(log), store_serving(&c), AckMode::AfterLog);
    let e = i.issue(&c.id, &alice()).await.unwrap_err();
    assert!(matches!(e, Error::GateLost { id } if id == c.id), "{e}");
    assert!(e.is_retryable());
}

/// A broker that never answers.
struct SilentLog;

#[async_trait]
impl EventLog for SilentLog {
    fn backend(&self) -> &'static str {
        "silent"
    }
    async fn publish(&self, _: &IssueEvent) -> Result<(), BackendError> {
        std::future::pending().await
    }
    async fn publish_raw(&self, _: &[u8]) -> Result<(), BackendError> {
        unreachable!()
    }
    async fn subscribe(&self, _: &str) -> Result<Box<dyn crate::log::EventSource>, BackendError> {
        unreachable!()
    }
    async fn subscribe_dead_letters(&self, _: &str) -> Result<Box<dyn crate::log::EventSource>, BackendError> {
        unreachable!()
    }
    async fn oldest_uncommitted(&self, _: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
        unreachable!()
    }
}

/// F15: after-gate background publishes are bounded. With the broker silent, once the
/// bound is reached the next request is refused (503, retryable) before the gate is
/// touched: no stock taken for it. Places come back as publishes end (here: time out).
#[tokio::test(start_paused = true)]
async fn f15_after_gate_refuses_before_the_gate_once_background_publishes_are_full() {
    let c = campaign(CampaignState::Open);
    let gate = Arc::new(crate::memory::MemoryGate::new());
    gate.open(&c.gate_spec()).await.unwrap();
    let store: Arc<dyn IssueStore> = arc(store_serving(&c));
    let i = Issuer::new(
        gate.clone(),
        Some(arc(SilentLog)),
        store.clone(),
        CampaignCache::new(store),
        IssuerConfig::default()
            .with_ack(AckMode::AfterGate)
            .with_ack_timeout(Duration::from_secs(1))
            .with_max_background_publishes(2),
    )
    .unwrap();
    let user = |n: usize| UserId::new(format!("user-{n}")).unwrap();
    for n in 0..2 {
        assert!(matches!(
            i.issue(&c.id, &user(n)).await.unwrap(),
            IssueOutcome::Issued(_)
        ));
    }
    let remaining = gate.counts(&c.id).await.unwrap().unwrap().remaining;
    match i.issue(&c.id, &user(2)).await.unwrap_err() {
        Error::Backend(b) => {
            assert_eq!((b.component, b.kind), (Component::Log, ErrorKind::Unavailable), "{b}");
            assert!(b.to_string().contains("2 background publishes are in flight"), "{b}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        gate.counts(&c.id).await.unwrap().unwrap().remaining,
        remaining,
        "the refused request took no stock"
    );
    assert!(gate.holding(&c.id, &user(2)).await.unwrap().is_empty());
    // The silent publishes time out (outcome unknown: left to the reconciler); their
    // places come back.
    i.flush().await;
    assert!(matches!(
        i.issue(&c.id, &user(3)).await.unwrap(),
        IssueOutcome::Issued(_)
    ));
}
