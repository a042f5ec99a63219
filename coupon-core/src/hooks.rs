//! Post-processing hooks: user code told, at least once, that a coupon was stored or
//! redeemed (an e-mail, a push, a chat message), without slowing the sale.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use coupon_core::hooks::{CouponHook, HookError, HookRunner};
//! use coupon_core::memory::MemoryStore;
//! use coupon_core::Coupon;
//!
//! struct Mailer;
//!
//! #[async_trait]
//! impl CouponHook for Mailer {
//!     async fn stored(&self, coupon: &Coupon) -> Result<(), HookError> {
//!         println!("mail {}: your coupon {} is ready", coupon.user_id, coupon.id);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), coupon_core::BackendError> {
//! let store = Arc::new(MemoryStore::new());
//! let runner = HookRunner::new(store, Arc::new(Mailer));
//! // One pass delivers what is pending; `run_until` repeats it every `poll_every`.
//! let pass = runner.run_pass().await?;
//! assert_eq!(pass.delivered, 0);
//! # Ok(())
//! # }
//! ```
//!
//! **Where the notices come from: the store, as an outbox.** A coupon is stored with its
//! "stored" notice pending, in the same insert (the SQL stores do so when configured
//! with `StoreConfig::with_stored_notices`, off by default so that a store without
//! hooks pays nothing; the memory store always does), and a redemption raises the
//! "redeemed" notice in the same statement that redeems. [`HookRunner`] reads the
//! pending notices in coupon id order, calls the hook, and clears each notice it
//! delivered. Neither the recorder nor a consumer group of its own runs the hooks,
//! because:
//!
//! - only the store knows which admissions became coupons: the log also holds events
//!   that were voided, refused or fenced, and a recorder that ran hooks would have to
//!   commit its offsets before they were delivered (a crash would lose notices) or after
//!   (a slow hook would hold up the store path);
//! - redemptions never enter the log;
//! - it works the same on every backend, the embedded setup included.
//!
//! **At least once.** A notice is cleared only after its hook call returned `Ok`; a
//! process that dies in between calls it again. Hooks should be idempotent: the coupon
//! id is the natural key. A coupon's "stored" notice is delivered before its "redeemed".
//!
//! **Never in the way.** The runner is a task of its own with its own queries; a
//! failing hook is retried with exponential backoff and jitter, per notice, while the
//! others go on; calls run [`HookConfig::concurrency`] at a time, each bounded by
//! [`HookConfig::call_timeout`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::domain::{Coupon, CouponId};
use crate::error::BackendError;
use crate::store::IssueStore;

/// What a hook failure carries (any error; it is logged and the call retried).
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// Code told about coupons after the fact. Called at least once per notice, possibly
/// concurrently for different coupons; never for a coupon that was not stored.
#[async_trait]
pub trait CouponHook: Send + Sync + 'static {
    /// The coupon is stored: the customer holds it for good.
    async fn stored(&self, coupon: &Coupon) -> Result<(), HookError>;

    /// The coupon was redeemed (`coupon.order_id` names the order). By default, nothing.
    async fn redeemed(&self, coupon: &Coupon) -> Result<(), HookError> {
        let _ = coupon;
        Ok(())
    }
}

/// Which event of a coupon's life a notice tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The coupon was stored.
    Stored,
    /// The coupon was redeemed.
    Redeemed,
}

impl Notice {
    /// Both notices, in the order they are delivered.
    pub const ALL: [Notice; 2] = [Notice::Stored, Notice::Redeemed];

    /// The notice's bit in a store's `pending_notice` column.
    pub fn bit(self) -> i16 {
        match self {
            Notice::Stored => 1,
            Notice::Redeemed => 2,
        }
    }

    /// The notices whose bits are set in `bits`, in delivery order.
    pub fn from_bits(bits: i16) -> Vec<Notice> {
        Notice::ALL.into_iter().filter(|n| bits & n.bit() != 0).collect()
    }

    /// The name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Stored => "stored",
            Notice::Redeemed => "redeemed",
        }
    }
}

/// A coupon with the notices still to deliver for it ([`IssueStore::pending_notices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingNotices {
    /// The coupon as stored now.
    pub coupon: Coupon,
    /// Its notices not yet delivered, in delivery order.
    pub notices: Vec<Notice>,
}

impl PendingNotices {
    /// A coupon with these pending notices.
    pub fn new(coupon: Coupon, notices: Vec<Notice>) -> Self {
        Self { coupon, notices }
    }
}

