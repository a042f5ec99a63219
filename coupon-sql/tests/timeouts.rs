//! F14: the SQL pools bound every statement and every lock wait. A recorder batch stuck
//! behind another session's lock on the campaign row fails fast with a retryable
//! `Unavailable` (it wrote nothing), then succeeds once the lock is gone. On 2f412b2
//! it waited for as long as the other session held the lock. Also: SQLite fsyncs at
//! every commit by default (F17).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use coupon_core::{Campaign, CampaignState, ErrorKind, IssueEvent, IssueStore, NewCampaign, RecordOutcome, UserId};
use coupon_sql::{MySqlStore, PgStore, SqliteStore, StoreConfig};
use coupon_testkit::{Service, service, unique_name};
use sqlx::Connection;

/// Allowed on top of the configured timeout: scheduling on a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

async fn open_campaign(store: &dyn IssueStore) -> Campaign {
    let now = Utc::now();
    let mut c = Campaign::from_new(
        NewCampaign::new(
            "timeouts",
            10,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ),
        now,
    );
    c.state = CampaignState::Open;
    store.create_campaign(&c).await.unwrap();
    c
}

fn event(c: &Campaign) -> IssueEvent {
    IssueEvent::new(c, UserId::new(unique_name("u")).unwrap(), 1, Utc::now())
}

/// Records one event while `hold` keeps the campaign row locked: the store must give up
/// within `bound` with a retryable error whose text has `says`, then record it once the
/// lock is released.
async fn stuck_behind_a_lock_fails_fast(
    store: Arc<dyn IssueStore>,
    c: &Campaign,
    bound: Duration,
    says: &str,
    release: impl std::future::Future<Output = ()>,
) {
    let e = event(c);
    let started = Instant::now();
    let err = store.record(std::slice::from_ref(&e)).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < bound + MARGIN, "gave up only after {took:?}: {err}");
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable() && err.to_string().contains(says), "{err}");
    release.await;
    assert_eq!(store.record(&[e]).await.unwrap(), vec![RecordOutcome::Stored]);
}

#[tokio::test]
async fn f14_postgres_lock_and_statement_timeouts_bound_a_batch_behind_a_held_lock() {
    let Some(url) = service(Service::Postgres).await else {
        return;
    };
    for (config, says) in [
        (
            StoreConfig::from_url(url.clone()).with_lock_timeout(Duration::from_millis(300)),
            "lock timeout",
        ),
        (
            // No lock timeout: the statement timeout is the bound.
            StoreConfig::from_url(url.clone())
                .with_lock_timeout(Duration::ZERO)
                .with_statement_timeout(Duration::from_millis(300)),
            "statement timeout",
        ),
    ] {
        let store: Arc<dyn IssueStore> = Arc::new(PgStore::connect(&config).await.unwrap());
        let c = open_campaign(store.as_ref()).await;
        let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut tx = holder.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM coupon_campaigns WHERE id = $1 FOR UPDATE")
            .bind(*c.id.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
        stuck_behind_a_lock_fails_fast(store, &c, Duration::from_millis(300), says, async move {
            tx.rollback().await.unwrap();
        })
        .await;
    }
}

#[tokio::test]
async fn f14_mariadb_lock_and_statement_timeouts_bound_a_batch_behind_a_held_lock() {
    let Some(url) = service(Service::Mysql).await else {
        return;
    };
    for (config, bound, says) in [
        (
            // innodb_lock_wait_timeout counts whole seconds.
            StoreConfig::from_url(url.clone()).with_lock_timeout(Duration::from_secs(1)),
            Duration::from_secs(1),
            "Lock wait timeout",
        ),
        (
            StoreConfig::from_url(url.clone())
                .with_lock_timeout(Duration::from_secs(30))
                .with_statement_timeout(Duration::from_millis(300)),
            Duration::from_millis(300),
            "max_statement_time",
        ),
    ] {
        let store: Arc<dyn IssueStore> = Arc::new(MySqlStore::connect(&config).await.unwrap());
        let c = open_campaign(store.as_ref()).await;
        let mut holder = sqlx::MySqlConnection::connect(&url).await.unwrap();
        let mut tx = holder.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM coupon_campaigns WHERE id = ? FOR UPDATE")
            .bind(*c.id.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
        stuck_behind_a_lock_fails_fast(store, &c, bound, says, async move {
            tx.rollback().await.unwrap();
        })
        .await;
    }
}

/// F17: SQLite is the store of record of `after-store` in the embedded default; a commit
/// must survive an OS crash, not only a process crash: `synchronous=FULL` (2).
#[tokio::test]
async fn f17_sqlite_fsyncs_every_commit_unless_told_otherwise() {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("coupon-sync")));
    let url = format!("sqlite://{}", path.display());
    let synchronous = |store: SqliteStore| async move {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        level
    };
    let store = SqliteStore::connect(&StoreConfig::from_url(url.clone())).await.unwrap();
    assert_eq!(synchronous(store).await, 2, "FULL");
    let store = SqliteStore::connect(&StoreConfig::from_url(url).with_sqlite_fsync_each_commit(false))
        .await
        .unwrap();
    assert_eq!(synchronous(store).await, 1, "NORMAL");
    let _ = std::fs::remove_file(path);
}

/// F14: the hot path's campaign lookup is bounded. While PostgreSQL cannot answer (a
/// table lock holds every read of `coupon_campaigns`), a campaign read before is served
/// as last known within the load timeout, and one never read fails with a retryable
/// `Unavailable` within it; on 2f412b2 both waited for the lock, behind one global mutex.
#[tokio::test]
async fn f14_the_campaign_cache_serves_the_last_known_campaign_while_the_store_hangs() {
    let Some(url) = service(Service::Postgres).await else {
        return;
    };
    // A database of its own: the table lock below would stall every other test's writes.
    let url = fresh_postgres_database(&url).await;
    let store: Arc<dyn IssueStore> = Arc::new(PgStore::connect(&StoreConfig::from_url(url.clone())).await.unwrap());
    let known = open_campaign(store.as_ref()).await;
    let unknown = open_campaign(store.as_ref()).await;
    let bound = Duration::from_millis(300);
    // TTL zero: every lookup goes to the store.
    let cache = coupon_core::CampaignCache::new(store.clone())
        .with_ttl(Duration::ZERO)
        .with_load_timeout(bound);
    assert_eq!(cache.get(&known.id).await.unwrap().unwrap().id, known.id);

    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE coupon_campaigns IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let served = cache.get(&known.id).await.unwrap();
        assert!(started.elapsed() < bound + MARGIN, "took {:?}", started.elapsed());
        assert_eq!(served.unwrap().id, known.id, "the last known campaign");
    }
    let started = Instant::now();
    let err = cache.get(&unknown.id).await.unwrap_err();
    assert!(started.elapsed() < bound + MARGIN, "took {:?}", started.elapsed());
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("was not read within"), "{err}");
    tx.rollback().await.unwrap();
    // The store answers again (bounded wait: the pool replaces the abandoned connections).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cache.get(&unknown.id).await {
            Ok(found) => {
                assert_eq!(found.unwrap().id, unknown.id);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the store never answered again: {e}"),
        }
    }
}

/// A new, empty database on the server of `url`; its URL.
async fn fresh_postgres_database(url: &str) -> String {
    let name = unique_name("coupon_timeouts").replace('-', "_");
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (server, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{server}/{name}")
}
