//! Campaign administration: create, read, open, close, sync.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use coupon_core::{Campaign, CampaignCounts, CampaignId, NewCampaign, Validity};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};

/// `POST /v1/campaigns` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateCampaign {
    /// A name for people.
    pub name: String,
    /// The stock.
    pub total_quantity: u64,
    /// Issuing starts (RFC 3339).
    pub issue_starts_at: DateTime<Utc>,
    /// Issuing ends (RFC 3339, exclusive).
    pub issue_ends_at: DateTime<Utc>,
    /// Coupons one user may hold (default 1).
    #[serde(default)]
    pub per_user_limit: Option<u32>,
    /// Coupons are redeemable until this moment (exclusive)...
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
    /// ...or for this many days after issue (default 30).
    #[serde(default)]
    pub valid_days: Option<u32>,
    /// The smallest order amount a coupon applies to, in minor currency units.
    #[serde(default)]
    pub min_order_amount: Option<u64>,
    /// What the coupon gives, for people (`"10% off"`).
    #[serde(default)]
    pub discount: Option<String>,
}

impl CreateCampaign {
    fn into_new(self) -> Result<NewCampaign, ApiError> {
        let mut new = NewCampaign::new(self.name, self.total_quantity, self.issue_starts_at, self.issue_ends_at);
        if let Some(limit) = self.per_user_limit {
            new = new.with_per_user_limit(limit);
        }
        new = match (self.valid_until, self.valid_days) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_input("give valid_until or valid_days, not both"));
            }
            (Some(t), None) => new.with_validity(Validity::Until(t)),
            (None, Some(days)) => new.with_validity(Validity::DaysAfterIssue(days)),
            (None, None) => new,
        };
        if let Some(amount) = self.min_order_amount {
            new = new.with_min_order_amount(amount);
        }
        if let Some(discount) = self.discount {
            new = new.with_discount(discount);
        }
        Ok(new)
    }
}

/// A campaign with its counts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CampaignView {
    /// Its id (UUID).
    pub id: String,
    /// Its name.
    pub name: String,
    /// `draft`, `open` or `closed`.
    pub state: String,
    /// The stock.
    pub total_quantity: u64,
    /// Stock left (from the gate while it holds the campaign, else from the store).
    pub remaining: u64,
    /// Coupons handed out (admitted by the gate, or stored when the gate does not hold it).
    pub issued: u64,
    /// Coupons durably stored.
    pub stored: u64,
    /// Admissions not yet confirmed as stored.
    pub pending: u64,
    /// Admissions voided in the store: never acknowledged, their stock went back.
    pub voided: u64,
    /// How the gate stands: `serving`, `fenced` (refuses admissions until a sync),
    /// `absent` (does not hold the campaign) or `unavailable` (did not answer; the counts
    /// above then come from the store).
    pub gate: String,
    /// Seconds since the oldest event the recorders have not committed was published
    /// (0 when they have committed everything; absent without a log, or when the log
    /// did not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorder_lag_seconds: Option<f64>,
    /// Coupons one user may hold.
    pub per_user_limit: u32,
    /// Issuing starts.
    pub issue_starts_at: DateTime<Utc>,
    /// Issuing ends (exclusive).
    pub issue_ends_at: DateTime<Utc>,
    /// Fixed end of validity, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    /// Validity in days after issue, if relative.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_days: Option<u32>,
    /// The smallest order amount a coupon applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_order_amount: Option<u64>,
    /// What the coupon gives.
    pub discount: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl CampaignView {
    /// The view of `c` with `counts`.
    pub fn new(c: &Campaign, counts: &CampaignCounts) -> Self {
        let issued = counts.admitted.unwrap_or(counts.stored);
        let (valid_until, valid_days) = match c.validity {
            Validity::Until(t) => (Some(t), None),
            Validity::DaysAfterIssue(d) => (None, Some(d)),
        };
        Self {
            id: c.id.to_string(),
            name: c.name.clone(),
            state: c.state.as_str().to_owned(),
            total_quantity: c.total_quantity,
            remaining: counts.remaining.unwrap_or(c.total_quantity.saturating_sub(issued)),
            issued,
            stored: counts.stored,
            pending: counts.pending.unwrap_or(0),
            voided: counts.voided,
            gate: counts.gate.as_str().to_owned(),
            recorder_lag_seconds: None,
            per_user_limit: c.per_user_limit,
            issue_starts_at: c.issue_starts_at,
            issue_ends_at: c.issue_ends_at,
            valid_until,
            valid_days,
            min_order_amount: c.conditions.min_order_amount,
            discount: c.discount.clone(),
            created_at: c.created_at,
        }
    }
}

