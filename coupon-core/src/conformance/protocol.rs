//! The reservation protocol's scenarios, one per finding of the correctness review
//! of protocol v1 (`docs/PROTOCOL.md`). Each runs the real orchestration (issuer,
//! recorder, reconciler) over any gate and store, with an in-memory event log, and
//! checks I1-I4 against the store at the end. Pauses and stale pages are injected
//! through [`StallingGate`] and explicit clocks, never by racing sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tokio::sync::Notify;

use super::support::{admit_keyed, event_of, open_campaign, user};
use crate::domain::{
    Admission, Campaign, CampaignId, CampaignState, CouponId, Fence, GateCampaign, IssueOutcome, Reservation,
    ReservationKey, UserId,
};
use crate::error::BackendError;
use crate::gate::{AdmitRequest, GateCounts, IssueGate, RestoreReport};
use crate::log::EventLog;
use crate::memory::MemoryLog;
use crate::store::IssueStore;
use crate::{CampaignCache, Issuer, IssuerConfig, Reconciler, Recorder, RecorderConfig};

const GROUP: &str = "recorders";

/// The orchestration over one gate and store, with an in-memory log.
pub struct Rig {
    /// The gate under test.
    pub gate: Arc<dyn IssueGate>,
    /// The store under test.
    pub store: Arc<dyn IssueStore>,
    /// The log between issuer and recorder.
    pub log: MemoryLog,
    /// The hot path, acknowledging after the log.
    pub issuer: Issuer,
    /// The cold path.
    pub recorder: Recorder,
}

impl Rig {
    /// Wires issuer, recorder and log over `gate` and `store`.
    pub async fn new(gate: Arc<dyn IssueGate>, store: Arc<dyn IssueStore>) -> Self {
        let log = MemoryLog::new();
        let source = log.subscribe(GROUP).await.expect("subscribe");
        let recorder = Recorder::new(source, store.clone(), RecorderConfig::default().with_max_attempts(2))
            .with_gate(gate.clone());
        let issuer = Issuer::new(
            gate.clone(),
            Some(Arc::new(log.clone())),
            store.clone(),
            CampaignCache::new(store.clone()),
            IssuerConfig::default(),
        )
        .expect("issuer");
        Self {
            gate,
            store,
            log,
            issuer,
            recorder,
        }
    }

    /// A reconciler over `gate` (the rig's, or a wrapper of it) consulting the log.
    pub fn reconciler(&self, gate: Arc<dyn IssueGate>) -> Reconciler {
        Reconciler::new(gate, self.store.clone()).with_log(Arc::new(self.log.clone()), GROUP)
    }

    /// A campaign created and opened in store and gate.
    pub async fn campaign(&self, total: u64, limit: u32) -> Campaign {
        let c = open_campaign(total, limit);
        self.gate.open(&c.gate_spec()).await.expect("open gate");
        self.store.create_campaign(&c).await.expect("create");
        c
    }

    /// The gate's clock plus `ahead`: "later" for the reconciler, without waiting.
    pub async fn later(&self, ahead: Duration) -> DateTime<Utc> {
        self.gate.clock().await.expect("clock") + ahead
    }

    /// Issues through the hot path; the coupon when issued.
    pub async fn issue(&self, c: &Campaign, u: &UserId) -> IssueOutcome {
        self.issuer.issue(&c.id, u).await.expect("issue")
    }

    /// Checks I1 and I2 in the store, and that every coupon in `acknowledged` is stored (I3).
    pub async fn check_invariants(&self, c: &Campaign, acknowledged: &[CouponId]) {
        let stored = self.store.issued_count(&c.id).await.unwrap();
        assert!(
            stored <= c.total_quantity,
            "I1: {stored} stored for a stock of {}",
            c.total_quantity
        );
        let slots = self.store.holders(&c.id).await.unwrap();
        let mut per_user = std::collections::HashMap::<&UserId, u32>::new();
        for (u, _) in &slots {
            *per_user.entry(u).or_default() += 1;
        }
        assert!(
            per_user.values().all(|n| *n <= c.per_user_limit),
            "I2: a user holds more than {}",
            c.per_user_limit
        );
        for id in acknowledged {
            assert!(
                self.store.coupon(id).await.unwrap().is_some(),
                "I3: acknowledged coupon {id} is not stored"
            );
        }
    }
}

