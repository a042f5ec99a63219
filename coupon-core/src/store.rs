//! [`IssueStore`]: the durable source of truth.

use async_trait::async_trait;

use crate::domain::{
    Campaign, CampaignId, CampaignState, Coupon, CouponId, IssueEvent, RecordOutcome, RedeemOutcome, Redemption,
    ReservationKey, UserId, VoidOutcome,
};
use crate::error::BackendError;
use crate::hooks::{Notice, PendingNotices};

/// Campaigns, coupons and redemptions, durably: the source of truth, and the place
/// where the protocol's fences live (`docs/PROTOCOL.md`):
///
/// - the UNIQUE key (campaign, user, nth) is the last guard against duplicates (I2);
/// - a per-campaign issued count, updated in the same transaction as each batch,
///   refuses coupons beyond the stock (I1), whatever the gate did;
/// - a voided admission ([`IssueStore::void`]) can never be stored afterwards, so stock
///   the gate gave back cannot be sold twice, however late the event arrives;
/// - an admission number ([`IssueEvent::admission_seq`]) is stored at most once per
///   campaign: a second coupon with the same number proves the gate went back in time.
///
/// Implementations: [`crate::memory::MemoryStore`] here; PostgreSQL, MySQL/MariaDB
/// and SQLite in `coupon-sql`.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait IssueStore: Send + Sync + 'static {
    /// The backend's name for errors and metrics (`memory`, `postgres`, ...).
    fn backend(&self) -> &'static str;

    /// Stores a new campaign. A campaign with the same id already stored is an error
    /// of kind [`crate::ErrorKind::Rejected`].
    async fn create_campaign(&self, campaign: &Campaign) -> Result<(), BackendError>;

    /// Reads a campaign.
    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, BackendError>;

    /// Moves a campaign to `state` if its lifecycle allows it
    /// ([`CampaignState::can_become`]), atomically. Returns the campaign as it is
    /// afterwards (its state differs from `state` if the move was refused), or `None`
    /// if there is no such campaign.
    async fn set_campaign_state(&self, id: &CampaignId, state: CampaignState)
    -> Result<Option<Campaign>, BackendError>;

    /// Records issue events idempotently: one outcome per event, in order. Replaying
    /// events changes nothing (they come back [`RecordOutcome::Duplicate`], matched by
    /// coupon id); invalid events are [`RecordOutcome::Rejected`] and write nothing;
    /// events refused by a fence are [`RecordOutcome::Fenced`] (voided, slot taken by
    /// another coupon, admission number taken by another coupon, or beyond the stock)
    /// and write nothing; the rest are stored.
    async fn record(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError>;

    /// Voids admissions that are not stored, atomically with respect to
    /// [`IssueStore::record`]: afterwards an event with a voided coupon id is refused
    /// ([`crate::Fence::Voided`]). One outcome per key, in order: voided (now or before),
    /// or stored (then it must be settled, not released). Idempotent.
    async fn void(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<VoidOutcome>, BackendError>;

    /// Ids of every campaign in state [`CampaignState::Open`], oldest first (a server
    /// with an in-memory gate restores these at start).
    async fn open_campaigns(&self) -> Result<Vec<CampaignId>, BackendError>;

    /// Reads a coupon.
    async fn coupon(&self, id: &CouponId) -> Result<Option<Coupon>, BackendError>;

    /// A user's coupons, newest first.
    async fn coupons_of_user(&self, user_id: &UserId) -> Result<Vec<Coupon>, BackendError>;

    /// Redeems a coupon once: of concurrent redemptions exactly one wins.
    async fn redeem(&self, redemption: &Redemption) -> Result<RedeemOutcome, BackendError>;

    /// Coupons stored for a campaign.
    async fn issued_count(&self, campaign_id: &CampaignId) -> Result<u64, BackendError>;

    /// Every stored `(user, nth)` slot of the campaign, ordered by user then `nth`.
    async fn holders(&self, campaign_id: &CampaignId) -> Result<Vec<(UserId, u32)>, BackendError>;

    /// The highest admission number ([`IssueEvent::admission_seq`]) among the campaign's
    /// stored coupons, `0` if none carries one. A gate restored from the store continues
    /// above it.
    async fn highest_admission_seq(&self, campaign_id: &CampaignId) -> Result<u64, BackendError>;

    /// Admissions of the campaign voided so far.
    async fn voided_count(&self, campaign_id: &CampaignId) -> Result<u64, BackendError>;

    /// For each key, whether that coupon (matched by coupon id) is stored.
    async fn stored_keys(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<bool>, BackendError>;

    /// Up to `limit` coupons with notices not yet delivered ([`crate::hooks`]), in coupon
    /// id order, after `after` (exclusive) when given. A stored coupon's "stored" notice
    /// is pending from the moment it is stored (where the store raises stored notices: a
    /// SQL store when configured to); a redemption raises its "redeemed" notice
    /// atomically with the redemption.
    async fn pending_notices(&self, after: Option<CouponId>, limit: usize)
    -> Result<Vec<PendingNotices>, BackendError>;

    /// Clears `notice` of each coupon in `ids` (delivered); its other notice, raised
    /// before or since, stays pending. Idempotent.
    async fn clear_notices(&self, notice: Notice, ids: &[CouponId]) -> Result<(), BackendError>;
}
