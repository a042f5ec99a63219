//! From a [`Config`] to connected backends and a wired [`Coupons`].

use std::sync::Arc;
use std::time::Duration;

use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
use coupon_core::{AckMode, BackendError, Coupons, CouponsBuilder, EventLog, IssueGate, IssueStore};

use crate::config::Config;

/// Why [`connect`] did not connect. Every variant names the setting to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A URL names a backend this build of the crate does not include.
    #[error("{setting} {url:?} needs the `{feature}` feature of the coupon crate, which this build does not enable")]
    FeatureMissing {
        /// The setting.
        setting: &'static str,
        /// Its value, without a password.
        url: String,
        /// The crate feature to enable.
        feature: &'static str,
    },
    /// A URL whose scheme names no backend.
    #[error("{setting} {url:?} has an unknown scheme: use {expected}")]
    UnknownScheme {
        /// The setting.
        setting: &'static str,
        /// Its value, without a password.
        url: String,
        /// The schemes it accepts.
        expected: &'static str,
    },
    /// The settings would break a promise (sell more than the stock, or lose an
    /// acknowledged coupon); refused before anything is served.
    #[error("unsafe configuration: {}. {}", .0.reason(), .0.fix())]
    Unsafe(Unsafe),
    /// A backend could not be reached, or refused ([`BackendError::is_retryable`] says
    /// whether trying again can help).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The wiring refused a setting (an invalid URL, a grace period too short, ...).
    #[error(transparent)]
    Core(#[from] coupon_core::Error),
}

/// A combination of settings that would break a promise, as data: an application with
/// settings of its own (flags, environment variables) words the fix in its own names;
/// [`Unsafe::reason`] and [`Unsafe::fix`] word it in [`Config`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsafe {
    /// `after-log` without Kafka: the in-memory log would lose acknowledged coupons
    /// with the process.
    AfterLogWithoutKafka,
    /// The gate counts stock in this process while it uses `shared` (Kafka, or a network
    /// database) that other processes can use too: each would sell the whole stock.
    InProcessGateOverShared {
        /// What is shared: `Kafka` or `a network database`.
        shared: &'static str,
    },
    /// Under `after-log`, an event topic that one broker's lost disk would empty.
    TopicNotDurable {
        /// The topic.
        topic: String,
        /// Its replication factor.
        replication_factor: usize,
        /// Its `min.insync.replicas`, when the broker says.
        min_insync_replicas: Option<i32>,
    },
    /// The consumer group has committed nothing while the topic holds events: the
    /// reconciler, which reads its position, would never release an admission (most
    /// likely the recorders run under another group).
    GroupNeverCommitted {
        /// The group.
        group: String,
        /// The event topic.
        topic: String,
        /// Events the topic holds.
        retained: i64,
    },
}

impl Unsafe {
    /// What would go wrong.
    pub fn reason(&self) -> String {
        match self {
            Unsafe::AfterLogWithoutKafka => "ack after-log needs a durable log, and kafka_brokers is not set: the \
                                             in-memory log would lose acknowledged coupons with the process"
                .into(),
            Unsafe::InProcessGateOverShared { shared } => format!(
                "the gate is in memory, so this process counts stock alone, while it uses {shared} that other \
                 processes can share: each would sell the whole stock"
            ),
            Unsafe::TopicNotDurable { .. } => format!(
                "{}: losing one broker's disk would lose coupons already acknowledged with after-log",
                self.topic_found().unwrap_or_default()
            ),
            Unsafe::GroupNeverCommitted { group, topic, retained } => format!(
                "consumer group {group} has committed nothing on topic {topic}, which holds {retained} events: the \
                 reconciler would never release an unconfirmed admission"
            ),
        }
    }

