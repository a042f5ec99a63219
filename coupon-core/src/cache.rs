//! [`CampaignCache`]: campaign metadata for the hot path without a store call per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::domain::{Campaign, CampaignId};
use crate::error::{BackendError, Component, ErrorKind};
use crate::store::IssueStore;

/// Caches campaigns read from the store for a short time (also "no such campaign",
/// so a flood of requests for a wrong id does not reach the store).
///
/// Loads are single-flight per campaign: when an entry is missing or stale, one caller
/// reads the store and the others wait for it (or, when a stale entry exists, answer
/// from it at once), so the first second of a flash sale costs one query per campaign,
/// not thousands, and a slow campaign does not hold up the others. Every load is
/// bounded by the load timeout: past it, or when the store fails, the last known
/// campaign is served (logged), and a campaign never loaded fails with a retryable
/// `Unavailable`. Lifecycle changes made through [`crate::CampaignService`] update
/// the cache at once; changes made by other processes are seen within the TTL once
/// the store answers (the gate is authoritative for admissions in any case).
#[derive(Clone)]
pub struct CampaignCache {
    store: Arc<dyn IssueStore>,
    ttl: Duration,
    load_timeout: Duration,
    entries: Arc<RwLock<HashMap<CampaignId, Entry>>>,
    flights: Arc<Mutex<HashMap<CampaignId, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A cached lookup (`None` inside: "no such campaign").
enum Cached {
    Fresh(Option<Arc<Campaign>>),
    Stale(Option<Arc<Campaign>>),
}

#[derive(Clone)]
struct Entry {
    loaded: Instant,
    campaign: Option<Arc<Campaign>>,
}

impl CampaignCache {
    /// The default time an entry stays fresh.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

    /// The default bound on one store lookup.
    pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_millis(500);

    /// A cache over `store` with [`CampaignCache::DEFAULT_TTL`] and
    /// [`CampaignCache::DEFAULT_LOAD_TIMEOUT`].
    pub fn new(store: Arc<dyn IssueStore>) -> Self {
        Self {
            store,
            ttl: Self::DEFAULT_TTL,
            load_timeout: Self::DEFAULT_LOAD_TIMEOUT,
            entries: Arc::default(),
            flights: Arc::default(),
        }
    }

    /// Sets how long entries stay fresh.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the bound on one store lookup.
    pub fn with_load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// The cached entry, fresh or stale.
    fn cached(&self, id: &CampaignId) -> Option<Cached> {
        let entries = self.entries.read().expect("cache lock");
        entries.get(id).map(|e| {
            if e.loaded.elapsed() < self.ttl {
                Cached::Fresh(e.campaign.clone())
            } else {
                Cached::Stale(e.campaign.clone())
            }
        })
    }

    /// The campaign, from the cache when fresh, else from the store (see the type's
    /// documentation for what a slow or failing store gives).
    pub async fn get(&self, id: &CampaignId) -> Result<Option<Arc<Campaign>>, BackendError> {
        let stale = match self.cached(id) {
            Some(Cached::Fresh(fresh)) => return Ok(fresh),
            Some(Cached::Stale(stale)) => Some(stale),
            None => None,
        };
        let flight = self.flight(id);
        let answer = match stale {
            Some(stale) => {
                // Another caller is reloading it: answer from what is known, do not queue.
                let Ok(_loading) = flight.try_lock() else {
                    return Ok(stale);
                };
                match self.load(id).await {
                    Ok(campaign) => Ok(campaign),
                    Err(e) => {
                        tracing::warn!(campaign = %id, error = %e, "serving the last known campaign: the store did not answer");
                        Ok(stale)
                    }
                }
            }
            None => {
                let Ok(_loading) = tokio::time::timeout(self.load_timeout, flight.lock()).await else {
                    return Err(self.timed_out(id));
                };
                match self.cached(id) {
                    Some(Cached::Fresh(fresh)) => Ok(fresh),
                    _ => self.load(id).await,
                }
            }
        };
        self.land(id, &flight);
        answer
    }

    /// Reads `id` from the store (bounded) and caches it.
    async fn load(&self, id: &CampaignId) -> Result<Option<Arc<Campaign>>, BackendError> {
        let campaign = tokio::time::timeout(self.load_timeout, self.store.campaign(id))
            .await
            .map_err(|_| self.timed_out(id))??
            .map(Arc::new);
        self.put_entry(*id, campaign.clone());
        Ok(campaign)
    }

    fn timed_out(&self, id: &CampaignId) -> BackendError {
        BackendError::new(
            Component::Store,
            self.store.backend(),
            "campaign",
            ErrorKind::Unavailable,
            format!("campaign {id} was not read within {:?}", self.load_timeout),
        )
    }

    /// The single-flight lock of `id`.
    fn flight(&self, id: &CampaignId) -> Arc<tokio::sync::Mutex<()>> {
        self.flights
            .lock()
            .expect("flights lock")
            .entry(*id)
            .or_default()
            .clone()
    }

    /// Forgets `id`'s flight lock once nobody else holds it (so wrong ids do not pile up).
    fn land(&self, id: &CampaignId, flight: &Arc<tokio::sync::Mutex<()>>) {
        let mut flights = self.flights.lock().expect("flights lock");
        // Two references: the map's and the caller's.
        if Arc::strong_count(flight) <= 2 {
            flights.remove(id);
        }
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
            .field("load_timeout", &self.load_timeout)
            .finish_non_exhaustive()
    }
}
