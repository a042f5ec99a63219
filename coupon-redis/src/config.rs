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

impl Topology {
    /// Parses `redis://host:port/` (standalone), a comma-separated list of node URLs
    /// (cluster), or one `redis+cluster://` / `rediss+cluster://` URL (cluster).
    /// `rediss://` needs the feature `tls-rustls`; without it such a URL is refused here.
    pub fn parse(url: &str) -> Result<Self, ValidationError> {
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
        let is_node = |n: &str| n.starts_with("redis://") || n.starts_with("rediss://");
        match nodes.as_slice() {
            [] => Err(bad("is empty")),
            [one] if one.starts_with("redis+cluster://") => {
                Ok(Self::Cluster(vec![one.replacen("redis+cluster://", "redis://", 1)]))
            }
            [one] if one.starts_with("rediss+cluster://") => {
                Ok(Self::Cluster(vec![one.replacen("rediss+cluster://", "rediss://", 1)]))
            }
            [one] if is_node(one) => Ok(Self::Standalone(one.clone())),
            [_] => Err(bad("must start with redis:// or rediss://")),
            many => match many.iter().find(|n| !is_node(n)) {
                Some(node) => Err(bad(&format!("node {node:?} must start with redis:// or rediss://"))),
                None => Ok(Self::Cluster(many.to_vec())),
            },
        }
    }
}

/// The URL [`Topology::parse`] reads back to the same topology.
impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Standalone(url) => f.write_str(url),
            Topology::Cluster(nodes) => match nodes.as_slice() {
                [one] => match one.strip_prefix("rediss://") {
                    Some(rest) => write!(f, "rediss+cluster://{rest}"),
                    None => write!(f, "redis+cluster://{}", one.trim_start_matches("redis://")),
                },
                many => f.write_str(&many.join(",")),
            },
        }
    }
}

impl serde::Serialize for Topology {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Topology {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = String::deserialize(deserializer)?;
        Topology::parse(&url).map_err(serde::de::Error::custom)
    }
}

/// A PEM certificate as its text in a config file.
mod pem_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(pem: &Option<Vec<u8>>, serializer: S) -> Result<S::Ok, S::Error> {
        match pem {
            Some(pem) => serializer.serialize_some(&String::from_utf8_lossy(pem)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<String>::deserialize(deserializer)?.map(String::into_bytes))
    }
}

