//! Configuration from flags and `COUPON_*` environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use coupon_core::AckMode;
use coupon_kafka::TopicSettings;

/// The secret `--dev` uses. Anyone can read it here: never use it in production.
pub const DEV_JWT_SECRET: &str = "coupon-dev-secret-do-not-use-in-production";

/// `coupon-server`: first-come coupon issuance over HTTP.
#[derive(Debug, Parser)]
#[command(name = "coupon-server", version, about)]
pub struct Cli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve (also used when no subcommand is given).
    #[command(flatten)]
    pub serve: ServerConfig,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print a signed token for local use (HS256, the same secret as the server).
    Token(TokenArgs),
}

/// `coupon-server token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long, default_value = "alice")]
    pub sub: String,
    /// `admin` for the admin routes.
    #[arg(long)]
    pub role: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
}

/// The server's settings.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "COUPON_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,

    /// HS256 secret for user and admin tokens. Required unless `--dev`.
    #[arg(long, env = "COUPON_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// Development mode: without `COUPON_JWT_SECRET`, use the published development
    /// secret. Never in production.
    #[arg(long, env = "COUPON_DEV", global = true)]
    pub dev: bool,

    /// Redis gate: `redis://host:port`, or a comma-separated list of cluster nodes.
    /// Unset: the in-memory gate, restored from the store at start.
    #[arg(long, env = "COUPON_REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Kafka bootstrap brokers. Unset: the in-memory log with the recorder in-process.
    #[arg(long, env = "COUPON_KAFKA_BROKERS", global = true)]
    pub kafka_brokers: Option<String>,

    /// The issue-event topic (its dead-letter topic is `<topic>.dlq`).
    #[arg(long, env = "COUPON_KAFKA_TOPIC", default_value = "coupon-issued", global = true)]
    pub kafka_topic: String,

    /// How the topics are created when they do not exist, and what a described topic
    /// must have.
    #[command(flatten)]
    pub kafka_topics: KafkaTopicArgs,

    /// Extra librdkafka settings, `key=value` separated by commas (for example
    /// `security.protocol=SSL,ssl.ca.location=/etc/ca.pem`).
    #[arg(
        long,
        env = "COUPON_KAFKA_OPTIONS",
        value_delimiter = ',',
        value_parser = parse_kafka_option,
        global = true
    )]
    pub kafka_options: Vec<(String, String)>,

    /// What issue events are keyed (partitioned) by: `user` spreads a hot campaign over
    /// every partition and recorder; `campaign` keeps it on one partition, in admission
    /// order (fewer, larger produce requests). BENCHMARKS.md measures both.
    #[arg(
        long,
        env = "COUPON_KAFKA_PARTITION_KEY",
        value_enum,
        default_value = "user",
        global = true
    )]
    pub kafka_partition_key: PartitionKeyArg,

    /// The consumer group of the recorders (the reconciler reads its committed position).
    #[arg(
        long,
        env = "COUPON_CONSUMER_GROUP",
        default_value = "coupon-recorder",
        global = true
    )]
    pub consumer_group: String,

    /// The store: `postgres://`, `mysql://` or `sqlite://`.
    #[arg(
        long,
        env = "COUPON_DATABASE_URL",
        default_value = "sqlite://coupon.db?mode=rwc",
        global = true
    )]
    pub database_url: String,

    /// Bounds on the store's statements.
    #[command(flatten)]
    pub store_limits: StoreLimits,

    /// Longest wait for a campaign read on the hot path, in milliseconds. Past it
    /// the last known campaign is served; one never read answers 503.
    #[arg(long, env = "COUPON_CAMPAIGN_LOAD_TIMEOUT_MS", default_value_t = 500, global = true)]
    pub campaign_load_timeout_ms: u64,

    /// When a user hears "issued": `after-log`, `after-gate` or `after-store`.
    /// Default: `after-log` with Kafka, `after-store` without (an in-memory log
    /// would lose acknowledged coupons on a crash).
    #[arg(long, env = "COUPON_ACK", value_parser = parse_ack, global = true)]
    pub ack: Option<AckMode>,

    /// Requests per second for the whole server; 0 turns the limit off.
    #[arg(long, env = "COUPON_RATE_LIMIT", default_value_t = 0, global = true)]
    pub rate_limit: u32,

    /// Requests per second per user; 0 turns the limit off.
    #[arg(long, env = "COUPON_USER_RATE_LIMIT", default_value_t = 10, global = true)]
    pub user_rate_limit: u32,

    /// Coalesce concurrent admissions into one gate call (Redis only).
    #[arg(long, env = "COUPON_GATE_BATCHING", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub gate_batching: bool,

    /// Seconds between reconciler passes over open campaigns; 0 turns it off.
    #[arg(long, env = "COUPON_RECONCILE_SECS", default_value_t = 30, global = true)]
    pub reconcile_secs: u64,

    /// Seconds an admission may stay unconfirmed before the reconciler may void and
    /// release it. Must be at least twice the acknowledgement deadline (0.5 s gate
    /// timeout + `COUPON_ACK_TIMEOUT_MS`), or the server refuses to start.
    #[arg(long, env = "COUPON_RECONCILE_GRACE_SECS", default_value_t = 60, global = true)]
    pub reconcile_grace_secs: u64,

    /// Longest wait for the log (or store) acknowledgement, in milliseconds.
    #[arg(long, env = "COUPON_ACK_TIMEOUT_MS", default_value_t = 5_000, global = true)]
    pub ack_timeout_ms: u64,

    /// `after-gate`: the most background publishes in flight; past it, requests are
    /// answered 503 before the gate is touched.
    #[arg(
        long,
        env = "COUPON_MAX_BACKGROUND_PUBLISHES",
        default_value_t = 10_000,
        global = true
    )]
    pub max_background_publishes: usize,

    /// This is the only server issuing from its store. Needed to run the in-memory
    /// gate (no `COUPON_REDIS_URL`) with a network database or Kafka: several such
    /// servers would each count the whole stock and together sell it several times.
    #[arg(long, env = "COUPON_SINGLE_INSTANCE", global = true)]
    pub single_instance: bool,
}

