//! Errors. Domain outcomes (sold out, already issued, ...) are values, not errors:
//! what lands here is bad input, or infrastructure that failed.

use std::fmt;

use crate::domain::{CampaignId, CampaignState};

/// Bad input: retrying the same input will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A field has a value outside what is allowed.
    #[error("invalid {field}: {message}")]
    Field {
        /// The field, as named in the API.
        field: &'static str,
        /// What is allowed.
        message: String,
    },
    /// A user id that cannot be used.
    #[error("invalid user id: {reason}")]
    InvalidUserId {
        /// Why.
        reason: &'static str,
    },
    /// Text that should be an id is not one.
    #[error("malformed {what}: {value:?}")]
    MalformedId {
        /// Which kind of id.
        what: &'static str,
        /// The text (at most 64 characters of it).
        value: String,
    },
}

impl ValidationError {
    /// A field error.
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        ValidationError::Field {
            field,
            message: message.into(),
        }
    }
}

/// `url` with its password replaced by `***`, for logs and error messages that name a
/// backend's address.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Client settings (librdkafka's, say) with the values of secret ones (`sasl.password`,
/// `ssl.key.password`, anything naming a password or a secret) replaced by `***`, for `Debug`.
pub fn redact_settings(
    settings: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<&str, &str> {
    settings
        .iter()
        .map(|(k, v)| {
            let secret = k.contains("password") || k.contains("secret");
            (k.as_str(), if secret { "***" } else { v.as_str() })
        })
        .collect()
}

/// Which of the three backend roles failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// The [`crate::IssueGate`].
    Gate,
    /// The [`crate::EventLog`].
    Log,
    /// The [`crate::IssueStore`].
    Store,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::Gate => "gate",
            Component::Log => "event log",
            Component::Store => "store",
        })
    }
}

/// What kind of failure, and so whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend could not be reached or refused the work before doing it
    /// (connection refused, pool exhausted, broker down). Nothing happened;
    /// retrying later can help.
    Unavailable,
    /// The request was sent but no answer came in time (timeout, connection
    /// lost mid-request). It may or may not have taken effect: a write must not
    /// be retried blindly, only through an idempotent path or after checking.
    OutcomeUnknown,
    /// The backend rejected the input or the operation as invalid. Retrying the
    /// same request will not help.
    Rejected,
    /// The backend answered with something this library does not understand
    /// (corrupt state, a schema it does not know). Retrying will not help; an
    /// operator should look.
    Corrupt,
}

impl ErrorKind {
    /// Whether retrying the same request can help.
    pub const fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::OutcomeUnknown)
    }

    /// Whether the operation certainly did not take effect.
    pub const fn certainly_not_applied(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Rejected)
    }

    fn advice(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "not applied; a retry can help",
            ErrorKind::OutcomeUnknown => "outcome unknown; do not retry blindly",
            ErrorKind::Rejected => "rejected; a retry will not help",
            ErrorKind::Corrupt => "unexpected answer; a retry will not help",
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An infrastructure failure: which component and backend, which operation,
/// and whether a retry can help.
#[derive(Debug, thiserror::Error)]
#[error("{component} backend `{backend}` failed to {operation}: {message} ({})", kind.advice())]
#[non_exhaustive]
pub struct BackendError {
    /// Gate, log or store.
    pub component: Component,
    /// The backend's name (`memory`, `redis`, `kafka`, `postgres`, ...).
    pub backend: &'static str,
    /// The operation that failed (`admit`, `publish`, `record`, ...).
    pub operation: &'static str,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
    /// The underlying error, if any.
    #[source]
    pub source: Option<BoxError>,
}

impl BackendError {
    /// A new error without an underlying cause.
    pub fn new(
        component: Component,
        backend: &'static str,
        operation: &'static str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            component,
            backend,
            operation,
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A configuration its `validate` refused, as the `Rejected` error of `backend`'s
    /// `connect`: a retry cannot help, the named setting must change.
    pub fn invalid_config(component: Component, backend: &'static str, error: ValidationError) -> Self {
        Self::new(component, backend, "connect", ErrorKind::Rejected, error.to_string()).with_source(error)
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether retrying the same request can help.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// A timeout of `operation` after `after`: the outcome is unknown.
    pub fn timeout(
        component: Component,
        backend: &'static str,
        operation: &'static str,
        after: std::time::Duration,
    ) -> Self {
        Self::new(
            component,
            backend,
            operation,
            ErrorKind::OutcomeUnknown,
            format!("no answer within {} ms", after.as_millis()),
        )
    }
}

/// Errors of the orchestration layer ([`crate::CampaignService`], [`crate::Issuer`], ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// No such campaign.
    #[error("campaign {0} not found")]
    CampaignNotFound(CampaignId),
    /// The lifecycle does not allow this change.
    #[error("campaign {id} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The campaign.
        id: CampaignId,
        /// Its current state.
        from: CampaignState,
        /// The state asked for.
        to: CampaignState,
    },
    /// A sync was refused because doing it now could re-sell stock.
    #[error("sync of campaign {id} refused: {reason}")]
    SyncRefused {
        /// The campaign.
        id: CampaignId,
        /// Why, and what to wait for.
        reason: String,
    },
    /// The gate does not hold a campaign the store says is open and in its window (it
    /// lost its state: a Redis restart without persistence, a flush), or holds it fenced
    /// because the store proved it went back in time (a restart from an older snapshot, a
    /// failover to a lagging replica). Issuance of that campaign is fenced until an
    /// operator sync rebuilds the gate from the store ([`crate::CampaignService::sync`]).
    #[error(
        "the gate lost state of open campaign {id}; issuance is fenced until a sync rebuilds it from the store (POST /v1/campaigns/{id}/sync)"
    )]
    GateLost {
        /// The campaign.
        id: CampaignId,
    },
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Error {
    /// Whether retrying the same call can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend(e) => e.is_retryable(),
            Error::SyncRefused { .. } | Error::GateLost { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_configuration_names_the_setting_and_is_not_retryable() {
        let e = BackendError::invalid_config(
            Component::Store,
            "postgres",
            ValidationError::field("max_connections", "must be at least 1"),
        );
        let text = e.to_string();
        assert!(text.contains("postgres") && text.contains("connect"), "{text}");
        assert!(text.contains("invalid max_connections: must be at least 1"), "{text}");
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert!(!e.is_retryable());
    }

    #[test]
    fn backend_errors_say_who_what_and_whether_to_retry() {
        let e = BackendError::timeout(Component::Gate, "redis", "admit", std::time::Duration::from_millis(50));
        let text = e.to_string();
        assert!(text.contains("gate backend `redis` failed to admit"), "{text}");
        assert!(text.contains("do not retry blindly"), "{text}");
        assert!(e.is_retryable());
        assert!(!e.kind.certainly_not_applied());
    }
}
