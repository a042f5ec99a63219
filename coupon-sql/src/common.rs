//! What every dialect shares: rows <-> domain, validation of events, why a
//! redemption was refused, and how sqlx errors become [`BackendError`]s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use coupon_core::{
    BackendError, Campaign, CampaignId, CampaignState, Component, Coupon, CouponId, CouponState, ErrorKind, IssueEvent,
    RecordOutcome, RedeemOutcome, Redemption, RejectReason, UserId, Validity,
};
use uuid::Uuid;

/// A campaign's columns, dialect-neutral.
#[derive(Debug, Clone)]
pub(crate) struct CampaignColumns {
    pub id: Uuid,
    pub name: String,
    pub total_quantity: i64,
    pub per_user_limit: i32,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    pub valid_days: Option<i32>,
    pub min_order_amount: Option<i64>,
    pub discount: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
}

impl CampaignColumns {
    pub fn from_campaign(c: &Campaign) -> Self {
        let (valid_until, valid_days) = match c.validity {
            Validity::Until(t) => (Some(t), None),
            Validity::DaysAfterIssue(d) => (None, Some(d as i32)),
        };
        Self {
            id: *c.id.as_uuid(),
            name: c.name.clone(),
            total_quantity: c.total_quantity as i64,
            per_user_limit: c.per_user_limit as i32,
            issue_starts_at: c.issue_starts_at,
            issue_ends_at: c.issue_ends_at,
            valid_until,
            valid_days,
            min_order_amount: c.conditions.min_order_amount.map(|a| a as i64),
            discount: c.discount.clone(),
            state: c.state.as_str().to_owned(),
            created_at: c.created_at,
        }
    }

    pub fn into_campaign(self, backend: &'static str) -> Result<Campaign, BackendError> {
        let corrupt = |what: &str| corrupt(backend, "read campaign", what);
        let validity = match (self.valid_until, self.valid_days) {
            (Some(t), None) => Validity::Until(t),
            (None, Some(d)) => Validity::DaysAfterIssue(u32::try_from(d).map_err(|_| corrupt("negative valid_days"))?),
            _ => return Err(corrupt("exactly one of valid_until and valid_days must be set")),
        };
        Ok(Campaign {
            id: CampaignId::from_uuid(self.id),
            name: self.name,
            total_quantity: u64::try_from(self.total_quantity).map_err(|_| corrupt("negative total_quantity"))?,
            per_user_limit: u32::try_from(self.per_user_limit).map_err(|_| corrupt("negative per_user_limit"))?,
            issue_starts_at: self.issue_starts_at,
            issue_ends_at: self.issue_ends_at,
            validity,
            conditions: coupon_core::UsageConditions {
                min_order_amount: self
                    .min_order_amount
                    .map(u64::try_from)
                    .transpose()
                    .map_err(|_| corrupt("negative min_order_amount"))?,
            },
            discount: self.discount,
            state: CampaignState::parse(&self.state).ok_or_else(|| corrupt("unknown campaign state"))?,
            created_at: self.created_at,
        })
    }
}

/// A coupon's columns, dialect-neutral.
#[derive(Debug, Clone)]
pub(crate) struct CouponColumns {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub user_id: String,
    pub nth: i32,
    pub issued_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub state: String,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
}

impl CouponColumns {
    pub fn into_coupon(self, backend: &'static str) -> Result<Coupon, BackendError> {
        let corrupt = |what: &str| corrupt(backend, "read coupon", what);
        Ok(Coupon {
            id: CouponId::from_uuid(self.id),
            campaign_id: CampaignId::from_uuid(self.campaign_id),
            user_id: UserId::new(self.user_id).map_err(|e| corrupt(&e.to_string()))?,
            nth: u32::try_from(self.nth).map_err(|_| corrupt("negative nth"))?,
            issued_at: self.issued_at,
            valid_until: self.valid_until,
            state: CouponState::parse(&self.state).ok_or_else(|| corrupt("unknown coupon state"))?,
            redeemed_at: self.redeemed_at,
            order_id: self.order_id,
        })
    }
}

/// Checks a campaign before it is stored ([`Campaign::validate`]).
pub(crate) fn check_campaign(c: &Campaign, backend: &'static str) -> Result<(), BackendError> {
    c.validate().map_err(|e| {
        BackendError::new(
            Component::Store,
            backend,
            "create_campaign",
            ErrorKind::Rejected,
            e.to_string(),
        )
    })
}

/// Why the store refuses `event`, if it does ([`Campaign::check_event`]).
pub(crate) fn check_event(event: &IssueEvent, campaign: Option<&Campaign>) -> Result<(), RejectReason> {
    campaign.ok_or(RejectReason::UnknownCampaign)?.check_event(event)
}

/// The plan for a batch: which events to insert, and the outcomes already known
/// (rejections, and repeats inside the batch itself).
pub(crate) struct BatchPlan<'a> {
    pub outcomes: Vec<Option<RecordOutcome>>,
    pub to_insert: Vec<(usize, &'a IssueEvent)>,
}

pub(crate) fn plan_batch<'a>(events: &'a [IssueEvent], campaigns: &HashMap<CampaignId, Campaign>) -> BatchPlan<'a> {
    let mut outcomes = vec![None; events.len()];
    let mut to_insert = Vec::with_capacity(events.len());
    let mut seen_ids = std::collections::HashSet::new();
    let mut seen_keys = std::collections::HashSet::new();
    for (i, e) in events.iter().enumerate() {
        if let Err(reason) = check_event(e, campaigns.get(&e.campaign_id)) {
            outcomes[i] = Some(RecordOutcome::Rejected { reason });
        } else if !seen_ids.insert(e.coupon_id) || !seen_keys.insert((e.campaign_id, &e.user_id, e.nth)) {
            // The same coupon twice in one batch: the first copy decides.
            outcomes[i] = Some(RecordOutcome::Duplicate);
        } else {
            to_insert.push((i, e));
        }
    }
    BatchPlan { outcomes, to_insert }
}

