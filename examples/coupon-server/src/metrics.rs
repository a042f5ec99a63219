//! Prometheus metrics: HTTP requests by route and status, issue outcomes by campaign,
//! gate and log latencies, recorder batch sizes and lag.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use coupon_core::{
    Admission, AdmitRequest, BackendError, CampaignId, CouponId, EventLog, EventSource, Fence, GateCampaign,
    GateCounts, IssueEvent, IssueGate, RecordObserver, Reservation, ReservationKey, RestoreReport, UserId,
};
use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 50 µs to 10 s, dense below 10 ms where the hot path lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("coupon_recorder_batch_size".into()), BATCH_BUCKETS)
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
            }
            handle
        })
        .clone()
}

/// Middleware: counts requests by matched route and status, and times them.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| intern(p.as_str()));
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = intern(response.status().as_str());
    histogram!("coupon_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    counter!("coupon_http_requests_total", "method" => method, "route" => route, "status" => status).increment(1);
    response
}

/// The standard methods by name, anything else as `other` (a client picks the method,
/// and must not be able to grow the label set).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A label value as a `&'static str`, so labelling a request allocates nothing. Only
/// for small fixed sets (route templates, methods, status codes): each distinct value
/// is kept for the life of the process.
fn intern(value: &str) -> &'static str {
    static VALUES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let values = VALUES.get_or_init(Default::default);
    if let Some(known) = values.read().expect("label set lock").get(value) {
        return known;
    }
    let mut values = values.write().expect("label set lock");
    match values.get(value) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
            values.insert(leaked);
            leaked
        }
    }
}

/// Counts one issue outcome (`issued`, `sold_out`, ..., or an error code).
pub fn issue_outcome(campaign: &CampaignId, outcome: &'static str) {
    counter!("coupon_issue_outcomes_total", "campaign" => campaign.to_string(), "outcome" => outcome).increment(1);
}

/// Records batch sizes and lag (admission to store) of a recorder.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecorderMetrics;

impl RecordObserver for RecorderMetrics {
    fn stored(&self, events: &[IssueEvent]) {
        histogram!("coupon_recorder_batch_size").record(events.len() as f64);
        counter!("coupon_recorder_stored_total").increment(events.len() as u64);
        let now = Utc::now();
        if let Some(oldest) = events.iter().map(|e| e.issued_at).min() {
            histogram!("coupon_recorder_lag_seconds").record(lag(oldest, now));
        }
    }

    fn fenced(&self, _event: &IssueEvent, fence: Fence) {
        // Each one is a coupon that got past the gate but was not stored: alert on any.
        counter!("coupon_recorder_fenced_total", "fence" => fence.as_str()).increment(1);
    }
}

fn lag(issued_at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - issued_at).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Runs several observers.
pub struct Observers(pub Vec<Arc<dyn RecordObserver>>);

#[deny(clippy::missing_trait_methods)]
impl RecordObserver for Observers {
    fn stored(&self, events: &[IssueEvent]) {
        for o in &self.0 {
            o.stored(events);
        }
    }

    fn fenced(&self, event: &IssueEvent, fence: Fence) {
        for o in &self.0 {
            o.fenced(event, fence);
        }
    }
}

fn timed(name: &'static str, backend: &'static str, started: Instant, ok: bool) {
    histogram!(name, "backend" => backend, "result" => if ok { "ok" } else { "error" })
        .record(started.elapsed().as_secs_f64());
}

/// An [`IssueGate`] that times admissions (`coupon_gate_admit_seconds`).
pub struct MeteredGate(pub Arc<dyn IssueGate>);

// Every method forwarded: a default method left out would silently bypass the inner gate.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl IssueGate for MeteredGate {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn open(&self, campaign: &GateCampaign) -> Result<(), BackendError> {
        self.0.open(campaign).await
    }
    async fn admit(
        &self,
        campaign_id: &CampaignId,
        user_id: &UserId,
        coupon_id: &CouponId,
        now: DateTime<Utc>,
    ) -> Result<Admission, BackendError> {
        let started = Instant::now();
        let result = self.0.admit(campaign_id, user_id, coupon_id, now).await;
        timed("coupon_gate_admit_seconds", self.0.backend(), started, result.is_ok());
        result
    }
    async fn admit_many(&self, requests: &[AdmitRequest], now: DateTime<Utc>) -> Result<Vec<Admission>, BackendError> {
        let started = Instant::now();
        let result = self.0.admit_many(requests, now).await;
        timed("coupon_gate_admit_seconds", self.0.backend(), started, result.is_ok());
        result
    }
    async fn release(&self, campaign_id: &CampaignId, key: &ReservationKey) -> Result<bool, BackendError> {
        self.0.release(campaign_id, key).await
    }
    async fn settle(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<u64, BackendError> {
        self.0.settle(campaign_id, keys).await
    }
    async fn reservations(
        &self,
        campaign_id: &CampaignId,
        admitted_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reservation>, BackendError> {
        self.0.reservations(campaign_id, admitted_before, limit).await
    }
    async fn counts(&self, campaign_id: &CampaignId) -> Result<Option<GateCounts>, BackendError> {
        self.0.counts(campaign_id).await
    }
    async fn holding(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<Vec<u32>, BackendError> {
        self.0.holding(campaign_id, user_id).await
    }
    async fn clock(&self) -> Result<DateTime<Utc>, BackendError> {
        self.0.clock().await
    }
    async fn restore(
        &self,
        campaign: &GateCampaign,
        holders: &[(UserId, u32)],
        seq_floor: u64,
    ) -> Result<RestoreReport, BackendError> {
        self.0.restore(campaign, holders, seq_floor).await
    }
    async fn fence(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.0.fence(campaign_id).await
    }
    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.0.close(campaign_id).await
    }

    async fn forget(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.0.forget(campaign_id).await
    }
}

/// An [`EventLog`] that times publishes (`coupon_log_publish_seconds`).
pub struct MeteredLog(pub Arc<dyn EventLog>);

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl EventLog for MeteredLog {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn publish(&self, event: &IssueEvent) -> Result<(), BackendError> {
        let started = Instant::now();
        let result = self.0.publish(event).await;
        timed("coupon_log_publish_seconds", self.0.backend(), started, result.is_ok());
        result
    }
    async fn publish_raw(&self, payload: &[u8]) -> Result<(), BackendError> {
        self.0.publish_raw(payload).await
    }
    async fn subscribe(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        self.0.subscribe(group).await
    }
    async fn subscribe_dead_letters(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        self.0.subscribe_dead_letters(group).await
    }
    async fn oldest_uncommitted(&self, group: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
        self.0.oldest_uncommitted(group).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_interned_once_and_client_methods_cannot_grow_them() {
        let first = intern("/v1/campaigns/{id}/issue");
        let again = intern(&String::from("/v1/campaigns/{id}/issue"));
        assert_eq!(first, again);
        assert!(std::ptr::eq(first, again), "one copy per distinct value");
        assert_eq!(method_label(&Method::POST), "POST");
        let invented = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&invented), "other");
    }
}