/// Parses a campaign id from the path.
pub(crate) fn campaign_id(raw: &str) -> Result<CampaignId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("malformed campaign id {raw:?}: expected a UUID")))
}

async fn view(state: &AppState, campaign: &Campaign) -> Result<CampaignView, ApiError> {
    let counts = state.campaigns().counts(&campaign.id).await?;
    Ok(CampaignView::new(campaign, &counts))
}

/// How far behind the recorders are: the age of the oldest event their group has not
/// committed (0 when none), from the log; `None` without a log or when it did not answer.
async fn recorder_lag(state: &AppState) -> Option<f64> {
    let log = state.log()?;
    match log.oldest_uncommitted(state.consumer_group()).await {
        Ok(None) => Some(0.0),
        Ok(Some(oldest)) => Some((Utc::now() - oldest).to_std().map_or(0.0, |d| d.as_secs_f64())),
        Err(e) => {
            tracing::warn!(error = %e, "campaign view: the log did not say how far the recorders are");
            None
        }
    }
}

/// Creates a campaign (as a draft).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = CreateCampaign,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CampaignView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "A value is not allowed", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    body: Result<Json<CreateCampaign>, JsonRejection>,
) -> Result<(StatusCode, Json<CampaignView>), ApiError> {
    let Json(body) = body?;
    let campaign = state.campaigns().create(body.into_new()?).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &campaign).await?)))
}

/// Reads a campaign with its state and remaining stock.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
    ))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<CampaignView>, ApiError> {
    let campaign = state.campaigns().get(&campaign_id(&id)?).await?;
    Ok(Json(view(&state, &campaign).await?))
}

/// The operator's view during a sale: the campaign's gate and store counts, pending and
/// voided admissions, whether the gate serves, is fenced or does not answer, and how far
/// behind the recorders are (one question to the log, so not on the public read).
#[utoipa::path(get, path = "/v1/campaigns/{id}/status", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign, with the recorders' lag", body = CampaignView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let campaign = state.campaigns().get(&campaign_id(&id)?).await?;
    let mut view = view(&state, &campaign).await?;
    view.recorder_lag_seconds = recorder_lag(&state).await;
    Ok(Json(view))
}

/// Opens a campaign: loads its stock into the gate.
#[utoipa::path(post, path = "/v1/campaigns/{id}/open", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Opened; the campaign's counts", body = CampaignView),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`", body = ErrorBody),
    ))]
pub async fn open(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let campaign = state.campaigns().open(&campaign_id(&id)?).await?;
    Ok(Json(view(&state, &campaign).await?))
}

/// Closes a campaign for good; issued coupons stay valid.
#[utoipa::path(post, path = "/v1/campaigns/{id}/close", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Closed; the campaign's counts", body = CampaignView),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`", body = ErrorBody),
    ))]
pub async fn close(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let campaign = state.campaigns().close(&campaign_id(&id)?).await?;
    Ok(Json(view(&state, &campaign).await?))
}

/// Repairs the gate from the store (the store is the source of truth); refuses with
/// 409 `sync_refused` when doing it now could re-sell stock.
#[utoipa::path(post, path = "/v1/campaigns/{id}/sync", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Synced; the campaign's counts", body = CampaignView),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`sync_refused`", body = ErrorBody),
    ))]
pub async fn sync(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let id = campaign_id(&id)?;
    state.campaigns().sync(&id).await?;
    let campaign = state.campaigns().get(&id).await?;
    Ok(Json(view(&state, &campaign).await?))
}