impl BatchPlan<'_> {
    /// Fills in Stored for the inserted coupon ids, Duplicate for the rest.
    pub fn finish(mut self, inserted: &std::collections::HashSet<Uuid>) -> Vec<RecordOutcome> {
        for (i, e) in &self.to_insert {
            self.outcomes[*i] = Some(if inserted.contains(e.coupon_id.as_uuid()) {
                RecordOutcome::Stored
            } else {
                RecordOutcome::Duplicate
            });
        }
        self.outcomes
            .into_iter()
            .map(|o| o.expect("every event has an outcome"))
            .collect()
    }
}

/// Campaigns that are open or closed never change what record() checks (window,
/// limit, state other than draft), so they are cached; drafts are read each time.
#[derive(Debug, Default, Clone)]
pub(crate) struct SettledCampaigns(Arc<RwLock<HashMap<CampaignId, Campaign>>>);

impl SettledCampaigns {
    /// The cached campaigns among `ids`, and the ids still to read.
    pub fn split(&self, ids: &[CampaignId]) -> (HashMap<CampaignId, Campaign>, Vec<CampaignId>) {
        let cache = self.0.read().expect("campaign cache");
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match cache.get(id) {
                Some(c) => {
                    found.insert(*id, c.clone());
                }
                None => missing.push(*id),
            }
        }
        (found, missing)
    }

    pub fn remember(&self, campaigns: impl IntoIterator<Item = Campaign>) {
        let mut cache = self.0.write().expect("campaign cache");
        for c in campaigns {
            if c.state != CampaignState::Draft {
                cache.insert(c.id, c);
            }
        }
    }
}

/// The distinct campaign ids of a batch.
pub(crate) fn campaign_ids(events: &[IssueEvent]) -> Vec<CampaignId> {
    let mut ids: Vec<CampaignId> = events.iter().map(|e| e.campaign_id).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Why a redemption that updated nothing was refused ([`Coupon::redemption_refusal`]).
pub(crate) fn explain_refusal(coupon: Option<(Coupon, Option<i64>)>, r: &Redemption) -> RedeemOutcome {
    let Some((coupon, min_order_amount)) = coupon else {
        return RedeemOutcome::NotFound;
    };
    let min = min_order_amount.map(|m| u64::try_from(m).unwrap_or(0));
    // Everything holds now, so a concurrent redemption won the race.
    coupon
        .redemption_refusal(r, min)
        .unwrap_or(RedeemOutcome::AlreadyRedeemed)
}

/// The states a campaign may move to `state` from, as column values.
pub(crate) fn allowed_from(state: CampaignState) -> Vec<&'static str> {
    CampaignState::allowed_from(state)
        .into_iter()
        .map(CampaignState::as_str)
        .collect()
}

/// An order amount as a signed column value (amounts beyond i64 compare as i64::MAX).
pub(crate) fn amount(a: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX)
}

pub(crate) fn corrupt(backend: &'static str, operation: &'static str, what: &str) -> BackendError {
    BackendError::new(
        Component::Store,
        backend,
        operation,
        ErrorKind::Corrupt,
        what.to_owned(),
    )
}

/// Classifies a sqlx error for `operation`.
pub(crate) fn backend_error(backend: &'static str, operation: &'static str, e: sqlx::Error) -> BackendError {
    let kind = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ErrorKind::Unavailable,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => ErrorKind::OutcomeUnknown,
        sqlx::Error::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation
            | sqlx::error::ErrorKind::ForeignKeyViolation
            | sqlx::error::ErrorKind::NotNullViolation
            | sqlx::error::ErrorKind::CheckViolation => ErrorKind::Rejected,
            // Deadlocks, serialization failures, lock timeouts: the statement was rolled back.
            _ if is_transient(db.code().as_deref()) => ErrorKind::Unavailable,
            _ => ErrorKind::Rejected,
        },
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => ErrorKind::Rejected,
        _ => ErrorKind::Corrupt,
    };
    BackendError::new(Component::Store, backend, operation, kind, e.to_string()).with_source(e)
}

/// SQLSTATE / vendor codes of errors after which the statement did not apply and a retry can succeed.
fn is_transient(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "40001" | "40P01" | "55P03" | "57P01" | "57P03" | "53300" // PostgreSQL
            | "1205" | "1213" // MySQL lock wait timeout, deadlock
            | "5" | "6" | "517" // SQLite BUSY / LOCKED / BUSY_SNAPSHOT
        )
    )
}

/// `(user, max nth)` rows as holders.
pub(crate) fn holders_from_rows(
    backend: &'static str,
    rows: Vec<(String, i32)>,
) -> Result<Vec<(UserId, u32)>, BackendError> {
    rows.into_iter()
        .map(|(u, n)| {
            let user = UserId::new(u).map_err(|e| corrupt(backend, "holders", &e.to_string()))?;
            Ok((
                user,
                u32::try_from(n).map_err(|_| corrupt(backend, "holders", "negative nth"))?,
            ))
        })
        .collect()
}

/// For each key, whether `(user, nth)` is among the stored rows.
pub(crate) fn mark_stored(keys: &[coupon_core::ReservationKey], rows: Vec<(String, i32)>) -> Vec<bool> {
    let stored: std::collections::HashSet<(String, i32)> = rows.into_iter().collect();
    keys.iter()
        .map(|k| stored.contains(&(k.user_id.as_str().to_owned(), k.nth as i32)))
        .collect()
}
