//! A consumer that holds no partition while its group has uncommitted events and
//! commits nothing (partitions left unassigned after the members' sessions expired,
//! seen on the local broker for over a minute) says so and joins its group again after
//! a bound. Here one member holds the only partition and never commits; the other,
//! holding nothing, must notice and rejoin.

mod common;

use std::time::{Duration, Instant};

use coupon_core::{EventLog, EventSource};
use coupon_kafka::{KafkaConfig, KafkaLog, TopicSettings, ensure_topics};
use coupon_testkit::{Service, service, unique_name};

/// Well above the local broker's rebalance time (a few seconds): a bound below it
/// makes members rejoin while the group is still forming, again and again.
const REJOIN_AFTER: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_of_a_group_that_commits_nothing_rejoins_after_the_bound() {
    let Some(brokers) = service(Service::Kafka).await else {
        return;
    };
    let config =
        KafkaConfig::new(brokers, unique_name("stall")).with_stall_rejoin(Duration::from_millis(200), REJOIN_AFTER);
    ensure_topics(&config, &TopicSettings::single_broker(1)).await.unwrap();
    let log = KafkaLog::new(config).unwrap();
    for i in 0..5 {
        log.publish_raw(format!("event {i}").as_bytes()).await.unwrap();
    }
    let group = unique_name("stalled");
    let mut a = log.member(&group).unwrap();
    let mut b = log.member(&group).unwrap();
    // Both members are polled (a rebalance needs every member); nobody commits.
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.rejoins() + b.rejoins() == 0 {
        assert!(
            Instant::now() < deadline,
            "no member rejoined: assigned a={} b={}",
            a.assigned_partitions(),
            b.assigned_partitions()
        );
        a.next_batch(10, Duration::from_millis(100)).await.unwrap();
        b.next_batch(10, Duration::from_millis(100)).await.unwrap();
    }
    let idle = if a.rejoins() > 0 { &a } else { &b };
    let busy = if a.rejoins() > 0 { &b } else { &a };
    assert_eq!(busy.rejoins(), 0, "the member holding the partition stays");
    println!(
        "rejoined: a={} b={}; assigned at the last check: idle={} busy={}",
        a.rejoins(),
        b.rejoins(),
        idle.assigned_partitions(),
        busy.assigned_partitions()
    );
}

/// More members than partitions is normal: the idle one must not rejoin (each rejoin
/// makes the whole group rebalance) while the group commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_of_a_group_that_commits_stays() {
    let Some(brokers) = service(Service::Kafka).await else {
        return;
    };
    let config =
        KafkaConfig::new(brokers, unique_name("busy")).with_stall_rejoin(Duration::from_millis(200), REJOIN_AFTER);
    ensure_topics(&config, &TopicSettings::single_broker(1)).await.unwrap();
    let log = KafkaLog::new(config).unwrap();
    let group = unique_name("healthy");
    let mut a = log.member(&group).unwrap();
    let mut b = log.member(&group).unwrap();
    let (mut stored, mut rounds) = (0, 0);
    // Twice the bound, with events arriving and the holder committing them.
    let started = Instant::now();
    while started.elapsed() < REJOIN_AFTER * 2 || stored < 20 {
        rounds += 1;
        assert!(rounds < 1_000, "the group never consumed: stored {stored}");
        log.publish_raw(format!("event {rounds}").as_bytes()).await.unwrap();
        for member in [&mut a, &mut b] {
            let batch = member.next_batch(10, Duration::from_millis(100)).await.unwrap();
            stored += batch.records.len();
            member.commit(&batch.commit).await.unwrap();
        }
    }
    assert_eq!((a.rejoins(), b.rejoins()), (0, 0), "stored {stored} in {rounds} rounds");
}
