//! Events published per second with `acks=all` and confirmed delivery (50 concurrent
//! publishers), and consumed-and-committed per second (batches of 500), on the broker
//! at `COUPON_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use coupon_core::{Campaign, EventLog, IssueEvent, NewCampaign, UserId};
use coupon_kafka::{KafkaConfig, KafkaLog, ensure_topics};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PER_ITER: usize = 2_000;
const PUBLISHERS: usize = 50;

fn events(n: usize) -> Vec<IssueEvent> {
    let now = Utc::now();
    let c = Campaign::from_new(
        NewCampaign::new("bench", 1_000_000, now, now + chrono::Duration::hours(1)),
        now,
    );
    (0..n)
        .map(|i| IssueEvent::new(&c, UserId::new(format!("b{i}")).unwrap(), 1, now))
        .collect()
}

fn log(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let brokers = std::env::var("COUPON_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let config = KafkaConfig::new(brokers, format!("bench-{}", std::process::id()));
    rt.block_on(ensure_topics(&config, &coupon_kafka::TopicSettings::single_broker(6)))
        .unwrap();
    let log = Arc::new(KafkaLog::new(config).unwrap());
    let batch = events(PER_ITER);

    let mut group = c.benchmark_group("kafka_log");
    group.throughput(Throughput::Elements(PER_ITER as u64));
    group.sample_size(10);
    group.bench_function("publish_acks_all", |b| {
        b.to_async(&rt).iter(|| {
            let (log, batch) = (log.clone(), batch.clone());
            async move {
                let chunk = PER_ITER / PUBLISHERS;
                let tasks: Vec<_> = batch
                    .chunks(chunk)
                    .map(|events| {
                        let (log, events) = (log.clone(), events.to_vec());
                        tokio::spawn(async move {
                            for e in &events {
                                log.publish(e).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        });
    });
    // A fresh group per measurement reads from the start; timing begins once the group
    // has joined and the first batch arrived (joining is not the steady state).
    let round = std::sync::atomic::AtomicU64::new(0);
    group.bench_function("consume_and_commit", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let log = log.clone();
            let group_id = format!(
                "bench-consumers-{}",
                round.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            async move {
                let wanted = iters as usize * PER_ITER;
                let mut source = log.subscribe(&group_id).await.unwrap();
                let first = loop {
                    let batch = source.next_batch(500, Duration::from_millis(500)).await.unwrap();
                    if !batch.records.is_empty() {
                        break batch;
                    }
                };
                let started = std::time::Instant::now();
                let mut got = first.records.len();
                source.commit(&first.commit).await.unwrap();
                while got < wanted {
                    let batch = source.next_batch(500, Duration::from_millis(500)).await.unwrap();
                    if batch.records.is_empty() {
                        break;
                    }
                    got += batch.records.len();
                    source.commit(&batch.commit).await.unwrap();
                }
                // Scale to the requested work if the topic held less.
                started.elapsed().mul_f64(wanted as f64 / got.max(1) as f64)
            }
        });
    });
    group.finish();
}

criterion_group!(benches, log);
criterion_main!(benches);