    /// The [`Config`] setting that fixes it.
    pub fn fix(&self) -> String {
        match self {
            Unsafe::AfterLogWithoutKafka => "Set kafka_brokers, or ack after-store",
            Unsafe::InProcessGateOverShared { .. } => {
                "Set gate_url to the shared Redis gate, or single_instance(true) if this is the only process"
            }
            Unsafe::TopicNotDurable { .. } => {
                "Raise them on the broker, or set kafka_single_broker(true) if this single broker is what you want"
            }
            Unsafe::GroupNeverCommitted { .. } => {
                "Set consumer_group to the group the recorders use, or start them first"
            }
        }
        .into()
    }

    /// For [`Unsafe::TopicNotDurable`]: "topic T has replication factor N and
    /// min.insync.replicas M", the finding as the broker described it.
    pub fn topic_found(&self) -> Option<String> {
        match self {
            Unsafe::TopicNotDurable {
                topic,
                replication_factor,
                min_insync_replicas,
            } => Some(format!(
                "topic {topic} has replication factor {replication_factor} and min.insync.replicas {}",
                min_insync_replicas.map_or("unknown".to_owned(), |n| n.to_string())
            )),
            _ => None,
        }
    }
}

impl From<Unsafe> for ConnectError {
    fn from(u: Unsafe) -> Self {
        Self::Unsafe(u)
    }
}

impl From<coupon_core::ValidationError> for ConnectError {
    fn from(e: coupon_core::ValidationError) -> Self {
        Self::Core(e.into())
    }
}

/// Connects what `config` names and wires the system over it: the one call an
/// application makes at start. See the [crate docs](crate) for an example.
pub async fn connect(config: &Config) -> Result<Coupons, ConnectError> {
    let backends = Backends::connect(config).await?;
    Ok(backends.builder(config).build().await?)
}

/// The connected gate, log and store, before they are wired: for an application that
/// adds its own layers or settings ([`Backends::builder`]) before building.
pub struct Backends {
    /// The gate.
    pub gate: Arc<dyn IssueGate>,
    /// Whether the gate lives in this process (restored from the store when built).
    pub gate_in_process: bool,
    /// The event log, unless acknowledging after the store without one.
    pub log: Option<Arc<dyn EventLog>>,
    /// The store.
    pub store: Arc<dyn IssueStore>,
    /// The Kafka log, when `log` is one: for what only Kafka answers
    /// ([`coupon_kafka::KafkaLog::group_progress`], ...).
    #[cfg(feature = "kafka")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
    pub kafka: Option<Arc<coupon_kafka::KafkaLog>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("gate", &self.gate.backend())
            .field("gate_in_process", &self.gate_in_process)
            .field("log", &self.log.as_ref().map(|l| l.backend()))
            .field("store", &self.store.backend())
            .finish()
    }
}

impl Backends {
    /// Checks `config` as a whole, then connects each backend it names (creating the
    /// Kafka topic when missing and running the SQL migrations).
    pub async fn connect(config: &Config) -> Result<Self, ConnectError> {
        check_schemes(config)?;
        check_safe(config)?;
        let store = connect_store(config).await?;
        let (gate, gate_in_process) = connect_gate(config).await?;
        let Some(brokers) = &config.kafka_brokers else {
            // Without Kafka, after-gate publishes to a log in this process (the
            // application runs `Coupons::recorder` beside the issuer); after-store needs none.
            let log: Option<Arc<dyn EventLog>> = match config.ack_mode() {
                AckMode::AfterStore => None,
                _ => Some(Arc::new(MemoryLog::new())),
            };
            return Ok(Self {
                gate,
                gate_in_process,
                log,
                store,
                #[cfg(feature = "kafka")]
                kafka: None,
            });
        };
        let kafka = connect_kafka(config, brokers).await?;
        Ok(Self {
            gate,
            gate_in_process,
            #[cfg(feature = "kafka")]
            log: Some(kafka.clone()),
            #[cfg(not(feature = "kafka"))]
            log: Some(kafka),
            store,
            #[cfg(feature = "kafka")]
            kafka: Some(kafka),
        })
    }