fn issued(outcome: IssueOutcome) -> crate::domain::Coupon {
    match outcome {
        IssueOutcome::Issued(c) => c,
        other => panic!("expected issued, got {other:?}"),
    }
}

/// A gate whose first `release` waits until [`StallingGate::resume`]: a reconciler
/// that read its page, then stalled (a slow pass, a GC-free pause) before releasing.
pub struct StallingGate {
    inner: Arc<dyn IssueGate>,
    stalled: AtomicBool,
    entered: Notify,
    resume: Notify,
}

impl StallingGate {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn IssueGate>) -> Self {
        Self {
            inner,
            stalled: AtomicBool::new(false),
            entered: Notify::new(),
            resume: Notify::new(),
        }
    }

    /// Waits until a release is stalled.
    pub async fn stalled(&self) {
        self.entered.notified().await;
    }

    /// Lets the stalled release go on.
    pub fn resume(&self) {
        self.resume.notify_one();
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl IssueGate for StallingGate {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn open(&self, campaign: &GateCampaign) -> Result<(), BackendError> {
        self.inner.open(campaign).await
    }
    async fn admit(
        &self,
        campaign_id: &CampaignId,
        user_id: &UserId,
        coupon_id: &CouponId,
        now: DateTime<Utc>,
    ) -> Result<Admission, BackendError> {
        self.inner.admit(campaign_id, user_id, coupon_id, now).await
    }
    async fn admit_many(&self, requests: &[AdmitRequest], now: DateTime<Utc>) -> Result<Vec<Admission>, BackendError> {
        self.inner.admit_many(requests, now).await
    }
    async fn release(&self, campaign_id: &CampaignId, key: &ReservationKey) -> Result<bool, BackendError> {
        if !self.stalled.swap(true, Ordering::SeqCst) {
            self.entered.notify_one();
            self.resume.notified().await;
        }
        self.inner.release(campaign_id, key).await
    }
    async fn settle(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<u64, BackendError> {
        self.inner.settle(campaign_id, keys).await
    }
    async fn reservations(
        &self,
        campaign_id: &CampaignId,
        admitted_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reservation>, BackendError> {
        self.inner.reservations(campaign_id, admitted_before, limit).await
    }
    async fn counts(&self, campaign_id: &CampaignId) -> Result<Option<GateCounts>, BackendError> {
        self.inner.counts(campaign_id).await
    }
    async fn holding(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<Vec<u32>, BackendError> {
        self.inner.holding(campaign_id, user_id).await
    }
    async fn clock(&self) -> Result<DateTime<Utc>, BackendError> {
        self.inner.clock().await
    }
    async fn restore(&self, campaign: &GateCampaign, holders: &[(UserId, u32)]) -> Result<RestoreReport, BackendError> {
        self.inner.restore(campaign, holders).await
    }
    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.inner.close(campaign_id).await
    }
}

/// F1: two reconcilers read the same page; one releases the orphan, the user is admitted
/// again, then the stale one acts on its page. It must not release the newer admission.
pub async fn f1_a_stale_reconciler_page_never_releases_a_newer_admission(
    gate: Arc<dyn IssueGate>,
    store: Arc<dyn IssueStore>,
) {
    let mut rig = Rig::new(gate, store).await;
    let c = rig.campaign(1, 1).await;
    let (u, v) = (user(&c.id, 0), user(&c.id, 1));
    // An orphan: admitted, never published (the client hung up).
    let (admission, _) = admit_keyed(&*rig.gate, &c.id, &u, c.issue_starts_at + Duration::minutes(30)).await;
    assert!(matches!(admission, Admission::Admitted { .. }));
    let later = rig.later(Duration::seconds(121)).await;

    let stalling = Arc::new(StallingGate::new(rig.gate.clone()));
    let stale = rig.reconciler(stalling.clone());
    let id = c.id;
    let stale_pass = tokio::spawn(async move { stale.reconcile(&id, later).await });
    stalling.stalled().await;
    let fresh = rig.reconciler(rig.gate.clone()).reconcile(&c.id, later).await.unwrap();
    assert_eq!(fresh.released, 1, "the first reconciler releases the orphan");

    // The user retries and is issued the unit again.
    let b = issued(rig.issue(&c, &u).await);
    stalling.resume();
    let stale_report = stale_pass.await.unwrap().unwrap();
    assert_eq!(
        stale_report.released, 0,
        "the stale page released nothing (v1 released B's entry)"
    );

    assert_eq!(rig.issue(&c, &v).await, IssueOutcome::SoldOut, "the unit is B's");
    assert_eq!(rig.issue(&c, &u).await, IssueOutcome::AlreadyIssued);
    rig.recorder.drain().await;
    assert_eq!(rig.store.issued_count(&c.id).await.unwrap(), 1);
    rig.check_invariants(&c, &[b.id]).await;
    let counts = rig.gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending), (0, 0));
}

/// F2 and F11: with a limit of 2, an orphan first admission is released while the
/// second is stored; the user's next admission takes the freed `nth`, never a held one.
pub async fn f2_a_released_lower_nth_is_reused_and_a_held_one_never(
    gate: Arc<dyn IssueGate>,
    store: Arc<dyn IssueStore>,
) {
    let mut rig = Rig::new(gate, store).await;
    let c = rig.campaign(10, 2).await;
    let u = user(&c.id, 0);
    let (orphan, _) = admit_keyed(&*rig.gate, &c.id, &u, c.issue_starts_at + Duration::minutes(30)).await;
    assert!(matches!(orphan, Admission::Admitted { nth: 1, .. }));
    let b = issued(rig.issue(&c, &u).await);
    assert_eq!(b.nth, 2);
    rig.recorder.drain().await;

    let later = rig.later(Duration::seconds(121)).await;
    let report = rig.reconciler(rig.gate.clone()).reconcile(&c.id, later).await.unwrap();
    assert_eq!(
        (report.released, report.settled),
        (1, 0),
        "the recorder settled B; {report:?}"
    );
    assert_eq!(rig.gate.holding(&c.id, &u).await.unwrap(), vec![2]);

    let next = issued(rig.issue(&c, &u).await);
    assert_eq!(next.nth, 1, "the freed nth, not the held 2 (v1 reused 2)");
    let drained = rig.recorder.drain().await;
    assert_eq!((drained.stored, drained.fenced), (1, 0));
    assert_eq!(rig.issue(&c, &u).await, IssueOutcome::AlreadyIssued);
    rig.check_invariants(&c, &[b.id, next.id]).await;
    let counts = rig.gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending), (8, 0), "no unit leaked");
    assert_eq!(rig.store.issued_count(&c.id).await.unwrap(), 2);
    // F11: a later pass finds nothing and ends.
    let again = rig.reconciler(rig.gate.clone()).reconcile(&c.id, later).await.unwrap();
    assert_eq!(again.examined, 0);
}

