//! Issued coupons, issue events and the outcomes of issuing and redeeming.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::campaign::Campaign;
use super::ids::{CampaignId, CouponId, EventId, UserId};

/// Where a coupon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponState {
    /// Issued, not yet used.
    Issued,
    /// Used once; it cannot be used again.
    Redeemed,
}

impl CouponState {
    /// The lowercase name used in APIs and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            CouponState::Issued => "issued",
            CouponState::Redeemed => "redeemed",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "issued" => Some(CouponState::Issued),
            "redeemed" => Some(CouponState::Redeemed),
            _ => None,
        }
    }
}

/// A stored coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Its id.
    pub id: CouponId,
    /// The campaign it came from.
    pub campaign_id: CampaignId,
    /// Who holds it.
    pub user_id: UserId,
    /// Which of the user's coupons of this campaign it is (1-based, at most the per-user limit).
    pub nth: u32,
    /// When the gate admitted it.
    pub issued_at: DateTime<Utc>,
    /// Redeemable until this moment (exclusive).
    pub valid_until: DateTime<Utc>,
    /// Issued or redeemed.
    pub state: CouponState,
    /// When it was redeemed.
    pub redeemed_at: Option<DateTime<Utc>>,
    /// The order it was redeemed for.
    pub order_id: Option<String>,
}

impl Coupon {
    /// The coupon an event describes, not yet redeemed.
    pub fn from_event(event: &IssueEvent) -> Self {
        Self {
            id: event.coupon_id,
            campaign_id: event.campaign_id,
            user_id: event.user_id.clone(),
            nth: event.nth,
            issued_at: event.issued_at,
            valid_until: event.valid_until,
            state: CouponState::Issued,
            redeemed_at: None,
            order_id: None,
        }
    }
}

impl Coupon {
    /// Why `redemption` cannot redeem this coupon, checked in the order every store
    /// answers: not the owner (told apart from nothing), already redeemed, not yet valid,
    /// expired, below the minimum order amount. `None` when it can.
    /// The answer to `redemption` given the coupon as it is now, when the redemption did
    /// not apply: the same success again when this very order redeemed it before (a
    /// retry after a lost answer), else the refusal. `None` when it is redeemable now
    /// (the store's update ran before the coupon was stored: try again).
    pub fn redemption_answer(&self, redemption: &Redemption, min_order_amount: Option<u64>) -> Option<RedeemOutcome> {
        if self.user_id == redemption.user_id
            && self.state == CouponState::Redeemed
            && self.order_id.as_deref() == Some(redemption.order_id.as_str())
        {
            return Some(RedeemOutcome::Redeemed { coupon: self.clone() });
        }
        self.redemption_refusal(redemption, min_order_amount)
    }

    /// Why `redemption` cannot apply to the coupon as it is now; `None` if it can.
    pub fn redemption_refusal(&self, redemption: &Redemption, min_order_amount: Option<u64>) -> Option<RedeemOutcome> {
        if self.user_id != redemption.user_id {
            return Some(RedeemOutcome::NotFound);
        }
        if self.state == CouponState::Redeemed {
            return Some(RedeemOutcome::AlreadyRedeemed);
        }
        if redemption.at < self.issued_at {
            return Some(RedeemOutcome::NotYetValid);
        }
        if redemption.at >= self.valid_until {
            return Some(RedeemOutcome::Expired);
        }
        match min_order_amount {
            Some(min) if redemption.order_amount < min => {
                Some(RedeemOutcome::ConditionNotMet { min_order_amount: min })
            }
            _ => None,
        }
    }
}

/// The current version of [`IssueEvent`]'s schema.
pub const ISSUE_EVENT_VERSION: u16 = 1;

