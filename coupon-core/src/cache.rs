//! [`CampaignCache`]: campaign metadata for the hot path without a store call per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::domain::{Campaign, CampaignId};
use crate::error::BackendError;
use crate::store::IssueStore;

/// Caches campaigns read from the store for a short time (also "no such campaign",
/// so a flood of requests for a wrong id does not reach the store).
///
/// Loads are single-flight: when an entry is missing or stale, one caller reads the
/// store and the others wait for it, so the first second of a flash sale costs one
/// query, not thousands. Lifecycle changes made through [`crate::CampaignService`]
/// update the cache at once; changes made by other processes are seen within the TTL
/// (the gate is authoritative for admissions in any case).
#[derive(Clone)]
pub struct CampaignCache {
    store: Arc<dyn IssueStore>,
    ttl: Duration,
    entries: Arc<RwLock<HashMap<CampaignId, Entry>>>,
    loading: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Clone)]
struct Entry {
    loaded: Instant,
    campaign: Option<Arc<Campaign>>,
}

impl CampaignCache {
    /// The default time an entry stays fresh.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

    /// A cache over `store` with [`CampaignCache::DEFAULT_TTL`].
    pub fn new(store: Arc<dyn IssueStore>) -> Self {
        Self {
            store,
            ttl: Self::DEFAULT_TTL,
            entries: Arc::default(),
            loading: Arc::default(),
        }
    }

    /// Sets how long entries stay fresh.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn fresh(&self, id: &CampaignId) -> Option<Option<Arc<Campaign>>> {
        let entries = self.entries.read().expect("cache lock");
        entries
            .get(id)
            .filter(|e| e.loaded.elapsed() < self.ttl)
            .map(|e| e.campaign.clone())
    }

    /// The campaign, from the cache when fresh, else from the store.
    pub async fn get(&self, id: &CampaignId) -> Result<Option<Arc<Campaign>>, BackendError> {
        if let Some(hit) = self.fresh(id) {
            return Ok(hit);
        }
        let _loading = self.loading.lock().await;
        if let Some(hit) = self.fresh(id) {
            return Ok(hit);
        }
        let campaign = self.store.campaign(id).await?.map(Arc::new);
        self.put_entry(*id, campaign.clone());
        Ok(campaign)
    }

    /// Replaces the cached campaign (after a lifecycle change).
    pub fn put(&self, campaign: Campaign) {
        self.put_entry(campaign.id, Some(Arc::new(campaign)));
    }

    /// Drops a cached entry.
    pub fn invalidate(&self, id: &CampaignId) {
        self.entries.write().expect("cache lock").remove(id);
    }

    fn put_entry(&self, id: CampaignId, campaign: Option<Arc<Campaign>>) {
        self.entries.write().expect("cache lock").insert(
            id,
            Entry {
                loaded: Instant::now(),
                campaign,
            },
        );
    }
}

impl std::fmt::Debug for CampaignCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CampaignCache")
            .field("store", &self.store.backend())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}
