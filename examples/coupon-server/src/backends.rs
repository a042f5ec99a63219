//! Which gate, log and store to run, from the configuration: the library's
//! [`coupon::Backends::connect`] with this server's flags.

use std::sync::Arc;
use std::time::Duration;

use coupon::{ConnectError, Unsafe};
use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
use coupon_core::{Component, EventLog, IssueGate, IssueStore};
use coupon_kafka::KafkaLog;

use crate::config::ServerConfig;

/// The three backends of one server.
pub struct Backends {
    /// The gate.
    pub gate: Arc<dyn IssueGate>,
    /// Whether the gate lives in this process (and must be restored from the store at start).
    pub gate_in_memory: bool,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// The Kafka log, when that is the log (to flush at shutdown).
    pub kafka: Option<Arc<KafkaLog>>,
    /// The store.
    pub store: Arc<dyn IssueStore>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("gate", &self.gate.backend())
            .field("log", &self.log.backend())
            .field("store", &self.store.backend())
            .finish()
    }
}

impl Backends {
    /// Everything in process memory (tests and throwaway demos; nothing survives a restart).
    pub fn in_memory() -> Self {
        Self {
            gate: Arc::new(MemoryGate::new()),
            gate_in_memory: true,
            log: Arc::new(MemoryLog::new()),
            kafka: None,
            store: Arc::new(MemoryStore::new()),
        }
    }

    /// Connects what `config` names through the library's [`coupon::Backends::connect`];
    /// what it leaves unset runs in process (the embedded default: memory gate and log,
    /// SQLite store). The library's refusals are worded here in this server's flags.
    pub async fn connect(config: &ServerConfig) -> anyhow::Result<Self> {
        if config.kafka_brokers.is_some() {
            // Checked here first, so that the message names this server's flags.
            config.kafka_topics.settings()?;
        }
        let backends = coupon::Backends::connect(&library_config(config))
            .await
            .map_err(|e| explain(config, e))?;
        Ok(Self {
            gate: backends.gate,
            gate_in_memory: backends.gate_in_process,
            // after-store without Kafka has no log; the server keeps one in process.
            log: backends.log.unwrap_or_else(|| Arc::new(MemoryLog::new())),
            kafka: backends.kafka,
            store: backends.store,
        })
    }
}

/// The library's configuration for this server's flags.
fn library_config(config: &ServerConfig) -> coupon::Config {
    let library = coupon::Config::new()
        .store_url(&config.database_url)
        .gate_batching(config.gate_batching)
        .kafka_topic(&config.kafka_topic)
        .consumer_group(&config.consumer_group)
        .ack(config.ack_mode())
        .reconcile_grace(Duration::from_secs(config.reconcile_grace_secs))
        .single_instance(config.single_instance);
    let mut library = config.kafka_topics.apply(config.store_limits.apply(library));
    if let Some(url) = &config.redis_url {
        library = library.gate_url(url);
    }
    if let Some(brokers) = &config.kafka_brokers {
        library = library.kafka_brokers(brokers);
    }
    for (key, value) in &config.kafka_options {
        library = library.kafka_option(key, value);
    }
    library.kafka_key_by_campaign(config.kafka_partition_key == crate::config::PartitionKeyArg::Campaign)
}

/// A refusal or failure of [`coupon::Backends::connect`], in this server's flag names.
fn explain(config: &ServerConfig, error: ConnectError) -> anyhow::Error {
    let message = match &error {
        ConnectError::Unsafe(Unsafe::AfterLogWithoutKafka) => {
            "COUPON_ACK=after-log needs a durable log, and COUPON_KAFKA_BROKERS is not set: the in-memory log would \
             lose acknowledged coupons on a crash. Set COUPON_KAFKA_BROKERS, or use COUPON_ACK=after-store"
                .to_owned()
        }
        ConnectError::Unsafe(Unsafe::InProcessGateOverShared { shared }) => format!(
            "COUPON_REDIS_URL is not set, so this server would count stock in its own memory, while it uses {shared} \
             that other servers can share: each would sell the whole stock. Set COUPON_REDIS_URL to the shared \
             Redis gate, or COUPON_SINGLE_INSTANCE=true (--single-instance) if this is the only server"
        ),
        ConnectError::Unsafe(found @ Unsafe::TopicNotDurable { .. }) => format!(
            "{}: losing one broker's disk would lose coupons already acknowledged with after-log. Raise them \
             (kafka-topics --alter / kafka-configs), or set COUPON_KAFKA_SINGLE_BROKER=true (--kafka-single-broker) \
             if this single broker is what you want",
            found.topic_found().unwrap_or_default()
        ),
        ConnectError::Unsafe(Unsafe::GroupNeverCommitted { group, topic, retained }) => format!(
            "consumer group {group} has committed nothing on topic {topic}, which holds {retained} events: the \
             reconciler would never release an unconfirmed admission. Set COUPON_CONSUMER_GROUP \
             (--consumer-group) to the group the coupon-consumer processes use, or start them first"
        ),
        ConnectError::Backend(e) => {
            let what = match e.component {
                Component::Gate => format!(
                    "the Redis gate {}",
                    config.redis_url.as_deref().map(redact).unwrap_or_default()
                ),
                Component::Store => format!("the store {}", redact(&config.database_url)),
                _ => format!("Kafka {}", config.kafka_brokers.as_deref().unwrap_or_default()),
            };
            return anyhow::Error::new(error).context(format!("connecting {what}"));
        }
        _ => return anyhow::Error::new(error).context("checking the COUPON_* settings"),
    };
    anyhow::anyhow!(message)
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    coupon_core::error::redact_url(url)
}
