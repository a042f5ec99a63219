//! The application: shared state, the router, and the server's background work
//! (in-process recorder, reconciler) with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use coupon_core::{
    AckMode, CampaignCache, CampaignService, EventLog, IssueGate, IssueStore, Issuer, IssuerConfig, Reconciler,
    Recorder, RecorderConfig,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::backends::Backends;
use crate::config::ServerConfig;
use crate::limits::Limits;
use crate::metrics::{MeteredGate, MeteredLog, Observers, RecorderMetrics, prometheus};
use crate::notify::Notifier;
use crate::routes::{campaigns, coupons, events, issue, ops};

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    issuer: Issuer,
    campaigns: CampaignService,
    gate: Arc<dyn IssueGate>,
    log: Option<Arc<dyn EventLog>>,
    store: Arc<dyn IssueStore>,
    consumer_group: String,
    auth: Auth,
    limits: Limits,
    notifier: Notifier,
    prometheus: PrometheusHandle,
}

impl AppState {
    /// The hot path.
    pub fn issuer(&self) -> &Issuer {
        &self.0.issuer
    }
    /// Campaign lifecycle.
    pub fn campaigns(&self) -> &CampaignService {
        &self.0.campaigns
    }
    /// The gate.
    pub fn gate(&self) -> &Arc<dyn IssueGate> {
        &self.0.gate
    }
    /// The event log, unless acknowledging after the store without one.
    pub fn log(&self) -> Option<&Arc<dyn EventLog>> {
        self.0.log.as_ref()
    }
    /// The store.
    pub fn store(&self) -> &Arc<dyn IssueStore> {
        &self.0.store
    }
    /// The recorders' consumer group.
    pub fn consumer_group(&self) -> &str {
        &self.0.consumer_group
    }
    /// Token checks.
    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }
    /// Rate limits.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }
    /// Coupon notifications.
    pub fn notifier(&self) -> &Notifier {
        &self.0.notifier
    }
    /// The metrics recorder.
    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.0.prometheus
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.0.issuer)
            .finish_non_exhaustive()
    }
}

/// The HTTP API: every route of the contract, rate limits and token checks on the
/// `/v1` routes, request metrics on all.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/campaigns", post(campaigns::create))
        .route("/v1/campaigns/{id}", get(campaigns::get))
        .route("/v1/campaigns/{id}/open", post(campaigns::open))
        .route("/v1/campaigns/{id}/close", post(campaigns::close))
        .route("/v1/campaigns/{id}/sync", post(campaigns::sync))
        .route("/v1/campaigns/{id}/issue", post(issue::issue))
        .route("/v1/me/coupons", get(coupons::mine))
        .route("/v1/coupons/{id}/redeem", post(coupons::redeem))
        .route("/v1/coupons/{id}/events", get(events::events))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::admit,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(|| async {
            crate::error::ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state)
}

