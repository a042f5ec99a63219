//! [`IssueStore`]: the durable source of truth.

use async_trait::async_trait;

use crate::domain::{
    Campaign, CampaignId, CampaignState, Coupon, CouponId, IssueEvent, RecordOutcome, RedeemOutcome, Redemption,
    ReservationKey, UserId,
};
use crate::error::BackendError;

/// Campaigns, coupons and redemptions, durably. The UNIQUE key
/// (campaign, user, nth) is the last guard against duplicates.
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
    /// events changes nothing (they come back [`RecordOutcome::Duplicate`]); invalid
    /// events are [`RecordOutcome::Rejected`] and write nothing, while the rest are stored.
    async fn record(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError>;

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

    /// Every user holding coupons of the campaign, with the highest `nth` they hold.
    async fn holders(&self, campaign_id: &CampaignId) -> Result<Vec<(UserId, u32)>, BackendError>;

    /// For each key, whether that coupon is stored.
    async fn stored_keys(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<bool>, BackendError>;
}
