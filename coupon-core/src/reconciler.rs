//! [`Reconciler`]: repairs the gate from the ledger and the store.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Campaign, CampaignId, CampaignState};
use crate::error::{Error, ValidationError};
use crate::gate::{IssueGate, RestoreReport};
use crate::log::EventLog;
use crate::store::IssueStore;

/// What one reconciliation pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Ledger entries older than the grace period that were looked at.
    pub examined: u64,
    /// Entries whose coupon was stored: removed from the ledger.
    pub settled: u64,
    /// Entries never acknowledged: their stock went back to the pool.
    pub released: u64,
    /// Entries that may still be on their way through the log: left for a later pass.
    pub kept: u64,
}

/// What a sync did: the gate restored from the store, then reconciled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The restore step.
    pub restore: RestoreReport,
    /// The reconcile step.
    pub reconcile: ReconcileReport,
}

/// Releases reservations that were never acknowledged and restores coupons the gate forgot.
///
/// A ledger entry admitted at `t` is released only when all of these hold:
/// it is older than `grace`; its coupon is not in the store; and the log cannot
/// still deliver it, i.e. the consumer group has committed everything published up to
/// `t + grace` (the log is asked *before* the store, so an event stored in between is seen).
/// `grace` must exceed the longest publish (the issuer's acknowledgement timeout) with margin.
#[derive(Clone)]
pub struct Reconciler {
    gate: Arc<dyn IssueGate>,
    store: Arc<dyn IssueStore>,
    log: Option<(Arc<dyn EventLog>, String)>,
    grace: Duration,
    page: usize,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("gate", &self.gate.backend())
            .field("store", &self.store.backend())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// The default grace period.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

    /// A reconciler without an event log (for [`crate::AckMode::AfterStore`] deployments).
    pub fn new(gate: Arc<dyn IssueGate>, store: Arc<dyn IssueStore>) -> Self {
        Self {
            gate,
            store,
            log: None,
            grace: Self::DEFAULT_GRACE,
            page: 1_000,
        }
    }

    /// Consults `log`'s consumer group `group` (the recorders') before releasing.
    pub fn with_log(mut self, log: Arc<dyn EventLog>, group: impl Into<String>) -> Self {
        self.log = Some((log, group.into()));
        self
    }

    /// Sets the grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    async fn horizon(&self) -> Result<Option<DateTime<Utc>>, Error> {
        match &self.log {
            Some((log, group)) => Ok(log.oldest_uncommitted(group).await?),
            None => Ok(None),
        }
    }

    /// One pass over a campaign's ledger as of `now`.
    pub async fn reconcile(&self, campaign_id: &CampaignId, now: DateTime<Utc>) -> Result<ReconcileReport, Error> {
        let grace = chrono::Duration::from_std(self.grace).map_err(|_| ValidationError::field("grace", "too long"))?;
        let cutoff = now - grace;
        let mut report = ReconcileReport::default();
        loop {
            // Ask the log first: whatever it reports as committed is already in the store.
            let horizon = self.horizon().await?;
            let entries = self.gate.reservations(campaign_id, cutoff, self.page).await?;
            if entries.is_empty() {
                return Ok(report);
            }
            report.examined += entries.len() as u64;
            let keys: Vec<_> = entries.iter().map(|e| e.key.clone()).collect();
            let stored = self.store.stored_keys(campaign_id, &keys).await?;
            let settled: Vec<_> = keys
                .iter()
                .zip(&stored)
                .filter(|(_, s)| **s)
                .map(|(k, _)| k.clone())
                .collect();
            if !settled.is_empty() {
                self.gate.settle(campaign_id, &settled).await?;
                report.settled += settled.len() as u64;
            }
            let full_page = entries.len() == self.page;
            for (entry, stored) in entries.into_iter().zip(stored) {
                if stored {
                    continue;
                }
                let may_be_in_flight = horizon.is_some_and(|oldest| oldest <= entry.admitted_at + grace);
                if may_be_in_flight {
                    // Entries are oldest first: every later one is younger, so also kept.
                    report.kept += 1;
                    continue;
                }
                if self.gate.release(campaign_id, &entry.key).await? {
                    report.released += 1;
                }
            }
            if report.kept > 0 || !full_page {
                return Ok(report);
            }
        }
    }

    /// Restores the gate from the store (coupons it forgot), then reconciles: the
    /// operator "sync". Safe while traffic flows: it never returns stock the store
    /// does not prove free. If the gate lost the campaign entirely, it refuses
    /// while the log still holds uncommitted events (they would be re-sold).
    pub async fn sync(&self, campaign: &Campaign, now: DateTime<Utc>) -> Result<SyncReport, Error> {
        if campaign.state != CampaignState::Open {
            return Err(Error::SyncRefused {
                id: campaign.id,
                reason: format!(
                    "the campaign is {}, only an open campaign has a gate to sync",
                    campaign.state
                ),
            });
        }
        if self.gate.counts(&campaign.id).await?.is_none()
            && let Some(oldest) = self.horizon().await?
        {
            return Err(Error::SyncRefused {
                id: campaign.id,
                reason: format!(
                    "the gate lost the campaign and the event log still holds events not yet stored (oldest published {oldest}); retry once the consumer has caught up"
                ),
            });
        }
        let holders = self.store.holders(&campaign.id).await?;
        let restore = self.gate.restore(&campaign.gate_spec(), &holders).await?;
        let reconcile = self.reconcile(&campaign.id, now).await?;
        Ok(SyncReport { restore, reconcile })
    }
}

#[cfg(test)]
mod tests;
