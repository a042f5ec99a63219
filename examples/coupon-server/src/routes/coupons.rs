//! A user's coupons: list and redeem.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use coupon_core::{Coupon, CouponId, RedeemOutcome, Redemption, timestamp_now};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::User;
use crate::error::{ApiError, ErrorBody};
use crate::notify::{Notice, NoticeKind};

/// A stored coupon.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CouponView {
    /// Its id.
    pub coupon_id: String,
    /// Its campaign.
    pub campaign_id: String,
    /// `issued` or `redeemed`.
    pub state: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Redeemable until (exclusive).
    pub valid_until: DateTime<Utc>,
    /// When it was redeemed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemed_at: Option<DateTime<Utc>>,
    /// The order it was redeemed for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

impl From<&Coupon> for CouponView {
    fn from(c: &Coupon) -> Self {
        Self {
            coupon_id: c.id.to_string(),
            campaign_id: c.campaign_id.to_string(),
            state: c.state.as_str().to_owned(),
            issued_at: c.issued_at,
            valid_until: c.valid_until,
            redeemed_at: c.redeemed_at,
            order_id: c.order_id.clone(),
        }
    }
}

/// `GET /v1/me/coupons` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MyCoupons {
    /// Newest first.
    pub coupons: Vec<CouponView>,
}

/// `POST /v1/coupons/{id}/redeem` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RedeemRequest {
    /// The order the coupon is used for (1 to 64 characters).
    pub order_id: String,
    /// The order's amount in minor currency units.
    pub order_amount: u64,
}

/// Parses a coupon id from the path.
pub(crate) fn coupon_id(raw: &str) -> Result<CouponId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("malformed coupon id {raw:?}: expected a UUID")))
}

/// The caller's stored coupons, newest first. A coupon just issued appears once the
/// recorder stored it (at once with `after-store`).
#[utoipa::path(get, path = "/v1/me/coupons", tag = "coupons", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's coupons", body = MyCoupons),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn mine(State(state): State<AppState>, User(user): User) -> Result<Json<MyCoupons>, ApiError> {
    let coupons = state.store().coupons_of_user(&user).await?;
    Ok(Json(MyCoupons {
        coupons: coupons.iter().map(CouponView::from).collect(),
    }))
}

/// Uses one of the caller's coupons for an order, once.
#[utoipa::path(post, path = "/v1/coupons/{id}/redeem", tag = "coupons", security(("bearer" = [])),
    params(("id" = String, Path, description = "Coupon id")),
    request_body = RedeemRequest,
    responses(
        (status = 200, description = "Redeemed", body = CouponView),
        (status = 404, description = "`coupon_not_found` (also for someone else's coupon)", body = ErrorBody),
        (status = 409, description = "`already_redeemed` or `not_yet_valid`", body = ErrorBody),
        (status = 410, description = "`expired`", body = ErrorBody),
        (status = 422, description = "`condition_not_met` or `invalid_input`", body = ErrorBody),
    ))]
pub async fn redeem(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    body: Result<Json<RedeemRequest>, JsonRejection>,
) -> Result<Json<CouponView>, ApiError> {
    let coupon_id = coupon_id(&id)?;
    let Json(body) = body?;
    let order_id = body.order_id.trim();
    if order_id.is_empty() || order_id.chars().count() > 64 {
        return Err(ApiError::invalid_input("invalid order_id: must be 1 to 64 characters"));
    }
    let redemption = Redemption {
        coupon_id,
        user_id: user,
        order_id: order_id.to_owned(),
        order_amount: body.order_amount,
        at: timestamp_now(),
    };
    match state.store().redeem(&redemption).await? {
        RedeemOutcome::Redeemed { coupon } => {
            state.notifier().notify(Notice {
                coupon_id,
                kind: NoticeKind::Redeemed,
            });
            Ok(Json(CouponView::from(&coupon)))
        }
        RedeemOutcome::AlreadyRedeemed => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_redeemed",
            "this coupon was already used",
        )),
        RedeemOutcome::Expired => Err(ApiError::new(StatusCode::GONE, "expired", "this coupon has expired")),
        RedeemOutcome::NotYetValid => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_yet_valid",
            "this coupon is not valid yet",
        )),
        RedeemOutcome::ConditionNotMet { min_order_amount } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "condition_not_met",
            format!("the order amount must be at least {min_order_amount}"),
        )),
        RedeemOutcome::NotFound => Err(ApiError::coupon_not_found()),
    }
}
