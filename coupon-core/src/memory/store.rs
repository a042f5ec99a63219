//! [`MemoryStore`]: the store in process memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::domain::{
    Campaign, CampaignId, CampaignState, Coupon, CouponId, CouponState, Fence, IssueEvent, RecordOutcome,
    RedeemOutcome, Redemption, RejectReason, ReservationKey, UserId, VoidOutcome,
};
use crate::error::{BackendError, Component, ErrorKind};
use crate::hooks::{Notice, PendingNotices};
use crate::store::IssueStore;

/// The store in process memory, behind one lock. Not durable: use it for tests and
/// for ephemeral embedded setups; the reference server's embedded default uses SQLite.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    state: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    campaigns: HashMap<CampaignId, Campaign>,
    coupons: HashMap<CouponId, Coupon>,
    by_key: HashMap<(CampaignId, UserId, u32), CouponId>,
    // Admission numbers stored, and the highest per campaign.
    by_seq: HashMap<(CampaignId, u64), CouponId>,
    highest_seq: HashMap<CampaignId, u64>,
    by_user: HashMap<UserId, Vec<CouponId>>,
    counts: HashMap<CampaignId, u64>,
    voids: HashMap<CouponId, CampaignId>,
    void_counts: HashMap<CampaignId, u64>,
    // Notices not yet delivered, as `Notice::bit`s, in coupon id order.
    pending_notices: BTreeMap<CouponId, i16>,
}

impl State {
    fn check(&self, event: &IssueEvent) -> Result<(), RejectReason> {
        self.campaigns
            .get(&event.campaign_id)
            .ok_or(RejectReason::UnknownCampaign)?
            .check_event(event)
    }

    /// One event through every check and fence, in the order the SQL stores apply them.
    fn record_one(&mut self, e: &IssueEvent) -> RecordOutcome {
        if let Err(reason) = self.check(e) {
            return RecordOutcome::Rejected { reason };
        }
        if self.voids.contains_key(&e.coupon_id) {
            return RecordOutcome::Fenced { fence: Fence::Voided };
        }
        if self.coupons.contains_key(&e.coupon_id) {
            return RecordOutcome::Duplicate;
        }
        if let Some(seq) = e.admission_seq
            && self.by_seq.contains_key(&(e.campaign_id, seq))
        {
            return RecordOutcome::Fenced {
                fence: Fence::SequenceReused,
            };
        }
        let key = (e.campaign_id, e.user_id.clone(), e.nth);
        if self.by_key.contains_key(&key) {
            return RecordOutcome::Fenced {
                fence: Fence::SlotTaken,
            };
        }
        let total = self.campaigns[&e.campaign_id].total_quantity;
        let count = self.counts.entry(e.campaign_id).or_insert(0);
        if *count >= total {
            return RecordOutcome::Fenced {
                fence: Fence::StockExhausted,
            };
        }
        *count += 1;
        if let Some(seq) = e.admission_seq {
            self.by_seq.insert((e.campaign_id, seq), e.coupon_id);
            let highest = self.highest_seq.entry(e.campaign_id).or_insert(0);
            *highest = (*highest).max(seq);
        }
        self.by_key.insert(key, e.coupon_id);
        self.coupons.insert(e.coupon_id, Coupon::from_event(e));
        self.by_user.entry(e.user_id.clone()).or_default().push(e.coupon_id);
        self.pending_notices.insert(e.coupon_id, Notice::Stored.bit());
        RecordOutcome::Stored
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl IssueStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn create_campaign(&self, campaign: &Campaign) -> Result<(), BackendError> {
        let mut s = self.state.write().expect("store lock");
        if s.campaigns.contains_key(&campaign.id) {
            return Err(BackendError::new(
                Component::Store,
                "memory",
                "create_campaign",
                ErrorKind::Rejected,
                format!("campaign {} already exists", campaign.id),
            ));
        }
        s.campaigns.insert(campaign.id, campaign.clone());
        Ok(())
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, BackendError> {
        Ok(self.state.read().expect("store lock").campaigns.get(id).cloned())
    }

    async fn open_campaigns(&self) -> Result<Vec<CampaignId>, BackendError> {
        let s = self.state.read().expect("store lock");
        let mut open: Vec<&Campaign> = s
            .campaigns
            .values()
            .filter(|c| c.state == CampaignState::Open)
            .collect();
        open.sort_by_key(|c| (c.created_at, c.id));
        Ok(open.into_iter().map(|c| c.id).collect())
    }

    async fn set_campaign_state(
        &self,
        id: &CampaignId,
        state: CampaignState,
    ) -> Result<Option<Campaign>, BackendError> {
        let mut s = self.state.write().expect("store lock");
        Ok(s.campaigns.get_mut(id).map(|c| {
            if c.state.can_become(state) {
                c.state = state;
            }
            c.clone()
        }))
    }

    async fn record(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
        let mut s = self.state.write().expect("store lock");
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(s.record_one(e));
        }
        Ok(out)
    }

    async fn void(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<VoidOutcome>, BackendError> {
        // One lock for record and void: a coupon id ends up stored or voided, never both.
        let mut s = self.state.write().expect("store lock");
        Ok(keys
            .iter()
            .map(|k| {
                if s.coupons.contains_key(&k.coupon_id) {
                    VoidOutcome::Stored
                } else {
                    if s.voids.insert(k.coupon_id, *campaign_id).is_none() {
                        *s.void_counts.entry(*campaign_id).or_insert(0) += 1;
                    }
                    VoidOutcome::Voided
                }
            })
            .collect())
    }

    async fn highest_admission_seq(&self, campaign_id: &CampaignId) -> Result<u64, BackendError> {
        let s = self.state.read().expect("store lock");
        Ok(s.highest_seq.get(campaign_id).copied().unwrap_or(0))
    }

    async fn voided_count(&self, campaign_id: &CampaignId) -> Result<u64, BackendError> {
        let s = self.state.read().expect("store lock");
        Ok(s.void_counts.get(campaign_id).copied().unwrap_or(0))
    }

    async fn coupon(&self, id: &CouponId) -> Result<Option<Coupon>, BackendError> {
        Ok(self.state.read().expect("store lock").coupons.get(id).cloned())
    }

    async fn coupons_of_user(&self, user_id: &UserId) -> Result<Vec<Coupon>, BackendError> {
        let s = self.state.read().expect("store lock");
        let mut coupons: Vec<Coupon> = s
            .by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| s.coupons.get(id).cloned())
            .collect();
        coupons.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then(b.id.cmp(&a.id)));
        Ok(coupons)
    }

