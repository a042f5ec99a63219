//! Fault paths on librdkafka's own mock cluster: all brokers down, transient errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use coupon_core::conformance::log::read;
use coupon_core::memory::{MemoryGate, MemoryStore};
use coupon_core::{
    CampaignCache, CampaignService, Component, Error, ErrorKind, EventLog, IssueEvent, IssueGate, Issuer, IssuerConfig,
    NewCampaign, Reconciler, UserId,
};
use coupon_kafka::{KafkaConfig, KafkaLog};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const TOPIC: &str = "coupons";

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 3, 1).unwrap();
    cluster.create_topic("coupons.dlq", 3, 1).unwrap();
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_brokers_down_fails_publish_within_its_timeout_and_the_issuer_releases() {
    let cluster = cluster();
    let timeout = Duration::from_millis(1_500);
    let log = Arc::new(
        KafkaLog::new(KafkaConfig::new(cluster.bootstrap_servers(), TOPIC).with_delivery_timeout(timeout)).unwrap(),
    );
    cluster.broker_down(1).unwrap();

    // Through the Issuer: the gate admits, the publish fails, the reservation goes back.
    let (gate, store) = (Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()));
    let cache = CampaignCache::new(store.clone());
    let campaigns = CampaignService::new(
        store.clone(),
        gate.clone(),
        Reconciler::new(gate.clone(), store.clone()),
    )
    .with_cache(cache.clone());
    let issuer = Issuer::new(
        gate.clone(),
        Some(log.clone()),
        store.clone(),
        cache,
        IssuerConfig::default(),
    )
    .unwrap();
    let now = Utc::now();
    let c = campaigns
        .create(NewCampaign::new(
            "down",
            5,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ))
        .await
        .unwrap();
    campaigns.open(&c.id).await.unwrap();
    let started = Instant::now();
    let e = issuer.issue(&c.id, &UserId::new("alice").unwrap()).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < timeout + Duration::from_secs(3), "failed after {took:?}");
    match &e {
        Error::Backend(b) => {
            assert_eq!(b.component, Component::Log, "{e}");
            assert_eq!(
                b.kind,
                ErrorKind::Unavailable,
                "never sent, so certainly not written: {e}"
            );
            assert!(b.message.contains("certainly not written"), "{e}");
        }
        other => panic!("{other}"),
    }
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!(
        (counts.remaining, counts.pending),
        (5, 0),
        "the reservation was released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_produce_errors_are_retried_without_duplicates() {
    let cluster = cluster();
    let log = Arc::new(KafkaLog::new(KafkaConfig::new(cluster.bootstrap_servers(), TOPIC)).unwrap());
    // Every few produce requests fail with retriable errors before succeeding.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ],
    );
    let now = Utc::now();
    let c = coupon_core::Campaign::from_new(
        NewCampaign::new(
            "flaky",
            100,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ),
        now,
    );
    let sent: Vec<IssueEvent> = (0..50)
        .map(|i| IssueEvent::new(&c, UserId::new(format!("f{i}")).unwrap(), 1, Utc::now()))
        .collect();
    let tasks: Vec<_> = sent
        .iter()
        .cloned()
        .map(|e| {
            let log = log.clone();
            tokio::spawn(async move { log.publish(&e).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut source = log.subscribe("check").await.unwrap();
    let mut got = read(&mut *source, sent.len(), true).await;
    // Nothing beyond them either.
    got.extend(source.next_batch(100, Duration::from_secs(2)).await.unwrap().records);
    let ids: Vec<_> = got.iter().map(|r| r.decode().unwrap().event_id).collect();
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), sent.len(), "no duplicates, nothing lost");
    assert_eq!(distinct.len(), sent.len());
}
