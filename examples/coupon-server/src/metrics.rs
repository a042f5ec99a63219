//! Prometheus export and the HTTP request metrics. The gate, log, outcome and recorder
//! metrics are the library's ([`coupon_core::layers::metrics`]).

use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
pub use coupon_core::layers::metrics::{RecorderMetrics, issue_outcome};
use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 50 µs to 10 s, dense below 50 ms where the hot path and
/// the broker's acknowledgements live.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
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
