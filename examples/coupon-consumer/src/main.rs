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
use coupon::ConnectError;
use coupon_core::layers::metrics::RecorderMetrics;
use coupon_core::{Component, HookConfig, HookRunner, Recorder, RecorderConfig};
use coupon_server::config::{KafkaTopicArgs, StoreLimits, parse_kafka_option};
use coupon_server::metrics::prometheus;
use coupon_server::webhook::Webhook;

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
    /// Post every coupon stored or redeemed to this `http://` URL as JSON, at least once
    /// (`coupon_server::webhook`), from a task beside the recorder (off when unset).
    #[arg(long, env = "COUPON_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// How long one webhook call may take, in milliseconds.
    #[arg(long, env = "COUPON_WEBHOOK_TIMEOUT_MS", default_value_t = 5_000)]
    webhook_timeout_ms: u64,
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
    if config.database_url == "memory" {
        anyhow::bail!(
            "COUPON_DATABASE_URL=memory: a consumer stores into a shared database: postgres://, mysql:// or sqlite://"
        );
    }
    let webhook = config
        .webhook_url
        .as_deref()
        .map(|url| Webhook::new(url, Duration::from_millis(config.webhook_timeout_ms)))
        .transpose()
        .context("COUPON_WEBHOOK_URL")?;
    let topics = &config.kafka_topics;
    // Checked here first, so that the message names this consumer's flags.
    topics.settings()?;
    let library = coupon::Config::new()
        .store_url(&config.database_url)
        .kafka_brokers(&config.kafka_brokers)
        .kafka_topic(&config.kafka_topic)
        .kafka_rejoin_after(Duration::from_secs(config.rejoin_after_secs))
        .consumer_group(&config.group)
        // This process issues nothing: the gate, when given, is only settled.
        .single_instance(true);
    let mut library = topics.apply(config.store_limits.apply(library));
    if webhook.is_some() {
        // The notices the webhook delivers are raised as the coupons are recorded.
        library = library.store_stored_notices(true);
    }
    if let Some(url) = &config.redis_url {
        library = library.gate_url(url);
    }
    for (key, value) in &config.kafka_options {
        library = library.kafka_option(key, value);
    }
    // Installed before anything registers a metric: what is registered earlier goes nowhere.
    let metrics = config.metrics_listen.map(|addr| (addr, prometheus()));
    let backends = coupon::Backends::connect_recorder(&library)
        .await
        .map_err(|e| explain(&config, e))?;
    let source = backends
        .log
        .subscribe(&config.group)
        .await
        .context("joining the consumer group")?;
    let recorder_config = RecorderConfig::default()
        .with_max_batch(config.batch_max)
        .with_batch_wait(Duration::from_millis(config.batch_wait_ms));
    // The client's own timeout bounds each call; the runner's is the backstop.
    let hook_config = HookConfig {
        call_timeout: Duration::from_millis(config.webhook_timeout_ms) + Duration::from_secs(1),
        ..HookConfig::default()
    };
    let hooks = webhook.map(|webhook| HookRunner::with_config(backends.store.clone(), Arc::new(webhook), hook_config));
    let mut recorder =
        Recorder::new(source, backends.store, recorder_config).with_observer(Arc::new(RecorderMetrics::registered()));
    if let Some(gate) = backends.gate {
        recorder = recorder.with_gate(gate);
    }
    if let Some((addr, handle)) = metrics {
        let app = Router::new()
            .route("/metrics", get(move || std::future::ready(handle.render())))
            .route("/healthz", get(|| std::future::ready("ok")));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    tracing::info!(group = %config.group, topic = %config.kafka_topic, "coupon-consumer running");
    // A batch in progress at shutdown is not committed: it is delivered again and
    // deduplicated by the store. Every finished batch is already committed.
    let total = match &hooks {
        None => recorder.run_until(coupon_server::config::shutdown_signal()).await,
        Some(hooks) => {
            // One shutdown signal for both: the hooks stop when the recorder does.
            let stop = tokio_util::sync::CancellationToken::new();
            let hooks_done = hooks.run_until(stop.clone().cancelled_owned());
            let recorded = async {
                let total = recorder.run_until(coupon_server::config::shutdown_signal()).await;
                stop.cancel();
                total
            };
            tracing::info!("webhook hooks running");
            tokio::join!(recorded, hooks_done).0
        }
    };
    tracing::info!(?total, "coupon-consumer stopped");
    if let Some(why) = recorder.halted() {
        // Exit non-zero so the operator (or the orchestrator) sees it: nothing past this
        // event is committed, and a newer consumer picks it up after a restart.
        anyhow::bail!("the recorder halted: {why}; upgrade coupon-consumer and restart it");
    }
    Ok(())
}

/// A failure of [`coupon::Backends::connect_recorder`], in this consumer's flag names.
fn explain(config: &Config, error: ConnectError) -> anyhow::Error {
    let redact = coupon_core::error::redact_url;
    let what = match &error {
        ConnectError::UnknownScheme {
            setting: "store_url", ..
        } => {
            return anyhow::anyhow!(
                "COUPON_DATABASE_URL {}: unsupported database URL scheme: use postgres://, mysql:// or sqlite://",
                redact(&config.database_url)
            );
        }
        ConnectError::UnknownScheme { .. } => "checking COUPON_REDIS_URL".to_owned(),
        ConnectError::Backend(e) => match e.component {
            Component::Store => format!("connecting the store {}", redact(&config.database_url)),
            Component::Gate => format!(
                "connecting the Redis gate {}",
                config.redis_url.as_deref().map(redact).unwrap_or_default()
            ),
            _ => format!("connecting Kafka {}", config.kafka_brokers),
        },
        _ => "checking the COUPON_* settings".to_owned(),
    };
    anyhow::Error::new(error).context(what)
}