/// "This user was issued this coupon": published to the [`crate::EventLog`] on the hot
/// path and written to the [`crate::IssueStore`] on the cold path.
///
/// Encoded as JSON with a `version` field; a consumer refuses versions it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueEvent {
    /// Schema version, [`ISSUE_EVENT_VERSION`].
    pub version: u16,
    /// Unique per event, for consumers that deduplicate.
    pub event_id: EventId,
    /// The coupon's id, told to the user in the response.
    pub coupon_id: CouponId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The user.
    pub user_id: UserId,
    /// Which of the user's coupons of this campaign (1-based).
    pub nth: u32,
    /// When the gate admitted it.
    pub issued_at: DateTime<Utc>,
    /// Redeemable until this moment.
    pub valid_until: DateTime<Utc>,
    /// The gate's admission number ([`Admission::Admitted`]'s `seq`); the store refuses a
    /// number it already holds for another coupon ([`Fence::SequenceReused`]). Absent in
    /// events from before protocol v2 part 2, and from gates that do not number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_seq: Option<u64>,
    /// When the gate admitted it, on the gate's clock ([`Admission::Admitted`]'s
    /// `admitted_at`): the time the log records it under. Absent in older events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<DateTime<Utc>>,
}

impl IssueEvent {
    /// The event for an admission of `user` to `campaign` as its `nth` coupon, at
    /// `issued_at`, with a fresh coupon id.
    pub fn new(campaign: &Campaign, user_id: UserId, nth: u32, issued_at: DateTime<Utc>) -> Self {
        Self::for_admission(campaign, CouponId::new(), user_id, nth, issued_at)
    }

    /// The event of one admission: `coupon_id` is the identity the gate's ledger holds
    /// it under (chosen by the issuer before the gate call).
    pub fn for_admission(
        campaign: &Campaign,
        coupon_id: CouponId,
        user_id: UserId,
        nth: u32,
        issued_at: DateTime<Utc>,
    ) -> Self {
        Self {
            version: ISSUE_EVENT_VERSION,
            event_id: EventId::new(),
            coupon_id,
            campaign_id: campaign.id,
            user_id,
            nth,
            issued_at,
            valid_until: campaign.validity.valid_until(issued_at),
            admission_seq: None,
            admitted_at: None,
        }
    }

    /// The same event stamped with the gate's admission time.
    pub fn with_admitted_at(mut self, at: DateTime<Utc>) -> Self {
        self.admitted_at = Some(at);
        self
    }

    /// The same event carrying the gate's admission number (`0`, a gate that does not
    /// number admissions, leaves it absent).
    pub fn with_admission_seq(mut self, seq: u64) -> Self {
        self.admission_seq = (seq > 0).then_some(seq);
        self
    }

    /// The JSON encoding.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an IssueEvent always serializes")
    }

    /// Decodes the JSON encoding, refusing unknown schema versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u16,
        }
        let v: Versioned = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if v.version != ISSUE_EVENT_VERSION {
            return Err(DecodeError::UnknownVersion(v.version));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    /// The reservation this event settles in the gate's ledger.
    pub fn reservation_key(&self) -> ReservationKey {
        ReservationKey {
            coupon_id: self.coupon_id,
            user_id: self.user_id.clone(),
            nth: self.nth,
        }
    }
}

/// Why bytes from the event log are not an [`IssueEvent`]. Such records are poison:
/// they go to the dead-letter side, never into a retry loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, or not the shape of an event.
    #[error("malformed issue event: {0}")]
    Malformed(String),
    /// A schema version this build does not know.
    #[error("issue event schema version {0} is not supported (this build reads version {ISSUE_EVENT_VERSION})")]
    UnknownVersion(u16),
}

/// One admission held in the gate's reservation ledger. Its identity is the coupon
/// id (unique per admission, never reused), so settling or releasing it can never touch
/// another admission of the same user and `nth` (protocol v2, `docs/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReservationKey {
    /// The admission's identity: the coupon id the event carries.
    pub coupon_id: CouponId,
    /// The user.
    pub user_id: UserId,
    /// Which of the user's coupons.
    pub nth: u32,
}

