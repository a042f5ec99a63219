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
        // The scripts' own refusals: retrying the same call cannot help.
        K::Extension if matches!(e.code(), Some("COUPONCLOSED" | "COUPONEXPIRED")) => ErrorKind::Rejected,
        K::Server(S::NoScript) => ErrorKind::Unavailable,
        // Codes redis-rs does not name. Each is a refusal before the script wrote
        // anything: BUSY (another script is over its time limit), OOM (maxmemory
        // reached: Redis refuses a script's first write and only its first),
        // MISCONF (writes stopped after a failed save), NOREPLICAS
        // (`min-replicas-to-write` not met). Retrying later can succeed.
        K::Extension if e.code().is_some_and(|code| REFUSED_BEFORE_RUNNING.contains(&code)) => ErrorKind::Unavailable,
        _ => ErrorKind::Corrupt,
    }
}

/// The error codes, outside redis-rs's own kinds, that mean "not run, try later".
const REFUSED_BEFORE_RUNNING: [&str; 4] = ["BUSY", "OOM", "MISCONF", "NOREPLICAS"];

/// A reply whose shape is not what the script returns.
pub fn unexpected_reply(operation: &'static str, what: impl Into<String>) -> BackendError {
    BackendError::new(Component::Gate, "redis", operation, ErrorKind::Corrupt, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error as redis-rs parses it from the server's reply line.
    fn from_reply(line: &str) -> RedisError {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).expect("a reply");
        value.extract_error().expect_err("an error reply")
    }

    #[test]
    fn refusals_before_the_script_ran_are_retryable_and_the_rest_are_not() {
        for line in [
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "LOADING Redis is loading the dataset in memory",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "ASK 3999 127.0.0.1:7002",
            "MOVED 3999 127.0.0.1:7002",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "READONLY You can't write against a read only replica.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            "NOREPLICAS Not enough good replicas to write.",
            "NOSCRIPT No matching script.",
        ] {
            let e = backend_error("admit", from_reply(line));
            assert_eq!(e.kind, ErrorKind::Unavailable, "{line}: {e}");
            assert!(e.is_retryable(), "{line}");
        }
        for line in [
            "ERR Error running script: attempt to perform arithmetic on a nil value",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ] {
            let e = backend_error("admit", from_reply(line));
            assert_eq!(e.kind, ErrorKind::Corrupt, "{line}: {e}");
        }
    }
}
