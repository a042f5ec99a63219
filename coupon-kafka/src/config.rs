//! [`KafkaConfig`]: brokers, topics, partition key, timeouts.

use std::collections::BTreeMap;
use std::time::Duration;

use coupon_core::ValidationError;

/// Which field of an event keys its Kafka message (and so picks its partition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PartitionKey {
    /// By user (the default): a hot campaign spreads over every partition, so all
    /// recorders of the group share its load. Order across users does not matter:
    /// each event is independent and the store is idempotent.
    #[default]
    User,
    /// By campaign: keeps each campaign's events in order, but a single hot campaign
    /// lands on one partition and so on one recorder.
    Campaign,
}

/// The issue-event topic when none is named.
pub const DEFAULT_TOPIC: &str = "coupon-issued";

/// Configuration of a [`crate::KafkaLog`]. `Debug` hides the values of secret
/// librdkafka settings (`sasl.password`, `ssl.key.password`, ...).
///
/// Build it with [`KafkaConfig::new`] or [`KafkaConfig::from_url`] and setters, or
/// deserialize it (durations as `"5s"`, `"1ms"`; `options` are librdkafka settings).
/// [`KafkaConfig::validate`] checks it once; [`crate::KafkaLog::new`] calls it:
///
/// ```
/// # use coupon_kafka::KafkaConfig;
/// let config: KafkaConfig = serde_json::from_str(r#"{
///     "brokers": "k1:9092,k2:9092",
///     "delivery_timeout": "3s",
///     "options": { "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512" }
/// }"#)?;
/// let same = KafkaConfig::from_url(
///     "kafka://k1:9092,k2:9092/coupon-issued?security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512",
/// )?
/// .with_delivery_timeout(std::time::Duration::from_secs(3));
/// assert_eq!(config, same);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub(crate) brokers: String,
    pub(crate) topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) partition_key: PartitionKey,
    #[serde(with = "humantime_serde")]
    pub(crate) delivery_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) linger: Duration,
    #[serde(rename = "options")]
    pub(crate) extra: BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    pub(crate) stall_check_every: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) rejoin_after: Duration,
}

impl Default for KafkaConfig {
    /// A broker on `127.0.0.1:9092` and the topic `coupon-issued`.
    fn default() -> Self {
        Self::new("127.0.0.1:9092", DEFAULT_TOPIC)
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("dead_letter_topic", &self.dead_letter_topic())
            .field("partition_key", &self.partition_key)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("linger", &self.linger)
            .field("options", &coupon_core::error::redact_settings(&self.extra))
            .field("stall_check_every", &self.stall_check_every)
            .field("rejoin_after", &self.rejoin_after)
            .finish()
    }
}