/// A ledger entry: an admission not yet confirmed as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Whose and which.
    pub key: ReservationKey,
    /// When the gate admitted it.
    pub admitted_at: DateTime<Utc>,
}

/// The gate's answer to one admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Admission {
    /// Admitted: the user's `nth` coupon; `remaining` stock is left.
    Admitted {
        /// Which of the user's coupons (1-based).
        nth: u32,
        /// Stock left after this admission.
        remaining: u64,
        /// The campaign's admission number: the gate numbers admissions 1, 2, 3, ... per
        /// campaign and never gives a number twice unless it went back in time (a
        /// restart from an older snapshot), which the store then detects
        /// ([`Fence::SequenceReused`]). `0` for a gate that does not number admissions.
        seq: u64,
        /// When the gate admitted it, on the gate's own clock: the time its ledger holds
        /// (Redis `TIME`). The event carries it to the log as the record's time, so the
        /// reconciler compares the log's horizon and the ledger on one clock
        /// (PROTOCOL.md section 6), whatever the servers' clocks say.
        admitted_at: DateTime<Utc>,
    },
    /// The user already holds the per-user limit.
    AlreadyIssued,
    /// No stock left.
    SoldOut,
    /// The campaign is not open (unknown to the gate, or before its window).
    NotOpen,
    /// The issue window has ended.
    Closed,
    /// The gate was found behind the store (it went back in time and gave an admission
    /// number twice) and refuses admissions for the campaign until a sync rebuilds it.
    Fenced,
}

/// What a user gets when asking for a coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueOutcome {
    /// Issued; the coupon as it will be stored.
    Issued(Coupon),
    /// The user already holds the per-user limit.
    AlreadyIssued,
    /// No stock left.
    SoldOut,
    /// The campaign is not open yet.
    NotOpen,
    /// The campaign is closed or its window has ended.
    Closed,
    /// No such campaign.
    CampaignNotFound,
}

impl IssueOutcome {
    /// A short snake_case name, for metrics and API error codes.
    pub fn code(&self) -> &'static str {
        match self {
            IssueOutcome::Issued(_) => "issued",
            IssueOutcome::AlreadyIssued => "already_issued",
            IssueOutcome::SoldOut => "sold_out",
            IssueOutcome::NotOpen => "not_open",
            IssueOutcome::Closed => "closed",
            IssueOutcome::CampaignNotFound => "campaign_not_found",
        }
    }
}

/// What the store did with one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RecordOutcome {
    /// Newly stored.
    Stored,
    /// Already stored before (a redelivery); nothing changed.
    Duplicate,
    /// Refused as invalid; nothing written for it. Retrying will not help.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
    /// Refused by one of the protocol's fences: nothing written for it, retrying will
    /// not help, and it means a promise may have been broken upstream (a late event
    /// after its reservation was released, a gate that lost state). Counted and
    /// dead-lettered with the fence's name, never silent.
    Fenced {
        /// Which fence.
        fence: Fence,
    },
}

/// The store's fences: the checks that keep I1 and I2 true in the store whatever the
/// gate or the timing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fence {
    /// The coupon's reservation was voided ([`crate::IssueStore::void`]) and its stock
    /// returned to the gate before the event arrived.
    #[error("the coupon's reservation was voided before its event arrived")]
    Voided,
    /// Another coupon already holds this `(campaign, user, nth)` slot: the gate
    /// admitted into a slot the store had filled (the gate lost state).
    #[error("another coupon already holds this (campaign, user, nth) slot")]
    SlotTaken,
    /// Storing it would put more coupons in the store than the campaign's stock.
    #[error("the campaign's stock is exhausted in the store")]
    StockExhausted,
    /// Another stored coupon carries the same admission number: the gate numbered two
    /// admissions alike, so it went back in time (restarted from an older snapshot,
    /// failed over to a lagging replica). The recorder fences the campaign in the gate.
    #[error("another coupon carries the same admission number: the gate went back in time")]
    SequenceReused,
}

