//! [`Issuer`]: the hot path. Campaign check from cache, one gate call, then the
//! acknowledgement its [`AckMode`] asks for.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;

use crate::cache::CampaignCache;
use crate::domain::{
    Admission, CampaignId, CampaignState, Coupon, CouponId, IssueEvent, IssueOutcome, RecordOutcome, UserId,
    timestamp_now,
};
use crate::error::{BackendError, Component, Error, ErrorKind};
use crate::gate::IssueGate;
use crate::log::EventLog;
use crate::store::IssueStore;

/// When the user is told "issued". In configuration files: `after-log`, `after-gate`, `after-store`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AckMode {
    /// After the event log durably accepted the event (the default). If publishing
    /// certainly failed, the reservation is released and the caller gets an error;
    /// if its outcome is unknown (a timeout), the reservation is left for the
    /// [`crate::Reconciler`], which releases it only once it cannot be on its way.
    /// An acknowledged coupon is lost only with the log's acknowledged data (with
    /// Kafka: more brokers than `min.insync.replicas - 1` losing their disks).
    #[default]
    AfterLog,
    /// Right after the gate; the event is published in the background (the seeds'
    /// behaviour). Fastest, and the only mode that can lose a coupon the user was told
    /// they got, in each of these faults: the server crashes (`kill -9`, OOM, power)
    /// before the background publish is acknowledged; the publish fails for certain
    /// (the broker refuses it, librdkafka's queue is full) and the reservation is
    /// released at once; the publish times out after
    /// [`IssuerConfig::ack_timeout`] and the reconciler releases it after its grace.
    /// At most [`IssuerConfig::max_background_publishes`] are in flight: past that,
    /// requests are answered 503 before the gate is touched, so a slow broker slows
    /// the sale rather than piling up acknowledged coupons in memory.
    AfterGate,
    /// After the store recorded the coupon synchronously (small or embedded
    /// deployments without an event log). An acknowledged coupon is lost only with
    /// the store's own committed data (for SQLite: see `sqlite_fsync_each_commit`).
    AfterStore,
}

impl AckMode {
    /// The kebab-case name used in configuration (`after-log`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            AckMode::AfterLog => "after-log",
            AckMode::AfterGate => "after-gate",
            AckMode::AfterStore => "after-store",
        }
    }
}

impl std::str::FromStr for AckMode {
    type Err = crate::error::ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "after-log" => Ok(AckMode::AfterLog),
            "after-gate" => Ok(AckMode::AfterGate),
            "after-store" => Ok(AckMode::AfterStore),
            _ => Err(crate::error::ValidationError::field(
                "ack",
                "must be after-log, after-gate or after-store",
            )),
        }
    }
}

/// How the [`Issuer`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerConfig {
    /// When to answer "issued".
    pub ack: AckMode,
    /// Longest wait for the gate before failing fast (the backend's own timeout
    /// should be shorter; this is the backstop).
    pub gate_timeout: Duration,
    /// Longest wait for the log (or, with [`AckMode::AfterStore`], the store).
    pub ack_timeout: Duration,
    /// [`AckMode::AfterGate`]: the most background publishes in flight (default
    /// 10,000). When all are taken, a request is refused (503, retryable) before the
    /// gate is touched.
    pub max_background_publishes: usize,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            ack: AckMode::AfterLog,
            gate_timeout: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(5),
            max_background_publishes: 10_000,
        }
    }
}

impl IssuerConfig {
    /// Sets the acknowledgement mode.
    pub fn with_ack(mut self, ack: AckMode) -> Self {
        self.ack = ack;
        self
    }

    /// Sets the bound on background publishes ([`AckMode::AfterGate`]).
    pub fn with_max_background_publishes(mut self, max: usize) -> Self {
        self.max_background_publishes = max.max(1);
        self
    }

    /// Sets the gate timeout.
    pub fn with_gate_timeout(mut self, timeout: Duration) -> Self {
        self.gate_timeout = timeout;
        self
    }

    /// Sets the log (or store) timeout.
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// The longest time, on this process's monotonic clock, from before the gate call to
    /// the log's acknowledgement for which the issuer still answers "issued" with
    /// [`AckMode::AfterLog`]: `gate_timeout + ack_timeout`. Past it (a paused process,
    /// say) the admission may have been voided by a reconciler, so the issuer answers
    /// that the outcome is unknown instead. The reconciler's grace must exceed it.
    pub fn ack_deadline(&self) -> Duration {
        self.gate_timeout + self.ack_timeout
    }

