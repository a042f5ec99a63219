//! The application: shared state, the router, and the server's background work
//! (in-process recorder, reconciler) with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use coupon_core::layers::metrics::RecorderMetrics;
use coupon_core::{
    AckMode, CampaignService, Coupons, EventLog, IssueGate, IssueStore, Issuer, IssuerConfig, Observers, Recorder,
    RecorderConfig,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Auth;
use crate::backends::Backends;
use crate::config::ServerConfig;
use crate::limits::Limits;
use crate::metrics::prometheus;
use crate::notify::Notifier;
use crate::routes::{campaigns, coupons, events, issue, ops};

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    coupons: Coupons,
    auth: Auth,
    limits: Limits,
    notifier: Notifier,
    prometheus: PrometheusHandle,
}

impl AppState {
    /// The hot path.
    pub fn issuer(&self) -> &Issuer {
        self.0.coupons.issuer()
    }
    /// Campaign lifecycle.
    pub fn campaigns(&self) -> &CampaignService {
        self.0.coupons.campaigns()
    }
    /// The gate.
    pub fn gate(&self) -> &Arc<dyn IssueGate> {
        self.0.coupons.gate()
    }
    /// The event log, unless acknowledging after the store without one.
    pub fn log(&self) -> Option<&Arc<dyn EventLog>> {
        self.0.coupons.log()
    }
    /// The store.
    pub fn store(&self) -> &Arc<dyn IssueStore> {
        self.0.coupons.store()
    }
    /// The recorders' consumer group.
    pub fn consumer_group(&self) -> &str {
        self.0.coupons.consumer_group()
    }
    /// The whole wired system.
    pub fn coupons(&self) -> &Coupons {
        &self.0.coupons
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
            .field("coupons", &self.0.coupons)
            .finish_non_exhaustive()
    }
}

/// The `/v1` routes, each with its OpenAPI description (its `#[utoipa::path]`): the one
/// list of both, which [`router`] serves and [`crate::openapi::document`] describes.
pub(crate) fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(campaigns::create))
        .routes(routes!(campaigns::get))
        .routes(routes!(campaigns::status))
        .routes(routes!(campaigns::open))
        .routes(routes!(campaigns::close))
        .routes(routes!(campaigns::sync))
        .routes(routes!(issue::issue))
        .routes(routes!(coupons::mine))
        .routes(routes!(coupons::redeem))
        .routes(routes!(events::events))
}

/// The operations routes, as [`v1_routes`].
pub(crate) fn ops_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

/// The HTTP API: every route of the contract, rate limits and token checks on the
/// `/v1` routes, request metrics on all.
pub fn router(state: AppState) -> Router {
    let (v1, _) = v1_routes().split_for_parts();
    let v1 = v1.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::limits::admit,
    ));
    let (ops, _) = ops_routes().split_for_parts();
    Router::new()
        .merge(v1)
        .merge(ops)
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
        let grace = Duration::from_secs(config.reconcile_grace_secs);
        let issuer_config = IssuerConfig::default()
            .with_ack_timeout(config.ack_timeout())
            .with_max_background_publishes(config.max_background_publishes);
        // A reconciler must never void an admission this server may still acknowledge.
        issuer_config
            .with_ack(ack)
            .check_grace(grace)
            .map_err(|e| anyhow::anyhow!("COUPON_RECONCILE_GRACE_SECS (--reconcile-grace-secs) is unsafe: {e}"))?;
        let coupons = Coupons::builder(backends.gate, backends.store)
            .log(backends.log, config.consumer_group.clone())
            .ack(ack)
            .issuer_config(issuer_config)
            .grace(grace)
            .campaign_load_timeout(Duration::from_millis(config.campaign_load_timeout_ms.max(1)))
            .gate_in_process(backends.gate_in_memory)
            .metered()
            .build()
            .await?;
        let notifier = Notifier::new();
        let recorder = if in_process_log && ack != AckMode::AfterStore {
            let observers = Observers(vec![
                Arc::new(notifier.clone()),
                Arc::new(RecorderMetrics::registered()),
            ]);
            Some(
                coupons
                    .recorder(RecorderConfig::default())
                    .await?
                    .with_observer(Arc::new(observers)),
            )
        } else {
            None
        };
        let state = AppState(Arc::new(Inner {
            coupons,
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
            let (reconciler, stop) = (self.state.campaigns().reconciler().clone(), stop.clone());
            tasks.spawn(async move { reconciler.run_until(every, stop.cancelled()).await });
        }

        axum::serve(listener, router(self.state.clone()))
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!("no longer accepting; finishing background work");
        if let Err(e) = self.state.coupons().shutdown(Duration::from_secs(10)).await {
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

/// The start-up check of the consumer group, kept up while serving: a group that never
/// committed while the topic holds events means the reconciler releases nothing (most
/// likely the consumers run under another group). Logged at error level on every pass
/// and exported as `coupon_reconciler_group_never_committed`. Events the broker deleted
/// before the group committed them are exported as `coupon_reconciler_group_lost` (the
/// reconciler then holds every admission; RELIABILITY.md).
async fn watch_consumer_group(kafka: &coupon_kafka::KafkaLog, group: &str) {
    match kafka.group_progress(group).await {
        Ok(progress) => {
            let never = progress.never_committed();
            metrics::gauge!("coupon_reconciler_group_never_committed").set(if never { 1.0 } else { 0.0 });
            metrics::gauge!("coupon_reconciler_group_lost").set(progress.lost as f64);
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
