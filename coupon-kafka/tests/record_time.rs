//! The log records an event under the gate's admission time, not the publishing
//! host's clock: the reconciler's horizon (the oldest uncommitted record's time) and
//! the ledger then share one clock. Before, a gate clock behind the servers' made the
//! reconciler void acknowledged events still in the log (`coupon-chaos run
//! clock-shift`: 669 of 2,074 acknowledged coupons lost).

mod common;

use chrono::{Duration, Utc};
use coupon_core::{Campaign, CampaignState, EventLog, IssueEvent, NewCampaign, UserId};
use coupon_kafka::KafkaLog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_recorded_under_the_gate_admission_time_not_the_host_clock() {
    let Some(config) = common::fresh_config().await else {
        return;
    };
    let log = KafkaLog::new(config).unwrap();
    let now = Utc::now();
    let mut c = Campaign::from_new(
        NewCampaign::new("record-time", 10, now - Duration::minutes(1), now + Duration::hours(1)),
        now,
    );
    c.state = CampaignState::Open;
    // A gate two minutes behind this host (milliseconds: the record's precision).
    let admitted_at = chrono::DateTime::from_timestamp_millis((now - Duration::minutes(2)).timestamp_millis()).unwrap();
    let event = IssueEvent::new(&c, UserId::new("late-clock").unwrap(), 1, now).with_admitted_at(admitted_at);
    log.publish(&event).await.unwrap();
    let horizon = log.oldest_uncommitted("record-time-readers").await.unwrap();
    assert_eq!(
        horizon,
        Some(admitted_at),
        "the horizon is the admission's time on the gate's clock"
    );
}