    /// The store, the Kafka log and, when `gate_url` names Redis, the gate (to settle
    /// its ledger after each batch): what a process that only records needs, such as a
    /// consumer running [`coupon_core::Recorder`] over `log.subscribe(group)`. Kafka
    /// is required (a log in another process's memory cannot be read). The topic is
    /// created when missing and logged; one that a broker loss would empty is not
    /// refused here, as a recorder acknowledges nobody.
    pub async fn connect_recorder(config: &Config) -> Result<RecorderBackends, ConnectError> {
        check_schemes(config)?;
        check_safe(config)?;
        let Some(brokers) = &config.kafka_brokers else {
            return Err(coupon_core::ValidationError::field(
                "kafka_brokers",
                "a process that only records reads the Kafka log: set the brokers",
            )
            .into());
        };
        let store = connect_store(config).await?;
        let gate = match connect_gate(config).await? {
            (_, true) => None,
            (gate, false) => Some(gate),
        };
        let log = kafka_log(config, brokers).await?;
        Ok(RecorderBackends { store, log, gate })
    }

    /// A [`Coupons`] builder over these backends with `config`'s settings (ack mode,
    /// grace, consumer group, metrics), to adjust before [`CouponsBuilder::build`].
    pub fn builder(self, config: &Config) -> CouponsBuilder {
        let mut builder = Coupons::builder(self.gate, self.store)
            .ack(config.ack_mode())
            .grace(Duration::from_secs(config.reconcile_grace_secs))
            .gate_in_process(self.gate_in_process);
        if let Some(log) = self.log {
            builder = builder.log(log, config.consumer_group.clone());
        }
        #[cfg(feature = "metrics")]
        if config.metered {
            builder = builder.metered();
        }
        builder
    }
}

/// What [`Backends::connect_recorder`] connects.
pub struct RecorderBackends {
    /// The store.
    pub store: Arc<dyn IssueStore>,
    /// The event log (Kafka).
    pub log: Arc<dyn EventLog>,
    /// The shared gate, when `gate_url` names one.
    pub gate: Option<Arc<dyn IssueGate>>,
}

impl std::fmt::Debug for RecorderBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderBackends")
            .field("store", &self.store.backend())
            .field("log", &self.log.backend())
            .field("gate", &self.gate.as_ref().map(|g| g.backend()))
            .finish()
    }
}

const STORE_SCHEMES: &str = "memory, sqlite://, postgres:// or mysql://";
const GATE_SCHEMES: &str = "memory, redis://, rediss://, redis+cluster:// or rediss+cluster://";

/// Refuses a URL that names no backend, before anything else is judged.
fn check_schemes(config: &Config) -> Result<(), ConnectError> {
    if !matches!(
        config.store_scheme(),
        "memory" | "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb"
    ) {
        return Err(ConnectError::UnknownScheme {
            setting: "store_url",
            url: redacted(&config.store_url),
            expected: STORE_SCHEMES,
        });
    }
    if !matches!(
        config.gate_scheme(),
        "memory" | "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
    ) {
        return Err(ConnectError::UnknownScheme {
            setting: "gate_url",
            url: redacted(&config.gate_url),
            expected: GATE_SCHEMES,
        });
    }
    Ok(())
}

