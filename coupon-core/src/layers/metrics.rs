//! Metrics layers: the gate and log decorators that time every call, and a recorder
//! observer that counts what it stores, through the [`metrics`] facade (export
//! them with any recorder, e.g. `metrics-exporter-prometheus`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `coupon_gate_admit_seconds` | histogram | `backend`, `result` |
//! | `coupon_log_publish_seconds` | histogram | `backend`, `result` |
//! | `coupon_issue_outcomes_total` | counter | `campaign` (or `unknown`), `outcome` |
//! | `coupon_recorder_batch_size` | histogram | |
//! | `coupon_recorder_stored_total` | counter | |
//! | `coupon_recorder_lag_seconds` | histogram | |
//! | `coupon_recorder_fenced_total` | counter | `fence` |
//! | `coupon_reconciler_released_total` | counter | `campaign` |
//! | `coupon_reconciler_settled_total` | counter | `campaign` |
//! | `coupon_campaign_stored` | gauge | `campaign` |
//! | `coupon_campaign_total` | gauge | `campaign` |
//! | `coupon_hook_delivered_total` | counter | `notice` |
//! | `coupon_hook_failures_total` | counter | `notice` |
//!
//! The reconciler exports the four before the hooks' after each pass over an open
//! campaign; the [`crate::hooks::HookRunner`] the last two after each page of notices.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::metrics::{counter, gauge, histogram};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    Admission, CampaignId, CouponId, Fence, GateCampaign, IssueEvent, Reservation, ReservationKey, UserId,
};
use crate::error::BackendError;
use crate::gate::{AdmitRequest, GateCounts, IssueGate, RestoreReport};
use crate::log::{EventLog, EventSource};
use crate::recorder::RecordObserver;

/// Counts one issue outcome (`issued`, `sold_out`, ..., or an error code). `campaign` is
/// the campaign when the answer shows that it exists; `None` (an unknown campaign, or an
/// error before the campaign was known) counts under `campaign="unknown"`. The id in a
/// request's path is the client's choice: as a label it would let any client add series
/// without bound.
pub fn issue_outcome(campaign: Option<&CampaignId>, outcome: &'static str) {
    let campaign = campaign.map_or_else(|| "unknown".to_owned(), CampaignId::to_string);
    counter!("coupon_issue_outcomes_total", "campaign" => campaign, "outcome" => outcome).increment(1);
}

/// Counts what one reconciler pass over `campaign` released (voided admissions whose
/// stock went back) and settled.
pub fn reconciled(campaign: &CampaignId, report: &crate::reconciler::ReconcileReport) {
    let campaign = campaign.to_string();
    counter!("coupon_reconciler_released_total", "campaign" => campaign.clone()).increment(report.released);
    counter!("coupon_reconciler_settled_total", "campaign" => campaign).increment(report.settled);
}

/// The coupons `campaign` has in the store beside its stock: stored above total is
/// the one thing a flash sale must never do.
pub fn campaign_stock(campaign: &CampaignId, stored: u64, total: u64) {
    let campaign = campaign.to_string();
    gauge!("coupon_campaign_stored", "campaign" => campaign.clone()).set(stored as f64);
    gauge!("coupon_campaign_total", "campaign" => campaign).set(total as f64);
}

/// Counts the hook calls of one page of notices: delivered, and failed (to be retried).
pub fn hook_calls(notice: crate::hooks::Notice, delivered: usize, failed: usize) {
    counter!("coupon_hook_delivered_total", "notice" => notice.as_str()).increment(delivered as u64);
    counter!("coupon_hook_failures_total", "notice" => notice.as_str()).increment(failed as u64);
}

/// Records batch sizes and lag (admission to store) of a recorder.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecorderMetrics;

impl RecorderMetrics {
    /// The observer, with its counters exported at zero from the start: an alert on
    /// `increase(coupon_recorder_fenced_total[5m])` needs the series before the first fence.
    pub fn registered() -> Self {
        counter!("coupon_recorder_stored_total").increment(0);
        for fence in crate::domain::Fence::ALL {
            counter!("coupon_recorder_fenced_total", "fence" => fence.as_str()).increment(0);
        }
        Self
    }
}

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
    async fn flush(&self, timeout: Duration) -> Result<(), BackendError> {
        self.0.flush(timeout).await
    }
}
