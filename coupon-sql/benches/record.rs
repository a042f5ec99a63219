//! Coupons persisted per second through `IssueStore::record`, in batches of 1, 100 and
//! 1,000, on PostgreSQL, MariaDB and SQLite (`COUPON_TEST_POSTGRES_URL`,
//! `COUPON_TEST_MYSQL_URL`; a database whose variable is unset is left out).
//! `bench.sh` runs this beside the raw ceilings (`COPY`, `LOAD DATA`) of the same rows.

use std::sync::Arc;

use chrono::Utc;
use coupon_core::conformance::open_campaign;
use coupon_core::{IssueEvent, IssueStore, UserId};
use coupon_sql::{MySqlStore, PgStore, SqliteStore, StoreConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Coupons written per measured iteration, whatever the batch size.
const PER_ITER: usize = 1_000;

async fn stores() -> Vec<(&'static str, Arc<dyn IssueStore>)> {
    let mut out: Vec<(&'static str, Arc<dyn IssueStore>)> = Vec::new();
    if let Ok(url) = std::env::var("COUPON_TEST_POSTGRES_URL") {
        out.push((
            "postgres",
            Arc::new(PgStore::connect(&StoreConfig::from_url(url)).await.unwrap()),
        ));
    }
    if let Ok(url) = std::env::var("COUPON_TEST_MYSQL_URL") {
        out.push((
            "mariadb",
            Arc::new(MySqlStore::connect(&StoreConfig::from_url(url)).await.unwrap()),
        ));
    }
    let path = std::env::temp_dir().join(format!("coupon-bench-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    out.push((
        "sqlite",
        Arc::new(SqliteStore::connect(&StoreConfig::from_url(url)).await.unwrap()),
    ));
    out
}

fn record(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stores = rt.block_on(stores());
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(PER_ITER as u64));
    group.sample_size(10);
    for (name, store) in &stores {
        let campaign = open_campaign(1_000_000_000, 1);
        rt.block_on(store.create_campaign(&campaign)).unwrap();
        let mut next = 0u64;
        group.throughput(Throughput::Elements(PER_ITER as u64));
        for batch in [1usize, 100, 1_000] {
            group.bench_with_input(BenchmarkId::new(*name, batch), &batch, |b, &batch| {
                b.to_async(&rt).iter_batched(
                    || {
                        let events: Vec<IssueEvent> = (0..PER_ITER)
                            .map(|_| {
                                next += 1;
                                IssueEvent::new(&campaign, UserId::new(format!("u{next}")).unwrap(), 1, Utc::now())
                            })
                            .collect();
                        events
                    },
                    |events| {
                        let store = store.clone();
                        async move {
                            for chunk in events.chunks(batch) {
                                store.record(chunk).await.unwrap();
                            }
                        }
                    },
                    criterion::BatchSize::PerIteration,
                );
            });
        }
        // Several recorders (one per partition) writing at once, as deployed.
        group.throughput(Throughput::Elements((PER_ITER * 4) as u64));
        group.bench_with_input(BenchmarkId::new(*name, "1000x4"), &4usize, |b, &writers| {
            b.to_async(&rt).iter_batched(
                || {
                    let events: Vec<IssueEvent> = (0..PER_ITER * writers)
                        .map(|_| {
                            next += 1;
                            IssueEvent::new(&campaign, UserId::new(format!("u{next}")).unwrap(), 1, Utc::now())
                        })
                        .collect();
                    events
                },
                |events| {
                    let store = store.clone();
                    async move {
                        let tasks: Vec<_> = events
                            .chunks(PER_ITER)
                            .map(|part| {
                                let (store, part) = (store.clone(), part.to_vec());
                                tokio::spawn(async move { store.record(&part).await.unwrap() })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
