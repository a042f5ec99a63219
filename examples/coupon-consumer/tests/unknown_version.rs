//! F10: an event of a schema version this build does not read stops the consumer with a
//! non-zero exit that says why; nothing past it is committed or dead-lettered.

use std::time::Duration;

use coupon::kafka::{KafkaConfig, KafkaLog, ensure_topics};
use coupon_core::EventLog;
use coupon_testkit::{Service, service, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_an_unknown_version_stops_the_consumer_saying_why() {
    let Some(brokers) = service(Service::Kafka).await else {
        return;
    };
    let topic = unique_name("unknown-version");
    let config = KafkaConfig::new(brokers.clone(), topic.clone());
    ensure_topics(&config, &coupon::kafka::TopicSettings::single_broker(1))
        .await
        .unwrap();
    let log = KafkaLog::new(config).unwrap();
    log.publish_raw(br#"{"version": 99, "from": "a newer producer"}"#)
        .await
        .unwrap();

    let group = unique_name("g");
    let db = std::env::temp_dir().join(format!("{}.db", unique_name("unknown-version")));
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_coupon-consumer"))
        .env_clear()
        .env("COUPON_KAFKA_BROKERS", &brokers)
        .env("COUPON_KAFKA_TOPIC", &topic)
        .env("COUPON_KAFKA_PARTITIONS", "1")
        .env("COUPON_CONSUMER_GROUP", &group)
        .env("COUPON_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env(
            "COUPON_KAFKA_OPTIONS",
            "session.timeout.ms=6000,heartbeat.interval.ms=1000",
        )
        .kill_on_drop(true)
        .output();
    // It stops by itself: bounded, not a sleep.
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the consumer stops by itself")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("schema version 99") && text.contains("upgrade coupon-consumer"),
        "{text}"
    );
    assert!(
        log.oldest_uncommitted(&group).await.unwrap().is_some(),
        "not committed: the record waits for the upgraded consumer"
    );
}
