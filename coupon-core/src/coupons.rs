//! [`Coupons`]: the whole system wired once, from a gate, a store and (usually) a log.
//!
//! Issuer, campaign service and reconciler must share one campaign cache (so the hot path
//! sees a campaign closed the moment it is), the reconciler must read the recorders'
//! consumer group, and the grace period must outlast the issuer's acknowledgement
//! deadline. [`CouponsBuilder::build`] does all of it, so none of it can be forgotten.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::CampaignCache;
use crate::error::{Error, ValidationError};
use crate::gate::IssueGate;
use crate::issuer::{AckMode, Issuer, IssuerConfig};
use crate::lifecycle::CampaignService;
use crate::log::EventLog;
use crate::reconciler::Reconciler;
use crate::recorder::{Recorder, RecorderConfig};
use crate::store::IssueStore;

/// The consumer group recorders join when the builder is given none.
pub const DEFAULT_CONSUMER_GROUP: &str = "coupon-recorder";

/// The issuer (hot path), the campaign service (lifecycle), the reconciler (repair) and
/// recorders (cold path) over one gate, log and store, wired to share what they must.
///
/// ```
/// use std::sync::Arc;
/// use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
/// use coupon_core::{Coupons, IssueOutcome, NewCampaign, RecorderConfig, UserId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), coupon_core::Error> {
/// let coupons = Coupons::builder(Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()))
///     .log(Arc::new(MemoryLog::new()), "recorder")
///     .build()
///     .await?;
/// let now = chrono::Utc::now();
/// let campaign = coupons.campaigns().create(NewCampaign::new("Launch", 1, now, now + chrono::Duration::hours(1))).await?;
/// coupons.campaigns().open(&campaign.id).await?;
/// let outcome = coupons.issuer().issue(&campaign.id, &UserId::new("alice")?).await?;
/// assert!(matches!(outcome, IssueOutcome::Issued(_)));
/// coupons.recorder(RecorderConfig::default()).await?.drain().await;
/// assert_eq!(coupons.campaigns().counts(&campaign.id).await?.stored, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Coupons {
    issuer: Issuer,
    campaigns: CampaignService,
    gate: Arc<dyn IssueGate>,
    log: Option<Arc<dyn EventLog>>,
    store: Arc<dyn IssueStore>,
    consumer_group: String,
}

impl std::fmt::Debug for Coupons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coupons")
            .field("issuer", &self.issuer)
            .field("consumer_group", &self.consumer_group)
            .finish_non_exhaustive()
    }
}

impl Coupons {
    /// Starts wiring a system over `gate` and `store`. Add the event log with
    /// [`CouponsBuilder::log`] (every ack mode but [`AckMode::AfterStore`] needs one).
    pub fn builder(gate: Arc<dyn IssueGate>, store: Arc<dyn IssueStore>) -> CouponsBuilder {
        CouponsBuilder {
            gate,
            store,
            log: None,
            consumer_group: DEFAULT_CONSUMER_GROUP.to_owned(),
            ack: None,
            issuer: IssuerConfig::default(),
            grace: Reconciler::DEFAULT_GRACE,
            cache_ttl: None,
            cache_load_timeout: None,
            gate_in_process: false,
            #[cfg(feature = "metrics")]
            metered: false,
        }
    }

    /// The hot path.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Campaign lifecycle: create, open, close, sync, counts.
    pub fn campaigns(&self) -> &CampaignService {
        &self.campaigns
    }

    /// The reconciler; run it with [`Reconciler::run_until`] on every server.
    pub fn reconciler(&self) -> &Reconciler {
        self.campaigns.reconciler()
    }

    /// The gate (wrapped in the metrics layer when [`CouponsBuilder::metered`] was asked for).
    pub fn gate(&self) -> &Arc<dyn IssueGate> {
        &self.gate
    }

    /// The event log, unless there is none ([`AckMode::AfterStore`]).
    pub fn log(&self) -> Option<&Arc<dyn EventLog>> {
        self.log.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn IssueStore> {
        &self.store
    }

    /// The recorders' consumer group, which the reconciler reads before releasing.
    pub fn consumer_group(&self) -> &str {
        &self.consumer_group
    }

    /// A recorder joined to the consumer group, storing into the store and settling the
    /// gate's ledger: the cold path. Run it with [`Recorder::run_until`], in this process
    /// or (with a durable log) in a consumer process of its own.
    pub async fn recorder(&self, config: RecorderConfig) -> Result<Recorder, Error> {
        let Some(log) = &self.log else {
            return Err(ValidationError::field(
                "log",
                "there is no event log to record from: with after-store the issuer stores each coupon itself",
            )
            .into());
        };
        let source = log.subscribe(&self.consumer_group).await?;
        Ok(Recorder::new(source, self.store.clone(), config).with_gate(self.gate.clone()))
    }

    /// Finishes what the issuer still publishes in the background, then flushes the log
    /// (bounded by `timeout`): call it after the last request, before the process exits.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.issuer.flush().await;
        if let Some(log) = &self.log {
            log.flush(timeout).await?;
        }
        Ok(())
    }
}

