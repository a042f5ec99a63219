//! Records the broker deletes before the consumer group commits them (retention, or a
//! broker that lost data) may be acknowledged coupons. Before, the reconciler's horizon
//! started at the topic's low watermark, so it saw them as consumed and released their
//! admissions: acknowledged coupons lost. (Found through the local broker's in-memory
//! engine, whose low watermark is computed from write times; RELIABILITY.md.)
//!
//! Here the deletion is real: a broker of the test's own on SQLite storage, whose
//! retention pass runs every second, and a topic that keeps records for two seconds.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coupon_core::memory::{MemoryGate, MemoryStore};
use coupon_core::{AckMode, Coupons, EventLog, EventSource, IssueEvent, IssueOutcome, NewCampaign, UserId};
use coupon_kafka::{KafkaConfig, KafkaLog};
use coupon_testkit::unique_name;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Creates `topic` (one partition) whose records are deleted two seconds after their
/// timestamp.
async fn short_lived_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "2000");
    for result in admin.create_topics([&new], &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
}

/// Reads batches until one holds a record, within a bound (joining the group takes a moment).
async fn first_records(source: &mut dyn EventSource) -> coupon_core::Batch {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let batch = source.next_batch(10, Duration::from_millis(500)).await.unwrap();
        if !batch.records.is_empty() {
            return batch;
        }
        assert!(Instant::now() < deadline, "no record within 60 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_coupon_whose_record_the_broker_deleted_unread_is_held_not_released() {
    let Some(broker) = common::OwnBroker::start("sqlite://tansu.db?maintenance_interval=1s").await else {
        return;
    };
    let topic = unique_name("short-lived");
    short_lived_topic(&broker.brokers(), &topic).await;
    let kafka = Arc::new(KafkaLog::new(KafkaConfig::new(broker.brokers(), &topic)).unwrap());
    let group = unique_name("recorders");
    let coupons = Coupons::builder(Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()))
        .log(kafka.clone(), &group)
        .ack(AckMode::AfterLog)
        .grace(Duration::from_secs(12))
        .build()
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let campaign = coupons
        .campaigns()
        .create(NewCampaign::new("lost", 10, now, now + chrono::Duration::hours(1)))
        .await
        .unwrap();
    coupons.campaigns().open(&campaign.id).await.unwrap();
    let issue = async |name: &str| {
        let user = UserId::new(name).unwrap();
        let outcome = coupons.issuer().issue(&campaign.id, &user).await.unwrap();
        assert!(matches!(outcome, IssueOutcome::Issued(_)), "{name}: {outcome:?}");
    };

    // alice's record (offset 0) is read and committed by the group.
    issue("alice").await;
    let mut member = kafka.member(&group).unwrap();
    let batch = first_records(&mut member).await;
    assert_eq!(batch.records.len(), 1);
    member.commit(&batch.commit).await.unwrap();
    // Gone before bob's record exists, so no member has it fetched ahead.
    drop(member);
    // bob is acknowledged (offset 1); then a record that outlives the retention (offset
    // 2, stamped an hour ahead), so the low watermark has somewhere to move to.
    issue("bob").await;
    let survivor = IssueEvent::new(&campaign, UserId::new("carol").unwrap(), 1, now)
        .with_admitted_at(now + chrono::Duration::hours(1));
    kafka.publish(&survivor).await.unwrap();

    // The broker's retention deletes bob's record before the group read it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let progress = kafka.group_progress(&group).await.unwrap();
        if progress.lost > 0 {
            break progress;
        }
        assert!(
            Instant::now() < deadline,
            "the broker deleted nothing within 60 s: {progress:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(progress.lost, 1, "{progress:?}");

    // The reconciler holds every admission: bob's stock is not given back.
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let report = coupons.reconciler().reconcile(&campaign.id, later).await.unwrap();
    assert_eq!(report.released, 0, "{report:?}");
    assert!(report.kept >= 1, "{report:?}");
    assert_eq!(
        coupons.gate().counts(&campaign.id).await.unwrap().unwrap().remaining,
        8,
        "bob's unit stays taken"
    );
    assert_eq!(
        kafka.oldest_uncommitted(&group).await.unwrap(),
        Some(chrono::DateTime::UNIX_EPOCH),
        "the horizon: the earliest time there is"
    );

    // A member of the group stops on the partition: the survivor past the gap is
    // neither handed out nor committed, so the gap stays visible to the reconciler and
    // to operators.
    let mut member = kafka.member(&group).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while member.halted_partitions().is_empty() {
        let batch = member.next_batch(10, Duration::from_millis(500)).await.unwrap();
        let offsets: Vec<(i32, i64)> = batch.records.iter().map(|r| (r.partition, r.offset)).collect();
        assert!(offsets.is_empty(), "handed out past the gap: {offsets:?}");
        assert!(
            Instant::now() < deadline,
            "the member did not stop on the gap within 60 s"
        );
    }
    assert_eq!(member.halted_partitions(), vec![(0, 1..2)]);
    let batch = member.next_batch(10, Duration::from_secs(1)).await.unwrap();
    assert!(batch.records.is_empty(), "handed out past the gap");
    assert_eq!(kafka.group_progress(&group).await.unwrap().lost, 1);
}
