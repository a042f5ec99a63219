//! Campaigns: what is handed out, to how many, when, and under which conditions.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::ids::CampaignId;
use crate::error::ValidationError;

/// The largest stock a campaign may have (keeps counters far from overflow in every backend).
pub const MAX_TOTAL_QUANTITY: u64 = 1_000_000_000;
/// The largest per-user limit a campaign may have.
pub const MAX_PER_USER_LIMIT: u32 = 1_000;
/// The longest relative coupon validity, in days.
pub const MAX_VALID_DAYS: u32 = 3_650;

/// How long an issued coupon can be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// Until a fixed moment, for every coupon of the campaign.
    Until(DateTime<Utc>),
    /// For this many days after the coupon was issued.
    DaysAfterIssue(u32),
}

impl Validity {
    /// The end of validity of a coupon issued at `issued_at`.
    pub fn valid_until(&self, issued_at: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Validity::Until(t) => t,
            Validity::DaysAfterIssue(days) => issued_at + Duration::days(i64::from(days)),
        }
    }
}

/// Conditions checked when a coupon is redeemed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageConditions {
    /// The smallest order amount (in minor currency units) the coupon applies to.
    pub min_order_amount: Option<u64>,
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Created, not yet open: nothing is issued.
    Draft,
    /// Open: issues inside the issue window.
    Open,
    /// Closed for good: nothing more is issued; issued coupons stay valid.
    Closed,
}

impl CampaignState {
    /// The lowercase name used in APIs and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Open => "open",
            CampaignState::Closed => "closed",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(CampaignState::Draft),
            "open" => Some(CampaignState::Open),
            "closed" => Some(CampaignState::Closed),
            _ => None,
        }
    }

    /// The states from which the lifecycle allows moving to `to` (what a conditional
    /// `UPDATE ... WHERE state IN (...)` needs).
    pub fn allowed_from(to: CampaignState) -> Vec<CampaignState> {
        [CampaignState::Draft, CampaignState::Open, CampaignState::Closed]
            .into_iter()
            .filter(|from| from.can_become(to))
            .collect()
    }

    /// Whether the lifecycle allows going from `self` to `to` (draft -> open -> closed;
    /// draft -> closed; a repeat of the current state is allowed and changes nothing).
    pub fn can_become(self, to: CampaignState) -> bool {
        use CampaignState::*;
        matches!(
            (self, to),
            (Draft, Draft) | (Draft, Open) | (Draft, Closed) | (Open, Open) | (Open, Closed) | (Closed, Closed)
        )
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an administrator asks for when creating a campaign. Check it with
/// [`NewCampaign::validate`] (done by [`crate::CampaignService::create`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCampaign {
    /// Shown to users; 1 to 200 characters.
    pub name: String,
    /// Coupons available in all (the stock), 1 to [`MAX_TOTAL_QUANTITY`].
    pub total_quantity: u64,
    /// Coupons one user may hold, 1 to [`MAX_PER_USER_LIMIT`] (default 1).
    pub per_user_limit: u32,
    /// Issuing starts at this moment.
    pub issue_starts_at: DateTime<Utc>,
    /// Issuing ends at this moment (exclusive).
    pub issue_ends_at: DateTime<Utc>,
    /// How long issued coupons stay redeemable.
    pub validity: Validity,
    /// Conditions checked at redemption.
    pub conditions: UsageConditions,
    /// What the coupon gives, as free text ("10% off", "5,000 KRW").
    pub discount: String,
}

impl NewCampaign {
    /// A campaign with a per-user limit of 1, coupons valid 30 days after issue,
    /// no usage conditions and an empty discount description.
    pub fn new(
        name: impl Into<String>,
        total_quantity: u64,
        issue_starts_at: DateTime<Utc>,
        issue_ends_at: DateTime<Utc>,
    ) -> Self {
        Self {
            name: name.into(),
            total_quantity,
            per_user_limit: 1,
            issue_starts_at,
            issue_ends_at,
            validity: Validity::DaysAfterIssue(30),
            conditions: UsageConditions::default(),
            discount: String::new(),
        }
    }

    /// Sets the per-user limit.
    pub fn with_per_user_limit(mut self, limit: u32) -> Self {
        self.per_user_limit = limit;
        self
    }

    /// Sets the coupon validity.
    pub fn with_validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    /// Sets the minimum order amount checked at redemption.
    pub fn with_min_order_amount(mut self, amount: u64) -> Self {
        self.conditions.min_order_amount = Some(amount);
        self
    }