/// Refuses combinations that would break a promise, before anything connects.
fn check_safe(config: &Config) -> Result<(), ConnectError> {
    let ack = config.ack_mode();
    if ack == AckMode::AfterLog && config.kafka_brokers.is_none() {
        return Err(Unsafe::AfterLogWithoutKafka.into());
    }
    let shared = if config.kafka_brokers.is_some() {
        Some("Kafka")
    } else if matches!(config.store_scheme(), "memory" | "sqlite") {
        None
    } else {
        Some("a network database")
    };
    if let (true, Some(shared), false) = (config.gate_scheme() == "memory", shared, config.single_instance) {
        return Err(Unsafe::InProcessGateOverShared { shared }.into());
    }
    let invalid = |field, message: String| Err(coupon_core::ValidationError::field(field, message).into());
    if config.store_max_connections == 0 {
        return invalid("store_max_connections", "must be at least 1".into());
    }
    if config.kafka_brokers.is_some() {
        if config.kafka_partitions < 1 {
            return invalid(
                "kafka_partitions",
                format!("{} must be at least 1", config.kafka_partitions),
            );
        }
        if !config.kafka_single_broker
            && !(1..=config.kafka_replication_factor).contains(&config.kafka_min_insync_replicas)
        {
            return invalid(
                "kafka_min_insync_replicas",
                format!(
                    "{} must be between 1 and kafka_replication_factor {}",
                    config.kafka_min_insync_replicas, config.kafka_replication_factor
                ),
            );
        }
    }
    Ok(())
}

fn redacted(url: &str) -> String {
    coupon_core::error::redact_url(url)
}

async fn connect_store(config: &Config) -> Result<Arc<dyn IssueStore>, ConnectError> {
    let url = &config.store_url;
    let missing = |feature| ConnectError::FeatureMissing {
        setting: "store_url",
        url: redacted(url),
        feature,
    };
    match config.store_scheme() {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
        scheme if enabled_sql(scheme) => {
            let store_config = coupon_sql::StoreConfig::from_url(url.as_str())
                .with_max_connections(config.store_max_connections)
                .with_statement_timeout(Duration::from_millis(config.store_statement_timeout_ms))
                .with_lock_timeout(Duration::from_millis(config.store_lock_timeout_ms))
                .with_stored_notices(config.store_stored_notices);
            Ok(coupon_sql::connect(&store_config).await?)
        }
        "postgres" | "postgresql" => Err(missing("postgres")),
        "mysql" | "mariadb" => Err(missing("mysql")),
        "sqlite" => Err(missing("sqlite")),
        _ => Err(ConnectError::UnknownScheme {
            setting: "store_url",
            url: redacted(url),
            expected: STORE_SCHEMES,
        }),
    }
}

/// Whether this build has the SQL backend `scheme` names.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
#[allow(clippy::match_like_matches_macro)] // with every feature on, each arm reads `true`
fn enabled_sql(scheme: &str) -> bool {
    match scheme {
        "postgres" | "postgresql" => cfg!(feature = "postgres"),
        "mysql" | "mariadb" => cfg!(feature = "mysql"),
        "sqlite" => cfg!(feature = "sqlite"),
        _ => false,
    }
}