/// Bounds on the store's statements, shared by the server and the consumer.
#[derive(Debug, Clone, Args)]
pub struct StoreLimits {
    /// Longest a statement may run before the database cancels it, in milliseconds
    /// (0: no limit). A cancelled statement wrote nothing and is retried.
    #[arg(long, env = "COUPON_DB_STATEMENT_TIMEOUT_MS", default_value_t = 5_000, global = true)]
    pub db_statement_timeout_ms: u64,

    /// Longest wait for a row lock, in milliseconds (MySQL/MariaDB: whole seconds,
    /// at least 1; 0: the database's default).
    #[arg(long, env = "COUPON_DB_LOCK_TIMEOUT_MS", default_value_t = 2_000, global = true)]
    pub db_lock_timeout_ms: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            db_statement_timeout_ms: 5_000,
            db_lock_timeout_ms: 2_000,
        }
    }
}

impl StoreLimits {
    /// The library's configuration with these bounds on its store.
    pub fn apply(&self, library: coupon::Config) -> coupon::Config {
        library
            .store_statement_timeout(Duration::from_millis(self.db_statement_timeout_ms))
            .store_lock_timeout(Duration::from_millis(self.db_lock_timeout_ms))
    }

    /// The store configuration for `url` with these bounds.
    pub fn store_config(&self, url: &str) -> coupon_sql::StoreConfig {
        coupon_sql::StoreConfig::from_url(url)
            .with_statement_timeout(Duration::from_millis(self.db_statement_timeout_ms))
            .with_lock_timeout(Duration::from_millis(self.db_lock_timeout_ms))
    }
}

/// The Kafka topics' durability, shared by the server and the consumer.
#[derive(Debug, Clone, Args)]
pub struct KafkaTopicArgs {
    /// Partitions to create the topics with when they do not exist.
    #[arg(long, env = "COUPON_KAFKA_PARTITIONS", default_value_t = 6, global = true)]
    pub kafka_partitions: i32,

    /// Replicas of each partition when the topics are created (an existing topic is
    /// described, never altered). Below 2, one broker's lost disk loses acknowledged
    /// coupons.
    #[arg(long, env = "COUPON_KAFKA_REPLICATION_FACTOR", default_value_t = 3, global = true)]
    pub kafka_replication_factor: i32,

    /// `min.insync.replicas` of the topics created: how many copies hold an event
    /// before the broker acknowledges it.
    #[arg(long, env = "COUPON_KAFKA_MIN_INSYNC_REPLICAS", default_value_t = 2, global = true)]
    pub kafka_min_insync_replicas: i32,

    /// A single broker (development, tests): create the topics with one replica and
    /// accept a topic that has one. An acknowledged coupon then survives a broker
    /// crash but not the loss of its disk or host.
    #[arg(long, env = "COUPON_KAFKA_SINGLE_BROKER", global = true)]
    pub kafka_single_broker: bool,
}

/// `--kafka-partition-key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionKeyArg {
    /// By user (the default).
    User,
    /// By campaign.
    Campaign,
}

impl Default for KafkaTopicArgs {
    fn default() -> Self {
        Self {
            kafka_partitions: 6,
            kafka_replication_factor: 3,
            kafka_min_insync_replicas: 2,
            kafka_single_broker: false,
        }
    }
}

impl KafkaTopicArgs {
    /// The library's configuration with these topic settings.
    pub fn apply(&self, library: coupon::Config) -> coupon::Config {
        library
            .kafka_single_broker(self.kafka_single_broker)
            .kafka_topic_layout(
                self.kafka_partitions,
                self.kafka_replication_factor,
                self.kafka_min_insync_replicas,
            )
    }

