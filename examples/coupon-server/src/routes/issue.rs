//! The hot path: `POST /v1/campaigns/{id}/issue`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use coupon_core::{AckMode, Coupon, IssueOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::campaigns::campaign_id;
use crate::app::AppState;
use crate::auth::User;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::issue_outcome;
use crate::notify::{Notice, NoticeKind};

/// A coupon just issued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedCoupon {
    /// The coupon's id (UUID).
    pub coupon_id: String,
    /// The campaign's id.
    pub campaign_id: String,
    /// The holder.
    pub user_id: String,
    /// Which of the user's coupons of this campaign it is (1-based).
    pub nth: u32,
    /// When the gate admitted it.
    pub issued_at: DateTime<Utc>,
    /// Redeemable until (exclusive).
    pub valid_until: DateTime<Utc>,
}

impl From<&Coupon> for IssuedCoupon {
    fn from(c: &Coupon) -> Self {
        Self {
            coupon_id: c.id.to_string(),
            campaign_id: c.campaign_id.to_string(),
            user_id: c.user_id.to_string(),
            nth: c.nth,
            issued_at: c.issued_at,
            valid_until: c.valid_until,
        }
    }
}

fn refusal(outcome: &IssueOutcome) -> ApiError {
    let (status, message) = match outcome {
        IssueOutcome::AlreadyIssued => (StatusCode::CONFLICT, "you already hold this campaign's coupon limit"),
        IssueOutcome::SoldOut => (StatusCode::GONE, "no coupons left"),
        IssueOutcome::NotOpen => (StatusCode::CONFLICT, "the campaign is not open yet"),
        IssueOutcome::Closed => (StatusCode::GONE, "the campaign is closed"),
        _ => (StatusCode::NOT_FOUND, "no such campaign"),
    };
    ApiError::new(status, outcome.code(), message)
}

/// Issues the caller one coupon, first come first served.
#[utoipa::path(post, path = "/v1/campaigns/{id}/issue", tag = "coupons", security(("bearer" = [])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 201, description = "Issued", body = IssuedCoupon),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`already_issued` or `not_open`", body = ErrorBody),
        (status = 410, description = "`sold_out` or `closed`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 503, description = "`gate_unavailable` or `log_unavailable`", body = ErrorBody),
    ))]
pub async fn issue(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<IssuedCoupon>), ApiError> {
    let id = campaign_id(&id)?;
    match state.issuer().issue(&id, &user).await {
        Ok(IssueOutcome::Issued(coupon)) => {
            issue_outcome(Some(&id), "issued");
            if state.issuer().config().ack == AckMode::AfterStore {
                state.notifier().notify(Notice {
                    coupon_id: coupon.id,
                    kind: NoticeKind::Stored,
                });
            }
            Ok((StatusCode::CREATED, Json(IssuedCoupon::from(&coupon))))
        }
        Ok(other) => {
            let known = (!matches!(other, IssueOutcome::CampaignNotFound)).then_some(&id);
            issue_outcome(known, other.code());
            Err(refusal(&other))
        }
        Err(e) => {
            let e = ApiError::from(e);
            // An error may come before the campaign is known to exist.
            issue_outcome(None, e.code);
            Err(e)
        }
    }
}
