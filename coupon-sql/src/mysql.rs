//! [`MySqlStore`]: the store on MySQL 8 and MariaDB 10.5+.

use std::collections::HashSet;

use chrono::Utc;
use coupon_core::{
    BackendError, Campaign, CampaignId, Coupon, IssueEvent, RecordOutcome, RedeemOutcome, Redemption, ReservationKey,
    VoidOutcome,
};
use sqlx::mysql::{MySql, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, FromRow, QueryBuilder};
use uuid::Uuid;

use crate::common::{
    BatchPlan, CampaignColumns, CouponColumns, amount, backend_error, campaign_ids, explain_refusal, key_ids,
    retry_deadlocks, seq_of, void_outcomes,
};
use crate::config::{StoreConfig, connect_error, stored_notice};
use crate::statements::{Dialect, STORED_AMONG, VOIDED_AMONG, issue_store};

const B: &str = "mysql";
/// The shared statements on MySQL: 5,000 rows per insert (10 parameters each, under the
/// 65,535 limit), also ids per `IN (...)` list.
const MYSQL: Dialect<MySql> = Dialect {
    backend: B,
    chunk: 5_000,
    campaign_from_row,
    coupon_from_row,
};
/// How `record` and `void` lock the campaigns they read: in id order, so that concurrent
/// batches over several campaigns cannot deadlock.
const LOCK_ROWS: &str = " ORDER BY id FOR UPDATE";

/// How long `migrate` waits for another instance's migration run.
const MIGRATE_LOCK_WAIT_SECS: i64 = 300;

/// The migrations for MySQL and MariaDB (`migrations/mysql`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

/// How a batch learns which of its rows were new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewRows {
    /// MariaDB: `INSERT ... RETURNING id, record_token` (one round trip). It also returns
    /// the rows a conflict left alone, so the token still tells which rows are new.
    Returning,
    /// MySQL (no `RETURNING`): rows carry a per-call token, read back after the insert.
    Token,
}

/// [`coupon_core::IssueStore`] on MySQL or MariaDB. A batch is one transaction that locks its
/// campaigns' rows (`FOR UPDATE`, in id order), reads the voids among its coupon ids,
/// writes the coupons with multi-row `INSERT ... ON DUPLICATE KEY UPDATE id = id` (a
/// no-op on conflict; unlike `INSERT IGNORE` it keeps foreign key and CHECK errors as
/// errors) — on MariaDB with `RETURNING`, on MySQL followed by one `SELECT` of the
/// call's token — and adds them to the campaigns' `issued_count`.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    new_rows: NewRows,
    /// What `record` writes to `pending_notice`: `Some(1)` ("stored" pending) with
    /// [`StoreConfig::stored_notices`], else nothing pending.
    stored_notice: Option<i16>,
}

