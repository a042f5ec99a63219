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
    async fn restore(
        &self,
        campaign: &GateCampaign,
        holders: &[(UserId, u32)],
        seq_floor: u64,
    ) -> Result<RestoreReport, BackendError> {
        self.inner.restore(campaign, holders, seq_floor).await
    }

    async fn fence(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.inner.fence(campaign_id).await
    }
    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.inner.close(campaign_id).await
    }

    async fn forget(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.inner.forget(campaign_id).await
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

/// F3 (clock skew): a server whose clock is five minutes behind issues a coupon; its
/// admission must not look five minutes old to a reconciler. Ledger ages are measured on
/// the gate's clock, so a pass right away releases nothing and the coupon is stored (v1
/// scored the ledger with the server's clock and released it while in flight).
pub async fn f3_a_server_clock_behind_does_not_age_its_admissions(
    gate: Arc<dyn IssueGate>,
    store: Arc<dyn IssueStore>,
) {
    let mut rig = Rig::new(gate, store).await;
    let c = rig.campaign(1, 1).await;
    let behind = crate::domain::timestamp_now() - Duration::minutes(5);
    let coupon = match rig
        .issuer
        .issue_at(&c.id, &user(&c.id, 0), behind)
        .await
        .expect("issue")
    {
        IssueOutcome::Issued(coupon) => coupon,
        other => panic!("{other:?}"),
    };
    // Another host's reconciler, whatever its own clock says, asks the gate for the time.
    let report = rig.reconciler(rig.gate.clone()).reconcile_now(&c.id).await.unwrap();
    assert_eq!((report.examined, report.released), (0, 0), "{report:?}");
    let drained = rig.recorder.drain().await;
    assert_eq!((drained.stored, drained.fenced), (1, 0));
    assert_eq!(rig.issue(&c, &user(&c.id, 1)).await, IssueOutcome::SoldOut);
    rig.check_invariants(&c, &[coupon.id]).await;
}

/// F13: a close made on another server reaches this one through the gate: its issuer,
/// whose cache still says open, answers closed (410), not "not open" (409) or "gate
/// lost"; and a sync that read the campaign as open just before the close cannot
/// re-create its gate. Events already on their way are still stored.
pub async fn f13_a_close_elsewhere_is_final_here_and_a_late_sync_cannot_undo_it(
    gate: Arc<dyn IssueGate>,
    store: Arc<dyn IssueStore>,
) {
    let mut rig = Rig::new(gate, store).await;
    let c = rig.campaign(10, 1).await;
    let in_flight = issued(rig.issue(&c, &user(&c.id, 0)).await);
    // The other server: its own campaign service (and cache), same gate and store.
    let elsewhere = crate::CampaignService::new(rig.store.clone(), rig.gate.clone(), rig.reconciler(rig.gate.clone()));
    elsewhere.close(&c.id).await.unwrap();
    assert_eq!(rig.issue(&c, &user(&c.id, 1)).await, IssueOutcome::Closed);
    assert_eq!(rig.issue(&c, &user(&c.id, 2)).await, IssueOutcome::Closed);
    let drained = rig.recorder.drain().await;
    assert_eq!(drained.stored, 1, "{drained:?}");
    // `c` is the campaign as read before the close: open.
    let now = rig.gate.clock().await.unwrap();
    let e = rig.reconciler(rig.gate.clone()).sync(&c, now).await.unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
    assert_eq!(rig.issue(&c, &user(&c.id, 3)).await, IssueOutcome::Closed);
    rig.check_invariants(&c, &[in_flight.id]).await;
    assert_eq!(rig.store.issued_count(&c.id).await.unwrap(), 1);
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
    // Redis lost everything and the campaign was opened again from scratch (numbering on
    // where it was, so that the stock guard, not the number fence, is what refuses).
    rig.gate.forget(&c.id).await.unwrap();
    rig.gate.restore(&c.gate_spec(), &[], 3).await.unwrap();
    for i in 3..6 {
        issued(rig.issue(&c, &user(&c.id, i)).await);
    }
    let drained = rig.recorder.drain().await;
    assert_eq!((drained.stored, drained.fenced), (0, 3), "{drained:?}");
    assert_eq!(rig.store.issued_count(&c.id).await.unwrap(), 3);
    rig.check_invariants(&c, &acknowledged).await;
}

/// F4: the gate went back in time (a restart from an older snapshot; emulated here by
/// rebuilding it as it was after the first two admissions). It hands out admission
/// numbers again: the store refuses the first reused one, the recorder fences the
/// campaign in the gate, the issuer answers "gate lost" (503 `gate_fenced`) instead of
/// selling on a state that never existed, and a sync once the log is drained rebuilds
/// the gate from the store and numbers on above the store's highest.
pub async fn f4_a_gate_gone_back_in_time_is_fenced_until_a_sync(gate: Arc<dyn IssueGate>, store: Arc<dyn IssueStore>) {
    let mut rig = Rig::new(gate, store).await;
    let c = rig.campaign(10, 1).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        acknowledged.push(issued(rig.issue(&c, &user(&c.id, i)).await).id);
    }
    rig.recorder.drain().await;
    // Back to the snapshot: users 0 and 1 hold, two numbers given.
    rig.gate.forget(&c.id).await.unwrap();
    let snapshot: Vec<_> = (0..2).map(|i| (user(&c.id, i), 1)).collect();
    rig.gate.restore(&c.gate_spec(), &snapshot, 2).await.unwrap();
    // A new user takes number 3 again; user 3, whose coupon is stored, is admitted again.
    let reissued = issued(rig.issue(&c, &user(&c.id, 5)).await);
    let readmitted = issued(rig.issue(&c, &user(&c.id, 3)).await);
    let drained = rig.recorder.drain().await;
    assert_eq!((drained.stored, drained.fenced), (0, 2), "{drained:?}");
    let counts = rig.gate.counts(&c.id).await.unwrap().unwrap();
    assert!(counts.fenced, "the recorder fenced the campaign: {counts:?}");
    let e = rig.issuer.issue(&c.id, &user(&c.id, 6)).await.unwrap_err();
    assert!(matches!(e, crate::Error::GateLost { id } if id == c.id), "{e}");

    let now = rig.gate.clock().await.unwrap();
    let report = rig.reconciler(rig.gate.clone()).sync(&c, now).await.unwrap();
    assert!(report.restore.unfenced, "{report:?}");
    // Users 2, 3 and 4 known again: the recorder released the two refused admissions
    // (user 3's readmission among them), so nothing stays spent twice (I4).
    assert_eq!(
        report.restore.stock_taken, 3,
        "users 2, 3 and 4 known again: {report:?}"
    );
    assert_eq!(
        rig.store.issued_count(&c.id).await.unwrap() + report.restore.remaining,
        c.total_quantity,
        "I4: stored + remaining = stock after the sync: {report:?}"
    );
    assert_eq!(rig.issue(&c, &user(&c.id, 3)).await, IssueOutcome::AlreadyIssued);
    let after = issued(rig.issue(&c, &user(&c.id, 6)).await);
    let drained = rig.recorder.drain().await;
    assert_eq!((drained.stored, drained.fenced), (1, 0), "{drained:?}");
    assert_eq!(rig.store.highest_admission_seq(&c.id).await.unwrap(), 6);
    acknowledged.push(after.id);
    rig.check_invariants(&c, &acknowledged).await;
    // The price of the rollback: the two told "issued" on the old state are refused and
    // counted, never stored. Nobody holds two; nothing is sold beyond what was there.
    for lost in [reissued.id, readmitted.id] {
        assert_eq!(rig.store.coupon(&lost).await.unwrap(), None);
    }
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

/// An event log whose every `fail_every`-th publish fails before anything is written
/// (a certain failure: the issuer voids and releases at once).
pub struct FlakyLog {
    inner: MemoryLog,
    count: std::sync::atomic::AtomicU64,
    fail_every: u64,
}

impl FlakyLog {
    /// Wraps `inner`.
    pub fn new(inner: MemoryLog, fail_every: u64) -> Self {
        Self {
            inner,
            count: std::sync::atomic::AtomicU64::new(0),
            fail_every,
        }
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl EventLog for FlakyLog {
    fn backend(&self) -> &'static str {
        "flaky-memory"
    }
    async fn publish(&self, event: &crate::domain::IssueEvent) -> Result<(), BackendError> {
        if self.count.fetch_add(1, Ordering::Relaxed) % self.fail_every == self.fail_every - 1 {
            return Err(BackendError::new(
                crate::error::Component::Log,
                "flaky-memory",
                "publish",
                crate::error::ErrorKind::Unavailable,
                "injected",
            ));
        }
        self.inner.publish(event).await
    }
    async fn publish_raw(&self, payload: &[u8]) -> Result<(), BackendError> {
        self.inner.publish_raw(payload).await
    }
    async fn subscribe(&self, group: &str) -> Result<Box<dyn crate::log::EventSource>, BackendError> {
        self.inner.subscribe(group).await
    }
    async fn subscribe_dead_letters(&self, group: &str) -> Result<Box<dyn crate::log::EventSource>, BackendError> {
        self.inner.subscribe_dead_letters(group).await
    }
    async fn oldest_uncommitted(&self, group: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
        self.inner.oldest_uncommitted(group).await
    }
    async fn flush(&self, timeout: std::time::Duration) -> Result<(), BackendError> {
        self.inner.flush(timeout).await
    }
}

/// What [`flash_sale_under_faults`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlashSaleFigures {
    /// Requests made.
    pub attempts: u64,
    /// Answered "issued".
    pub issued: u64,
    /// Answered "already issued".
    pub already_issued: u64,
    /// Answered "sold out".
    pub sold_out: u64,
    /// Publishes that failed (injected): voided and released by the issuer at once.
    pub publish_failures: u64,
    /// Other errors (gate or acknowledgement timeouts on a busy machine): not "issued".
    pub other_errors: u64,
    /// Admissions that "crashed" between gate and publish.
    pub crashed: u64,
    /// Admissions of a "paused" server, published after a reconciler had voided them.
    pub paused: u64,
    /// Late events the store refused.
    pub fenced: u64,
    /// Releases by the two concurrent reconcilers and the syncs.
    pub reconciler_releases: u64,
    /// Syncs run during the sale.
    pub syncs: u64,
    /// Coupons stored at the end.
    pub stored: u64,
}

/// The flash sale of issue 2 under the faults protocol v2 must survive, over any gate and
/// store: `users` users (each tried several times) against `stock`, with per-user limit
/// `limit`; every 23rd publish fails; some admissions crash before their publish; some
/// belong to a server paused for two minutes whose events arrive after a reconciler
/// voided them; two reconcilers run concurrently all along, with operator syncs between.
/// Checks I1-I4 at the end and returns the figures.
pub async fn flash_sale_under_faults(
    gate: Arc<dyn IssueGate>,
    store: Arc<dyn IssueStore>,
    stock: u64,
    limit: u32,
    users: usize,
) -> FlashSaleFigures {
    use std::collections::{HashMap, HashSet};

    const TASKS: usize = 16;
    const CRASHED: usize = 10;
    const PAUSED: usize = 10;
    let attempts = users * limit as usize * 3;
    let memory_log = MemoryLog::new();
    let log: Arc<dyn EventLog> = Arc::new(FlakyLog::new(memory_log.clone(), 23));
    // Short deadlines, so a grace of a few seconds is safe and the reconcilers really act
    // during the sale.
    let issuer_config = IssuerConfig::default()
        .with_gate_timeout(std::time::Duration::from_millis(500))
        .with_ack_timeout(std::time::Duration::from_millis(1_000));
    let grace = issuer_config.ack_deadline() * 2;
    issuer_config.check_grace(grace).expect("a safe grace");
    let issuer = Issuer::new(
        gate.clone(),
        Some(log.clone()),
        store.clone(),
        CampaignCache::new(store.clone()),
        issuer_config,
    )
    .expect("issuer");
    let reconciler = Reconciler::new(gate.clone(), store.clone())
        .with_log(log.clone(), GROUP)
        .with_grace(grace);

    let c = open_campaign(stock, limit);
    gate.open(&c.gate_spec()).await.expect("open gate");
    store.create_campaign(&c).await.expect("create");
    let at = c.issue_starts_at + Duration::minutes(30);

    let (stop_recording, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut recorder = Recorder::new(
        log.subscribe(GROUP).await.expect("subscribe"),
        store.clone(),
        RecorderConfig::default().with_batch_wait(std::time::Duration::from_millis(5)),
    )
    .with_gate(gate.clone());
    let recording = tokio::spawn(async move { recorder.run_until(async { stopped.await.unwrap_or(()) }).await });

    // Admissions that crash before their publish, and a paused server's admissions.
    let mut held_back = Vec::new();
    for i in 0..CRASHED + PAUSED {
        let (admission, key) = admit_keyed(&*gate, &c.id, &user(&c.id, users + i), at).await;
        assert!(matches!(admission, Admission::Admitted { .. }), "{admission:?}");
        held_back.push(key);
    }
    let paused = held_back.split_off(CRASHED);

    // Let them age past the grace on the gate's clock (bounded), so the reconcilers find
    // them expired while the sale runs and race each other and the syncs to release them.
    let aged = gate.clock().await.expect("clock") + Duration::from_std(grace).expect("grace");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while gate.clock().await.expect("clock") <= aged {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gate's clock did not move on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Two reconcilers and a syncing operator, concurrently, until the sale ends.
    let selling = Arc::new(AtomicBool::new(true));
    let housekeepers: Vec<_> = (0..3)
        .map(|k| {
            let (reconciler, selling, c, gate) = (reconciler.clone(), selling.clone(), c.clone(), gate.clone());
            tokio::spawn(async move {
                let (mut released, mut syncs) = (0, 0);
                while selling.load(Ordering::Relaxed) {
                    if k == 2 {
                        let now = gate.clock().await.expect("clock");
                        released += reconciler.sync(&c, now).await.expect("sync").reconcile.released;
                        syncs += 1;
                    } else {
                        released += reconciler.reconcile_now(&c.id).await.expect("reconcile").released;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                (released, syncs)
            })
        })
        .collect();

    let sellers: Vec<_> = (0..TASKS)
        .map(|t| {
            let (issuer, c) = (issuer.clone(), c.clone());
            tokio::spawn(async move {
                let mut out = (Vec::new(), FlashSaleFigures::default());
                for i in (t..attempts).step_by(TASKS) {
                    let u = user(&c.id, (i * 7_919) % users);
                    match issuer.issue(&c.id, &u).await {
                        Ok(IssueOutcome::Issued(coupon)) => out.0.push(coupon),
                        Ok(IssueOutcome::AlreadyIssued) => out.1.already_issued += 1,
                        Ok(IssueOutcome::SoldOut) => out.1.sold_out += 1,
                        Ok(other) => panic!("unexpected {other:?}"),
                        Err(crate::Error::Backend(b)) if b.message == "injected" => out.1.publish_failures += 1,
                        Err(_) => out.1.other_errors += 1,
                    }
                }
                out
            })
        })
        .collect();
    let mut figures = FlashSaleFigures {
        attempts: attempts as u64,
        crashed: CRASHED as u64,
        paused: PAUSED as u64,
        ..FlashSaleFigures::default()
    };
    let mut acknowledged = Vec::new();
    for seller in sellers {
        let (coupons, part) = seller.await.expect("seller");
        acknowledged.extend(coupons);
        figures.already_issued += part.already_issued;
        figures.sold_out += part.sold_out;
        figures.publish_failures += part.publish_failures;
        figures.other_errors += part.other_errors;
    }
    selling.store(false, Ordering::Relaxed);
    for housekeeper in housekeepers {
        let (released, syncs) = housekeeper.await.expect("housekeeper");
        figures.reconciler_releases += released;
        figures.syncs += syncs;
    }
    figures.issued = acknowledged.len() as u64;

    // The paused server resumes two minutes later and publishes; a last pass first sees
    // everything still unacknowledged as expired (nothing is in flight any more).
    let later = gate.clock().await.expect("clock") + Duration::minutes(2);
    let last_pass = reconciler.reconcile(&c.id, later).await.expect("reconcile");
    figures.reconciler_releases += last_pass.released;
    for key in &paused {
        log.publish(&event_of(&c, key, at)).await.expect("late publish");
    }
    stop_recording.send(()).expect("recorder running");
    let recorded = recording.await.expect("recorder");
    let mut drain = Recorder::new(
        log.subscribe(GROUP).await.expect("subscribe"),
        store.clone(),
        RecorderConfig::default(),
    )
    .with_gate(gate.clone());
    let drained = drain.drain().await;
    figures.fenced = (recorded.fenced + drained.fenced) as u64;
    let final_pass = reconciler.reconcile(&c.id, later).await.expect("reconcile");
    figures.reconciler_releases += final_pass.released;
    figures.stored = store.issued_count(&c.id).await.expect("count");

    // I1: never more than the stock, in the store and in the gate.
    assert!(figures.stored <= stock, "I1: {figures:?}");
    let counts = gate.counts(&c.id).await.expect("counts").expect("campaign");
    // I3: every coupon answered "issued" is stored, as told, exactly once.
    let ids: HashSet<_> = acknowledged.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), acknowledged.len(), "I3: a coupon id answered twice");
    for coupon in &acknowledged {
        assert_eq!(
            store
                .coupon(&coupon.id)
                .await
                .expect("read")
                .as_ref()
                .map(|s| (s.user_id.clone(), s.nth)),
            Some((coupon.user_id.clone(), coupon.nth)),
            "I3: acknowledged coupon {} not stored as told; {figures:?}",
            coupon.id
        );
    }
    // I2: nobody above the limit, in the answers and in the store; no slot twice.
    let mut per_user: HashMap<&UserId, HashSet<u32>> = HashMap::new();
    for coupon in &acknowledged {
        assert!(
            per_user.entry(&coupon.user_id).or_default().insert(coupon.nth),
            "I2: slot answered twice"
        );
    }
    assert!(
        per_user.values().all(|n| n.len() <= limit as usize),
        "I2 in the answers"
    );
    let slots = store.holders(&c.id).await.expect("holders");
    let mut stored_per_user: HashMap<&UserId, u32> = HashMap::new();
    for (u, _) in &slots {
        *stored_per_user.entry(u).or_default() += 1;
    }
    assert!(stored_per_user.values().all(|n| *n <= limit), "I2 in the store");
    // The paused server's late events were all refused, none stored.
    for key in &paused {
        assert_eq!(
            store.coupon(&key.coupon_id).await.expect("read"),
            None,
            "a voided coupon was stored"
        );
    }
    assert!(figures.fenced >= PAUSED as u64, "{figures:?}");
    // I4: once everything unacknowledged is past the grace, nothing is pending and
    // every unit is either stored or back in the gate; nothing leaked, nothing invented.
    assert_eq!(counts.pending, 0, "{counts:?} {figures:?}");
    assert_eq!(counts.remaining + figures.stored, stock, "I4: {counts:?} {figures:?}");
    // Requests answered with an error may still have been stored (the user sees the coupon
    // in their list); never the other way round.
    assert!(figures.stored >= figures.issued, "{figures:?}");
    figures
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
                f3_a_server_clock_behind_does_not_age_its_admissions,
                f4_a_gate_gone_back_in_time_is_fenced_until_a_sync,
                f6_the_store_caps_a_gate_that_lost_its_state,
                f13_a_close_elsewhere_is_final_here_and_a_late_sync_cannot_undo_it,
                f10_a_replayed_dead_letter_cannot_be_sold_twice,
            ]
        );
    };
}