/// A built server: state plus the background work it owns.
pub struct Server {
    state: AppState,
    recorder: Option<Recorder>,
    kafka: Option<Arc<coupon_kafka::KafkaLog>>,
    reconcile_every: Option<Duration>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Wires `backends` as `config` says. With an in-memory gate, every open
    /// campaign is restored from the store first, so the gate again knows who holds a
    /// coupon; with an in-memory log, the recorder runs in this process.
    pub async fn build(config: &ServerConfig, backends: Backends) -> anyhow::Result<Self> {
        let secret = config.secret()?;
        let ack = config.ack_mode();
        let in_process_log = backends.kafka.is_none();
        let gate: Arc<dyn IssueGate> = Arc::new(MeteredGate(backends.gate));
        let log: Arc<dyn EventLog> = Arc::new(MeteredLog(backends.log));
        let store = backends.store;
        let grace = Duration::from_secs(config.reconcile_grace_secs);
        let issuer_config = IssuerConfig::default()
            .with_ack(ack)
            .with_ack_timeout(config.ack_timeout())
            .with_max_background_publishes(config.max_background_publishes);
        // A reconciler must never void an admission this server may still acknowledge.
        issuer_config
            .check_grace(grace)
            .map_err(|e| anyhow::anyhow!("COUPON_RECONCILE_GRACE_SECS (--reconcile-grace-secs) is unsafe: {e}"))?;
        let cache = CampaignCache::new(store.clone())
            .with_load_timeout(Duration::from_millis(config.campaign_load_timeout_ms.max(1)));
        let reconciler = Reconciler::new(gate.clone(), store.clone())
            .with_log(log.clone(), config.consumer_group.clone())
            .with_grace(grace);
        let campaigns = CampaignService::new(store.clone(), gate.clone(), reconciler).with_cache(cache.clone());
        if backends.gate_in_memory {
            let restored = campaigns.restore_all_open().await?;
            for (id, report) in &restored {
                tracing::info!(campaign = %id, users = report.restore.users_restored, "restored the in-memory gate from the store");
            }
        }
        let issuer = Issuer::new(gate.clone(), Some(log.clone()), store.clone(), cache, issuer_config)?;
        let notifier = Notifier::new();
        let recorder = if in_process_log && ack != AckMode::AfterStore {
            let source = log.subscribe(&config.consumer_group).await?;
            let observers = Observers(vec![Arc::new(notifier.clone()), Arc::new(RecorderMetrics)]);
            Some(
                Recorder::new(source, store.clone(), RecorderConfig::default())
                    .with_gate(gate.clone())
                    .with_observer(Arc::new(observers)),
            )
        } else {
            None
        };
        let state = AppState(Arc::new(Inner {
            issuer,
            campaigns,
            gate,
            log: Some(log),
            store,
            consumer_group: config.consumer_group.clone(),
            auth: Auth::new(&secret),
            limits: Limits::new(config.rate_limit, config.user_rate_limit),
            notifier,
            prometheus: prometheus(),
        }));
        tracing::info!(ack = ack.as_str(), "server built");
        Ok(Self {
            state,
            recorder,
            kafka: backends.kafka,
            reconcile_every: (config.reconcile_secs > 0).then(|| Duration::from_secs(config.reconcile_secs)),
        })
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The router over this server's state.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down gracefully:
    /// stops accepting, finishes in-flight requests, finishes background publishes,
    /// flushes the producer, and lets the in-process recorder store what is left.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let recorder = self.recorder.map(|mut recorder| {
            let stop = stop.clone();
            tasks.spawn(async move {
                recorder.run_until(stop.cancelled()).await;
                if let Some(why) = recorder.halted() {
                    tracing::error!(%why, "the in-process recorder halted; upgrade the server and restart it");
                }
                recorder
            })
        });
        tasks.spawn(housekeeping(
            self.state.clone(),
            self.kafka.clone(),
            self.reconcile_every,
            stop.clone(),
        ));
        if let Some(every) = self.reconcile_every {
            tasks.spawn(reconcile_loop(self.state.clone(), every, stop.clone()));
        }

        axum::serve(listener, router(self.state.clone()))
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!("no longer accepting; finishing background work");
        self.state.issuer().flush().await;
        if let Some(kafka) = &self.kafka
            && let Err(e) = kafka.flush(Duration::from_secs(10)).await
        {
            tracing::error!(error = %e, "flushing the producer at shutdown failed");
        }
        stop.cancel();
        if let Some(handle) = recorder {
            let mut recorder = handle.await?;
            let report = recorder.drain().await;
            tracing::info!(stored = report.stored, "in-process recorder drained");
        }
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}

/// Periodic upkeep: forget idle rate-limit keys, metrics upkeep, and (at the reconcile
/// period) the consumer group check. Never waits on a reconcile pass, which can be long.
async fn housekeeping(
    state: AppState,
    kafka: Option<Arc<coupon_kafka::KafkaLog>>,
    reconcile_every: Option<Duration>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since_check = Duration::ZERO;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        state.limits().forget_idle_users();
        state.prometheus().run_upkeep();
        since_check += Duration::from_secs(5);
        if let (Some(every), Some(kafka)) = (reconcile_every, &kafka)
            && since_check >= every
        {
            since_check = Duration::ZERO;
            watch_consumer_group(kafka, state.consumer_group()).await;
        }
    }
}

/// Reconciles every open campaign, one pass per period (a pass that runs long delays
/// the next one, never overlaps it).
async fn reconcile_loop(state: AppState, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = reconcile_open(&state) => {}
        }
    }
}

/// The start-up check of the consumer group, kept up while serving: a group that never
/// committed while the topic holds events means the reconciler releases nothing (most
/// likely the consumers run under another group). Logged at error level on every pass
/// and exported as `coupon_reconciler_group_never_committed`.
async fn watch_consumer_group(kafka: &coupon_kafka::KafkaLog, group: &str) {
    match kafka.group_progress(group).await {
        Ok(progress) => {
            let never = progress.never_committed();
            metrics::gauge!("coupon_reconciler_group_never_committed").set(if never { 1.0 } else { 0.0 });
            if never {
                tracing::error!(
                    group,
                    retained = progress.retained,
                    "the consumer group has committed nothing while the topic holds events: the reconciler \
                     releases nothing. Is COUPON_CONSUMER_GROUP the consumers' group?"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading the consumer group's progress failed"),
    }
}

async fn reconcile_open(state: &AppState) {
    let ids = match state.store().open_campaigns().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "reconciler: listing open campaigns failed");
            return;
        }
    };
    for id in ids {
        match state.campaigns().reconciler().reconcile_now(&id).await {
            Ok(report) if report.released > 0 || report.settled > 0 => {
                tracing::info!(campaign = %id, released = report.released, settled = report.settled, "reconciled");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(campaign = %id, error = %e, "reconciler pass failed"),
        }
    }
}