    async fn redeem(&self, r: &Redemption) -> Result<RedeemOutcome, BackendError> {
        let mut s = self.state.write().expect("store lock");
        let min_order_amount = match s.coupons.get(&r.coupon_id) {
            Some(c) if c.user_id == r.user_id => s
                .campaigns
                .get(&c.campaign_id)
                .and_then(|campaign| campaign.conditions.min_order_amount),
            _ => return Ok(RedeemOutcome::NotFound),
        };
        let coupon = s.coupons.get_mut(&r.coupon_id).expect("checked above");
        if let Some(answer) = coupon.redemption_answer(r, min_order_amount) {
            return Ok(answer);
        }
        coupon.state = CouponState::Redeemed;
        coupon.redeemed_at = Some(r.at);
        coupon.order_id = Some(r.order_id.clone());
        let coupon = coupon.clone();
        *s.pending_notices.entry(coupon.id).or_insert(0) |= Notice::Redeemed.bit();
        Ok(RedeemOutcome::Redeemed { coupon })
    }

    async fn issued_count(&self, campaign_id: &CampaignId) -> Result<u64, BackendError> {
        let s = self.state.read().expect("store lock");
        Ok(s.counts.get(campaign_id).copied().unwrap_or(0))
    }

    async fn holders(&self, campaign_id: &CampaignId) -> Result<Vec<(UserId, u32)>, BackendError> {
        let s = self.state.read().expect("store lock");
        let mut holders: Vec<(UserId, u32)> = s
            .by_key
            .keys()
            .filter(|(c, _, _)| c == campaign_id)
            .map(|(_, u, n)| (u.clone(), *n))
            .collect();
        holders.sort();
        Ok(holders)
    }

    async fn stored_keys(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<bool>, BackendError> {
        let s = self.state.read().expect("store lock");
        Ok(keys
            .iter()
            .map(|k| {
                s.coupons
                    .get(&k.coupon_id)
                    .is_some_and(|c| c.campaign_id == *campaign_id)
            })
            .collect())
    }

    async fn pending_notices(
        &self,
        after: Option<CouponId>,
        limit: usize,
    ) -> Result<Vec<PendingNotices>, BackendError> {
        use std::ops::Bound;
        let s = self.state.read().expect("store lock");
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(s.pending_notices
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(id, bits)| PendingNotices::new(s.coupons[id].clone(), Notice::from_bits(*bits)))
            .collect())
    }

    async fn clear_notices(&self, notice: Notice, ids: &[CouponId]) -> Result<(), BackendError> {
        let mut s = self.state.write().expect("store lock");
        for id in ids {
            if let Some(bits) = s.pending_notices.get_mut(id) {
                *bits &= !notice.bit();
                if *bits == 0 {
                    s.pending_notices.remove(id);
                }
            }
        }
        Ok(())
    }
}
