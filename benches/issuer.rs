//! Issues per second through `Issuer` (the whole hot path minus HTTP): memory
//! backends, the Redis gate alone (`AfterGate`, publishing in the background to the
//! memory log), and Redis + Kafka with `AfterLog`. Real backends are measured when
//! `COUPON_TEST_REDIS_URL` / `COUPON_TEST_KAFKA_BROKERS` are set.

use std::sync::Arc;

use coupon_benches::{Bench, PER_BURST, bench, memory};
use coupon_core::memory::MemoryLog;
use coupon_core::{AckMode, BatchConfig, BatchingGate, EventLog, IssueGate};
use coupon_kafka::{KafkaConfig, KafkaLog, ensure_topics};
use coupon_redis::{RedisGate, RedisGateConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, b: Bench) {
    let b = Arc::new(b);
    let mut group = c.benchmark_group("issuer");
    group.throughput(Throughput::Elements(PER_BURST));
    group.sample_size(20);
    group.bench_function(name, |bencher| bencher.to_async(rt).iter(|| b.burst()));
    group.finish();
    rt.block_on(b.issuer.flush());
}

fn issuer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    run(c, &rt, "memory/after-log", rt.block_on(memory(AckMode::AfterLog)));
    run(c, &rt, "memory/after-gate", rt.block_on(memory(AckMode::AfterGate)));

    let Ok(redis_url) = std::env::var("COUPON_TEST_REDIS_URL") else {
        eprintln!("COUPON_TEST_REDIS_URL unset: skipping the Redis and Kafka benchmarks");
        return;
    };
    let redis: Arc<dyn IssueGate> = Arc::new(
        rt.block_on(RedisGate::connect(
            RedisGateConfig::from_url(&redis_url)
                .unwrap()
                .with_key_prefix("bench-issuer"),
        ))
        .expect("Redis reachable"),
    );
    let batched: Arc<dyn IssueGate> = {
        let _runtime = rt.enter(); // BatchingGate starts its task on the current runtime
        Arc::new(BatchingGate::new(redis.clone(), BatchConfig::default()))
    };
    let memory_log: Arc<dyn EventLog> = Arc::new(MemoryLog::new());
    run(
        c,
        &rt,
        "redis/after-gate",
        rt.block_on(bench(redis.clone(), Some(memory_log.clone()), AckMode::AfterGate)),
    );
    run(
        c,
        &rt,
        "redis-batched/after-gate",
        rt.block_on(bench(batched.clone(), Some(memory_log), AckMode::AfterGate)),
    );

    let Ok(brokers) = std::env::var("COUPON_TEST_KAFKA_BROKERS") else {
        eprintln!("COUPON_TEST_KAFKA_BROKERS unset: skipping the Kafka benchmark");
        return;
    };
    let topic = format!("bench-issuer-{}", std::process::id());
    let config = KafkaConfig::new(brokers, topic);
    rt.block_on(ensure_topics(&config, &coupon_kafka::TopicSettings::single_broker(6)))
        .expect("Kafka reachable");
    let kafka: Arc<dyn EventLog> = Arc::new(KafkaLog::new(config).unwrap());
    run(
        c,
        &rt,
        "redis-batched+kafka/after-log",
        rt.block_on(bench(batched, Some(kafka), AckMode::AfterLog)),
    );
}

criterion_group!(benches, issuer);
criterion_main!(benches);
