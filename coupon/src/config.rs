//! [`Config`]: which gate, log and store to connect, from URLs, in code or from a file.

use std::collections::BTreeMap;
use std::time::Duration;

use coupon_core::AckMode;
use serde::{Deserialize, Serialize};

/// What [`crate::connect`] builds. Every field has a default (everything in process
/// memory), so a file or a set of environment variables needs to name only what differs.
/// Set fields with the builder methods in code, or deserialize it with serde:
///
/// ```
/// let config: coupon::Config = serde_json::from_str(r#"{
///     "gate_url": "redis://127.0.0.1:6379",
///     "store_url": "postgres://coupon@127.0.0.1/coupon",
///     "kafka_brokers": "127.0.0.1:9092",
///     "ack": "after-log"
/// }"#)?;
/// assert_eq!(config, coupon::Config::new()
///     .gate_url("redis://127.0.0.1:6379")
///     .store_url("postgres://coupon@127.0.0.1/coupon")
///     .kafka_brokers("127.0.0.1:9092")
///     .ack(coupon::AckMode::AfterLog));
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// Nothing is checked until [`crate::connect`], which checks everything once and refuses
/// an unsafe combination naming the setting that fixes it. `Debug` hides passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub(crate) gate_url: String,
    pub(crate) gate_batching: bool,
    pub(crate) gate_root_certificate_file: Option<std::path::PathBuf>,
    pub(crate) store_url: String,
    pub(crate) store_max_connections: u32,
    pub(crate) store_statement_timeout_ms: u64,
    pub(crate) store_lock_timeout_ms: u64,
    pub(crate) store_stored_notices: bool,
    pub(crate) kafka_brokers: Option<String>,
    pub(crate) kafka_topic: String,
    pub(crate) kafka_options: BTreeMap<String, String>,
    pub(crate) kafka_single_broker: bool,
    pub(crate) kafka_key_by_campaign: bool,
    pub(crate) kafka_partitions: i32,
    pub(crate) kafka_replication_factor: i32,
    pub(crate) kafka_min_insync_replicas: i32,
    pub(crate) kafka_rejoin_after_secs: u64,
    pub(crate) consumer_group: String,
    pub(crate) ack: Option<AckMode>,
    pub(crate) reconcile_grace_secs: u64,
    pub(crate) single_instance: bool,
    pub(crate) metered: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gate_url: "memory".into(),
            gate_batching: true,
            gate_root_certificate_file: None,
            store_url: "memory".into(),
            store_max_connections: 10,
            store_statement_timeout_ms: 5_000,
            store_lock_timeout_ms: 2_000,
            store_stored_notices: false,
            kafka_brokers: None,
            kafka_topic: "coupon-issued".into(),
            kafka_options: BTreeMap::new(),
            kafka_single_broker: false,
            kafka_key_by_campaign: false,
            kafka_partitions: 6,
            kafka_replication_factor: 3,
            kafka_min_insync_replicas: 2,
            kafka_rejoin_after_secs: 60,
            consumer_group: coupon_core::coupons::DEFAULT_CONSUMER_GROUP.into(),
            ack: None,
            reconcile_grace_secs: 60,
            single_instance: false,
            metered: false,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("gate_url", &coupon_core::error::redact_url(&self.gate_url))
            .field("gate_batching", &self.gate_batching)
            .field("gate_root_certificate_file", &self.gate_root_certificate_file)
            .field("store_url", &coupon_core::error::redact_url(&self.store_url))
            .field("store_max_connections", &self.store_max_connections)
            .field("store_statement_timeout_ms", &self.store_statement_timeout_ms)
            .field("store_lock_timeout_ms", &self.store_lock_timeout_ms)
            .field("store_stored_notices", &self.store_stored_notices)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_topic", &self.kafka_topic)
            .field(
                "kafka_options",
                &coupon_core::error::redact_settings(&self.kafka_options),
            )
            .field("kafka_single_broker", &self.kafka_single_broker)
            .field("kafka_key_by_campaign", &self.kafka_key_by_campaign)
            .field("kafka_partitions", &self.kafka_partitions)
            .field("kafka_replication_factor", &self.kafka_replication_factor)
            .field("kafka_min_insync_replicas", &self.kafka_min_insync_replicas)
            .field("kafka_rejoin_after_secs", &self.kafka_rejoin_after_secs)
            .field("consumer_group", &self.consumer_group)
            .field("ack", &self.ack)
            .field("reconcile_grace_secs", &self.reconcile_grace_secs)
            .field("single_instance", &self.single_instance)
            .field("metered", &self.metered)
            .finish()
    }
}

