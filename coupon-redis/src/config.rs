//! [`RedisGateConfig`]: where Redis is, how long to wait, how keys are named.

use std::time::Duration;

use coupon_core::ValidationError;

/// Standalone Redis or a Redis Cluster. `Debug` hides passwords in the URLs.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One Redis server (or a proxy in front of one): `redis://host:port/db`.
    Standalone(String),
    /// A Redis Cluster, given by some of its nodes (the rest are discovered).
    Cluster(Vec<String>),
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use coupon_core::error::redact_url;
        match self {
            Topology::Standalone(url) => f.debug_tuple("Standalone").field(&redact_url(url)).finish(),
            Topology::Cluster(nodes) => f
                .debug_tuple("Cluster")
                .field(&nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Configuration of a [`crate::RedisGate`]. Defaults fail fast: a Redis that does not
/// answer makes admissions fail within `response_timeout` (I5), never hang. `Debug`
/// hides passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisGateConfig {
    /// Where Redis is.
    pub topology: Topology,
    /// Longest wait to establish a connection (default 500 ms).
    pub connection_timeout: Duration,
    /// Longest wait for the answer to a command (default 250 ms). An admission that
    /// times out has an unknown outcome: it is reported so and never retried.
    pub response_timeout: Duration,
    /// Prefix of every key (default `cpn`): `cpn:{<campaign>}:meta`, `:users`, `:ledger`.
    pub key_prefix: String,
    /// Keys expire this long after the campaign's issue window ends (default 1 day),
    /// a second guard behind close deleting them.
    pub expiry_grace: Duration,
    /// Holders sent per restore script call, so a large sync does not block Redis (default 2,000).
    pub restore_chunk: usize,
    /// With `rediss://` (feature `tls-rustls`): the CA certificate (PEM) that signed the
    /// servers' certificates, when it is not in the system's trust store.
    pub root_certificate: Option<Vec<u8>>,
}

impl Default for RedisGateConfig {
    fn default() -> Self {
        Self {
            topology: Topology::Standalone("redis://127.0.0.1:6379/".into()),
            connection_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(250),
            key_prefix: "cpn".into(),
            expiry_grace: Duration::from_secs(24 * 3600),
            restore_chunk: 2_000,
            root_certificate: None,
        }
    }
}

impl RedisGateConfig {
    /// From a URL: `redis://host:port/` for a standalone server, or a comma-separated
    /// list of node URLs for a cluster (`redis://a:7001,redis://b:7002`). A single URL
    /// with the scheme `redis+cluster://` (`rediss+cluster://` with TLS) also means a
    /// cluster. `rediss://` needs the feature `tls-rustls`; without it such a URL is refused here.
    pub fn from_url(url: &str) -> Result<Self, ValidationError> {
        let nodes: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let bad = |why: &str| ValidationError::field("redis_url", why.to_owned());
        if !cfg!(feature = "tls-rustls") && nodes.iter().any(|n| n.starts_with("rediss")) {
            return Err(bad(
                "uses TLS (rediss://), which needs the `tls-rustls` feature of coupon-redis (`tls-rustls` of coupon)",
            ));
        }
        match nodes.as_slice() {
            [] => Err(bad("is empty")),
            [one] if one.starts_with("redis+cluster://") => {
                Ok(Self::cluster(vec![one.replacen("redis+cluster://", "redis://", 1)]))
            }
            [one] if one.starts_with("rediss+cluster://") => {
                Ok(Self::cluster(vec![one.replacen("rediss+cluster://", "rediss://", 1)]))
            }
            [one] => {
                if !(one.starts_with("redis://") || one.starts_with("rediss://")) {
                    return Err(bad("must start with redis:// or rediss://"));
                }
                Ok(Self::standalone(one.clone()))
            }
            many => {
                if let Some(node) = many
                    .iter()
                    .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
                {
                    return Err(bad(&format!("node {node:?} must start with redis:// or rediss://")));
                }
                Ok(Self::cluster(many.to_vec()))
            }
        }
    }

    /// A standalone server at `url`, other settings default.
    pub fn standalone(url: impl Into<String>) -> Self {
        Self {
            topology: Topology::Standalone(url.into()),
            ..Self::default()
        }
    }

    /// A cluster reached through `nodes`, other settings default.
    pub fn cluster(nodes: Vec<String>) -> Self {
        Self {
            topology: Topology::Cluster(nodes),
            ..Self::default()
        }
    }

    /// Sets the connection timeout.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Sets the response timeout.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets how long keys outlive the issue window.
    pub fn with_expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// Trusts the CA certificate `pem` (instead of the system's trust store) for `rediss://`.
    pub fn with_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let standalone = RedisGateConfig::from_url("redis://:hunter2@h:1/").unwrap();
        let cluster = RedisGateConfig::from_url("redis://u:hunter3@a:1,redis://u:hunter3@b:2").unwrap();
        for shown in [format!("{standalone:?}"), format!("{cluster:?}")] {
            assert!(!shown.contains("hunter"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }

    #[test]
    fn urls_choose_the_topology() {
        assert_eq!(
            RedisGateConfig::from_url("redis://h:1/").unwrap().topology,
            Topology::Standalone("redis://h:1/".into())
        );
        assert_eq!(
            RedisGateConfig::from_url("redis://a:1, redis://b:2").unwrap().topology,
            Topology::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert_eq!(
            RedisGateConfig::from_url("redis+cluster://a:1").unwrap().topology,
            Topology::Cluster(vec!["redis://a:1".into()])
        );
        assert!(RedisGateConfig::from_url("http://a").is_err());
        assert!(RedisGateConfig::from_url(" ").is_err());
    }
}
