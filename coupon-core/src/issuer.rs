//! [`Issuer`]: the hot path. Campaign check from cache, one gate call, then the
//! acknowledgement its [`AckMode`] asks for.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;

use crate::cache::CampaignCache;
use crate::domain::{
    Admission, CampaignId, CampaignState, Coupon, IssueEvent, IssueOutcome, RecordOutcome, UserId, timestamp_now,
};
use crate::error::{BackendError, Component, Error, ErrorKind};
use crate::gate::IssueGate;
use crate::log::EventLog;
use crate::store::IssueStore;

/// When the user is told "issued".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckMode {
    /// After the event log durably accepted the event (the default). If publishing
    /// certainly failed, the reservation is released and the caller gets an error;
    /// if its outcome is unknown (a timeout), the reservation is left for the
    /// [`crate::Reconciler`], which releases it only once it cannot be on its way.
    #[default]
    AfterLog,
    /// Right after the gate; the event is published in the background. Fastest,
    /// but a crash before the publish loses a coupon the user was told they got
    /// (the seeds' behaviour). The ledger bounds the damage: the reconciler returns
    /// such stock to the pool after its grace period.
    AfterGate,
    /// After the store recorded the coupon synchronously (small or embedded
    /// deployments without an event log).
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
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            ack: AckMode::AfterLog,
            gate_timeout: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

impl IssuerConfig {
    /// Sets the acknowledgement mode.
    pub fn with_ack(mut self, ack: AckMode) -> Self {
        self.ack = ack;
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

        let gate = self.gate.admit(campaign_id, user_id, now);
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
        let nth = match admission {
            Admission::Admitted { nth, .. } => nth,
            Admission::AlreadyIssued => return Ok(IssueOutcome::AlreadyIssued),
            Admission::SoldOut => return Ok(IssueOutcome::SoldOut),
            Admission::NotOpen => return Ok(IssueOutcome::NotOpen),
            Admission::Closed => return Ok(IssueOutcome::Closed),
        };

        let event = IssueEvent::new(&campaign, user_id.clone(), nth, now);
        let coupon = Coupon::from_event(&event);
        match self.config.ack {
            AckMode::AfterLog => {
                let log = self.log.as_ref().expect("checked in Issuer::new");
                self.acknowledge(Component::Log, log.backend(), "publish", &event, log.publish(&event))
                    .await?;
            }
            AckMode::AfterStore => {
                let store = self.store.clone();
                let events = [event.clone()];
                let write = async move {
                    match store.record(&events).await?.pop() {
                        Some(RecordOutcome::Stored | RecordOutcome::Duplicate) => Ok(()),
                        Some(RecordOutcome::Rejected { reason }) => Err(BackendError::new(
                            Component::Store,
                            store.backend(),
                            "record",
                            ErrorKind::Rejected,
                            format!("the store refused the coupon: {reason}"),
                        )),
                        None => Err(BackendError::new(
                            Component::Store,
                            store.backend(),
                            "record",
                            ErrorKind::Corrupt,
                            "the store answered no outcome for one event",
                        )),
                    }
                };
                self.acknowledge(Component::Store, self.store.backend(), "record", &event, write)
                    .await?;
                // Stored: the ledger entry is done. If this fails the reconciler settles it later.
                if let Err(e) = self.gate.settle(campaign_id, &[event.reservation_key()]).await {
                    tracing::warn!(error = %e, "could not settle a stored reservation; the reconciler will");
                }
            }
            AckMode::AfterGate => {
                let log = self.log.clone().expect("checked in Issuer::new");
                let gate = self.gate.clone();
                let timeout = self.config.ack_timeout;
                self.background.spawn(async move {
                    let outcome = match tokio::time::timeout(timeout, log.publish(&event)).await {
                        Ok(r) => r,
                        Err(_) => Err(BackendError::timeout(Component::Log, log.backend(), "publish", timeout)),
                    };
                    if let Err(e) = outcome {
                        tracing::error!(error = %e, coupon = %event.coupon_id, "background publish failed after the user was told \"issued\"");
                        if e.kind.certainly_not_applied() {
                            release(&*gate, &event).await;
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
                release(&*self.gate, event).await;
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

async fn release(gate: &dyn IssueGate, event: &IssueEvent) {
    match gate.release(&event.campaign_id, &event.reservation_key()).await {
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, coupon = %event.coupon_id, "could not release a reservation; the reconciler will")
        }
    }
}

#[cfg(test)]
mod tests;