impl Config {
    /// Everything in process memory: one process, nothing survives a restart.
    pub fn new() -> Self {
        Self::default()
    }

    /// The gate: `memory` (default), `redis://host:port`, or a cluster as
    /// `redis+cluster://host:port` or a comma-separated list of node URLs (feature `redis`).
    pub fn gate_url(mut self, url: impl Into<String>) -> Self {
        self.gate_url = url.into();
        self
    }

    /// Whether concurrent admissions to the Redis gate go in one round trip (default
    /// true; [`coupon_core::BatchingGate`]).
    pub fn gate_batching(mut self, batching: bool) -> Self {
        self.gate_batching = batching;
        self
    }

    /// With `rediss://` (feature `tls-rustls`): a PEM file with the CA certificate that
    /// signed the Redis servers' certificates, when it is not in the system's trust store.
    pub fn gate_root_certificate_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.gate_root_certificate_file = Some(path.into());
        self
    }

    /// The store of record: `memory` (default), `sqlite://path?mode=rwc`, `postgres://...`
    /// or `mysql://...` (features `sqlite`, `postgres`, `mysql`).
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = url.into();
        self
    }

    /// The SQL store's pool size (default 10).
    pub fn store_max_connections(mut self, n: u32) -> Self {
        self.store_max_connections = n;
        self
    }

    /// Longest a store statement may run before the database cancels it (default 5 s;
    /// zero: no limit; whole milliseconds). A cancelled statement wrote nothing.
    pub fn store_statement_timeout(mut self, timeout: Duration) -> Self {
        self.store_statement_timeout_ms = millis(timeout);
        self
    }

    /// Longest a store statement waits for a row lock (default 2 s; zero: the
    /// database's own default; MySQL/MariaDB round up to whole seconds).
    pub fn store_lock_timeout(mut self, timeout: Duration) -> Self {
        self.store_lock_timeout_ms = millis(timeout);
        self
    }

    /// Whether the SQL store raises a "stored" notice for each coupon it records, for a
    /// `HookRunner` to deliver (default false; `coupon_sql::StoreConfig::stored_notices`).
    /// The in-memory store always does.
    pub fn store_stored_notices(mut self, on: bool) -> Self {
        self.store_stored_notices = on;
        self
    }

    /// Kafka's bootstrap brokers, comma-separated (feature `kafka`). Unset (the default),
    /// there is no durable log.
    pub fn kafka_brokers(mut self, brokers: impl Into<String>) -> Self {
        self.kafka_brokers = Some(brokers.into());
        self
    }

    /// The issue-event topic (default `coupon-issued`), created when missing.
    pub fn kafka_topic(mut self, topic: impl Into<String>) -> Self {
        self.kafka_topic = topic.into();
        self
    }

    /// One more librdkafka setting (for example `security.protocol`).
    pub fn kafka_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka_options.insert(key.into(), value.into());
        self
    }

    /// Says the Kafka cluster is one broker on purpose (development): the topic is
    /// created with one copy, and `after-log` accepts a topic that one lost disk empties.
    pub fn kafka_single_broker(mut self, single: bool) -> Self {
        self.kafka_single_broker = single;
        self
    }

    /// Keys issue events by campaign instead of by user (`coupon_kafka::PartitionKey`):
    /// a campaign's events go to one partition, in admission order, so a flash sale's
    /// produce requests carry one partition's batch each (fewer, larger appends for the
    /// broker), but one recorder of the group records that campaign. Default false: by
    /// user, a hot campaign spreads over every partition and every recorder. Neither
    /// order is needed for correctness (each event is independent, the store idempotent).
    pub fn kafka_key_by_campaign(mut self, by_campaign: bool) -> Self {
        self.kafka_key_by_campaign = by_campaign;
        self
    }

    /// How the event topics are created when missing (default 6 partitions, 3 replicas,
    /// `min.insync.replicas` 2; an existing topic is described, never altered). With
    /// [`Config::kafka_single_broker`] they get one replica whatever this says.
    pub fn kafka_topic_layout(mut self, partitions: i32, replication_factor: i32, min_insync_replicas: i32) -> Self {
        self.kafka_partitions = partitions;
        self.kafka_replication_factor = replication_factor;
        self.kafka_min_insync_replicas = min_insync_replicas;
        self
    }

    /// How long a recorder may have nothing uncommitted of its own while partitions held
    /// elsewhere wait and do not advance before it leaves and joins its group again
    /// (default 60 s; whole seconds; `coupon_kafka::KafkaSource` explains the stalls).
    pub fn kafka_rejoin_after(mut self, after: Duration) -> Self {
        self.kafka_rejoin_after_secs = after.as_secs().max(1);
        self
    }

    /// The recorders' consumer group (default `coupon-recorder`); the reconciler reads
    /// its progress, so it must be the group the recorders really use.
    pub fn consumer_group(mut self, group: impl Into<String>) -> Self {
        self.consumer_group = group.into();
        self
    }

    /// When a user is told "issued": default `after-log` with Kafka, `after-store` without.
    pub fn ack(mut self, ack: AckMode) -> Self {
        self.ack = Some(ack);
        self
    }

    /// How old an unconfirmed admission must be before the reconciler releases it
    /// (default 60 s; whole seconds).
    pub fn reconcile_grace(mut self, grace: Duration) -> Self {
        self.reconcile_grace_secs = grace.as_secs();
        self
    }

    /// Says this is the only process issuing for these campaigns, which an in-memory gate
    /// over a shared store (a network database, or Kafka) requires.
    pub fn single_instance(mut self, single: bool) -> Self {
        self.single_instance = single;
        self
    }

    /// Wraps gate and log in the metrics layer (feature `metrics`).
    pub fn metered(mut self, metered: bool) -> Self {
        self.metered = metered;
        self
    }

    /// The acknowledgement mode this configuration gives.
    pub fn ack_mode(&self) -> AckMode {
        self.ack.unwrap_or(if self.kafka_brokers.is_some() {
            AckMode::AfterLog
        } else {
            AckMode::AfterStore
        })
    }

    /// The gate URL's scheme, `memory` when in process.
    pub(crate) fn gate_scheme(&self) -> &str {
        scheme(&self.gate_url)
    }

    /// The store URL's scheme, `memory` when in process.
    pub(crate) fn store_scheme(&self) -> &str {
        scheme(&self.store_url)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn scheme(url: &str) -> &str {
    url.split(':').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_in_urls_and_secret_kafka_options() {
        let config = Config::new()
            .store_url("postgres://coupon:hunter2@db/coupon")
            .gate_url("redis://:hunter3@cache:6379")
            .kafka_brokers("k:9092")
            .kafka_option("sasl.password", "hunter4")
            .kafka_option("security.protocol", "SASL_SSL");
        let shown = format!("{config:?}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("SASL_SSL"), "{shown}");
    }

    #[test]
    fn an_unknown_setting_in_a_file_is_refused_by_name() {
        let refused = serde_json::from_str::<Config>(r#"{"store": "postgres://db"}"#).unwrap_err();
        assert!(refused.to_string().contains("unknown field `store`"), "{refused}");
    }

    #[test]
    fn the_default_acknowledgement_follows_the_log() {
        assert_eq!(Config::new().ack_mode(), AckMode::AfterStore);
        assert_eq!(Config::new().kafka_brokers("k:9092").ack_mode(), AckMode::AfterLog);
        assert_eq!(
            Config::new().kafka_brokers("k:9092").ack(AckMode::AfterGate).ack_mode(),
            AckMode::AfterGate
        );
    }
}
