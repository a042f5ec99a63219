//! The protocol v2 migration on a database that already holds campaigns and coupons:
//! each dialect gets a fresh database, runs only the migrations before protocol v2,
//! gets rows written with that old schema (one campaign already over-issued), then runs
//! every migration. `issued_count` must be backfilled (capped at the stock) and the
//! store must work on the migrated data: redeliveries, voids, fences.

use chrono::{DateTime, Utc};
use coupon_core::conformance::{event, now_ms, open_campaign, user};
use coupon_core::{Campaign, CampaignState, Fence, IssueEvent, IssueStore, RecordOutcome, Validity, VoidOutcome};
use sqlx::migrate::Migrator;

/// What the old schema holds before the migration.
struct Legacy {
    /// Stock 10, three coupons.
    a: Campaign,
    /// Stock 1, two coupons: over-issued before the store had a stock fence.
    b: Campaign,
    /// Stock 5, no coupons.
    c: Campaign,
    coupons: Vec<IssueEvent>,
}

impl Legacy {
    fn new() -> Self {
        let (a, b, c) = (open_campaign(10, 2), open_campaign(1, 1), open_campaign(5, 1));
        let t = now_ms();
        let coupons = vec![
            event(&a, &user(&a.id, 0), 1, t),
            event(&a, &user(&a.id, 0), 2, t),
            event(&a, &user(&a.id, 1), 1, t),
            event(&b, &user(&b.id, 0), 1, t),
            event(&b, &user(&b.id, 1), 1, t),
        ];
        Self { a, b, c, coupons }
    }

    fn campaigns(&self) -> [&Campaign; 3] {
        [&self.a, &self.b, &self.c]
    }

    /// The issued counts the backfill must write for a, b, c.
    const BACKFILLED: [i64; 3] = [3, 1, 0];

    /// Works with the store on the migrated data, panicking on any difference.
    /// Afterwards campaign a has 4 coupons and c has 1.
    async fn check_store(&self, store: &dyn IssueStore) {
        let (a, b) = (&self.a, &self.b);
        assert_eq!(store.issued_count(&a.id).await.unwrap(), 3);
        assert_eq!(
            store.issued_count(&b.id).await.unwrap(),
            2,
            "the true count, over the stock"
        );
        assert_eq!(store.issued_count(&self.c.id).await.unwrap(), 0);
        let (u0, u1) = (user(&a.id, 0), user(&a.id, 1));
        assert_eq!(
            store.holders(&a.id).await.unwrap(),
            vec![(u0.clone(), 1), (u0, 2), (u1, 1)]
        );
        // Old coupons are redeliveries.
        assert_eq!(
            store.record(&self.coupons).await.unwrap(),
            vec![RecordOutcome::Duplicate; self.coupons.len()]
        );
        let stored = self.coupons[0].reservation_key();
        let t = now_ms();
        let new = event(a, &user(&a.id, 2), 1, t);
        let late = event(a, &user(&a.id, 3), 1, t);
        assert_eq!(
            store.record(std::slice::from_ref(&new)).await.unwrap(),
            vec![RecordOutcome::Stored]
        );
        assert_eq!(
            store
                .void(&a.id, &[stored, new.reservation_key(), late.reservation_key()])
                .await
                .unwrap(),
            vec![VoidOutcome::Stored, VoidOutcome::Stored, VoidOutcome::Voided]
        );
        assert_eq!(
            store.record(std::slice::from_ref(&late)).await.unwrap(),
            vec![RecordOutcome::Fenced { fence: Fence::Voided }]
        );
        assert_eq!(store.coupon(&late.coupon_id).await.unwrap(), None);
        assert_eq!(store.voided_count(&a.id).await.unwrap(), 1);
        assert_eq!(store.issued_count(&a.id).await.unwrap(), 4);
        // The over-issued campaign takes nothing more, and can still be closed.
        assert_eq!(
            store.record(&[event(b, &user(&b.id, 2), 1, t)]).await.unwrap(),
            vec![RecordOutcome::Fenced {
                fence: Fence::StockExhausted
            }]
        );
        let closed = store.set_campaign_state(&b.id, CampaignState::Closed).await.unwrap();
        assert_eq!(closed.unwrap().state, CampaignState::Closed);
        // Coupons from before carry no admission number; new ones are numbered once.
        assert_eq!(store.highest_admission_seq(&a.id).await.unwrap(), 0);
        let c = &self.c;
        let numbered = |u| event(c, &user(&c.id, u), 1, t).with_admission_seq(1);
        assert_eq!(
            store.record(&[numbered(0), numbered(1)]).await.unwrap(),
            vec![
                RecordOutcome::Stored,
                RecordOutcome::Fenced {
                    fence: Fence::SequenceReused
                }
            ]
        );
        assert_eq!(store.highest_admission_seq(&c.id).await.unwrap(), 1);
    }
}

