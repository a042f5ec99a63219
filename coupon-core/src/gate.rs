//! [`IssueGate`]: the hot path's atomic admission, with its reservation ledger.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Admission, CampaignId, CouponId, GateCampaign, Reservation, ReservationKey, UserId};
use crate::error::BackendError;

/// One admission request of a batch ([`IssueGate::admit_many`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdmitRequest {
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The user.
    pub user_id: UserId,
    /// The admission's identity, chosen by the caller: the ledger holds it under this id.
    pub coupon_id: CouponId,
}

/// What the gate holds for a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCounts {
    /// Stock left.
    pub remaining: u64,
    /// Admissions in the ledger not yet confirmed as stored.
    pub pending: u64,
    /// The last admission number given ([`Admission::Admitted`]'s `seq`).
    pub seq: u64,
    /// Whether the campaign is fenced ([`IssueGate::fence`]) until a sync.
    pub fenced: bool,
}

/// What [`IssueGate::restore`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The gate did not hold the campaign and it was created from the store's holders.
    pub created: bool,
    /// Users whose holdings the gate had forgotten (or held fewer of) and now knows.
    pub users_restored: u64,
    /// Stock taken for the coupons the gate had forgotten.
    pub stock_taken: u64,
    /// Stock left afterwards.
    pub remaining: u64,
    /// The campaign was fenced ([`IssueGate::fence`]) and admits again.
    pub unfenced: bool,
}

/// Decides admissions atomically: per-user check, stock check, decrement, record
/// the holder and the reservation, as one indivisible step.
///
/// Every admission also goes into a **reservation ledger** under its own identity (the
/// coupon id the caller chose) with its time on the gate's clock, until the cold path
/// confirms it stored the coupon ([`IssueGate::settle`]). The [`crate::Reconciler`]
/// releases ledger entries that were never acknowledged, after voiding them in the
/// store ([`crate::IssueStore::void`]). A user's holding is the *set* of `nth`s held:
/// an admission takes the lowest free one, and a release frees exactly its own.
///
/// Implementations: [`crate::memory::MemoryGate`] here, `RedisGate` in `coupon-redis`.
/// They all pass [`crate::conformance`]'s gate suite.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait IssueGate: Send + Sync + 'static {
    /// The backend's name for errors and metrics (`memory`, `redis`, ...).
    fn backend(&self) -> &'static str;

    /// Loads a campaign's stock, per-user limit and window. Idempotent: opening a
    /// campaign the gate already holds changes nothing (stock is never reset).
    async fn open(&self, campaign: &GateCampaign) -> Result<(), BackendError>;

    /// Admits `user_id` to `campaign_id` at `now` (checked against the issue window),
    /// as admission `coupon_id`, or says why not. The ledger entry's time is taken from
    /// the gate's own clock ([`IssueGate::clock`]).
    async fn admit(
        &self,
        campaign_id: &CampaignId,
        user_id: &UserId,
        coupon_id: &CouponId,
        now: DateTime<Utc>,
    ) -> Result<Admission, BackendError>;

    /// Admits many requests in order, as if [`IssueGate::admit`] were called for each
    /// in turn; one result per request. The default does exactly that; a backend over
    /// the network answers with one round trip where it can (Redis: one script call
    /// per campaign).
    async fn admit_many(&self, requests: &[AdmitRequest], now: DateTime<Utc>) -> Result<Vec<Admission>, BackendError> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.admit(&r.campaign_id, &r.user_id, &r.coupon_id, now).await?);
        }
        Ok(out)
    }

    /// Compensates one admission that was not acknowledged: if exactly this admission
    /// (`key.coupon_id`) is still in the ledger, removes it, returns its stock and frees
    /// its `nth`. Returns whether anything was released. An entry already settled, or
    /// another admission of the same user and `nth`, is never released. Callers void the
    /// admission in the store first ([`crate::IssueStore::void`]).
    async fn release(&self, campaign_id: &CampaignId, key: &ReservationKey) -> Result<bool, BackendError>;

    /// Removes ledger entries the store has confirmed (matched by coupon id); returns
    /// how many were present.
    async fn settle(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<u64, BackendError>;

    /// Ledger entries admitted before `admitted_before` (on the gate's clock), oldest
    /// first, at most `limit`.
    async fn reservations(
        &self,
        campaign_id: &CampaignId,
        admitted_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reservation>, BackendError>;

    /// Stock left and pending reservations, or `None` if the gate does not hold the campaign.
    async fn counts(&self, campaign_id: &CampaignId) -> Result<Option<GateCounts>, BackendError>;

    /// The `nth`s the gate believes `user_id` holds in the campaign, ascending.
    async fn holding(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<Vec<u32>, BackendError>;

    /// The gate's clock: the time ledger entries are scored with. The reconciler takes
    /// its cutoff from here, so ages are measured on one clock whatever the hosts' clocks say.
    async fn clock(&self) -> Result<DateTime<Utc>, BackendError> {
        Ok(crate::domain::timestamp_now())
    }

    /// Makes the gate know at least what the store holds: `holders` lists every stored
    /// `(user, nth)` slot; each one the gate does not hold is marked held, taking one unit
    /// of stock. If the gate does not hold the campaign at all, it is created with stock
    /// `total - slots`. Never returns stock, so it is safe while traffic flows.
    ///
    /// Admission numbers continue above `seq_floor` (the highest the store holds), and a
    /// fenced campaign ([`IssueGate::fence`]) admits again once every holder is restored.
    async fn restore(
        &self,
        campaign: &GateCampaign,
        holders: &[(UserId, u32)],
        seq_floor: u64,
    ) -> Result<RestoreReport, BackendError>;

    /// Fences the campaign: admissions answer [`Admission::Fenced`] until
    /// [`IssueGate::restore`]. Everything else (release, settle, the ledger) works as
    /// before, so the reconciler can still finish what was admitted. Called when the store
    /// proves the gate went back in time ([`crate::Fence::proves_gate_loss`]). A campaign
    /// the gate does not hold stays unknown (it answers [`Admission::NotOpen`], already
    /// fenced by the issuer).
    async fn fence(&self, campaign_id: &CampaignId) -> Result<(), BackendError>;

    /// Closes the campaign for good: afterwards admissions answer
    /// [`Admission::Closed`] on every server whatever its cache says, holders and
    /// ledger are freed, and neither [`IssueGate::open`] nor [`IssueGate::restore`]
    /// re-creates it (a restore is refused as `Rejected`).
    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError>;

    /// Drops everything the gate holds for the campaign (stock, holders, ledger,
    /// numbering), as losing the gate's data would; admissions then answer
    /// [`Admission::NotOpen`] until a sync ([`crate::CampaignService::sync`]) rebuilds
    /// it from the store. For rebuilding a damaged gate, and for tests of data loss.
    /// A closed campaign stays closed.
    async fn forget(&self, campaign_id: &CampaignId) -> Result<(), BackendError>;
}
