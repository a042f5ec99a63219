//! The reservation protocol's scenarios (one per finding of the v1 review,
//! `docs/PROTOCOL.md`) on the real services: the Redis gate (standalone, Cluster, and
//! batched) over the PostgreSQL, MariaDB and SQLite stores.

use std::sync::Arc;
use std::time::Duration;

use coupon_core::{BatchConfig, BatchingGate, IssueGate, IssueStore};
use coupon_redis::{RedisGate, RedisGateConfig};
use coupon_sql::{MySqlStore, PgStore, SqliteStore, StoreConfig};
use coupon_testkit::{Service, service, unique_name};

type Backends = (Arc<dyn IssueGate>, Arc<dyn IssueStore>);

async fn redis(cluster: bool) -> Option<Arc<dyn IssueGate>> {
    let config = if cluster {
        let urls = service(Service::RedisCluster).await?;
        RedisGateConfig::cluster(urls.split(',').map(|s| s.trim().to_owned()).collect())
    } else {
        RedisGateConfig::from_url(&service(Service::Redis).await?).unwrap()
    };
    let config = config
        .with_key_prefix(unique_name("protocol"))
        .with_response_timeout(Duration::from_secs(3));
    Some(Arc::new(RedisGate::connect(config).await.unwrap()))
}

async fn postgres() -> Option<Arc<dyn IssueStore>> {
    let url = service(Service::Postgres).await?;
    Some(Arc::new(PgStore::connect(&StoreConfig::from_url(url)).await.unwrap()))
}

async fn mariadb() -> Option<Arc<dyn IssueStore>> {
    let url = service(Service::Mysql).await?;
    Some(Arc::new(
        MySqlStore::connect(&StoreConfig::from_url(url)).await.unwrap(),
    ))
}

async fn sqlite() -> Option<Arc<dyn IssueStore>> {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("protocol")));
    let url = format!("sqlite://{}", path.display());
    Some(Arc::new(
        SqliteStore::connect(&StoreConfig::from_url(url)).await.unwrap(),
    ))
}

async fn pair(gate: Option<Arc<dyn IssueGate>>, store: Option<Arc<dyn IssueStore>>) -> Option<Backends> {
    Some((gate?, store?))
}

mod redis_postgres {
    use super::*;
    coupon_core::protocol_conformance!(pair(redis(false).await, postgres().await).await);
}

mod redis_cluster_mariadb {
    use super::*;
    coupon_core::protocol_conformance!(pair(redis(true).await, mariadb().await).await);
}

mod batched_redis_cluster_postgres {
    use super::*;
    coupon_core::protocol_conformance!(
        pair(
            redis(true).await.map(|g| {
                Arc::new(BatchingGate::new(g, BatchConfig::default().with_max_batch(16))) as Arc<dyn IssueGate>
            }),
            postgres().await
        )
        .await
    );
}

mod redis_sqlite {
    use super::*;
    coupon_core::protocol_conformance!(pair(redis(false).await, sqlite().await).await);
}

/// Issue 11: the flash sale under protocol v2's faults (publish failures, crashes, a
/// two-minute pause, two concurrent reconcilers and syncs) on the batched Redis Cluster
/// gate and PostgreSQL, with per-user limits 1 and 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_under_faults_on_redis_cluster_and_postgres() {
    for limit in [1, 3] {
        let Some((gate, store)) = pair(redis(true).await, postgres().await).await else {
            return;
        };
        let gate: Arc<dyn IssueGate> = Arc::new(BatchingGate::new(gate, BatchConfig::default()));
        let figures =
            coupon_core::conformance::protocol::flash_sale_under_faults(gate, store, 1_000, limit, 1_500).await;
        println!("batched Redis Cluster and PostgreSQL, limit {limit}: {figures:?}");
        assert!(figures.publish_failures > 0 && figures.syncs > 0, "{figures:?}");
    }
}