/// How a [`HookRunner`] paces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// Pending coupons read per query.
    pub page: usize,
    /// Hook calls in flight at once.
    pub concurrency: usize,
    /// How long one hook call may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// The wait after a notice's first failure; it doubles per failure, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest wait between two attempts at one notice.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// The pause between passes in [`HookRunner::run_until`].
    #[serde(with = "humantime_serde")]
    pub poll_every: Duration,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            page: 500,
            concurrency: 16,
            call_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            poll_every: Duration::from_secs(1),
        }
    }
}

/// What one [`HookRunner::run_pass`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookPass {
    /// Notices delivered and cleared.
    pub delivered: usize,
    /// Hook calls that failed (or timed out); each is retried after its backoff.
    pub failed: usize,
    /// Notices left for a later pass: waiting out a backoff, or behind a failed
    /// "stored" of the same coupon.
    pub deferred: usize,
}

/// When a failed notice may be tried again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before: Instant,
}

/// Delivers the store's pending notices to a [`CouponHook`] (module docs).
pub struct HookRunner {
    store: Arc<dyn IssueStore>,
    hook: Arc<dyn CouponHook>,
    config: HookConfig,
    retries: Mutex<HashMap<(CouponId, Notice), Retry>>,
}

impl std::fmt::Debug for HookRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRunner")
            .field("store", &self.store.backend())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The outcome of one coupon's calls in a pass.
struct CouponCalls {
    id: CouponId,
    delivered: Vec<Notice>,
    failed: Option<Notice>,
    deferred: usize,
}

impl HookRunner {
    /// A runner with the default [`HookConfig`].
    pub fn new(store: Arc<dyn IssueStore>, hook: Arc<dyn CouponHook>) -> Self {
        Self::with_config(store, hook, HookConfig::default())
    }

    /// A runner paced by `config` (a page or concurrency of 0 counts as 1).
    pub fn with_config(store: Arc<dyn IssueStore>, hook: Arc<dyn CouponHook>, config: HookConfig) -> Self {
        // At zero from the start: an alert on `increase()` needs the series to exist.
        #[cfg(feature = "metrics")]
        for notice in Notice::ALL {
            crate::layers::metrics::hook_calls(notice, 0, 0);
        }
        Self {
            store,
            hook,
            config,
            retries: Mutex::new(HashMap::new()),
        }
    }

    /// Reads every pending notice once, page by page, delivers those not waiting out a
    /// backoff, and clears the delivered ones. A store error ends the pass (what was
    /// delivered before it stays cleared, or is delivered again: at least once).
    pub async fn run_pass(&self) -> Result<HookPass, BackendError> {
        let page = self.config.page.max(1);
        let mut pass = HookPass::default();
        let mut after = None;
        loop {
            let pending = self.store.pending_notices(after, page).await?;
            let Some(last) = pending.last() else { break };
            after = Some(last.coupon.id);
            let full = pending.len() == page;
            let calls: Vec<CouponCalls> = futures::stream::iter(pending)
                .map(|p| self.deliver(p))
                .buffer_unordered(self.config.concurrency.max(1))
                .collect()
                .await;
            for notice in Notice::ALL {
                let ids: Vec<CouponId> = calls
                    .iter()
                    .filter(|c| c.delivered.contains(&notice))
                    .map(|c| c.id)
                    .collect();
                if !ids.is_empty() {
                    self.store.clear_notices(notice, &ids).await?;
                }
                #[cfg(feature = "metrics")]
                crate::layers::metrics::hook_calls(
                    notice,
                    ids.len(),
                    calls.iter().filter(|c| c.failed == Some(notice)).count(),
                );
            }
            for c in &calls {
                pass.delivered += c.delivered.len();
                pass.failed += usize::from(c.failed.is_some());
                pass.deferred += c.deferred;
            }
            if !full {
                break;
            }
        }
        Ok(pass)
    }