impl MySqlStore {
    /// Connects as `config` says, running the migrations if it asks.
    pub async fn connect(config: &StoreConfig) -> Result<Self, BackendError> {
        crate::config::refuse_invalid(config, B)?;
        let statement_secs = config.statement_timeout.as_secs_f64();
        let lock_secs = config.lock_timeout.as_secs().max(1);
        let lock_timeout_set = !config.lock_timeout.is_zero();
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if lock_timeout_set {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "SET SESSION innodb_lock_wait_timeout = {lock_secs}"
                        )))
                        .execute(&mut *conn)
                        .await?;
                    }
                    // MariaDB bounds every statement; MySQL names it differently and
                    // bounds only reads.
                    let mariadb = format!("SET SESSION max_statement_time = {statement_secs}");
                    let mysql = format!("SET SESSION max_execution_time = {}", (statement_secs * 1000.0) as u64);
                    if sqlx::query(sqlx::AssertSqlSafe(mariadb))
                        .execute(&mut *conn)
                        .await
                        .is_err()
                    {
                        sqlx::query(sqlx::AssertSqlSafe(mysql)).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&config.url)
            .await
            .map_err(|e| connect_error(B, e))?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&pool)
            .await
            .map_err(|e| connect_error(B, e))?;
        let new_rows = if version.to_ascii_lowercase().contains("mariadb") {
            NewRows::Returning
        } else {
            NewRows::Token
        };
        let stored_notice = stored_notice(config);
        let store = Self {
            pool,
            new_rows,
            stored_notice,
        };
        if config.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Uses the MySQL way of finding new rows (a token column) even on MariaDB: for
    /// testing that path on a MariaDB server.
    pub fn with_token_path(mut self) -> Self {
        self.new_rows = NewRows::Token;
        self
    }

    /// Runs the migrations (idempotent). Concurrent runs (several instances starting at
    /// once) are serialized by a named lock of this crate's: sqlx's own migration lock,
    /// `GET_LOCK(name, -1)`, does not wait on MariaDB (a negative timeout returns NULL at
    /// once there), which let two instances apply the same migration together.
    pub async fn migrate(&self) -> Result<(), BackendError> {
        let err = |e| backend_error(B, "migrate", e);
        // A session of its own holds the lock: closing it releases the lock whatever
        // happens.
        let mut lock = MySqlConnection::connect_with(&self.pool.connect_options())
            .await
            .map_err(err)?;
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK(CONCAT('coupon_sql_migrate_', MD5(COALESCE(DATABASE(), ''))), ?)")
                .bind(MIGRATE_LOCK_WAIT_SECS)
                .fetch_one(&mut lock)
                .await
                .map_err(err)?;
        let ran = if locked == Some(1) {
            // Outside the pool, whose sessions carry the statement timeout: a migration
            // may take longer.
            match migration_pool(&self.pool).await {
                Ok(once) => once.run_migrations().await,
                Err(e) => Err(err(e)),
            }
        } else {
            Err(BackendError::new(
                coupon_core::Component::Store,
                B,
                "migrate",
                coupon_core::ErrorKind::Unavailable,
                format!("another instance held the migration lock for {MIGRATE_LOCK_WAIT_SECS} s"),
            ))
        };
        let _ = lock.close().await;
        ran
    }

    /// The pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// One attempt at [`coupon_core::IssueStore::record`], in one transaction.
    async fn record_once(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
        let err = |e| backend_error(B, "record", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Under REPEATABLE READ the snapshot of the plain reads below is taken at the
        // first of them, after this lock is granted, so they see what the previous
        // holder committed.
        let campaigns = MYSQL
            .lock_campaigns(&mut tx, &campaign_ids(events), LOCK_ROWS, "record")
            .await?;
        let mut plan = BatchPlan::new(events, &campaigns);
        let voided = MYSQL
            .present(&mut tx, VOIDED_AMONG, &plan.undecided_ids(), "record")
            .await?;
        plan.apply_voids(&voided);
        plan.apply_seqs(&MYSQL.seqs_taken(&mut tx, &plan.undecided_seqs()).await?);
        let to_insert = plan.choose_inserts();
        let token = Uuid::new_v4();
        let mut inserted = HashSet::new();
        for chunk in to_insert.chunks(MYSQL.chunk) {
            inserted.extend(self.insert(&mut tx, chunk, token).await?);
        }
        if self.new_rows == NewRows::Token && !to_insert.is_empty() {
            let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM coupon_coupons WHERE record_token = ?")
                .bind(token)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
            inserted.extend(ids);
        }
        let stored = MYSQL
            .present(&mut tx, STORED_AMONG, &plan.ids_to_check(&inserted), "record")
            .await?;
        let settled = plan.settle(&inserted, &stored);
        MYSQL.settle_counts(&mut tx, &settled.remove, &settled.added).await?;
        tx.commit().await.map_err(err)?;
        Ok(settled.outcomes)
    }

    /// One redemption attempt; `None` when undecided (see [`redeem_until_decided`]).
    async fn redeem_once(&self, r: &Redemption) -> Result<Option<RedeemOutcome>, BackendError> {
        let done = sqlx::query(
            "UPDATE coupon_coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
             SET c.state = 'redeemed', c.redeemed_at = ?, c.order_id = ?, c.pending_notice = COALESCE(c.pending_notice, 0) | 2 \
             WHERE c.id = ? AND c.user_id = ? AND c.state = 'issued' AND c.issued_at <= ? AND c.valid_until > ? \
               AND ? >= COALESCE(k.min_order_amount, 0)",
        )
        .bind(r.at)
        .bind(&r.order_id)
        .bind(r.coupon_id.as_uuid())
        .bind(r.user_id.as_str())
        .bind(r.at)
        .bind(r.at)
        .bind(amount(r.order_amount))
        .execute(&self.pool)
        .await
        .map_err(|e| backend_error(B, "redeem", e))?;
        let found = MYSQL.coupon_with_min(&self.pool, &r.coupon_id).await?;
        if done.rows_affected() == 1
            && let Some((coupon, _)) = found
        {
            return Ok(Some(RedeemOutcome::Redeemed { coupon }));
        }
        Ok(explain_refusal(found, r))
    }

    /// Inserts `chunk` (distinct coupon ids) tagged with `token`; the ids it wrote (on
    /// the token path, none: they are read back by token afterwards).
    async fn insert(
        &self,
        conn: &mut MySqlConnection,
        chunk: &[&IssueEvent],
        token: Uuid,
    ) -> Result<Vec<Uuid>, BackendError> {
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until, record_token, admission_seq, pending_notice) ",
        );
        q.push_values(chunk, |mut row, e| {
            row.push_bind(*e.coupon_id.as_uuid())
                .push_bind(*e.campaign_id.as_uuid())
                .push_bind(e.user_id.as_str())
                .push_bind(e.nth as i32)
                .push_bind(*e.event_id.as_uuid())
                .push_bind(e.issued_at)
                .push_bind(e.valid_until)
                .push_bind(token)
                .push_bind(seq_of(e))
                .push_bind(self.stored_notice);
        });
        q.push(" ON DUPLICATE KEY UPDATE id = id");
        match self.new_rows {
            NewRows::Returning => {
                q.push(" RETURNING id, record_token");
                let rows: Vec<(Uuid, Option<Uuid>)> = q
                    .build_query_as()
                    .fetch_all(conn)
                    .await
                    .map_err(|e| backend_error(B, "record", e))?;
                Ok(rows
                    .into_iter()
                    .filter(|(_, t)| *t == Some(token))
                    .map(|(id, _)| id)
                    .collect())
            }
            NewRows::Token => {
                q.build()
                    .execute(conn)
                    .await
                    .map_err(|e| backend_error(B, "record", e))?;
                Ok(Vec::new())
            }
        }
    }
}