/// Wires a [`Coupons`]; made by [`Coupons::builder`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct CouponsBuilder {
    gate: Arc<dyn IssueGate>,
    store: Arc<dyn IssueStore>,
    log: Option<Arc<dyn EventLog>>,
    consumer_group: String,
    ack: Option<AckMode>,
    issuer: IssuerConfig,
    grace: Duration,
    cache_ttl: Option<Duration>,
    cache_load_timeout: Option<Duration>,
    gate_in_process: bool,
    #[cfg(feature = "metrics")]
    metered: bool,
}

impl std::fmt::Debug for CouponsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CouponsBuilder")
            .field("gate", &self.gate.backend())
            .field("store", &self.store.backend())
            .field("log", &self.log.as_ref().map(|l| l.backend()))
            .field("consumer_group", &self.consumer_group)
            .field("ack", &self.ack)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl CouponsBuilder {
    /// The event log between hot and cold path, and the consumer group its recorders
    /// join (the reconciler reads that group's progress, so it must be the recorders').
    pub fn log(mut self, log: Arc<dyn EventLog>, consumer_group: impl Into<String>) -> Self {
        self.log = Some(log);
        self.consumer_group = consumer_group.into();
        self
    }

    /// When a user is told "issued". Defaults to [`AckMode::AfterLog`] with a log and
    /// [`AckMode::AfterStore`] without one; an explicit mode overrides the issuer
    /// configuration's.
    pub fn ack(mut self, ack: AckMode) -> Self {
        self.ack = Some(ack);
        self
    }

    /// The issuer's settings (timeouts, background publishes).
    pub fn issuer_config(mut self, config: IssuerConfig) -> Self {
        self.issuer = config;
        self
    }

    /// How old an unconfirmed admission must be before the reconciler may release it
    /// (default [`Reconciler::DEFAULT_GRACE`]). Must exceed the issuer's acknowledgement
    /// deadline with margin; [`CouponsBuilder::build`] refuses one that does not.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long the issuer trusts a cached campaign ([`CampaignCache::with_ttl`]).
    pub fn campaign_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }

    /// How long the issuer waits for the store to load a campaign it has not cached
    /// ([`CampaignCache::with_load_timeout`]).
    pub fn campaign_load_timeout(mut self, timeout: Duration) -> Self {
        self.cache_load_timeout = Some(timeout);
        self
    }

    /// Says the gate's data lives in this process and dies with it (the in-memory gate),
    /// so [`CouponsBuilder::build`] restores it from the store first: every open
    /// campaign's holders and remaining stock, and a restarted process sells nothing
    /// twice. The facade crate's `connect` sets it when it chooses the in-memory gate.
    pub fn gate_in_process(mut self, in_process: bool) -> Self {
        self.gate_in_process = in_process;
        self
    }

    /// Wraps gate and log in the metrics layer ([`crate::layers::metrics`]).
    #[cfg(feature = "metrics")]
    pub fn metered(mut self) -> Self {
        self.metered = true;
        self
    }

    /// Checks the settings and wires the system (restoring an in-process gate first,
    /// [`CouponsBuilder::gate_in_process`]).
    pub async fn build(self) -> Result<Coupons, Error> {
        let ack = self.ack.unwrap_or(if self.log.is_some() {
            AckMode::AfterLog
        } else {
            AckMode::AfterStore
        });
        let issuer_config = self.issuer.with_ack(ack);
        // A reconciler must never void an admission an issuer may still acknowledge.
        issuer_config.check_grace(self.grace)?;
        #[cfg(feature = "metrics")]
        let (gate, log) = if self.metered {
            let gate: Arc<dyn IssueGate> = Arc::new(crate::layers::metrics::MeteredGate(self.gate));
            let log = self
                .log
                .map(|log| Arc::new(crate::layers::metrics::MeteredLog(log)) as Arc<dyn EventLog>);
            (gate, log)
        } else {
            (self.gate, self.log)
        };
        #[cfg(not(feature = "metrics"))]
        let (gate, log) = (self.gate, self.log);
        let store = self.store;

        let mut cache = CampaignCache::new(store.clone());
        if let Some(ttl) = self.cache_ttl {
            cache = cache.with_ttl(ttl);
        }
        if let Some(timeout) = self.cache_load_timeout {
            cache = cache.with_load_timeout(timeout);
        }
        let mut reconciler = Reconciler::new(gate.clone(), store.clone()).with_grace(self.grace);
        if let Some(log) = &log {
            reconciler = reconciler.with_log(log.clone(), self.consumer_group.clone());
        }
        let campaigns = CampaignService::new(store.clone(), gate.clone(), reconciler).with_cache(cache.clone());
        if self.gate_in_process {
            for (id, report) in campaigns.restore_all_open().await? {
                tracing::info!(campaign = %id, users = report.restore.users_restored, "restored the in-process gate from the store");
            }
        }
        let issuer = Issuer::new(gate.clone(), log.clone(), store.clone(), cache, issuer_config)?;
        Ok(Coupons {
            issuer,
            campaigns,
            gate,
            log,
            store,
            consumer_group: self.consumer_group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryGate, MemoryLog, MemoryStore};
    use crate::{IssueOutcome, NewCampaign, UserId};

    fn launch(stock: u64) -> NewCampaign {
        let now = chrono::Utc::now();
        NewCampaign::new("Launch", stock, now, now + chrono::Duration::hours(1))
    }

    #[tokio::test]
    async fn a_campaign_opened_through_the_system_is_open_for_its_issuer_at_once() {
        let coupons = Coupons::builder(Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()))
            .log(Arc::new(MemoryLog::new()), "recorder")
            .campaign_cache_ttl(Duration::from_secs(3600))
            .build()
            .await
            .unwrap();
        let campaign = coupons.campaigns().create(launch(5)).await.unwrap();
        let alice = UserId::new("alice").unwrap();
        // The issuer caches the draft...
        assert_eq!(
            coupons.issuer().issue(&campaign.id, &alice).await.unwrap(),
            IssueOutcome::NotOpen
        );
        coupons.campaigns().open(&campaign.id).await.unwrap();
        // ...and sees it open at once: the cache is shared by construction (no TTL wait).
        assert!(matches!(
            coupons.issuer().issue(&campaign.id, &alice).await.unwrap(),
            IssueOutcome::Issued(_)
        ));
    }

    #[tokio::test]
    async fn without_a_log_the_system_acknowledges_after_the_store_and_has_no_recorder() {
        let coupons = Coupons::builder(Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()))
            .build()
            .await
            .unwrap();
        assert_eq!(coupons.issuer().config().ack, AckMode::AfterStore);
        let campaign = coupons.campaigns().create(launch(1)).await.unwrap();
        coupons.campaigns().open(&campaign.id).await.unwrap();
        let outcome = coupons
            .issuer()
            .issue(&campaign.id, &UserId::new("alice").unwrap())
            .await
            .unwrap();
        assert!(matches!(outcome, IssueOutcome::Issued(_)));
        assert_eq!(coupons.campaigns().counts(&campaign.id).await.unwrap().stored, 1);
        let refused = coupons.recorder(RecorderConfig::default()).await.unwrap_err();
        assert!(refused.to_string().contains("no event log"), "{refused}");
    }

    #[tokio::test]
    async fn after_log_without_a_log_is_refused() {
        let refused = Coupons::builder(Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()))
            .ack(AckMode::AfterLog)
            .build()
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("need an event log"), "{refused}");
    }

    #[tokio::test]
    async fn a_grace_inside_the_acknowledgement_deadline_is_refused() {
        let refused = Coupons::builder(Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()))
            .log(Arc::new(MemoryLog::new()), "recorder")
            .grace(Duration::from_millis(10))
            .build()
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("grace"), "{refused}");
    }

    #[tokio::test]
    async fn an_in_process_gate_is_restored_from_the_store_when_the_system_is_built_again() {
        let store: Arc<dyn IssueStore> = Arc::new(MemoryStore::new());
        let first = Coupons::builder(Arc::new(MemoryGate::new()), store.clone())
            .gate_in_process(true)
            .build()
            .await
            .unwrap();
        let campaign = first.campaigns().create(launch(2)).await.unwrap();
        first.campaigns().open(&campaign.id).await.unwrap();
        let alice = UserId::new("alice").unwrap();
        assert!(matches!(
            first.issuer().issue(&campaign.id, &alice).await.unwrap(),
            IssueOutcome::Issued(_)
        ));

        // A restart: a new, empty in-process gate over the same store.
        let second = Coupons::builder(Arc::new(MemoryGate::new()), store)
            .gate_in_process(true)
            .build()
            .await
            .unwrap();
        assert_eq!(
            second.issuer().issue(&campaign.id, &alice).await.unwrap(),
            IssueOutcome::AlreadyIssued
        );
        let counts = second.campaigns().counts(&campaign.id).await.unwrap();
        assert_eq!(counts.remaining, Some(1));
    }
}
