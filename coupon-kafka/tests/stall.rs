//! A consumer with nothing uncommitted of its own while partitions held elsewhere wait
//! and do not advance says so and joins its group again after a bound. Two stalls were
//! seen on the local broker: partitions left unassigned for over a minute after the
//! members' sessions expired, and a partition kept for good by a member killed and
//! replaced within its session. The first test has one member hold the only partition
//! and never commit; the other, holding nothing, must notice and rejoin. The third
//! kills a member process holding partitions with events, and the survivor must take
//! them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coupon_core::{EventLog, EventSource};
use coupon_kafka::{KafkaConfig, KafkaLog, TopicSettings, ensure_topics};
use coupon_testkit::{Service, service, unique_name};

/// Well above the local broker's rebalance time (a few seconds): a bound below it
/// makes members rejoin while the group is still forming, again and again.
const REJOIN_AFTER: Duration = Duration::from_secs(10);

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

const HELPER_TOPIC: &str = "COUPON_STALL_HELPER_TOPIC";
const HELPER_GROUP: &str = "COUPON_STALL_HELPER_GROUP";

/// Consumer sessions of the Kafka minimum, so a dead member should be expired in 6 s.
fn short_sessions(config: KafkaConfig) -> KafkaConfig {
    config
        .with("session.timeout.ms", "6000")
        .with("heartbeat.interval.ms", "1000")
}

/// A member killed with `kill -9` while holding two of four partitions with events. On
/// the local broker the survivor's heartbeat can drop the dead member without a new
/// assignment, and the dead member's partitions then wait for good (1 run in 3 before
/// the watch judged a member with partitions of its own). The survivor, drained, must
/// rejoin and take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_takes_the_partitions_a_killed_member_kept() {
    let Some(brokers) = service(Service::Kafka).await else {
        return;
    };
    let topic = unique_name("killed");
    let config = short_sessions(KafkaConfig::new(brokers, topic.clone()))
        .with_stall_rejoin(Duration::from_millis(500), REJOIN_AFTER);
    ensure_topics(&config, &TopicSettings::single_broker(4)).await.unwrap();
    let log = KafkaLog::new(config).unwrap();
    // Unkeyed events land on random partitions: each gets some.
    for i in 0..40 {
        log.publish_raw(format!("event {i}").as_bytes()).await.unwrap();
    }
    let group = unique_name("survivor");
    let mut survivor = log.member(&group).unwrap();
    // The member to kill: this test binary again, running the ignored helper below,
    // which joins the group, prints what it holds, and never commits.
    let mut doomed = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_a_member_that_holds_what_it_gets_and_never_commits",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_TOPIC, &topic)
        .env(HELPER_GROUP, &group)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let stdout = doomed.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = held_tx.send(line);
        }
    });
    // Until the partitions are shared, two each.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut doomed_holds_two = false;
    while !(doomed_holds_two && survivor.assigned_partitions() == 2) {
        assert!(
            Instant::now() < deadline,
            "the group never shared its partitions: the survivor holds {}",
            survivor.assigned_partitions()
        );
        doomed_holds_two |= held_rx.try_iter().any(|line| line == "HELD 2");
        let batch = survivor.next_batch(100, Duration::from_millis(100)).await.unwrap();
        survivor.commit(&batch.commit).await.unwrap();
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let deadline = Instant::now() + REJOIN_AFTER * 6;
    loop {
        let batch = survivor.next_batch(100, Duration::from_millis(100)).await.unwrap();
        survivor.commit(&batch.commit).await.unwrap();
        let progress = log.group_progress(&group).await.unwrap();
        if progress.uncommitted == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed member's partitions were never taken: {progress:?}; the survivor holds {} \
             and rejoined {} times",
            survivor.assigned_partitions(),
            survivor.rejoins()
        );
    }
    println!("drained; the survivor rejoined {} times", survivor.rejoins());
}

/// Run only by the test above, as the process it kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the process the_survivor_takes_the_partitions_a_killed_member_kept kills"]
async fn helper_a_member_that_holds_what_it_gets_and_never_commits() {
    let (Ok(topic), Ok(group)) = (std::env::var(HELPER_TOPIC), std::env::var(HELPER_GROUP)) else {
        panic!(
            "run by the_survivor_takes_the_partitions_a_killed_member_kept, which sets {HELPER_TOPIC} and {HELPER_GROUP}"
        );
    };
    let brokers = service(Service::Kafka).await.expect("the test broker");
    let config = short_sessions(KafkaConfig::new(brokers, topic))
        .with_stall_rejoin(Duration::from_millis(200), Duration::from_secs(3_600));
    let log = KafkaLog::new(config).unwrap();
    let mut member = log.member(&group).unwrap();
    loop {
        member.next_batch(100, Duration::from_millis(100)).await.unwrap();
        println!("HELD {}", member.assigned_partitions());
    }
}