async fn connect_gate(config: &Config) -> Result<(Arc<dyn IssueGate>, bool), ConnectError> {
    let url = &config.gate_url;
    match config.gate_scheme() {
        "memory" => Ok((Arc::new(MemoryGate::new()), true)),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            let mut gate_config = coupon_redis::RedisGateConfig::from_url(url)?;
            if let Some(path) = &config.gate_root_certificate_file {
                let pem = std::fs::read(path).map_err(|e| {
                    coupon_core::ValidationError::field(
                        "gate_root_certificate_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                gate_config = gate_config.with_root_certificate(pem);
            }
            let redis: Arc<dyn IssueGate> = Arc::new(coupon_redis::RedisGate::connect(gate_config).await?);
            let gate: Arc<dyn IssueGate> = if config.gate_batching {
                Arc::new(coupon_core::BatchingGate::new(
                    redis,
                    coupon_core::BatchConfig::default(),
                ))
            } else {
                redis
            };
            Ok((gate, false))
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Err(ConnectError::FeatureMissing {
            setting: "gate_url",
            url: redacted(url),
            feature: "redis",
        }),
        _ => Err(ConnectError::UnknownScheme {
            setting: "gate_url",
            url: redacted(url),
            expected: GATE_SCHEMES,
        }),
    }
}

#[cfg(not(feature = "kafka"))]
async fn connect_kafka(_config: &Config, brokers: &str) -> Result<Arc<dyn EventLog>, ConnectError> {
    Err(ConnectError::FeatureMissing {
        setting: "kafka_brokers",
        url: brokers.to_owned(),
        feature: "kafka",
    })
}

/// Creates the topics when missing, refuses one that would lose acknowledged coupons
/// with one broker under `after-log`, and a consumer group that never committed.
#[cfg(feature = "kafka")]
async fn connect_kafka(config: &Config, brokers: &str) -> Result<Arc<coupon_kafka::KafkaLog>, ConnectError> {
    let (kafka, topic) = kafka_log_described(config, brokers).await?;
    if let Some(topic) = topic
        && !topic.survives_one_broker_loss()
        && !config.kafka_single_broker
        && config.ack_mode() == AckMode::AfterLog
    {
        return Err(Unsafe::TopicNotDurable {
            topic: topic.topic.clone(),
            replication_factor: topic.replication_factor,
            min_insync_replicas: topic.min_insync_replicas,
        }
        .into());
    }
    // The reconciler reads this group's position; a group that never committed while the
    // topic holds events would make it release nothing (most likely a wrong group name).
    let progress = kafka.group_progress(&config.consumer_group).await?;
    tracing::info!(group = %config.consumer_group, ?progress, "the recorders' consumer group");
    if progress.never_committed() {
        return Err(Unsafe::GroupNeverCommitted {
            group: config.consumer_group.clone(),
            topic: config.kafka_topic.clone(),
            retained: progress.retained,
        }
        .into());
    }
    Ok(kafka)
}

/// The Kafka log for a process that only records: the topics created when missing and
/// described in the log, nothing refused.
#[cfg(feature = "kafka")]
async fn kafka_log(config: &Config, brokers: &str) -> Result<Arc<dyn EventLog>, ConnectError> {
    let (kafka, _) = kafka_log_described(config, brokers).await?;
    let log: Arc<dyn EventLog> = kafka;
    Ok(log)
}

#[cfg(not(feature = "kafka"))]
async fn kafka_log(config: &Config, brokers: &str) -> Result<Arc<dyn EventLog>, ConnectError> {
    connect_kafka(config, brokers).await
}

/// The topics created when missing and the event topic described (and logged), then the
/// log over them.
#[cfg(feature = "kafka")]
async fn kafka_log_described(
    config: &Config,
    brokers: &str,
) -> Result<(Arc<coupon_kafka::KafkaLog>, Option<coupon_kafka::TopicDescription>), ConnectError> {
    use coupon_kafka::{KafkaConfig, KafkaLog, TopicSettings, ensure_topics};

    let kafka_config = config
        .kafka_options
        .iter()
        .fold(KafkaConfig::new(brokers, config.kafka_topic.clone()), |c, (k, v)| {
            c.with(k, v)
        });
    // A short rejoin is checked for at least as often as it can fall due.
    let rejoin_after = Duration::from_secs(config.kafka_rejoin_after_secs.max(1));
    let check_every = kafka_config.stall_check_every().min(rejoin_after);
    let kafka_config = kafka_config.with_stall_rejoin(check_every, rejoin_after);
    let kafka_config = if config.kafka_key_by_campaign {
        kafka_config.with_partition_key(coupon_kafka::PartitionKey::Campaign)
    } else {
        kafka_config
    };
    let settings = if config.kafka_single_broker {
        TopicSettings::single_broker(config.kafka_partitions)
    } else {
        TopicSettings {
            partitions: config.kafka_partitions,
            replication_factor: config.kafka_replication_factor,
            min_insync_replicas: config.kafka_min_insync_replicas,
        }
    };
    let described = ensure_topics(&kafka_config, &settings).await?;
    let topic = described.into_iter().next();
    if let Some(topic) = &topic {
        topic.log();
    }
    Ok((Arc::new(KafkaLog::new(kafka_config)?), topic))
}
