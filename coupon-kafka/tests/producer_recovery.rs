//! The producer recovers from a broker stall and from librdkafka's fatal state. Found
//! by pausing the broker for 7 s under load (longer than the delivery timeout): every
//! publish afterwards failed until the server was restarted, and nothing said why.
//! The pause runs against a broker process of the test's own, never the shared one.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coupon_core::{ErrorKind, EventLog};
use coupon_kafka::{KafkaConfig, KafkaLog, TopicSettings, ensure_topics};
use coupon_testkit::{Service, service, unique_name};

/// Publishes until one succeeds, within `bound`; panics with the last error otherwise.
/// Returns how long it took and the failures on the way.
async fn publishes_again_within(log: &KafkaLog, bound: Duration) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let mut failures = Vec::new();
    loop {
        match log.publish_raw(b"after the fault").await {
            Ok(()) => return (started.elapsed(), failures),
            Err(e) => {
                assert!(started.elapsed() < bound, "still failing after {bound:?}: {e}");
                failures.push(e.to_string());
            }
        }
    }
}

#[tokio::test]
async fn a_fatally_failed_producer_is_replaced_and_publishing_resumes() {
    let Some(config) = common::fresh_config().await else {
        return;
    };
    let log = KafkaLog::new(config).unwrap();
    log.publish_raw(b"before").await.unwrap();
    log.inject_fatal_error("test: sequence gap after a broker stall");
    let e = log.publish_raw(b"refused").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    publishes_again_within(&log, Duration::from_secs(30)).await;
    assert_eq!(log.producers_replaced(), 1);
    // Replaced once: later publishes use the new producer.
    for _ in 0..3 {
        log.publish_raw(b"steady").await.unwrap();
    }
    assert_eq!(log.producers_replaced(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_paused_longer_than_the_delivery_timeout_is_published_to_again_once_resumed() {
    if service(Service::Kafka).await.is_none() {
        return;
    }
    // In memory: after the pause librdkafka bumps the producer's epoch, which tansu
    // 0.6.0's SQLite engine does not survive (scripts/services.sh).
    let Some(broker) = common::OwnBroker::start("memory://tansu/").await else {
        return;
    };
    let delivery_timeout = Duration::from_secs(1);
    let config = KafkaConfig::new(format!("127.0.0.1:{}", broker.port), unique_name("stall"))
        .with_delivery_timeout(delivery_timeout);
    ensure_topics(&config, &TopicSettings::single_broker(3)).await.unwrap();
    let log = Arc::new(KafkaLog::new(config).unwrap());
    // A broker just started may take longer than the 1 s delivery timeout to accept the
    // producer's first message (its id, the topic's leaders): wait until it does, bounded.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while let Err(e) = log.publish_raw(b"before").await {
        assert!(
            e.is_retryable() && Instant::now() < ready_by,
            "the fresh broker never took a message: {e}"
        );
    }

    broker.signal("-STOP");
    // Load while the broker is frozen: every publish fails within the delivery timeout
    // (plus the backstop), none hangs.
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.publish_raw(format!("during {i}").as_bytes()).await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::Unavailable | ErrorKind::OutcomeUnknown),
            "{e}"
        );
    }
    let failed_after = started.elapsed();
    broker.signal("-CONT");
    let (recovered_in, failures) = publishes_again_within(&log, Duration::from_secs(60)).await;
    println!(
        "stall: 50 publishes failed after {failed_after:?}; published again {recovered_in:?} after the resume, \
         {} failures on the way (last: {:?}); producers replaced: {}",
        failures.len(),
        failures.last(),
        log.producers_replaced()
    );
    // One publish at a time: a producer the broker fences is replaced at the first
    // refusal, so the next publish goes through a new one. Before, tansu fenced every
    // message for 44 s (32,767 refusals in this loop).
    let fenced = failures.iter().filter(|f| f.contains("ProducerFenced")).count();
    assert!(fenced <= 1, "{fenced} publishes refused as fenced: {failures:?}");
}