/// The version of the protocol v2 migration.
fn protocol_v2(migrator: &Migrator) -> i64 {
    migrator
        .iter()
        .find(|m| m.description.contains("protocol v2"))
        .expect("a protocol v2 migration")
        .version
}

/// The columns of a campaign as the old schema stores them (valid_until, valid_days).
fn validity(c: &Campaign) -> (Option<DateTime<Utc>>, Option<i32>) {
    match c.validity {
        Validity::Until(t) => (Some(t), None),
        Validity::DaysAfterIssue(d) => (None, Some(d as i32)),
    }
}

/// The database URL `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL");
    format!("{base}/{name}")
}

fn database_name() -> String {
    coupon_testkit::unique_name("coupon_migrate").replace('-', "_")
}

mod postgres {
    use coupon_sql::{PgStore, StoreConfig};
    use coupon_testkit::{Service, service};
    use sqlx::{Connection, PgConnection};

    use super::*;

    #[tokio::test]
    async fn migrations_run_on_an_existing_database() {
        let Some(url) = service(Service::Postgres).await else {
            return;
        };
        let name = database_name();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let config = StoreConfig::from_url(with_database(&url, &name)).with_migrate(false);
        let store = PgStore::connect(&config).await.unwrap();
        let migrator = &coupon_sql::migrations::POSTGRES;
        migrator.run_to(protocol_v2(migrator) - 1, store.pool()).await.unwrap();

        let legacy = Legacy::new();
        for c in legacy.campaigns() {
            let (valid_until, valid_days) = validity(c);
            sqlx::query(
                "INSERT INTO coupon_campaigns (id, name, total_quantity, per_user_limit, issue_starts_at, \
                 issue_ends_at, valid_until, valid_days, min_order_amount, discount, state, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(c.id.as_uuid())
            .bind(&c.name)
            .bind(c.total_quantity as i64)
            .bind(c.per_user_limit as i32)
            .bind(c.issue_starts_at)
            .bind(c.issue_ends_at)
            .bind(valid_until)
            .bind(valid_days)
            .bind(c.conditions.min_order_amount.map(|m| m as i64))
            .bind(&c.discount)
            .bind(c.state.as_str())
            .bind(c.created_at)
            .execute(store.pool())
            .await
            .unwrap();
        }
        for e in &legacy.coupons {
            sqlx::query(
                "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(e.coupon_id.as_uuid())
            .bind(e.campaign_id.as_uuid())
            .bind(e.user_id.as_str())
            .bind(e.nth as i32)
            .bind(e.event_id.as_uuid())
            .bind(e.issued_at)
            .bind(e.valid_until)
            .execute(store.pool())
            .await
            .unwrap();
        }

        store.migrate().await.unwrap();
        let counts = |store: PgStore, ids: [uuid::Uuid; 3]| async move {
            let mut out = Vec::new();
            for id in ids {
                let n: i64 = sqlx::query_scalar("SELECT issued_count FROM coupon_campaigns WHERE id = $1")
                    .bind(id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
                out.push(n);
            }
            out
        };
        let ids = legacy.campaigns().map(|c| *c.id.as_uuid());
        assert_eq!(counts(store.clone(), ids).await, Legacy::BACKFILLED);
        legacy.check_store(&store).await;
        assert_eq!(
            counts(store.clone(), ids).await,
            vec![4, 1, 1],
            "the counter follows record()"
        );
        // The stock fence is the database's own: no update may pass it.
        let over = sqlx::query("UPDATE coupon_campaigns SET issued_count = total_quantity + 1 WHERE id = $1")
            .bind(legacy.a.id.as_uuid())
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(
            over.to_string().contains("coupon_campaigns_issued_within_stock"),
            "{over}"
        );

        store.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

mod mysql {
    use coupon_sql::{MySqlStore, StoreConfig};
    use coupon_testkit::{Service, service};
    use sqlx::{Connection, MySqlConnection};

    use super::*;

    #[tokio::test]
    async fn migrations_run_on_an_existing_database() {
        let Some(url) = service(Service::Mysql).await else {
            return;
        };
        let name = database_name();
        let mut admin = MySqlConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&mut admin)
            .await
            .unwrap();
        let config = StoreConfig::from_url(with_database(&url, &name)).with_migrate(false);
        let store = MySqlStore::connect(&config).await.unwrap();
        let migrator = &coupon_sql::migrations::MYSQL;
        migrator.run_to(protocol_v2(migrator) - 1, store.pool()).await.unwrap();

        let legacy = Legacy::new();
        for c in legacy.campaigns() {
            let (valid_until, valid_days) = validity(c);
            sqlx::query(
                "INSERT INTO coupon_campaigns (id, name, total_quantity, per_user_limit, issue_starts_at, \
                 issue_ends_at, valid_until, valid_days, min_order_amount, discount, state, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(c.id.as_uuid())
            .bind(&c.name)
            .bind(c.total_quantity as i64)
            .bind(c.per_user_limit as i32)
            .bind(c.issue_starts_at)
            .bind(c.issue_ends_at)
            .bind(valid_until)
            .bind(valid_days)
            .bind(c.conditions.min_order_amount.map(|m| m as i64))
            .bind(&c.discount)
            .bind(c.state.as_str())
            .bind(c.created_at)
            .execute(store.pool())
            .await
            .unwrap();
        }
        for e in &legacy.coupons {
            sqlx::query(
                "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.coupon_id.as_uuid())
            .bind(e.campaign_id.as_uuid())
            .bind(e.user_id.as_str())
            .bind(e.nth as i32)
            .bind(e.event_id.as_uuid())
            .bind(e.issued_at)
            .bind(e.valid_until)
            .execute(store.pool())
            .await
            .unwrap();
        }

        store.migrate().await.unwrap();
        let counts = |store: MySqlStore, ids: [uuid::Uuid; 3]| async move {
            let mut out = Vec::new();
            for id in ids {
                let n: i64 = sqlx::query_scalar("SELECT issued_count FROM coupon_campaigns WHERE id = ?")
                    .bind(id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
                out.push(n);
            }
            out
        };
        let ids = legacy.campaigns().map(|c| *c.id.as_uuid());
        assert_eq!(counts(store.clone(), ids).await, Legacy::BACKFILLED);
        legacy.check_store(&store).await;
        // The MySQL path (a token column instead of RETURNING) on the same data.
        let token_path = store.clone().with_token_path();
        let more = event(&legacy.a, &user(&legacy.a.id, 4), 1, now_ms());
        assert_eq!(
            token_path.record(std::slice::from_ref(&more)).await.unwrap(),
            vec![RecordOutcome::Stored]
        );
        assert_eq!(
            counts(store.clone(), ids).await,
            vec![5, 1, 1],
            "the counter follows record()"
        );
        let over = sqlx::query("UPDATE coupon_campaigns SET issued_count = total_quantity + 1 WHERE id = ?")
            .bind(legacy.a.id.as_uuid())
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(
            over.to_string().contains("coupon_campaigns_issued_within_stock"),
            "{over}"
        );

        store.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

mod mysql_concurrent {
    use coupon_sql::{MySqlStore, StoreConfig};
    use coupon_testkit::{Service, service};
    use sqlx::{Connection, MySqlConnection};

    use super::*;

    /// Several instances starting at once on an empty database: every one migrates
    /// without error (MariaDB ignores sqlx's own migration lock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_migrations_all_succeed() {
        let Some(url) = service(Service::Mysql).await else {
            return;
        };
        let name = database_name();
        let mut admin = MySqlConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&mut admin)
            .await
            .unwrap();
        let config = StoreConfig::from_url(with_database(&url, &name));
        let starts: Vec<_> = (0..6)
            .map(|_| {
                let config = config.clone();
                tokio::spawn(async move { MySqlStore::connect(&config).await.map(|_| ()) })
            })
            .collect();
        let mut failures = Vec::new();
        for s in starts {
            if let Err(e) = s.await.unwrap() {
                failures.push(e.to_string());
            }
        }
        let applied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM `{name}`._sqlx_migrations WHERE success"
        )))
        .fetch_one(&mut admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`")))
            .execute(&mut admin)
            .await
            .unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(applied, coupon_sql::migrations::MYSQL.iter().count() as i64);
    }
}

mod sqlite {
    use coupon_sql::{SqliteStore, StoreConfig};

    use super::*;

    fn micros(t: DateTime<Utc>) -> i64 {
        t.timestamp_micros()
    }

    #[tokio::test]
    async fn migrations_run_on_an_existing_database() {
        let path = std::env::temp_dir().join(format!("{}.db", database_name()));
        let config = StoreConfig::from_url(format!("sqlite://{}", path.display())).with_migrate(false);
        let store = SqliteStore::connect(&config).await.unwrap();
        let migrator = &coupon_sql::migrations::SQLITE;
        migrator.run_to(protocol_v2(migrator) - 1, store.pool()).await.unwrap();

        let legacy = Legacy::new();
        for c in legacy.campaigns() {
            let (valid_until, valid_days) = validity(c);
            sqlx::query(
                "INSERT INTO coupon_campaigns (id, name, total_quantity, per_user_limit, issue_starts_at, \
                 issue_ends_at, valid_until, valid_days, min_order_amount, discount, state, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(c.id.as_uuid())
            .bind(&c.name)
            .bind(c.total_quantity as i64)
            .bind(c.per_user_limit as i32)
            .bind(micros(c.issue_starts_at))
            .bind(micros(c.issue_ends_at))
            .bind(valid_until.map(micros))
            .bind(valid_days)
            .bind(c.conditions.min_order_amount.map(|m| m as i64))
            .bind(&c.discount)
            .bind(c.state.as_str())
            .bind(micros(c.created_at))
            .execute(store.pool())
            .await
            .unwrap();
        }
        for e in &legacy.coupons {
            sqlx::query(
                "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.coupon_id.as_uuid())
            .bind(e.campaign_id.as_uuid())
            .bind(e.user_id.as_str())
            .bind(e.nth as i32)
            .bind(e.event_id.as_uuid())
            .bind(micros(e.issued_at))
            .bind(micros(e.valid_until))
            .execute(store.pool())
            .await
            .unwrap();
        }

        store.migrate().await.unwrap();
        let counts = |store: SqliteStore, ids: [uuid::Uuid; 3]| async move {
            let mut out = Vec::new();
            for id in ids {
                let n: i64 = sqlx::query_scalar("SELECT issued_count FROM coupon_campaigns WHERE id = ?")
                    .bind(id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
                out.push(n);
            }
            out
        };
        let ids = legacy.campaigns().map(|c| *c.id.as_uuid());
        assert_eq!(counts(store.clone(), ids).await, Legacy::BACKFILLED);
        legacy.check_store(&store).await;
        assert_eq!(
            counts(store.clone(), ids).await,
            vec![4, 1, 1],
            "the counter follows record()"
        );
        let over = sqlx::query("UPDATE coupon_campaigns SET issued_count = total_quantity + 1 WHERE id = ?")
            .bind(legacy.a.id.as_uuid())
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(over.to_string().contains("CHECK constraint failed"), "{over}");

        store.pool().close().await;
        let _ = std::fs::remove_file(&path);
    }
}