    /// Checks that a reconciler with this `grace` cannot void an admission this issuer
    /// may still acknowledge: `grace` must be at least twice [`IssuerConfig::ack_deadline`].
    pub fn check_grace(&self, grace: Duration) -> Result<(), crate::error::ValidationError> {
        if grace < self.ack_deadline() * 2 {
            return Err(crate::error::ValidationError::field(
                "reconcile_grace",
                format!(
                    "must be at least twice the issuer's acknowledgement deadline (gate timeout + ack timeout = {} ms), so a reconciler never voids an admission still being acknowledged; got {} ms",
                    self.ack_deadline().as_millis(),
                    grace.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

/// The hot path: turns "user U wants a coupon of campaign C" into an [`IssueOutcome`].
///
/// Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Issuer {
    gate: Arc<dyn IssueGate>,
    log: Option<Arc<dyn EventLog>>,
    store: Arc<dyn IssueStore>,
    cache: CampaignCache,
    config: IssuerConfig,
    background: TaskTracker,
    background_permits: Arc<tokio::sync::Semaphore>,
    /// The `after-store` group commit, started by the first such issue (inside a
    /// runtime), shared by the clones.
    store_writer: Arc<std::sync::OnceLock<store_writer::StoreWriter>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("gate", &self.gate.backend())
            .field("log", &self.log.as_ref().map(|l| l.backend()))
            .field("store", &self.store.backend())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer over these backends. `log` may be `None` only with [`AckMode::AfterStore`].
    pub fn new(
        gate: Arc<dyn IssueGate>,
        log: Option<Arc<dyn EventLog>>,
        store: Arc<dyn IssueStore>,
        cache: CampaignCache,
        config: IssuerConfig,
    ) -> Result<Self, Error> {
        if log.is_none() && config.ack != AckMode::AfterStore {
            return Err(Error::Validation(crate::error::ValidationError::field(
                "ack",
                "after-log and after-gate need an event log; use after-store without one",
            )));
        }
        Ok(Self {
            gate,
            log,
            store,
            cache,
            config,
            background: TaskTracker::new(),
            background_permits: Arc::new(tokio::sync::Semaphore::new(config.max_background_publishes)),
            store_writer: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The campaign cache (shared with [`crate::CampaignService`] to see lifecycle changes at once).
    pub fn cache(&self) -> &CampaignCache {
        &self.cache
    }

    /// Issues a coupon of `campaign_id` to `user_id` now.
    pub async fn issue(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<IssueOutcome, Error> {
        self.issue_at(campaign_id, user_id, timestamp_now()).await
    }

    /// Issues a coupon as of `now` (which the gate compares with the issue window).
    pub async fn issue_at(
        &self,
        campaign_id: &CampaignId,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, Error> {
        let Some(campaign) = self.cache.get(campaign_id).await? else {
            return Ok(IssueOutcome::CampaignNotFound);
        };
        match campaign.state {
            CampaignState::Draft => return Ok(IssueOutcome::NotOpen),
            CampaignState::Closed => return Ok(IssueOutcome::Closed),
            CampaignState::Open => {}
        }
        if now < campaign.issue_starts_at {
            return Ok(IssueOutcome::NotOpen);
        }
        if now >= campaign.issue_ends_at {
            return Ok(IssueOutcome::Closed);
        }

        // After-gate: a place for the background publish is taken before the gate is, so
        // a full queue refuses the request while it costs nothing.
        let background_permit = match self.config.ack {
            AckMode::AfterGate => Some(self.background_permits.clone().try_acquire_owned().map_err(|_| {
                BackendError::new(
                    Component::Log,
                    self.log.as_ref().map_or("none", |l| l.backend()),
                    "publish",
                    ErrorKind::Unavailable,
                    format!(
                        "{} background publishes are in flight; refused before the gate",
                        self.config.max_background_publishes
                    ),
                )
            })?),
            _ => None,
        };
        // The admission's identity, chosen before the gate call: the ledger, the event
        // and the store all know it by this id (docs/PROTOCOL.md, "Identities").
        let coupon_id = CouponId::new();
        let started = tokio::time::Instant::now();
        let gate = self.gate.admit(campaign_id, user_id, &coupon_id, now);
        let admission = match tokio::time::timeout(self.config.gate_timeout, gate).await {
            Ok(result) => result?,
            Err(_) => {
                // The script may have run: the ledger entry, if any, is the reconciler's to release.
                return Err(BackendError::timeout(
                    Component::Gate,
                    self.gate.backend(),
                    "admit",
                    self.config.gate_timeout,
                )
                .into());
            }
        };
        let (nth, seq, admitted_at) = match admission {
            Admission::Admitted {
                nth, seq, admitted_at, ..
            } => (nth, seq, admitted_at),
            Admission::AlreadyIssued => return Ok(IssueOutcome::AlreadyIssued),
            Admission::SoldOut => return Ok(IssueOutcome::SoldOut),
            // The store says open and in the window (checked above), the gate does not know
            // the campaign: it lost it. Fail closed rather than tell users "not open".
            // Or the store proved the gate went back in time and it was fenced until a sync.
            Admission::NotOpen | Admission::Fenced => return Err(Error::GateLost { id: *campaign_id }),
            Admission::Closed => {
                // Closed by another server (its close reached the gate, not this cache):
                // read the campaign again rather than wait out the TTL.
                if campaign.state == crate::CampaignState::Open {
                    self.cache.invalidate(campaign_id);
                }
                return Ok(IssueOutcome::Closed);
            }
        };

        // Stamped with the gate's time: the log records it under that time, so the
        // reconciler's horizon and the ledger share one clock (PROTOCOL.md section 6).
        let event = IssueEvent::for_admission(&campaign, coupon_id, user_id.clone(), nth, now)
            .with_admission_seq(seq)
            .with_admitted_at(admitted_at);
        let coupon = Coupon::from_event(&event);
        match self.config.ack {
            AckMode::AfterLog => {
                let log = self.log.as_ref().expect("checked in Issuer::new");
                self.acknowledge(Component::Log, log.backend(), "publish", &event, log.publish(&event))
                    .await?;
                let elapsed = started.elapsed();
                if elapsed > self.config.ack_deadline() {
                    // Paused or starved past the deadline: a reconciler may have voided this
                    // admission meanwhile, and then the store refuses the event. Never say
                    // "issued" for what may not be stored.
                    tracing::warn!(coupon = %event.coupon_id, elapsed_ms = elapsed.as_millis() as u64, "acknowledged after the deadline; answering outcome unknown");
                    return Err(BackendError::new(
                        Component::Log,
                        log.backend(),
                        "publish",
                        ErrorKind::OutcomeUnknown,
                        format!(
                            "the event was acknowledged {} ms after admission, past the {} ms deadline; the coupon is stored only if its reservation was not voided meanwhile",
                            elapsed.as_millis(),
                            self.config.ack_deadline().as_millis()
                        ),
                    )
                    .into());
                }
            }
            AckMode::AfterStore => {
                let store = self.store.clone();
                let writer = self
                    .store_writer
                    .get_or_init(|| store_writer::StoreWriter::new(self.store.clone()));
                let pending = event.clone();
                let write = async move {
                    let refused = |message: String| {
                        BackendError::new(
                            Component::Store,
                            store.backend(),
                            "record",
                            ErrorKind::Rejected,
                            message,
                        )
                    };
                    // One batch with the other requests' events (a group commit).
                    match writer.record(pending).await? {
                        RecordOutcome::Stored | RecordOutcome::Duplicate => Ok(()),
                        RecordOutcome::Rejected { reason } => {
                            Err(refused(format!("the store refused the coupon: {reason}")))
                        }
                        RecordOutcome::Fenced { fence } => {
                            Err(refused(format!("the store fenced the coupon off: {fence}")))
                        }
                    }
                };
                self.acknowledge(Component::Store, self.store.backend(), "record", &event, write)
                    .await?;
                // Stored: the ledger entry is done. If this fails the reconciler settles it later.
                // (A stored coupon cannot be voided, so no deadline applies here.)
                if let Err(e) = self.gate.settle(campaign_id, &[event.reservation_key()]).await {
                    tracing::warn!(error = %e, "could not settle a stored reservation; the reconciler will");
                }
            }
            AckMode::AfterGate => {
                let log = self.log.clone().expect("checked in Issuer::new");
                let gate = self.gate.clone();
                let store = self.store.clone();
                let timeout = self.config.ack_timeout;
                self.background.spawn(async move {
                    let _permit = background_permit;
                    let outcome = match tokio::time::timeout(timeout, log.publish(&event)).await {
                        Ok(r) => r,
                        Err(_) => Err(BackendError::timeout(Component::Log, log.backend(), "publish", timeout)),
                    };
                    if let Err(e) = outcome {
                        tracing::error!(error = %e, coupon = %event.coupon_id, "background publish failed after the user was told \"issued\"");
                        if e.kind.certainly_not_applied() {
                            release(&*gate, &*store, &event).await;
                        }
                    }
                });
            }
        }
        Ok(IssueOutcome::Issued(coupon))
    }

    /// Waits for an acknowledgement; on failure releases the reservation when the
    /// write certainly did not happen, and returns the error.
    async fn acknowledge(
        &self,
        component: Component,
        backend: &'static str,
        operation: &'static str,
        event: &IssueEvent,
        write: impl std::future::Future<Output = Result<(), BackendError>>,
    ) -> Result<(), BackendError> {
        let result = match tokio::time::timeout(self.config.ack_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::timeout(
                component,
                backend,
                operation,
                self.config.ack_timeout,
            )),
        };
        if let Err(e) = &result {
            if e.kind.certainly_not_applied() {
                release(&*self.gate, &*self.store, event).await;
            } else {
                tracing::warn!(error = %e, coupon = %event.coupon_id, "acknowledgement outcome unknown; reservation left to the reconciler");
            }
        }
        result
    }

    /// Waits until background publishes ([`AckMode::AfterGate`]) have finished; call at shutdown.
    pub async fn flush(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }
}

/// Gives an admission's stock back through the fence ([`crate::fence`]); on failure the
/// reconciler does it later.
async fn release(gate: &dyn IssueGate, store: &dyn IssueStore, event: &IssueEvent) {
    let key = [event.reservation_key()];
    if let Err(e) = crate::fence::void_then_release(gate, store, &event.campaign_id, &key).await {
        tracing::error!(error = %e, coupon = %event.coupon_id, "could not void and release an unacknowledged admission; the reconciler will");
    }
}

mod store_writer;

#[cfg(test)]
mod tests;