    /// One coupon's notices, in order; stops at the first that fails or must wait.
    async fn deliver(&self, pending: PendingNotices) -> CouponCalls {
        let PendingNotices { coupon, notices } = pending;
        let mut calls = CouponCalls {
            id: coupon.id,
            delivered: Vec::new(),
            failed: None,
            deferred: 0,
        };
        for (i, notice) in notices.iter().copied().enumerate() {
            let key = (coupon.id, notice);
            let waiting = self.retries.lock().expect("hook retries").get(&key).copied();
            if waiting.is_some_and(|r| r.not_before > Instant::now()) {
                calls.deferred = notices.len() - i;
                break;
            }
            let call = async {
                match notice {
                    Notice::Stored => self.hook.stored(&coupon).await,
                    Notice::Redeemed => self.hook.redeemed(&coupon).await,
                }
            };
            let result = match tokio::time::timeout(self.config.call_timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {:?}", self.config.call_timeout).into()),
            };
            match result {
                Ok(()) => {
                    self.retries.lock().expect("hook retries").remove(&key);
                    calls.delivered.push(notice);
                }
                Err(e) => {
                    let failures = waiting.map_or(1, |r| r.failures + 1);
                    let delay = self.backoff(failures);
                    tracing::warn!(coupon = %coupon.id, notice = notice.as_str(), failures, retry_in = ?delay, error = %e, "hook failed");
                    self.retries.lock().expect("hook retries").insert(
                        key,
                        Retry {
                            failures,
                            not_before: Instant::now() + delay,
                        },
                    );
                    calls.failed = Some(notice);
                    calls.deferred = notices.len() - i - 1;
                    break;
                }
            }
        }
        calls
    }