    /// Sets the discount description.
    pub fn with_discount(mut self, discount: impl Into<String>) -> Self {
        self.discount = discount.into();
        self
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > 200 {
            return Err(ValidationError::field("name", "must be 1 to 200 characters"));
        }
        if self.total_quantity == 0 || self.total_quantity > MAX_TOTAL_QUANTITY {
            return Err(ValidationError::field(
                "total_quantity",
                format!("must be between 1 and {MAX_TOTAL_QUANTITY}"),
            ));
        }
        if self.per_user_limit == 0 || self.per_user_limit > MAX_PER_USER_LIMIT {
            return Err(ValidationError::field(
                "per_user_limit",
                format!("must be between 1 and {MAX_PER_USER_LIMIT}"),
            ));
        }
        if self.issue_ends_at <= self.issue_starts_at {
            return Err(ValidationError::field("issue_ends_at", "must be after issue_starts_at"));
        }
        match self.validity {
            Validity::Until(t) if t <= self.issue_starts_at => {
                return Err(ValidationError::field("valid_until", "must be after issue_starts_at"));
            }
            Validity::DaysAfterIssue(d) if d == 0 || d > MAX_VALID_DAYS => {
                return Err(ValidationError::field(
                    "valid_days",
                    format!("must be between 1 and {MAX_VALID_DAYS}"),
                ));
            }
            _ => {}
        }
        if self.discount.chars().count() > 200 {
            return Err(ValidationError::field("discount", "must be at most 200 characters"));
        }
        Ok(())
    }
}

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    /// Its id.
    pub id: CampaignId,
    /// Shown to users.
    pub name: String,
    /// Coupons available in all.
    pub total_quantity: u64,
    /// Coupons one user may hold.
    pub per_user_limit: u32,
    /// Issuing starts at this moment.
    pub issue_starts_at: DateTime<Utc>,
    /// Issuing ends at this moment (exclusive).
    pub issue_ends_at: DateTime<Utc>,
    /// How long issued coupons stay redeemable.
    pub validity: Validity,
    /// Conditions checked at redemption.
    pub conditions: UsageConditions,
    /// What the coupon gives.
    pub discount: String,
    /// Where it is in its life.
    pub state: CampaignState,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Campaign {
    /// A draft campaign from checked input, with a new id.
    pub fn from_new(input: NewCampaign, now: DateTime<Utc>) -> Self {
        Self {
            id: CampaignId::new(),
            name: input.name.trim().to_owned(),
            total_quantity: input.total_quantity,
            per_user_limit: input.per_user_limit,
            issue_starts_at: input.issue_starts_at,
            issue_ends_at: input.issue_ends_at,
            validity: input.validity,
            conditions: input.conditions,
            discount: input.discount,
            state: CampaignState::Draft,
            created_at: now,
        }
    }

    /// Sets the minimum order amount checked at redemption.
    pub fn with_min_order(mut self, amount: u64) -> Self {
        self.conditions.min_order_amount = Some(amount);
        self
    }

    /// Checks the fields with the rules of [`NewCampaign::validate`] (stores call this
    /// before writing a campaign).
    pub fn validate(&self) -> Result<(), ValidationError> {
        NewCampaign {
            name: self.name.clone(),
            total_quantity: self.total_quantity,
            per_user_limit: self.per_user_limit,
            issue_starts_at: self.issue_starts_at,
            issue_ends_at: self.issue_ends_at,
            validity: self.validity,
            conditions: self.conditions.clone(),
            discount: self.discount.clone(),
        }
        .validate()
    }

    /// Why a store must refuse `event` for this campaign, if it must: never opened,
    /// `nth` outside `1..=per_user_limit`, or a time outside the issue window. (Events of a
    /// campaign closed after admission are accepted: those users were told "issued".)
    pub fn check_event(&self, event: &super::coupon::IssueEvent) -> Result<(), super::coupon::RejectReason> {
        use super::coupon::RejectReason;
        if self.state == CampaignState::Draft {
            return Err(RejectReason::CampaignNotOpened);
        }
        if event.nth == 0 || event.nth > self.per_user_limit {
            return Err(RejectReason::NthOutOfRange);
        }
        if !self.in_window(event.issued_at) {
            return Err(RejectReason::OutsideWindow);
        }
        Ok(())
    }

    /// Whether `at` falls inside the issue window.
    pub fn in_window(&self, at: DateTime<Utc>) -> bool {
        at >= self.issue_starts_at && at < self.issue_ends_at
    }

    /// What the gate needs to know to admit requests.
    pub fn gate_spec(&self) -> GateCampaign {
        GateCampaign {
            id: self.id,
            total_quantity: self.total_quantity,
            per_user_limit: self.per_user_limit,
            issue_starts_at: self.issue_starts_at,
            issue_ends_at: self.issue_ends_at,
        }
    }
}

/// The part of a campaign an [`crate::IssueGate`] keeps: stock, limit and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCampaign {
    /// Its id.
    pub id: CampaignId,
    /// Coupons available in all.
    pub total_quantity: u64,
    /// Coupons one user may hold.
    pub per_user_limit: u32,
    /// Admissions start at this moment.
    pub issue_starts_at: DateTime<Utc>,
    /// Admissions end at this moment (exclusive); gate state may expire some time after.
    pub issue_ends_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewCampaign {
        let start = Utc::now();
        NewCampaign::new("Launch", 100, start, start + Duration::hours(1))
    }

    #[test]
    fn a_sample_campaign_is_valid() {
        sample().validate().unwrap();
    }

    #[test]
    fn bad_campaigns_name_the_field() {
        let cases: Vec<(NewCampaign, &str)> = vec![
            (
                NewCampaign {
                    total_quantity: 0,
                    ..sample()
                },
                "total_quantity",
            ),
            (
                NewCampaign {
                    per_user_limit: 0,
                    ..sample()
                },
                "per_user_limit",
            ),
            (
                NewCampaign {
                    name: "  ".into(),
                    ..sample()
                },
                "name",
            ),
            (
                NewCampaign {
                    issue_ends_at: sample().issue_starts_at,
                    ..sample()
                },
                "issue_ends_at",
            ),
            (sample().with_validity(Validity::DaysAfterIssue(0)), "valid_days"),
            (
                sample().with_validity(Validity::Until(sample().issue_starts_at - Duration::days(1))),
                "valid_until",
            ),
        ];
        for (input, field) in cases {
            let err = input.validate().unwrap_err();
            assert!(
                matches!(&err, ValidationError::Field { field: f, .. } if *f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn lifecycle_only_moves_forward() {
        use CampaignState::*;
        assert!(Draft.can_become(Open));
        assert!(Open.can_become(Closed));
        assert!(!Closed.can_become(Open));
        assert!(!Open.can_become(Draft));
    }
}
