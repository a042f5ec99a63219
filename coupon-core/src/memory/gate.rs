//! [`MemoryGate`]: the gate in process memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Admission, CampaignId, GateCampaign, Reservation, ReservationKey, UserId};
use crate::error::BackendError;
use crate::gate::{AdmitRequest, GateCounts, IssueGate, RestoreReport};

/// The gate in process memory: one mutex per campaign, so campaigns never contend
/// with each other and an admission is one short critical section.
///
/// It is the embedded default of the reference server, where the gate is restored
/// from the store at start ([`crate::CampaignService::sync`]).
#[derive(Debug, Default, Clone)]
pub struct MemoryGate {
    campaigns: Arc<RwLock<HashMap<CampaignId, Arc<Mutex<CampaignGate>>>>>,
}

#[derive(Debug)]
struct CampaignGate {
    spec: GateCampaign,
    remaining: u64,
    holders: HashMap<UserId, u32>,
    // Ordered by admission time for the reconciler; the map finds an entry by key.
    ledger: BTreeSet<(DateTime<Utc>, ReservationKey)>,
    ledger_index: HashMap<ReservationKey, DateTime<Utc>>,
}

impl CampaignGate {
    fn new(spec: GateCampaign) -> Self {
        Self {
            spec,
            remaining: spec.total_quantity,
            holders: HashMap::new(),
            ledger: BTreeSet::new(),
            ledger_index: HashMap::new(),
        }
    }

    fn admit(&mut self, user_id: &UserId, now: DateTime<Utc>) -> Admission {
        if now < self.spec.issue_starts_at {
            return Admission::NotOpen;
        }
        if now >= self.spec.issue_ends_at {
            return Admission::Closed;
        }
        let held = self.holders.get(user_id).copied().unwrap_or(0);
        if held >= self.spec.per_user_limit {
            return Admission::AlreadyIssued;
        }
        if self.remaining == 0 {
            return Admission::SoldOut;
        }
        self.remaining -= 1;
        let nth = held + 1;
        self.holders.insert(user_id.clone(), nth);
        let key = ReservationKey {
            user_id: user_id.clone(),
            nth,
        };
        self.ledger.insert((now, key.clone()));
        self.ledger_index.insert(key, now);
        Admission::Admitted {
            nth,
            remaining: self.remaining,
        }
    }

    fn take_from_ledger(&mut self, key: &ReservationKey) -> bool {
        match self.ledger_index.remove(key) {
            Some(at) => {
                self.ledger.remove(&(at, key.clone()));
                true
            }
            None => false,
        }
    }
}

impl MemoryGate {
    /// An empty gate.
    pub fn new() -> Self {
        Self::default()
    }

    fn campaign(&self, id: &CampaignId) -> Option<Arc<Mutex<CampaignGate>>> {
        self.campaigns.read().expect("gate map lock").get(id).cloned()
    }
}

#[async_trait]
impl IssueGate for MemoryGate {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn open(&self, campaign: &GateCampaign) -> Result<(), BackendError> {
        self.campaigns
            .write()
            .expect("gate map lock")
            .entry(campaign.id)
            .or_insert_with(|| Arc::new(Mutex::new(CampaignGate::new(*campaign))));
        Ok(())
    }

    async fn admit(
        &self,
        campaign_id: &CampaignId,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> Result<Admission, BackendError> {
        Ok(match self.campaign(campaign_id) {
            Some(c) => c.lock().expect("campaign lock").admit(user_id, now),
            None => Admission::NotOpen,
        })
    }

    async fn admit_many(&self, requests: &[AdmitRequest], now: DateTime<Utc>) -> Result<Vec<Admission>, BackendError> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.admit(&r.campaign_id, &r.user_id, now).await?);
        }
        Ok(out)
    }

    async fn release(&self, campaign_id: &CampaignId, key: &ReservationKey) -> Result<bool, BackendError> {
        let Some(c) = self.campaign(campaign_id) else {
            return Ok(false);
        };
        let mut c = c.lock().expect("campaign lock");
        if !c.take_from_ledger(key) {
            return Ok(false);
        }
        c.remaining = (c.remaining + 1).min(c.spec.total_quantity);
        if let Some(held) = c.holders.get_mut(&key.user_id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                c.holders.remove(&key.user_id);
            }
        }
        Ok(true)
    }

    async fn settle(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<u64, BackendError> {
        let Some(c) = self.campaign(campaign_id) else {
            return Ok(0);
        };
        let mut c = c.lock().expect("campaign lock");
        Ok(keys.iter().filter(|k| c.take_from_ledger(k)).count() as u64)
    }

    async fn reservations(
        &self,
        campaign_id: &CampaignId,
        admitted_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reservation>, BackendError> {
        let Some(c) = self.campaign(campaign_id) else {
            return Ok(Vec::new());
        };
        let c = c.lock().expect("campaign lock");
        Ok(c.ledger
            .iter()
            .take_while(|(at, _)| *at < admitted_before)
            .take(limit)
            .map(|(at, key)| Reservation {
                key: key.clone(),
                admitted_at: *at,
            })
            .collect())
    }

    async fn counts(&self, campaign_id: &CampaignId) -> Result<Option<GateCounts>, BackendError> {
        Ok(self.campaign(campaign_id).map(|c| {
            let c = c.lock().expect("campaign lock");
            GateCounts {
                remaining: c.remaining,
                pending: c.ledger.len() as u64,
            }
        }))
    }

    async fn holding(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<u32, BackendError> {
        Ok(self
            .campaign(campaign_id)
            .and_then(|c| c.lock().expect("campaign lock").holders.get(user_id).copied())
            .unwrap_or(0))
    }

    async fn restore(&self, campaign: &GateCampaign, holders: &[(UserId, u32)]) -> Result<RestoreReport, BackendError> {
        let (c, created) = {
            let mut map = self.campaigns.write().expect("gate map lock");
            match map.get(&campaign.id) {
                Some(c) => (c.clone(), false),
                None => {
                    let c = Arc::new(Mutex::new(CampaignGate::new(*campaign)));
                    map.insert(campaign.id, c.clone());
                    (c, true)
                }
            }
        };
        let mut c = c.lock().expect("campaign lock");
        let mut report = RestoreReport {
            created,
            ..RestoreReport::default()
        };
        for (user, nth) in holders {
            let held = c.holders.get(user).copied().unwrap_or(0);
            if *nth > held {
                let missing = u64::from(nth - held);
                c.holders.insert(user.clone(), *nth);
                let taken = missing.min(c.remaining);
                c.remaining -= taken;
                report.users_restored += 1;
                report.stock_taken += missing;
            }
        }
        report.remaining = c.remaining;
        Ok(report)
    }

    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.campaigns.write().expect("gate map lock").remove(campaign_id);
        Ok(())
    }
}