    /// The topic settings these flags give.
    pub fn settings(&self) -> anyhow::Result<TopicSettings> {
        if self.kafka_single_broker {
            return Ok(TopicSettings::single_broker(self.kafka_partitions));
        }
        let settings = TopicSettings {
            partitions: self.kafka_partitions,
            replication_factor: self.kafka_replication_factor,
            min_insync_replicas: self.kafka_min_insync_replicas,
        };
        anyhow::ensure!(
            settings.partitions >= 1,
            "COUPON_KAFKA_PARTITIONS={} must be at least 1",
            settings.partitions
        );
        anyhow::ensure!(
            (1..=settings.replication_factor).contains(&settings.min_insync_replicas),
            "COUPON_KAFKA_MIN_INSYNC_REPLICAS={} must be between 1 and COUPON_KAFKA_REPLICATION_FACTOR={}",
            settings.min_insync_replicas,
            settings.replication_factor
        );
        Ok(settings)
    }
}

fn parse_ack(s: &str) -> Result<AckMode, String> {
    s.parse().map_err(|e: coupon_core::ValidationError| e.to_string())
}

/// One `key=value` librdkafka setting (`COUPON_KAFKA_OPTIONS`).
pub fn parse_kafka_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("`{s}` is not a librdkafka `key=value` setting")),
    }
}

impl ServerConfig {
    /// The settings with every flag at its default and nothing read from the
    /// environment (what tests start from).
    pub fn defaults() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            jwt_secret: None,
            dev: false,
            redis_url: None,
            kafka_brokers: None,
            kafka_topic: "coupon-issued".into(),
            kafka_topics: KafkaTopicArgs::default(),
            kafka_options: Vec::new(),
            kafka_partition_key: PartitionKeyArg::User,
            consumer_group: "coupon-recorder".into(),
            database_url: "sqlite://coupon.db?mode=rwc".into(),
            store_limits: StoreLimits::default(),
            campaign_load_timeout_ms: 500,
            ack: None,
            rate_limit: 0,
            user_rate_limit: 10,
            gate_batching: true,
            reconcile_secs: 30,
            reconcile_grace_secs: 60,
            ack_timeout_ms: 5_000,
            single_instance: false,
            max_background_publishes: 10_000,
        }
    }

    /// The JWT secret to use: the configured one, or the development secret with
    /// `--dev`; an error naming the fix otherwise.
    pub fn secret(&self) -> anyhow::Result<String> {
        match (&self.jwt_secret, self.dev) {
            (Some(s), _) if !s.is_empty() => Ok(s.clone()),
            (_, true) => Ok(DEV_JWT_SECRET.to_owned()),
            _ => anyhow::bail!(
                "COUPON_JWT_SECRET is not set. Set it (or --jwt-secret) to the HS256 secret your tokens are \
                 signed with, or pass --dev to use the published development secret for local use only."
            ),
        }
    }

    /// The acknowledgement mode in effect.
    pub fn ack_mode(&self) -> AckMode {
        self.ack.unwrap_or(if self.kafka_brokers.is_some() {
            AckMode::AfterLog
        } else {
            AckMode::AfterStore
        })
    }

    /// The acknowledgement timeout.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // Colour codes only for a terminal, not in log files and collectors.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_options_are_key_value_pairs_and_bad_ones_are_named() {
        let cli = Cli::try_parse_from([
            "coupon-server",
            "--kafka-options",
            "security.protocol=SSL, ssl.ca.location=/etc/ca.pem",
        ])
        .unwrap();
        assert_eq!(
            cli.serve.kafka_options,
            [
                ("security.protocol".to_owned(), "SSL".to_owned()),
                ("ssl.ca.location".to_owned(), "/etc/ca.pem".to_owned())
            ]
        );
        let err = Cli::try_parse_from(["coupon-server", "--kafka-options", "linger.ms"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("`linger.ms` is not a librdkafka `key=value` setting"),
            "{err}"
        );
    }

    #[test]
    fn the_partition_key_flag_is_user_by_default_and_bad_values_are_named() {
        let cli = Cli::try_parse_from(["coupon-server", "--kafka-partition-key", "campaign"]).unwrap();
        assert_eq!(cli.serve.kafka_partition_key, PartitionKeyArg::Campaign);
        let default = Cli::try_parse_from(["coupon-server"]).unwrap();
        assert_eq!(default.serve.kafka_partition_key, PartitionKeyArg::User);
        let err = Cli::try_parse_from(["coupon-server", "--kafka-partition-key", "order"]).unwrap_err();
        assert!(
            err.to_string().contains("'order'") && err.to_string().contains("campaign"),
            "{err}"
        );
    }
}
