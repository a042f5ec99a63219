//! [`CampaignService`]: create, open, close and sync campaigns across store and gate.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::cache::CampaignCache;
use crate::domain::{Campaign, CampaignCounts, CampaignId, CampaignState, GateStatus, NewCampaign, timestamp_now};
use crate::error::Error;
use crate::gate::IssueGate;
use crate::reconciler::{Reconciler, SyncReport};
use crate::store::IssueStore;

/// The campaign lifecycle, keeping store (the truth) and gate (the hot copy) in step:
/// draft -> open -> closed.
#[derive(Clone)]
pub struct CampaignService {
    store: Arc<dyn IssueStore>,
    gate: Arc<dyn IssueGate>,
    reconciler: Reconciler,
    cache: Option<CampaignCache>,
}

impl std::fmt::Debug for CampaignService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CampaignService")
            .field("store", &self.store.backend())
            .field("gate", &self.gate.backend())
            .finish_non_exhaustive()
    }
}

impl CampaignService {
    /// A service over `store` and `gate`, syncing with `reconciler`.
    pub fn new(store: Arc<dyn IssueStore>, gate: Arc<dyn IssueGate>, reconciler: Reconciler) -> Self {
        Self {
            store,
            gate,
            reconciler,
            cache: None,
        }
    }

    /// Keeps this cache (the [`crate::Issuer`]'s) up to date on every change.
    pub fn with_cache(mut self, cache: CampaignCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The reconciler used by [`CampaignService::sync`].
    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// Checks and stores a new campaign, in the draft state.
    pub async fn create(&self, input: NewCampaign) -> Result<Campaign, Error> {
        input.validate()?;
        let campaign = Campaign::from_new(input, timestamp_now());
        self.store.create_campaign(&campaign).await?;
        Ok(campaign)
    }

    /// Reads a campaign.
    pub async fn get(&self, id: &CampaignId) -> Result<Campaign, Error> {
        self.store.campaign(id).await?.ok_or(Error::CampaignNotFound(*id))
    }

    /// Opens a campaign: the gate loads its stock (idempotent), then the store marks it open.
    pub async fn open(&self, id: &CampaignId) -> Result<Campaign, Error> {
        let campaign = self.get(id).await?;
        if !campaign.state.can_become(CampaignState::Open) {
            return Err(Error::InvalidTransition {
                id: *id,
                from: campaign.state,
                to: CampaignState::Open,
            });
        }
        // Gate first: a campaign marked open must be admittable.
        self.gate.open(&campaign.gate_spec()).await?;
        self.transition(id, CampaignState::Open).await
    }

    /// Closes a campaign: the store marks it closed (issuers stop at once), then the
    /// gate forgets it. Issued coupons stay valid; events on their way are still stored.
    pub async fn close(&self, id: &CampaignId) -> Result<Campaign, Error> {
        let campaign = self.transition(id, CampaignState::Closed).await?;
        self.gate.close(id).await?;
        Ok(campaign)
    }

    /// Restores the gate from the store and reconciles its ledger, as of now on the
    /// gate's clock ([`IssueGate::clock`]).
    pub async fn sync(&self, id: &CampaignId) -> Result<SyncReport, Error> {
        let now = self.gate.clock().await?;
        self.sync_at(id, now).await
    }

    /// [`CampaignService::sync`] as of `now`, a time on the gate's clock.
    pub async fn sync_at(&self, id: &CampaignId, now: DateTime<Utc>) -> Result<SyncReport, Error> {
        let campaign = self.get(id).await?;
        self.reconciler.sync(&campaign, now).await
    }

    /// Syncs every campaign in `ids` that is open; used at start by an embedded
    /// server whose in-memory gate is empty. Campaigns not open are skipped.
    pub async fn restore_open(&self, ids: &[CampaignId]) -> Result<Vec<(CampaignId, SyncReport)>, Error> {
        let mut out = Vec::new();
        for id in ids {
            let campaign = self.get(id).await?;
            if campaign.state == CampaignState::Open {
                let now = self.gate.clock().await?;
                out.push((*id, self.reconciler.sync(&campaign, now).await?));
            }
        }
        Ok(out)
    }

    /// Syncs every open campaign the store knows ([`IssueStore::open_campaigns`]); what
    /// a server with an in-memory gate runs at start, so the gate again knows who holds
    /// a coupon and how much stock is left.
    pub async fn restore_all_open(&self) -> Result<Vec<(CampaignId, SyncReport)>, Error> {
        let ids = self.store.open_campaigns().await?;
        self.restore_open(&ids).await
    }

    /// Counts across gate and store.
    pub async fn counts(&self, id: &CampaignId) -> Result<CampaignCounts, Error> {
        let campaign = self.get(id).await?;
        // A gate that does not answer leaves its counts out: the store's are what an
        // operator needs most while the gate is down.
        let (gate, status) = match self.gate.counts(id).await {
            Ok(Some(g)) => (
                Some(g),
                if g.fenced {
                    GateStatus::Fenced
                } else {
                    GateStatus::Serving
                },
            ),
            Ok(None) => (None, GateStatus::Absent),
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "counts: the gate did not answer");
                (None, GateStatus::Unavailable)
            }
        };
        let stored = self.store.issued_count(id).await?;
        let voided = self.store.voided_count(id).await?;
        Ok(CampaignCounts {
            total_quantity: campaign.total_quantity,
            remaining: gate.map(|g| g.remaining),
            admitted: gate.map(|g| campaign.total_quantity.saturating_sub(g.remaining)),
            stored,
            pending: gate.map(|g| g.pending),
            voided,
            gate: status,
        })
    }

    async fn transition(&self, id: &CampaignId, to: CampaignState) -> Result<Campaign, Error> {
        let campaign = self
            .store
            .set_campaign_state(id, to)
            .await?
            .ok_or(Error::CampaignNotFound(*id))?;
        if campaign.state != to {
            return Err(Error::InvalidTransition {
                id: *id,
                from: campaign.state,
                to,
            });
        }
        if let Some(cache) = &self.cache {
            cache.put(campaign.clone());
        }
        Ok(campaign)
    }
}