impl KafkaConfig {
    /// A configuration for `brokers` (`host:port[,host:port]`) and `topic`, defaults elsewhere.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            dead_letter_topic: None,
            partition_key: PartitionKey::default(),
            delivery_timeout: Duration::from_secs(5),
            linger: Duration::from_millis(1),
            extra: BTreeMap::new(),
            stall_check_every: Duration::from_secs(10),
            rejoin_after: Duration::from_secs(60),
        }
    }

    /// From `kafka://host:port[,host:port][/topic][?librdkafka.setting=value&...]`: the
    /// brokers, the event topic (default `coupon-issued`) and librdkafka settings
    /// (percent-encoded), defaults elsewhere. A bare `host:port[,host:port]` is brokers alone.
    pub fn from_url(url: &str) -> Result<Self, ValidationError> {
        let bad = |why: String| ValidationError::field("kafka_url", why);
        let rest = match url.split_once("://") {
            Some(("kafka", rest)) => rest,
            Some((scheme, _)) => return Err(bad(format!("scheme {scheme:?} is not kafka://"))),
            None => url,
        };
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (brokers, topic) = address.split_once('/').unwrap_or((address, ""));
        let topic = if topic.is_empty() {
            DEFAULT_TOPIC
        } else {
            topic.trim_end_matches('/')
        };
        let brokers: Vec<&str> = brokers.split(',').map(str::trim).filter(|b| !b.is_empty()).collect();
        if brokers.is_empty() {
            return Err(bad(format!("{url:?} names no broker")));
        }
        if let Some(broker) = brokers.iter().find(|b| b.contains('@')) {
            return Err(bad(format!(
                "broker {:?} carries credentials: give them as sasl.username and sasl.password settings",
                coupon_core::error::redact_url(&format!("kafka://{broker}"))
            )));
        }
        let mut config = Self::new(brokers.join(","), topic);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            config = config.with(key, value);
        }
        Ok(config)
    }

    /// Checks every setting once: brokers named, topic names Kafka accepts and distinct,
    /// positive timeouts, a rejoin no sooner than the stall check. [`crate::KafkaLog::new`]
    /// calls it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |field: &'static str, why: String| Err(ValidationError::field(field, why));
        if self.brokers.split(',').all(|b| b.trim().is_empty()) {
            return bad("brokers", "names no broker (host:port[,host:port])".into());
        }
        for (field, name) in [
            ("topic", self.topic.as_str()),
            ("dead_letter_topic", &self.dead_letter_topic()),
        ] {
            let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if name.is_empty() || name.len() > 249 || !name.chars().all(legal) || name == "." || name == ".." {
                return bad(
                    field,
                    format!("{name:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
                );
            }
        }
        if self.dead_letter_topic() == self.topic {
            return bad("dead_letter_topic", "must differ from the event topic".into());
        }
        if self.delivery_timeout.is_zero() {
            return bad("delivery_timeout", "must be above zero".into());
        }
        if self.stall_check_every.is_zero() {
            return bad("stall_check_every", "must be above zero".into());
        }
        if self.rejoin_after < self.stall_check_every {
            return bad("rejoin_after", "must be at least stall_check_every".into());
        }
        Ok(())
    }

    /// The bootstrap brokers, `host:port[,host:port]`.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The topic of issue events (default `coupon-issued`).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead-letter topic (default `<topic>.dlq`).
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }

    /// What keys the messages.
    pub fn partition_key(&self) -> PartitionKey {
        self.partition_key
    }

    /// How long a publish may take before it fails (librdkafka `message.timeout.ms`,
    /// default 5 s): the bound within which `AfterLog` answers or gives up.
    pub fn delivery_timeout(&self) -> Duration {
        self.delivery_timeout
    }

    /// How long the producer waits to fill a batch (`linger.ms`, default 1 ms).
    pub fn linger(&self) -> Duration {
        self.linger
    }

    /// The extra librdkafka settings for producer and consumers (`security.protocol`, ...).
    pub fn options(&self) -> &BTreeMap<String, String> {
        &self.extra
    }

    /// How often a consumer checks its assignment and its group's lag (default 10 s).
    pub fn stall_check_every(&self) -> Duration {
        self.stall_check_every
    }

    /// How long a consumer may have nothing uncommitted of its own while partitions
    /// held elsewhere wait and do not advance before it leaves and joins the group
    /// again (default 60 s). Keep it well above the group's rebalance time, or members
    /// rejoin while the group is still forming.
    pub fn rejoin_after(&self) -> Duration {
        self.rejoin_after
    }

    /// Sets the event topic (the dead-letter topic follows it unless set).
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets the dead-letter topic.
    pub fn with_dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Sets the partition key.
    pub fn with_partition_key(mut self, key: PartitionKey) -> Self {
        self.partition_key = key;
        self
    }

    /// Sets the delivery timeout.
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Sets the producer linger.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets how often a consumer checks for a stall, and after how long a stalled one
    /// (no partition while its group has uncommitted events) joins its group again.
    pub fn with_stall_rejoin(mut self, check_every: Duration, rejoin_after: Duration) -> Self {
        self.stall_check_every = check_every;
        self.rejoin_after = rejoin_after;
        self
    }

    /// Sets a librdkafka setting (a later value for the same key replaces the earlier).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret_settings() {
        let config = KafkaConfig::new("k:9092", "t")
            .with("sasl.password", "hunter2")
            .with("security.protocol", "SASL_SSL");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("SASL_SSL"), "{shown}");
    }

    #[test]
    fn a_url_gives_brokers_topic_and_settings() {
        let config = KafkaConfig::from_url("kafka://a:9092, b:9092/orders?sasl.password=p%26w&linger.ms=5").unwrap();
        assert_eq!(config.brokers(), "a:9092,b:9092");
        assert_eq!(config.topic(), "orders");
        assert_eq!(config.dead_letter_topic(), "orders.dlq");
        assert_eq!(config.options()["sasl.password"], "p&w");
        assert_eq!(
            KafkaConfig::from_url("a:9092").unwrap(),
            KafkaConfig::new("a:9092", DEFAULT_TOPIC)
        );
        for refused in ["http://a:9092", "kafka:///t", "kafka://u:pw@a:9092"] {
            let e = KafkaConfig::from_url(refused).unwrap_err().to_string();
            assert!(e.contains("kafka_url") && !e.contains("pw@"), "{refused}: {e}");
        }
    }

    #[test]
    fn a_config_survives_serde_and_unknown_fields_are_refused() {
        let config = KafkaConfig::new("k:9092", "t")
            .with_partition_key(PartitionKey::Campaign)
            .with_linger(Duration::from_millis(5))
            .with("acks", "all");
        let text = serde_json::to_string(&config).unwrap();
        assert!(
            text.contains(r#""partition_key":"campaign""#) && text.contains(r#""linger":"5ms""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<KafkaConfig>(&text).unwrap(), config);
        let unknown = serde_json::from_str::<KafkaConfig>(r#"{"broker": "k:9092"}"#).unwrap_err();
        assert!(unknown.to_string().contains("broker"), "{unknown}");
    }

    #[test]
    fn validate_names_the_setting_that_is_wrong() {
        let field = |config: KafkaConfig| match config.validate() {
            Err(ValidationError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert!(KafkaConfig::default().validate().is_ok());
        assert_eq!(field(KafkaConfig::new(" ", "t")), "brokers");
        assert_eq!(field(KafkaConfig::new("k:1", "bad topic")), "topic");
        assert_eq!(
            field(KafkaConfig::new("k:1", "t").with_dead_letter_topic("t")),
            "dead_letter_topic"
        );
        assert_eq!(
            field(KafkaConfig::default().with_delivery_timeout(Duration::ZERO)),
            "delivery_timeout"
        );
        let early = KafkaConfig::default().with_stall_rejoin(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(field(early), "rejoin_after");
    }
}
