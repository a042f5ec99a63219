//! `coupon-consumer`: the cold path as its own process. Reads issue events from
//! Kafka in a consumer group, stores them in batches (idempotently), settles the
//! gate's reservation ledger, commits offsets only after the write, retries with
//! backoff and dead-letters poison events. Run several: they share the partitions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use clap::Parser;
use coupon_core::layers::metrics::RecorderMetrics;
use coupon_core::{EventLog, IssueGate, Recorder, RecorderConfig};
use coupon_kafka::{KafkaConfig, KafkaLog, ensure_topics};
use coupon_redis::{RedisGate, RedisGateConfig};
use coupon_server::config::{KafkaTopicArgs, StoreLimits, parse_kafka_option};
use coupon_server::metrics::prometheus;

/// `coupon-consumer` settings, from flags or `COUPON_*` variables.
#[derive(Debug, Parser)]
#[command(name = "coupon-consumer", version, about)]
struct Config {
    /// Kafka bootstrap brokers.
    #[arg(long, env = "COUPON_KAFKA_BROKERS")]
    kafka_brokers: String,
    /// The issue-event topic.
    #[arg(long, env = "COUPON_KAFKA_TOPIC", default_value = "coupon-issued")]
    kafka_topic: String,
    /// How the topics are created when they do not exist.
    #[command(flatten)]
    kafka_topics: KafkaTopicArgs,
    /// Extra librdkafka settings, `key=value` separated by commas (for example
    /// `security.protocol=SSL,session.timeout.ms=10000`).
    #[arg(long, env = "COUPON_KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_kafka_option)]
    kafka_options: Vec<(String, String)>,
    /// The consumer group; every instance of one group shares the partitions.
    #[arg(long, env = "COUPON_CONSUMER_GROUP", default_value = "coupon-recorder")]
    group: String,
    /// The store: `postgres://`, `mysql://` or `sqlite://`.
    #[arg(long, env = "COUPON_DATABASE_URL")]
    database_url: String,
    /// Bounds on the store's statements.
    #[command(flatten)]
    store_limits: StoreLimits,
    /// The Redis gate, to settle its reservation ledger after each batch (optional:
    /// without it the server's reconciler settles them, later).
    #[arg(long, env = "COUPON_REDIS_URL")]
    redis_url: Option<String>,
    /// Largest batch written at once.
    #[arg(long, env = "COUPON_BATCH_MAX", default_value_t = 1_000)]
    batch_max: usize,
    /// Longest wait to fill a batch, in milliseconds.
    #[arg(long, env = "COUPON_BATCH_WAIT_MS", default_value_t = 20)]
    batch_wait_ms: u64,
    /// Seconds this consumer may have nothing uncommitted of its own while partitions
    /// held elsewhere wait and do not advance (a dead member keeping them, or none
    /// assigned), before it leaves and joins the group again.
    #[arg(long, env = "COUPON_CONSUMER_REJOIN_AFTER_SECS", default_value_t = 60)]
    rejoin_after_secs: u64,
    /// Serve `/metrics` and `/healthz` here (off when unset).
    #[arg(long, env = "COUPON_CONSUMER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

// A faster allocator than glibc's for many small, short-lived allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    coupon_server::config::init_tracing();
    let store = coupon_sql::connect(&config.store_limits.store_config(&config.database_url))
        .await
        .context("connecting the store")?;
    let kafka_config = config
        .kafka_options
        .iter()
        .fold(
            KafkaConfig::new(config.kafka_brokers.clone(), config.kafka_topic.clone()),
            |c, (k, v)| c.with(k, v),
        )
        .with_stall_rejoin(
            Duration::from_secs(10),
            Duration::from_secs(config.rejoin_after_secs.max(1)),
        );
    let described = ensure_topics(&kafka_config, &config.kafka_topics.settings()?)
        .await
        .context("creating the topics")?;
    // The consumer acknowledges nobody: a topic that a broker loss would empty is logged.
    described[0].log();
    let log = KafkaLog::new(kafka_config).context("creating the Kafka client")?;
    let source = log
        .subscribe(&config.group)
        .await
        .context("joining the consumer group")?;
    let recorder_config = RecorderConfig::default()
        .with_max_batch(config.batch_max)
        .with_batch_wait(Duration::from_millis(config.batch_wait_ms));
    let mut recorder = Recorder::new(source, store, recorder_config).with_observer(Arc::new(RecorderMetrics));
    if let Some(url) = &config.redis_url {
        let gate: Arc<dyn IssueGate> = Arc::new(
            RedisGate::connect(RedisGateConfig::from_url(url).context("COUPON_REDIS_URL")?)
                .await
                .context("connecting the Redis gate")?,
        );
        recorder = recorder.with_gate(gate);
    }
    if let Some(addr) = config.metrics_listen {
        let handle = prometheus();
        let app = Router::new()
            .route("/metrics", get(move || std::future::ready(handle.render())))
            .route("/healthz", get(|| std::future::ready("ok")));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    tracing::info!(group = %config.group, topic = %config.kafka_topic, "coupon-consumer running");
    // A batch in progress at shutdown is not committed: it is delivered again and
    // deduplicated by the store. Every finished batch is already committed.
    let total = recorder.run_until(coupon_server::config::shutdown_signal()).await;
    tracing::info!(?total, "coupon-consumer stopped");
    if let Some(why) = recorder.halted() {
        // Exit non-zero so the operator (or the orchestrator) sees it: nothing past this
        // event is committed, and a newer consumer picks it up after a restart.
        anyhow::bail!("the recorder halted: {why}; upgrade coupon-consumer and restart it");
    }
    Ok(())
}
