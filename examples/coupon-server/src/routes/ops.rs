//! Operations: liveness, readiness, metrics, the OpenAPI document.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use coupon_core::{CampaignId, Component};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /healthz` and `GET /readyz` answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `not_ready`.
    pub status: &'static str,
    /// Per backend (`gate`, `log`, `store`): `ok` or the error.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        backends: BTreeMap::new(),
    })
}

async fn probe<F>(component: Component, f: F) -> (String, Result<(), String>)
where
    F: std::future::Future<Output = Result<(), coupon_core::BackendError>>,
{
    let name = match component {
        Component::Gate => "gate",
        Component::Log => "log",
        _ => "store",
    };
    let result = match tokio::time::timeout(PROBE_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    (name.to_owned(), result)
}

/// Every backend answers a read (an unknown campaign's counts, the consumer
/// group's position, an unknown campaign).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let nobody = CampaignId::from_uuid(uuid::Uuid::nil());
    let gate = probe(Component::Gate, async { state.gate().counts(&nobody).await.map(drop) });
    let store = probe(Component::Store, async {
        state.store().campaign(&nobody).await.map(drop)
    });
    let log = probe(Component::Log, async {
        match state.log() {
            Some(log) => log.oldest_uncommitted(state.consumer_group()).await.map(drop),
            None => Ok(()),
        }
    });
    let (gate, store, log) = tokio::join!(gate, store, log);
    let all = [gate, log, store];
    let ready = all.iter().all(|(_, r)| r.is_ok());
    let backends = all
        .into_iter()
        .map(|(name, r)| (name, r.err().unwrap_or_else(|| "ok".to_owned())))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ready { "ready" } else { "not_ready" },
            backends,
        }),
    )
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus().render(),
    )
}

/// This document.
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
