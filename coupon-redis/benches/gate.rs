//! Admissions per second through `RedisGate`, unbatched and micro-batched, on a local
//! Redis (`COUPON_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/`).
//!
//! Each iteration is 1,000 admissions of distinct users from 50 concurrent tasks (the
//! same concurrency as `redis-benchmark -c 50`). `bench.sh` runs this beside
//! `redis-benchmark` driving the same script, and prints the ratios.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use coupon_core::conformance::open_campaign;
use coupon_core::{BatchConfig, BatchingGate, IssueGate, UserId};
use coupon_redis::{RedisGate, RedisGateConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PER_ITER: u64 = 1_000;
const CLIENTS: u64 = 50;

async fn burst(gate: Arc<dyn IssueGate>, campaign: coupon_core::CampaignId, next_user: Arc<AtomicU64>) {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let gate = gate.clone();
            let next_user = next_user.clone();
            tokio::spawn(async move {
                for _ in 0..PER_ITER / CLIENTS {
                    let u = UserId::new(format!("u{}", next_user.fetch_add(1, Ordering::Relaxed))).unwrap();
                    gate.admit(&campaign, &u, &coupon_core::CouponId::new(), Utc::now())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn admissions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("COUPON_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let gate = rt
        .block_on(RedisGate::connect(
            RedisGateConfig::from_url(&url).unwrap().with_key_prefix("bench"),
        ))
        .expect("a Redis to benchmark against");
    let mut group = c.benchmark_group("redis_gate");
    group.throughput(Throughput::Elements(PER_ITER));
    group.sample_size(20);

    let plain: Arc<dyn IssueGate> = Arc::new(gate.clone());
    let batched: Arc<dyn IssueGate> = rt.block_on(async {
        Arc::new(BatchingGate::new(Arc::new(gate.clone()), BatchConfig::default())) as Arc<dyn IssueGate>
    });
    for (name, g) in [("admit_unbatched", plain), ("admit_batched", batched)] {
        let c = open_campaign(1_000_000_000, 1);
        rt.block_on(g.open(&c.gate_spec())).unwrap();
        let next_user = Arc::new(AtomicU64::new(0));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| burst(g.clone(), c.id, next_user.clone()));
        });
        rt.block_on(g.close(&c.id)).unwrap();
    }

    // The connection choice: the same admit.lua by EVALSHA over one shared multiplexed
    // connection (what RedisGate uses) versus a deadpool-redis pool of 50 connections.
    let script = redis::Script::new(include_str!("../lua/admit.lua"));
    let c = open_campaign(1_000_000_000, 1);
    rt.block_on(gate.open(&c.gate_spec())).unwrap();
    let keys = gate.keys(&c.id);
    let pool = deadpool_redis::Config::from_url(url.as_str())
        .builder()
        .unwrap()
        .max_size(CLIENTS as usize)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .unwrap();
    let next_user = Arc::new(AtomicU64::new(0));
    for name in ["script_multiplexed", "script_deadpool_pool"] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let (script, keys, pool, gate, next_user) = (
                    script.clone(),
                    keys.clone(),
                    pool.clone(),
                    gate.clone(),
                    next_user.clone(),
                );
                async move {
                    let tasks: Vec<_> = (0..CLIENTS)
                        .map(|_| {
                            let (script, keys, pool, gate, next_user) = (
                                script.clone(),
                                keys.clone(),
                                pool.clone(),
                                gate.clone(),
                                next_user.clone(),
                            );
                            tokio::spawn(async move {
                                for _ in 0..PER_ITER / CLIENTS {
                                    let user = format!("d{}", next_user.fetch_add(1, Ordering::Relaxed));
                                    let mut call = script.prepare_invoke();
                                    call.key(&keys.meta).key(&keys.holds).key(&keys.ledger);
                                    call.arg(Utc::now().timestamp_millis())
                                        .arg(coupon_core::CouponId::new().to_string())
                                        .arg(user);
                                    let _: Vec<i64> = if name == "script_multiplexed" {
                                        call.invoke_async(&mut gate.connection()).await.unwrap()
                                    } else {
                                        call.invoke_async(&mut pool.get().await.unwrap()).await.unwrap()
                                    };
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
    }
    rt.block_on(gate.close(&c.id)).unwrap();
    group.finish();
}

criterion_group!(benches, admissions);
criterion_main!(benches);
