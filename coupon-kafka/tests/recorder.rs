//! The coupon-core Recorder over Kafka, unchanged: redelivery after a consumer dies
//! before committing, and poison messages routed to the dead-letter topic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use coupon_core::conformance::log::read;
use coupon_core::log::dead_letter_headers;
use coupon_core::memory::MemoryStore;
use coupon_core::{
    Campaign, CampaignState, EventLog, IssueEvent, IssueStore, NewCampaign, Recorder, RecorderConfig, UserId,
};
use coupon_kafka::KafkaLog;

async fn campaign_in(store: &MemoryStore) -> Campaign {
    let now = Utc::now();
    let mut c = Campaign::from_new(
        NewCampaign::new(
            "kafka",
            1_000,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ),
        now,
    );
    c.state = CampaignState::Open;
    store.create_campaign(&c).await.unwrap();
    c
}

fn events(c: &Campaign, n: usize) -> Vec<IssueEvent> {
    (0..n)
        .map(|i| IssueEvent::new(c, UserId::new(format!("k{i}")).unwrap(), 1, Utc::now()))
        .collect()
}

fn recorder_config() -> RecorderConfig {
    RecorderConfig::default()
        .with_batch_wait(Duration::from_millis(300))
        .with_max_attempts(2)
}

/// Runs the recorder until it has handled `n` records (bounded by a number of empty polls).
async fn record_at_least(recorder: &mut Recorder, n: usize) -> coupon_core::BatchReport {
    let mut total = coupon_core::BatchReport::default();
    let mut empty = 0;
    while total.received < n && empty < 40 {
        let r = recorder.run_once().await;
        if r.received == 0 {
            empty += 1;
        }
        total += r;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dropped_before_commit_gets_its_batch_delivered_again_and_the_store_dedupes() {
    let Some(config) = common::fresh_config().await else {
        return;
    };
    let log = Arc::new(KafkaLog::new(config).unwrap());
    let store = Arc::new(MemoryStore::new());
    let c = campaign_in(&store).await;
    let sent = events(&c, 30);
    for e in &sent {
        log.publish(e).await.unwrap();
    }
    // A consumer reads everything and stores it, then "dies" before committing.
    let mut first = log.subscribe("recorders").await.unwrap();
    let got = read(&mut *first, sent.len(), false).await;
    assert_eq!(got.len(), sent.len());
    let decoded: Vec<IssueEvent> = got.iter().map(|r| r.decode().unwrap()).collect();
    store.record(&decoded).await.unwrap();
    drop(first);
    // Its replacement gets the same records again; the store stores nothing twice.
    let mut recorder = Recorder::new(
        log.subscribe("recorders").await.unwrap(),
        store.clone(),
        recorder_config(),
    );
    let report = record_at_least(&mut recorder, sent.len()).await;
    assert_eq!(
        (report.received, report.duplicates, report.stored),
        (sent.len(), sent.len(), 0)
    );
    assert_eq!(store.issued_count(&c.id).await.unwrap(), sent.len() as u64);
    // Committed now: a third member sees nothing.
    drop(recorder);
    let mut third = log.subscribe("recorders").await.unwrap();
    let again = third.next_batch(100, Duration::from_secs(3)).await.unwrap();
    assert!(
        again.records.is_empty(),
        "committed records came back: {}",
        again.records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_lands_in_the_dead_letter_topic_with_headers_while_the_rest_flow_on() {
    let Some(config) = common::fresh_config().await else {
        return;
    };
    let log = Arc::new(KafkaLog::new(config).unwrap());
    let store = Arc::new(MemoryStore::new());
    let c = campaign_in(&store).await;
    let mut sent = events(&c, 10);
    // Rejected by the store (nth above the limit of 1): dead-lettered after max_attempts.
    sent[3].nth = 5;
    for (i, e) in sent.iter().enumerate() {
        log.publish(e).await.unwrap();
        if i == 5 {
            log.publish_raw(b"{\"not\": \"an event\"}").await.unwrap();
        }
    }
    let mut recorder = Recorder::new(
        log.subscribe("recorders").await.unwrap(),
        store.clone(),
        recorder_config(),
    );
    let report = record_at_least(&mut recorder, sent.len() + 1).await;
    assert_eq!((report.stored, report.dead_lettered), (9, 2));
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 9);

    let mut dead = log.subscribe_dead_letters("inspect").await.unwrap();
    let letters = read(&mut *dead, 2, true).await;
    assert_eq!(letters.len(), 2);
    let undecodable = letters
        .iter()
        .find(|l| l.payload == b"{\"not\": \"an event\"}")
        .expect("raw poison");
    assert!(
        undecodable
            .header(dead_letter_headers::ERROR)
            .unwrap()
            .contains("malformed")
    );
    assert_eq!(undecodable.header(dead_letter_headers::ATTEMPTS), Some("1"));
    assert_eq!(undecodable.header(dead_letter_headers::GROUP), Some("recorders"));
    let rejected = letters
        .iter()
        .find(|l| l.payload == sent[3].encode())
        .expect("rejected event");
    assert!(
        rejected
            .header(dead_letter_headers::ERROR)
            .unwrap()
            .contains("rejected by the store")
    );
    assert_eq!(rejected.header(dead_letter_headers::ATTEMPTS), Some("2"));
    assert!(rejected.header(dead_letter_headers::SOURCE_OFFSET).is_some());
    assert!(rejected.header(dead_letter_headers::SOURCE_PARTITION).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_recorder_joining_the_group_rebalances_without_losing_anything() {
    let Some(config) = common::fresh_config().await else {
        return;
    };
    let log = Arc::new(KafkaLog::new(config).unwrap());
    let store = Arc::new(MemoryStore::new());
    let c = campaign_in(&store).await;
    let sent = events(&c, 120);
    for e in &sent[..60] {
        log.publish(e).await.unwrap();
    }
    // The first member starts alone and owns every partition.
    let mut a = Recorder::new(log.subscribe("shared").await.unwrap(), store.clone(), recorder_config());
    let first = a.run_once().await;
    // A second member joins: the group rebalances while the first is mid-stream.
    let mut b = Recorder::new(log.subscribe("shared").await.unwrap(), store.clone(), recorder_config());
    // The rest arrives a few at a time while both members poll, so events keep flowing
    // through the rebalance and after it.
    let mut rounds = 0;
    let (mut got_a, mut got_b) = (first.received, 0);
    let mut next = 60;
    while store.issued_count(&c.id).await.unwrap() < sent.len() as u64 && rounds < 80 {
        for e in sent.iter().skip(next).take(4) {
            log.publish(e).await.unwrap();
        }
        next = (next + 4).min(sent.len());
        let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
        got_a += ra.received;
        got_b += rb.received;
        rounds += 1;
    }
    assert_eq!(
        store.issued_count(&c.id).await.unwrap(),
        sent.len() as u64,
        "nothing lost across the rebalance"
    );
    assert!(got_a + got_b >= sent.len(), "redelivery is allowed, loss is not");
    // Whatever each member committed, together they covered everything: a new member
    // of the group finds nothing left, or only records the store already has.
    drop((a, b));
    let mut late = Recorder::new(log.subscribe("shared").await.unwrap(), store.clone(), recorder_config());
    let rest = late.run_once().await;
    assert_eq!(rest.stored, 0, "everything was already stored");
    println!(
        "rebalance: first member read {got_a}, second member read {got_b}, late member re-read {}",
        rest.received
    );
}
