//! Redis errors as [`BackendError`]s: which operation, and whether a retry can help.

use coupon_core::{BackendError, Component, ErrorKind};
use redis::RedisError;

/// Classifies a Redis error for `operation`.
pub fn backend_error(operation: &'static str, e: RedisError) -> BackendError {
    let kind = classify(&e);
    BackendError::new(Component::Gate, "redis", operation, kind, e.to_string()).with_source(e)
}

fn classify(e: &RedisError) -> ErrorKind {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    if e.is_connection_refusal() {
        // Nothing was sent.
        return ErrorKind::Unavailable;
    }
    if e.is_timeout() || e.is_connection_dropped() || e.is_io_error() {
        // Sent (or maybe sent) and no answer: the script may have run.
        return ErrorKind::OutcomeUnknown;
    }
    match e.kind() {
        // The node refused before running anything: safe to try again later.
        K::Server(S::Moved | S::Ask | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly | S::BusyLoading)
        | K::ClusterConnectionNotFound => ErrorKind::Unavailable,
        K::AuthenticationFailed | K::InvalidClientConfig | K::Server(S::NoPerm) => ErrorKind::Rejected,
        K::Server(S::NoScript) => ErrorKind::Unavailable,
        _ => ErrorKind::Corrupt,
    }
}

/// A reply whose shape is not what the script returns.
pub fn unexpected_reply(operation: &'static str, what: impl Into<String>) -> BackendError {
    BackendError::new(Component::Gate, "redis", operation, ErrorKind::Corrupt, what)
}