    /// The wait after the `failures`-th failure in a row: doubling from
    /// `backoff_initial` up to `backoff_max`, with jitter (backon).
    fn backoff(&self, failures: u32) -> Duration {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::new()
            .with_min_delay(self.config.backoff_initial)
            .with_max_delay(self.config.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(failures.saturating_sub(1) as usize)
            .unwrap_or(self.config.backoff_max)
    }

    /// Runs a pass every [`HookConfig::poll_every`] until `shutdown` completes. A store
    /// error is logged and the next pass tries again; shutdown does not wait for a pass.
    pub async fn run_until(&self, shutdown: impl std::future::Future<Output = ()>) {
        crate::periodic::run_every(self.config.poll_every, true, shutdown, || async {
            if let Err(e) = self.run_pass().await {
                tracing::warn!(error = %e, "hook runner: reading or clearing notices failed");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::{CampaignState, IssueEvent, RedeemOutcome, Redemption, UserId};
    use crate::memory::MemoryStore;
    use crate::test_support::campaign;

    /// A hook that records its calls and fails the first `fail_first` calls for the
    /// coupons in `flaky`, or hangs on them when `hang` is set.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<(Notice, CouponId)>>,
        flaky: HashSet<CouponId>,
        fail_first: usize,
        hang: bool,
    }

    impl Recording {
        fn call(&self, notice: Notice, coupon: &Coupon) -> Result<(), HookError> {
            let mut calls = self.calls.lock().unwrap();
            let earlier = calls.iter().filter(|(_, id)| *id == coupon.id).count();
            calls.push((notice, coupon.id));
            if self.flaky.contains(&coupon.id) && earlier < self.fail_first {
                return Err("receiver answered 503".into());
            }
            Ok(())
        }

        fn calls(&self) -> Vec<(Notice, CouponId)> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl CouponHook for Recording {
        async fn stored(&self, coupon: &Coupon) -> Result<(), HookError> {
            if self.hang && self.flaky.contains(&coupon.id) {
                std::future::pending::<()>().await;
            }
            self.call(Notice::Stored, coupon)
        }

        async fn redeemed(&self, coupon: &Coupon) -> Result<(), HookError> {
            self.call(Notice::Redeemed, coupon)
        }
    }

    async fn stored_coupons(store: &MemoryStore, n: usize) -> Vec<IssueEvent> {
        let c = campaign(CampaignState::Open);
        store.create_campaign(&c).await.unwrap();
        let events: Vec<IssueEvent> = (0..n)
            .map(|i| IssueEvent::new(&c, UserId::new(format!("u{i}")).unwrap(), 1, c.created_at))
            .collect();
        store.record(&events).await.unwrap();
        events
    }

    fn runner(store: &MemoryStore, hook: &Arc<Recording>, backoff: Duration) -> HookRunner {
        let config = HookConfig {
            page: 3,
            backoff_initial: backoff,
            backoff_max: backoff,
            call_timeout: Duration::from_millis(50),
            ..HookConfig::default()
        };
        HookRunner::with_config(Arc::new(store.clone()), hook.clone(), config)
    }

    async fn redeem(store: &MemoryStore, e: &IssueEvent) {
        let r = Redemption {
            coupon_id: e.coupon_id,
            user_id: e.user_id.clone(),
            order_id: "o-1".into(),
            order_amount: 1,
            at: e.issued_at,
        };
        assert!(matches!(
            store.redeem(&r).await.unwrap(),
            RedeemOutcome::Redeemed { .. }
        ));
    }

    #[tokio::test]
    async fn every_notice_is_delivered_once_across_pages_and_then_nothing_is_pending() {
        let store = MemoryStore::new();
        let events = stored_coupons(&store, 7).await;
        redeem(&store, &events[2]).await;
        let hook = Arc::new(Recording::default());
        let runner = runner(&store, &hook, Duration::ZERO);
        let pass = runner.run_pass().await.unwrap();
        assert_eq!((pass.delivered, pass.failed, pass.deferred), (8, 0, 0));
        let calls = hook.calls();
        for e in &events {
            assert_eq!(calls.iter().filter(|c| **c == (Notice::Stored, e.coupon_id)).count(), 1);
        }
        let of_redeemed: Vec<Notice> = calls
            .iter()
            .filter(|(_, id)| *id == events[2].coupon_id)
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(of_redeemed, vec![Notice::Stored, Notice::Redeemed], "stored first");
        assert!(store.pending_notices(None, 100).await.unwrap().is_empty());
        assert_eq!(runner.run_pass().await.unwrap(), HookPass::default());
        assert_eq!(hook.calls().len(), 8, "nothing is delivered twice once cleared");
    }

    #[tokio::test]
    async fn a_failing_hook_is_retried_after_its_backoff_while_the_others_are_delivered() {
        let store = MemoryStore::new();
        let events = stored_coupons(&store, 4).await;
        let flaky = events[1].coupon_id;
        redeem(&store, &events[1]).await;
        let hook = Arc::new(Recording {
            flaky: HashSet::from([flaky]),
            fail_first: 2,
            ..Recording::default()
        });
        // A backoff longer than the test: the failed notice waits.
        let waiting = runner(&store, &hook, Duration::from_secs(3_600));
        let pass = waiting.run_pass().await.unwrap();
        assert_eq!((pass.delivered, pass.failed, pass.deferred), (3, 1, 1));
        let pass = waiting.run_pass().await.unwrap();
        assert_eq!(
            (pass.delivered, pass.failed, pass.deferred),
            (0, 0, 2),
            "waiting out the backoff"
        );
        assert_eq!(hook.calls().len(), 4, "no call while it waits");
        let pending = store.pending_notices(None, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].notices, vec![Notice::Stored, Notice::Redeemed]);

        // With no backoff, the next passes try again until the hook takes it.
        let eager = runner(&store, &hook, Duration::ZERO);
        let pass = eager.run_pass().await.unwrap();
        assert_eq!((pass.delivered, pass.failed), (0, 1));
        let pass = eager.run_pass().await.unwrap();
        assert_eq!((pass.delivered, pass.failed), (2, 0));
        let of_flaky: Vec<Notice> = hook
            .calls()
            .iter()
            .filter(|(_, id)| *id == flaky)
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            of_flaky,
            vec![Notice::Stored, Notice::Stored, Notice::Stored, Notice::Redeemed],
            "\"redeemed\" waits for its \"stored\""
        );
        assert!(store.pending_notices(None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_hook_that_never_answers_times_out_and_does_not_hold_up_the_others() {
        let store = MemoryStore::new();
        let events = stored_coupons(&store, 3).await;
        let hook = Arc::new(Recording {
            flaky: HashSet::from([events[0].coupon_id]),
            hang: true,
            ..Recording::default()
        });
        let pass = runner(&store, &hook, Duration::ZERO).run_pass().await.unwrap();
        assert_eq!((pass.delivered, pass.failed), (2, 1));
        let pending = store.pending_notices(None, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].coupon.id, events[0].coupon_id);
    }

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        let hook = Arc::new(Recording::default());
        let store = MemoryStore::new();
        let config = HookConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..HookConfig::default()
        };
        let r = HookRunner::with_config(Arc::new(store), hook, config);
        // Jitter adds up to as much again.
        let first = r.backoff(1);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        let third = r.backoff(3);
        assert!(third >= Duration::from_millis(400), "{third:?}");
        assert!(r.backoff(30) <= Duration::from_secs(2));
    }

    #[test]
    fn notices_round_trip_through_their_bits() {
        for bits in 0..4 {
            let notices = Notice::from_bits(bits);
            assert_eq!(notices.iter().map(|n| n.bit()).sum::<i16>(), bits);
        }
        assert_eq!(Notice::from_bits(3), vec![Notice::Stored, Notice::Redeemed]);
    }
}
