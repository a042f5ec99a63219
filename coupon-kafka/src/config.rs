//! [`KafkaConfig`]: brokers, topics, partition key, timeouts.

use std::time::Duration;

/// Which field of an event keys its Kafka message (and so picks its partition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
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

/// Configuration of a [`crate::KafkaLog`]. `Debug` hides the values of secret
/// settings in `extra` (`sasl.password`, `ssl.key.password`, ...).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// The topic of issue events (default `coupon-issued`).
    pub topic: String,
    /// The dead-letter topic (default `<topic>.dlq`).
    pub dead_letter_topic: String,
    /// What keys the messages.
    pub partition_key: PartitionKey,
    /// How long a publish may take before it fails (librdkafka `message.timeout.ms`,
    /// default 5 s): the bound within which `AfterLog` answers or gives up.
    pub delivery_timeout: Duration,
    /// How long the producer waits to fill a batch (`linger.ms`, default 1 ms).
    pub linger: Duration,
    /// Extra librdkafka settings for producer and consumers (`security.protocol`, ...).
    pub extra: Vec<(String, String)>,
    /// How often a consumer checks its assignment and its group's lag (default 10 s).
    pub stall_check_every: Duration,
    /// How long a consumer may have nothing uncommitted of its own while partitions
    /// held elsewhere wait and do not advance before it leaves and joins the group
    /// again (default 60 s). Keep it well above the group's rebalance time, or members rejoin while
    /// the group is still forming.
    pub rejoin_after: Duration,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("partition_key", &self.partition_key)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("linger", &self.linger)
            .field("extra", &extra)
            .field("stall_check_every", &self.stall_check_every)
            .field("rejoin_after", &self.rejoin_after)
            .finish()
    }
}

/// librdkafka settings whose values are secrets.
pub(crate) fn is_secret(key: &str) -> bool {
    key.contains("password") || key.contains("secret")
}

impl KafkaConfig {
    /// A configuration for `brokers` and `topic`, defaults elsewhere.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        Self {
            brokers: brokers.into(),
            dead_letter_topic: format!("{topic}.dlq"),
            topic,
            partition_key: PartitionKey::default(),
            delivery_timeout: Duration::from_secs(5),
            linger: Duration::from_millis(1),
            extra: Vec::new(),
            stall_check_every: Duration::from_secs(10),
            rejoin_after: Duration::from_secs(60),
        }
    }

    /// Sets the dead-letter topic.
    pub fn with_dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = topic.into();
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

    /// Adds a librdkafka setting.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
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
}