fn campaign_from_row(row: &MySqlRow) -> Result<Campaign, BackendError> {
    CampaignColumns::from_row(row)
        .map_err(|e| backend_error(B, "read campaign", e))?
        .into_campaign(B)
}

fn coupon_from_row(row: &MySqlRow) -> Result<Coupon, BackendError> {
    CouponColumns::from_row(row)
        .map_err(|e| backend_error(B, "read coupon", e))?
        .into_coupon(B)
}

issue_store!(MySqlStore, MYSQL, std::convert::identity);

/// What this dialect does its own way (see [`issue_store`]).
impl MySqlStore {
    /// [`coupon_core::IssueStore::record`] of a batch that is not empty.
    async fn record_batch(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
        retry_deadlocks("record", || self.record_once(events)).await
    }

    /// [`coupon_core::IssueStore::void`] of keys that are not empty.
    async fn void_keys(
        &self,
        campaign_id: &CampaignId,
        keys: &[ReservationKey],
    ) -> Result<Vec<VoidOutcome>, BackendError> {
        let err = |e| backend_error(B, "void", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // The same lock as record(): a coupon id ends up stored or voided, never both.
        MYSQL
            .lock_campaigns(&mut tx, std::slice::from_ref(campaign_id), LOCK_ROWS, "void")
            .await?;
        let stored = MYSQL.present(&mut tx, STORED_AMONG, &key_ids(keys), "void").await?;
        let (outcomes, to_void) = void_outcomes(keys, &stored);
        MYSQL
            .insert_voids(
                &mut tx,
                campaign_id,
                &to_void,
                Utc::now(),
                " ON DUPLICATE KEY UPDATE coupon_id = coupon_id",
            )
            .await?;
        tx.commit().await.map_err(err)?;
        Ok(outcomes)
    }
}

/// One session for the migrations, without the pool's statement timeout.
async fn migration_pool(pool: &MySqlPool) -> Result<MigrationPool, sqlx::Error> {
    let options = pool.connect_options();
    Ok(MigrationPool(
        MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with((*options).clone())
            .await?,
    ))
}

struct MigrationPool(MySqlPool);

impl MigrationPool {
    async fn run_migrations(self) -> Result<(), BackendError> {
        let ran = MIGRATOR
            .run(&self.0)
            .await
            .map_err(|e| backend_error(B, "migrate", sqlx::Error::Migrate(Box::new(e))));
        self.0.close().await;
        ran
    }
}
