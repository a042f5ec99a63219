//! [`MemoryGate`]: the gate in process memory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Admission, CampaignId, CouponId, GateCampaign, Reservation, ReservationKey, UserId};
use crate::error::BackendError;
use crate::gate::{GateCounts, IssueGate, RestoreReport};

/// The gate in process memory: one mutex per campaign, so campaigns never contend
/// with each other and an admission is one short critical section.
///
/// It is the embedded default of the reference server, where the gate is restored
/// from the store at start ([`crate::CampaignService::sync`]).
#[derive(Debug, Default, Clone)]
pub struct MemoryGate {
    campaigns: Arc<RwLock<HashMap<CampaignId, Arc<Mutex<CampaignGate>>>>>,
    // Closed for good: admissions answer `Closed`, and neither open nor restore
    // re-creates them.
    closed: Arc<RwLock<HashSet<CampaignId>>>,
}

#[derive(Debug)]
struct CampaignGate {
    spec: GateCampaign,
    remaining: u64,
    // The nths each user holds (a user with none has no entry).
    holders: HashMap<UserId, BTreeSet<u32>>,
    // Ordered by admission time for the reconciler; the map finds an entry by its
    // identity, the coupon id.
    ledger: BTreeSet<(DateTime<Utc>, CouponId)>,
    ledger_index: HashMap<CouponId, (DateTime<Utc>, ReservationKey)>,
    // The last admission number given.
    seq: u64,
    fenced: bool,
}

impl CampaignGate {
    fn new(spec: GateCampaign) -> Self {
        Self {
            spec,
            remaining: spec.total_quantity,
            holders: HashMap::new(),
            ledger: BTreeSet::new(),
            ledger_index: HashMap::new(),
            seq: 0,
            fenced: false,
        }
    }

    fn admit(&mut self, user_id: &UserId, coupon_id: &CouponId, now: DateTime<Utc>) -> Admission {
        if now < self.spec.issue_starts_at {
            return Admission::NotOpen;
        }
        if now >= self.spec.issue_ends_at {
            return Admission::Closed;
        }
        if self.fenced {
            return Admission::Fenced;
        }
        let held = self.holders.get(user_id);
        if held.map_or(0, BTreeSet::len) >= self.spec.per_user_limit as usize {
            return Admission::AlreadyIssued;
        }
        if self.remaining == 0 {
            return Admission::SoldOut;
        }
        // The lowest free nth: a released lower nth is taken again, never a held one.
        let nth = (1..)
            .find(|n| !held.is_some_and(|h| h.contains(n)))
            .expect("a free nth below the limit");
        self.remaining -= 1;
        self.holders.entry(user_id.clone()).or_default().insert(nth);
        let key = ReservationKey {
            coupon_id: *coupon_id,
            user_id: user_id.clone(),
            nth,
        };
        // The ledger's time is the gate's own clock, like Redis `TIME`: the caller's `now`
        // only decides the window.
        let at = crate::domain::timestamp_now();
        self.ledger.insert((at, *coupon_id));
        self.ledger_index.insert(*coupon_id, (at, key));
        self.seq += 1;
        Admission::Admitted {
            nth,
            remaining: self.remaining,
            seq: self.seq,
            admitted_at: at,
        }
    }

    /// Removes exactly this admission from the ledger; `None` if it is not there (or
    /// the coupon id is there for another user or nth, which cannot be the same admission).
    fn take_from_ledger(&mut self, key: &ReservationKey) -> Option<ReservationKey> {
        match self.ledger_index.get(&key.coupon_id) {
            Some((_, held)) if held == key => {
                let (at, held) = self.ledger_index.remove(&key.coupon_id).expect("just found");
                self.ledger.remove(&(at, key.coupon_id));
                Some(held)
            }
            _ => None,
        }
    }
}

impl MemoryGate {
    /// An empty gate.
    pub fn new() -> Self {
        Self::default()
    }

    fn is_closed(&self, id: &CampaignId) -> bool {
        self.closed.read().expect("closed set lock").contains(id)
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
        if self.is_closed(&campaign.id) {
            return Ok(());
        }
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
        coupon_id: &CouponId,
        now: DateTime<Utc>,
    ) -> Result<Admission, BackendError> {
        Ok(match self.campaign(campaign_id) {
            Some(c) => c.lock().expect("campaign lock").admit(user_id, coupon_id, now),
            None if self.is_closed(campaign_id) => Admission::Closed,
            None => Admission::NotOpen,
        })
    }

    async fn release(&self, campaign_id: &CampaignId, key: &ReservationKey) -> Result<bool, BackendError> {
        let Some(c) = self.campaign(campaign_id) else {
            return Ok(false);
        };
        let mut c = c.lock().expect("campaign lock");
        if c.take_from_ledger(key).is_none() {
            return Ok(false);
        }
        c.remaining = (c.remaining + 1).min(c.spec.total_quantity);
        if let Some(held) = c.holders.get_mut(&key.user_id) {
            held.remove(&key.nth);
            if held.is_empty() {
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
        Ok(keys.iter().filter(|k| c.take_from_ledger(k).is_some()).count() as u64)
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
            .map(|(at, coupon_id)| Reservation {
                key: c.ledger_index[coupon_id].1.clone(),
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
                seq: c.seq,
                fenced: c.fenced,
            }
        }))
    }

    async fn holding(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<Vec<u32>, BackendError> {
        Ok(self
            .campaign(campaign_id)
            .and_then(|c| {
                let c = c.lock().expect("campaign lock");
                c.holders.get(user_id).map(|h| h.iter().copied().collect())
            })
            .unwrap_or_default())
    }

    async fn restore(
        &self,
        campaign: &GateCampaign,
        holders: &[(UserId, u32)],
        seq_floor: u64,
    ) -> Result<RestoreReport, BackendError> {
        if self.is_closed(&campaign.id) {
            return Err(BackendError::new(
                crate::error::Component::Gate,
                "memory",
                "restore",
                crate::error::ErrorKind::Rejected,
                "the campaign is closed; a sync cannot re-create its gate",
            ));
        }
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
        let mut restored_users = std::collections::HashSet::new();
        for (user, nth) in holders {
            if c.holders.entry(user.clone()).or_default().insert(*nth) {
                let taken = u64::from(c.remaining > 0);
                c.remaining -= taken;
                report.stock_taken += taken;
                restored_users.insert(user);
            }
        }
        report.users_restored = restored_users.len() as u64;
        report.remaining = c.remaining;
        c.seq = c.seq.max(seq_floor);
        report.unfenced = std::mem::take(&mut c.fenced);
        Ok(report)
    }

    async fn fence(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        if let Some(c) = self.campaign(campaign_id) {
            c.lock().expect("campaign lock").fenced = true;
        }
        Ok(())
    }

    async fn forget(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.campaigns.write().expect("gate map lock").remove(campaign_id);
        Ok(())
    }

    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        // Marked closed before it is forgotten: no instant where it is neither.
        self.closed.write().expect("closed set lock").insert(*campaign_id);
        self.campaigns.write().expect("gate map lock").remove(campaign_id);
        Ok(())
    }
}
