//! Every error answer: `{"error": "<code>", "message": "<text>"}` with its status.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coupon_core::{BackendError, Component, Error, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable snake_case code clients branch on.
    pub error: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// The explanation.
    pub message: String,
    /// Seconds for `Retry-After`, when waiting helps.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 400 `bad_request`: the body or path could not be read.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 `invalid_input`: well-formed, but a value is not allowed.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
    }

    /// 404 `campaign_not_found`.
    pub fn campaign_not_found(id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "campaign_not_found",
            format!("campaign {id} not found"),
        )
    }

    /// 404 `coupon_not_found`.
    pub fn coupon_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "coupon_not_found", "no such coupon among yours")
    }

    /// 429 `rate_limited`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).with_retry_after(retry_after_secs)
    }

    /// A backend failure: 503 with `gate_unavailable`, `log_unavailable` or
    /// `store_unavailable`; 500 `internal` when retrying cannot help.
    pub fn backend(e: &BackendError) -> Self {
        let code = match e.component {
            Component::Gate => "gate_unavailable",
            Component::Log => "log_unavailable",
            _ => "store_unavailable",
        };
        match e.kind {
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string()).with_retry_after(1)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Validation(v) => Self::invalid_input(v.to_string()),
            Error::CampaignNotFound(id) => Self::campaign_not_found(id),
            Error::InvalidTransition { .. } => Self::new(StatusCode::CONFLICT, "invalid_transition", e.to_string()),
            Error::SyncRefused { .. } => {
                Self::new(StatusCode::CONFLICT, "sync_refused", e.to_string()).with_retry_after(5)
            }
            Error::GateLost { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "gate_fenced", e.to_string()).with_retry_after(5)
            }
            Error::Backend(b) => Self::backend(b),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        Self::backend(&e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            // Well-formed JSON with a field of the wrong type or missing: a value problem.
            JsonRejection::JsonDataError(e) => Self::invalid_input(e.body_text()),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.code,
                message: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
