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
    /// Entries never acknowledged: voided in the store, and their stock went back to the pool.
    pub released: u64,
    /// Entries that may still be on their way through the log: left for a later pass.
    pub kept: u64,
}

impl std::ops::AddAssign for ReconcileReport {
    fn add_assign(&mut self, o: Self) {
        self.examined += o.examined;
        self.settled += o.settled;
        self.released += o.released;
        self.kept += o.kept;
    }
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
/// it is older than `grace` on the gate's clock; the log cannot still deliver it, i.e.
/// the consumer group has committed everything published up to `t + grace`; and the
/// store *voids* it ([`IssueStore::void`]), which succeeds only if its coupon is not
/// stored and makes sure it never will be. A stored one is settled instead. So a
/// release is fenced: however late the event turns up, it cannot be sold twice.
/// Releases act on the admission's identity (its coupon id), so two reconcilers (or a
/// sync during a pass) working from stale pages never release a newer admission.
/// `grace` must exceed the issuer's acknowledgement deadline with margin
/// ([`crate::IssuerConfig::check_grace`]).
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

    /// One pass over a campaign's ledger as of the gate's clock ([`IssueGate::clock`]).
    pub async fn reconcile_now(&self, campaign_id: &CampaignId) -> Result<ReconcileReport, Error> {
        let now = self.gate.clock().await?;
        self.reconcile(campaign_id, now).await
    }

    /// One pass over a campaign's ledger as of `now`, a time on the gate's clock.
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
            let full_page = entries.len() == self.page;
            // Entries are oldest first: once one may be in flight, every later one may be too.
            let in_flight_from = entries
                .iter()
                .position(|e| horizon.is_some_and(|oldest| oldest <= e.admitted_at + grace))
                .unwrap_or(entries.len());
            let (expired, young) = entries.split_at(in_flight_from);

            let expired: Vec<_> = expired.iter().map(|e| e.key.clone()).collect();
            let fenced = crate::fence::void_then_release(&*self.gate, &*self.store, campaign_id, &expired).await?;
            report.released += fenced.released;
            report.settled += fenced.settled;
            let mut settle = Vec::new();
            if !young.is_empty() {
                let keys: Vec<_> = young.iter().map(|e| e.key.clone()).collect();
                let stored = self.store.stored_keys(campaign_id, &keys).await?;
                for (key, stored) in keys.into_iter().zip(stored) {
                    if stored {
                        settle.push(key);
                    } else {
                        report.kept += 1;
                    }
                }
            }
            if !settle.is_empty() {
                report.settled += self.gate.settle(campaign_id, &settle).await?;
            }
            if report.kept > 0 || !full_page {
                return Ok(report);
            }
        }
    }

    /// One pass over every campaign the store lists as open. A campaign whose pass fails
    /// is logged and skipped (the next pass tries it again); the reports are summed.
    /// Fails only when the store cannot list the open campaigns.
    pub async fn reconcile_open(&self) -> Result<ReconcileReport, Error> {
        let mut total = ReconcileReport::default();
        for id in self.store.open_campaigns().await? {
            match self.reconcile_now(&id).await {
                Ok(report) => {
                    if report.released > 0 || report.settled > 0 {
                        tracing::info!(campaign = %id, released = report.released, settled = report.settled, "reconciled");
                    }
                    #[cfg(feature = "metrics")]
                    self.export_pass(&id, &report).await;
                    total += report;
                }
                Err(e) => tracing::warn!(campaign = %id, error = %e, "reconciler pass failed"),
            }
        }
        Ok(total)
    }

    /// The pass's releases and the campaign's stored count beside its stock, for the
    /// over-issue alert (`coupon_campaign_stored > coupon_campaign_total`).
    #[cfg(feature = "metrics")]
    async fn export_pass(&self, id: &CampaignId, report: &ReconcileReport) {
        crate::layers::metrics::reconciled(id, report);
        let (campaign, stored) = (self.store.campaign(id).await, self.store.issued_count(id).await);
        if let (Ok(Some(campaign)), Ok(stored)) = (campaign, stored) {
            crate::layers::metrics::campaign_stock(id, stored, campaign.total_quantity);
        }
    }

    /// Reconciles every open campaign ([`Reconciler::reconcile_open`]) once per `every`,
    /// the first pass one period after the call, until `shutdown` completes. A pass that
    /// runs long delays the next one and never overlaps it; shutdown does not wait for a
    /// pass to finish (an interrupted pass leaves nothing half done: each release is
    /// voided in the store before the gate gives the stock back).
    pub async fn run_until(&self, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        crate::periodic::run_every(every, false, shutdown, || async {
            if let Err(e) = self.reconcile_open().await {
                tracing::warn!(error = %e, "reconciler: listing open campaigns failed");
            }
        })
        .await;
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
        // A gate that lost the campaign, or went back in time (fenced), forgot admissions
        // whose events may still be in the log; rebuilt before they are stored, it would
        // sell their stock again.
        let lost = match self.gate.counts(&campaign.id).await? {
            None => Some("lost the campaign"),
            Some(counts) if counts.fenced => Some("went back in time (fenced)"),
            Some(_) => None,
        };
        if let Some(lost) = lost
            && let Some(oldest) = self.horizon().await?
        {
            return Err(Error::SyncRefused {
                id: campaign.id,
                reason: format!(
                    "the gate {lost} and the event log still holds events not yet stored (oldest published {oldest}); retry once the consumer has caught up"
                ),
            });
        }
        let holders = self.store.holders(&campaign.id).await?;
        let seq_floor = self.store.highest_admission_seq(&campaign.id).await?;
        let restore = self.gate.restore(&campaign.gate_spec(), &holders, seq_floor).await?;
        let reconcile = self.reconcile(&campaign.id, now).await?;
        Ok(SyncReport { restore, reconcile })
    }
}

#[cfg(test)]
mod tests;