/// Configuration of a [`crate::RedisGate`]. Defaults fail fast: a Redis that does not
/// answer makes admissions fail within `response_timeout` (I5), never hang. `Debug`
/// hides passwords.
///
/// Build it from a URL and setters, or deserialize it (durations as `"250ms"`, `"1d"`;
/// the topology as the same URL [`RedisGateConfig::from_url`] takes). Either way,
/// [`RedisGateConfig::validate`] checks it once, and [`crate::RedisGate::connect`] calls it:
///
/// ```
/// # use coupon_redis::RedisGateConfig;
/// let config: RedisGateConfig = serde_json::from_str(
///     r#"{ "url": "redis+cluster://10.0.0.1:7001", "response_timeout": "100ms" }"#,
/// )?;
/// assert_eq!(config, RedisGateConfig::from_url("redis+cluster://10.0.0.1:7001")?
///     .with_response_timeout(std::time::Duration::from_millis(100)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisGateConfig {
    #[serde(rename = "url")]
    pub(crate) topology: Topology,
    #[serde(with = "humantime_serde")]
    pub(crate) connection_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) response_timeout: Duration,
    pub(crate) key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub(crate) expiry_grace: Duration,
    pub(crate) restore_chunk: usize,
    #[serde(with = "pem_text")]
    pub(crate) root_certificate: Option<Vec<u8>>,
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
        Ok(Self {
            topology: Topology::parse(url)?,
            ..Self::default()
        })
    }

    /// Checks every setting once: positive timeouts and chunk, a key prefix that cannot
    /// split a campaign's keys over hash slots. [`crate::RedisGate::connect`] calls it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |field: &'static str, why: &str| Err(ValidationError::field(field, why.to_owned()));
        if self.connection_timeout.is_zero() {
            return bad("connection_timeout", "must be above zero");
        }
        if self.response_timeout.is_zero() {
            return bad(
                "response_timeout",
                "must be above zero: an admission must fail fast, never hang",
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return bad(
                "key_prefix",
                "must be non-empty and without braces (a campaign's keys share one {hash tag})",
            );
        }
        if self.restore_chunk == 0 {
            return bad("restore_chunk", "must be at least 1");
        }
        if let Some(pem) = &self.root_certificate
            && !pem.windows(11).any(|w| w == b"-----BEGIN ")
        {
            return bad(
                "root_certificate",
                "must be a PEM certificate (-----BEGIN CERTIFICATE-----)",
            );
        }
        Ok(())
    }

    /// Where Redis is.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Longest wait to establish a connection (default 500 ms).
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// Longest wait for the answer to a command (default 250 ms). An admission that
    /// times out has an unknown outcome: it is reported so and never retried.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Prefix of every key (default `cpn`): `cpn:{<campaign>}:meta`, `:users`, `:ledger`.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Keys expire this long after the campaign's issue window ends (default 1 day),
    /// a second guard behind close deleting them.
    pub fn expiry_grace(&self) -> Duration {
        self.expiry_grace
    }

    /// Holders sent per restore script call, so a large sync does not block Redis (default 2,000).
    pub fn restore_chunk(&self) -> usize {
        self.restore_chunk
    }

    /// The CA certificate (PEM) trusted for `rediss://` instead of the system's store, if set.
    pub fn root_certificate(&self) -> Option<&[u8]> {
        self.root_certificate.as_deref()
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

    /// Sets how many holders one restore script call sends.
    pub fn with_restore_chunk(mut self, holders: usize) -> Self {
        self.restore_chunk = holders;
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

    #[test]
    fn a_topology_prints_as_the_url_that_parses_back_to_it() {
        for url in ["redis://h:1/", "redis+cluster://a:1", "redis://a:1,redis://b:2"] {
            let topology = Topology::parse(url).unwrap();
            assert_eq!(Topology::parse(&topology.to_string()).unwrap(), topology, "{url}");
        }
    }

    #[test]
    fn a_config_survives_serde_and_unknown_or_bad_fields_are_refused() {
        let config = RedisGateConfig::from_url("redis://a:1,redis://b:2")
            .unwrap()
            .with_expiry_grace(Duration::from_secs(3600))
            .with_root_certificate("-----BEGIN CERTIFICATE-----\n...");
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.contains(r#""expiry_grace":"1h""#), "{text}");
        assert_eq!(serde_json::from_str::<RedisGateConfig>(&text).unwrap(), config);

        let unknown = serde_json::from_str::<RedisGateConfig>(r#"{"response_timeot": "1s"}"#).unwrap_err();
        assert!(unknown.to_string().contains("response_timeot"), "{unknown}");
        let bad_url = serde_json::from_str::<RedisGateConfig>(r#"{"url": "http://x"}"#).unwrap_err();
        assert!(bad_url.to_string().contains("redis://"), "{bad_url}");
    }

    #[test]
    fn validate_names_the_setting_that_is_wrong() {
        let field = |config: RedisGateConfig| match config.validate() {
            Err(ValidationError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert!(RedisGateConfig::default().validate().is_ok());
        assert_eq!(
            field(RedisGateConfig::default().with_response_timeout(Duration::ZERO)),
            "response_timeout"
        );
        assert_eq!(field(RedisGateConfig::default().with_key_prefix("a{b}")), "key_prefix");
        assert_eq!(field(RedisGateConfig::default().with_restore_chunk(0)), "restore_chunk");
        assert_eq!(
            field(RedisGateConfig::default().with_root_certificate("not pem")),
            "root_certificate"
        );
    }
}