impl Fence {
    /// Every fence.
    pub const ALL: [Fence; 4] = [
        Fence::Voided,
        Fence::SlotTaken,
        Fence::StockExhausted,
        Fence::SequenceReused,
    ];

    /// A short snake_case name, for metrics and dead-letter headers.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fence::Voided => "voided",
            Fence::SlotTaken => "slot_taken",
            Fence::StockExhausted => "stock_exhausted",
            Fence::SequenceReused => "sequence_reused",
        }
    }

    /// Whether this fence proves the gate lost state it had handed out (then the
    /// campaign is fenced in the gate until a sync): a taken slot or a reused number
    /// cannot happen while the gate keeps what it admitted.
    pub const fn proves_gate_loss(self) -> bool {
        match self {
            Fence::SlotTaken | Fence::SequenceReused => true,
            Fence::Voided | Fence::StockExhausted => false,
        }
    }
}

/// What [`crate::IssueStore::void`] did with one reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoidOutcome {
    /// The coupon is voided (now, or it already was): its event will be refused, so
    /// its stock may go back to the gate.
    Voided,
    /// The coupon is stored: it must be settled, never released.
    Stored,
}

/// Why the store refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// The campaign does not exist.
    #[error("the campaign does not exist")]
    UnknownCampaign,
    /// The campaign was never opened.
    #[error("the campaign was never opened")]
    CampaignNotOpened,
    /// `nth` is 0 or above the campaign's per-user limit.
    #[error("nth is outside 1..=per_user_limit")]
    NthOutOfRange,
    /// The event's time is outside the campaign's issue window.
    #[error("issued_at is outside the campaign's issue window")]
    OutsideWindow,
}

/// A redemption request: `user_id` uses coupon `coupon_id` for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    /// The coupon.
    pub coupon_id: CouponId,
    /// Who is redeeming; must be the holder.
    pub user_id: UserId,
    /// The order it is used for.
    pub order_id: String,
    /// The order's amount in minor currency units.
    pub order_amount: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a redemption did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RedeemOutcome {
    /// Redeemed now; the coupon in its new state.
    Redeemed {
        /// The coupon after redemption.
        coupon: Coupon,
    },
    /// It was redeemed before (use once).
    AlreadyRedeemed,
    /// Its validity has ended.
    Expired,
    /// Its validity has not started.
    NotYetValid,
    /// The order does not meet the usage conditions.
    ConditionNotMet {
        /// The minimum order amount required.
        min_order_amount: u64,
    },
    /// No such coupon, or it belongs to someone else (the two are not told apart).
    NotFound,
}

/// How the gate stands for one campaign, as an operator needs to know during a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GateStatus {
    /// It holds the campaign and admits.
    Serving,
    /// It holds the campaign but refuses admissions until a sync: it went back in time.
    Fenced,
    /// It does not hold the campaign (a draft or closed campaign, or a gate that lost it).
    Absent,
    /// It did not answer: the counts from the gate are missing.
    Unavailable,
}

impl GateStatus {
    /// `serving`, `fenced`, `absent` or `unavailable`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GateStatus::Serving => "serving",
            GateStatus::Fenced => "fenced",
            GateStatus::Absent => "absent",
            GateStatus::Unavailable => "unavailable",
        }
    }
}

/// Counts for one campaign across gate and store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CampaignCounts {
    /// The stock.
    pub total_quantity: u64,
    /// Stock left in the gate (`None` when the gate does not hold the campaign).
    pub remaining: Option<u64>,
    /// Admitted by the gate (`total - remaining`), when the gate holds the campaign.
    pub admitted: Option<u64>,
    /// Coupons durably stored.
    pub stored: u64,
    /// Admissions in the gate's ledger not yet confirmed as stored.
    pub pending: Option<u64>,
    /// Admissions voided in the store: never acknowledged, their stock went back.
    pub voided: u64,
    /// How the gate stands for this campaign.
    pub gate: GateStatus,
}
