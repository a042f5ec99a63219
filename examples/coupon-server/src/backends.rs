//! Which gate, log and store to run, from the configuration.

use std::sync::Arc;

use anyhow::Context;
use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
use coupon_core::{AckMode, BatchConfig, BatchingGate, EventLog, IssueGate, IssueStore};
use coupon_kafka::{KafkaConfig, KafkaLog, ensure_topics};
use coupon_redis::{RedisGate, RedisGateConfig};

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

    /// Connects what `config` names; what it leaves unset runs in process (the
    /// embedded default: memory gate and log, SQLite store).
    pub async fn connect(config: &ServerConfig) -> anyhow::Result<Self> {
        config.check_safe()?;
        let store = coupon_sql::connect(&config.store_limits.store_config(&config.database_url))
            .await
            .with_context(|| format!("connecting the store {}", redact(&config.database_url)))?;
        let (gate, gate_in_memory): (Arc<dyn IssueGate>, bool) = match &config.redis_url {
            Some(url) => {
                let gate_config = RedisGateConfig::from_url(url).context("COUPON_REDIS_URL")?;
                let redis: Arc<dyn IssueGate> = Arc::new(
                    RedisGate::connect(gate_config)
                        .await
                        .with_context(|| format!("connecting the Redis gate {url}"))?,
                );
                let gate = if config.gate_batching {
                    Arc::new(BatchingGate::new(redis, BatchConfig::default()))
                } else {
                    redis
                };
                (gate, false)
            }
            None => (Arc::new(MemoryGate::new()), true),
        };
        let (log, kafka): (Arc<dyn EventLog>, _) = match &config.kafka_brokers {
            Some(brokers) => {
                let kafka_config = config.kafka_options.iter().fold(
                    KafkaConfig::new(brokers.clone(), config.kafka_topic.clone()),
                    |c, (k, v)| c.with(k, v),
                );
                let described = ensure_topics(&kafka_config, &config.kafka_topics.settings()?)
                    .await
                    .with_context(|| format!("creating the topic {} on {brokers}", config.kafka_topic))?;
                config
                    .kafka_topics
                    .check(&described[0], config.ack_mode() == AckMode::AfterLog)?;
                let kafka = Arc::new(KafkaLog::new(kafka_config).context("creating the Kafka producer")?);
                check_consumer_group(&kafka, &config.consumer_group).await?;
                (kafka.clone(), Some(kafka))
            }
            None => (Arc::new(MemoryLog::new()), None),
        };
        Ok(Self {
            gate,
            gate_in_memory,
            log,
            kafka,
            store,
        })
    }
}

/// Refuses a consumer group that has committed nothing while the topic holds events:
/// the reconciler reads this group's position, and with none it would never release an
/// admission (F17), which is what a server given another group than its consumers sees.
async fn check_consumer_group(kafka: &KafkaLog, group: &str) -> anyhow::Result<()> {
    let progress = kafka
        .group_progress(group)
        .await
        .with_context(|| format!("reading the committed offsets of consumer group {group}"))?;
    tracing::info!(group, ?progress, "the recorders' consumer group");
    if progress.never_committed() {
        anyhow::bail!(
            "consumer group {group} has committed nothing on topic {}, which holds {} events: the \
             reconciler would never release an unconfirmed admission. Set COUPON_CONSUMER_GROUP \
             (--consumer-group) to the group the coupon-consumer processes use, or start them first",
            kafka.config().topic,
            progress.retained
        );
    }
    Ok(())
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    coupon_core::error::redact_url(url)
}