/// F3: a server paused between admit and publish past the grace period: the reconciler
/// voids and releases the admission and the unit is sold again; when the paused
/// server's event finally arrives, the store refuses it. Nothing is sold twice.
pub async fn f3_an_event_arriving_after_its_release_is_refused(gate: Arc<dyn IssueGate>, store: Arc<dyn IssueStore>) {
    let mut rig = Rig::new(gate, store).await;
    let c = rig.campaign(1, 1).await;
    let (u, v) = (user(&c.id, 0), user(&c.id, 1));
    let at = c.issue_starts_at + Duration::minutes(30);
    let (admission, key) = admit_keyed(&*rig.gate, &c.id, &u, at).await;
    assert!(matches!(admission, Admission::Admitted { .. }));
    // The paused server's event, built but not yet published.
    let late = event_of(&c, &key, at);

    let later = rig.later(Duration::seconds(121)).await;
    let report = rig.reconciler(rig.gate.clone()).reconcile(&c.id, later).await.unwrap();
    assert_eq!(report.released, 1);
    let sold_again = issued(rig.issue(&c, &v).await);

    // The server resumes and publishes.
    rig.log.publish(&late).await.unwrap();
    let drained = rig.recorder.drain().await;
    assert_eq!((drained.stored, drained.fenced), (1, 1), "{drained:?}");
    assert_eq!(rig.store.coupon(&late.coupon_id).await.unwrap(), None);
    assert_eq!(rig.store.issued_count(&c.id).await.unwrap(), 1, "v1 stored 2 of 1");
    let letters = rig.log.dead_letters();
    let error = crate::log::dead_letter_headers::ERROR;
    assert!(
        letters
            .iter()
            .any(|l| l.header(error).is_some_and(|e| e.contains(Fence::Voided.as_str()))),
        "{letters:?}"
    );
    rig.check_invariants(&c, &[sold_again.id]).await;
}

/// F6: a gate that lost its state (here: forgotten and opened afresh) admits beyond the
/// stock; the store never stores more than the stock, and says so per event.
pub async fn f6_the_store_caps_a_gate_that_lost_its_state(gate: Arc<dyn IssueGate>, store: Arc<dyn IssueStore>) {
    let mut rig = Rig::new(gate, store).await;
    let c = rig.campaign(3, 1).await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        acknowledged.push(issued(rig.issue(&c, &user(&c.id, i)).await).id);
    }
    rig.recorder.drain().await;
    // Redis lost everything and the campaign was opened again from scratch.
    rig.gate.close(&c.id).await.unwrap();
    rig.gate.open(&c.gate_spec()).await.unwrap();
    for i in 3..6 {
        issued(rig.issue(&c, &user(&c.id, i)).await);
    }
    let drained = rig.recorder.drain().await;
    assert_eq!((drained.stored, drained.fenced), (0, 3), "{drained:?}");
    assert_eq!(rig.store.issued_count(&c.id).await.unwrap(), 3);
    rig.check_invariants(&c, &acknowledged).await;
}

/// F10: an event dead-lettered after the store kept refusing it has its admission
/// voided, so replaying the dead letter after the reconciler re-sold the unit is refused.
pub async fn f10_a_replayed_dead_letter_cannot_be_sold_twice(gate: Arc<dyn IssueGate>, store: Arc<dyn IssueStore>) {
    let mut rig = Rig::new(gate, store).await;
    // In the store the campaign is still a draft (its opening had not landed yet), so the
    // store refuses the event; the gate already sells.
    let mut c = open_campaign(1, 1);
    c.state = CampaignState::Draft;
    rig.store.create_campaign(&c).await.unwrap();
    rig.gate.open(&c.gate_spec()).await.unwrap();
    let u = user(&c.id, 0);
    let at = c.issue_starts_at + Duration::minutes(30);
    let (_, key) = admit_keyed(&*rig.gate, &c.id, &u, at).await;
    let first = event_of(&c, &key, at);
    rig.log.publish(&first).await.unwrap();
    let drained = rig.recorder.drain().await;
    assert_eq!(drained.dead_lettered, 1);
    rig.store.set_campaign_state(&c.id, CampaignState::Open).await.unwrap();

    let later = rig.later(Duration::seconds(121)).await;
    assert_eq!(
        rig.reconciler(rig.gate.clone())
            .reconcile(&c.id, later)
            .await
            .unwrap()
            .released,
        1
    );
    let v = issued(rig.issue(&c, &user(&c.id, 1)).await);
    rig.recorder.drain().await;
    // The operator replays the dead letter.
    let letter = rig.log.dead_letters().pop().unwrap();
    rig.log.publish_raw(&letter.payload).await.unwrap();
    let drained = rig.recorder.drain().await;
    assert_eq!(drained.fenced, 1, "{drained:?}");
    assert_eq!(rig.store.issued_count(&c.id).await.unwrap(), 1);
    rig.check_invariants(&c, &[v.id]).await;
}

#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_tests {
    ($make:expr, [$($name:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((gate, store)) = $make else { return };
                $crate::conformance::protocol::$name(gate, store).await;
            }
        )*
    };
}

/// Generates one `#[tokio::test]` per protocol scenario. `$make` gives
/// `Option<(Arc<dyn IssueGate>, Arc<dyn IssueStore>)>`; `None` skips.
#[macro_export]
macro_rules! protocol_conformance {
    ($make:expr) => {
        $crate::__protocol_tests!(
            $make,
            [
                f1_a_stale_reconciler_page_never_releases_a_newer_admission,
                f2_a_released_lower_nth_is_reused_and_a_held_one_never,
                f3_an_event_arriving_after_its_release_is_refused,
                f6_the_store_caps_a_gate_that_lost_its_state,
                f10_a_replayed_dead_letter_cannot_be_sold_twice,
            ]
        );
    };
}
