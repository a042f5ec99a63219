//! [`MySqlStore`]: the store on MySQL 8 and MariaDB 10.5+.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::Utc;
use coupon_core::{
    BackendError, Campaign, CampaignId, CampaignState, Coupon, CouponId, IssueEvent, IssueStore, RecordOutcome,
    RedeemOutcome, Redemption, ReservationKey, UserId, VoidOutcome,
};
use sqlx::mysql::{MySql, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, FromRow, QueryBuilder, Row};
use uuid::Uuid;

use crate::common::{
    BatchPlan, CampaignColumns, CouponColumns, LockedCampaign, amount, backend_error, campaign_ids, check_campaign,
    count, explain_refusal, key_ids, redeem_until_decided, retry_deadlocks, seq_of, void_outcomes,
};
use crate::config::{StoreConfig, connect_error};

const B: &str = "mysql";
const CAMPAIGN_SELECT: &str = "SELECT id, name, total_quantity, per_user_limit, issue_starts_at, issue_ends_at, \
     valid_until, valid_days, min_order_amount, discount, state, created_at FROM coupon_campaigns";
const CAMPAIGN_SELECT_COUNTED: &str = "SELECT id, name, total_quantity, per_user_limit, issue_starts_at, \
     issue_ends_at, valid_until, valid_days, min_order_amount, discount, state, created_at, issued_count \
     FROM coupon_campaigns";
const COUPON_COLUMNS: &str = "id, campaign_id, user_id, nth, issued_at, valid_until, state, redeemed_at, order_id";
/// Rows per INSERT statement (8 parameters each, under the 65,535 limit); also ids per
/// `IN (...)` list.
const INSERT_CHUNK: usize = 5_000;

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

/// [`IssueStore`] on MySQL or MariaDB. A batch is one transaction that locks its
/// campaigns' rows (`FOR UPDATE`, in id order), reads the voids among its coupon ids,
/// writes the coupons with multi-row `INSERT ... ON DUPLICATE KEY UPDATE id = id` (a
/// no-op on conflict; unlike `INSERT IGNORE` it keeps foreign key and CHECK errors as
/// errors) — on MariaDB with `RETURNING`, on MySQL followed by one `SELECT` of the
/// call's token — and adds them to the campaigns' `issued_count`.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    new_rows: NewRows,
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
        let store = Self { pool, new_rows };
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

    /// One attempt at [`IssueStore::record`], in one transaction.
    async fn record_once(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
        let err = |e| backend_error(B, "record", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Under REPEATABLE READ the snapshot of the plain reads below is taken at the
        // first of them, after this lock is granted, so they see what the previous
        // holder committed.
        let campaigns = lock_campaigns(&mut tx, &campaign_ids(events), "record").await?;
        let mut plan = BatchPlan::new(events, &campaigns);
        let voided = present(&mut tx, VOIDED_AMONG, &plan.undecided_ids(), "record").await?;
        plan.apply_voids(&voided);
        plan.apply_seqs(&seqs_taken(&mut tx, &plan.undecided_seqs()).await?);
        let to_insert = plan.choose_inserts();
        let token = Uuid::new_v4();
        let mut inserted = HashSet::new();
        for chunk in to_insert.chunks(INSERT_CHUNK) {
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
        let stored = present(&mut tx, STORED_AMONG, &plan.ids_to_check(&inserted), "record").await?;
        let settled = plan.settle(&inserted, &stored);
        for chunk in settled.remove.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new("DELETE FROM coupon_coupons WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            list.push_unseparated(")");
            q.build().execute(&mut *tx).await.map_err(err)?;
        }
        for (campaign_id, n) in &settled.added {
            sqlx::query("UPDATE coupon_campaigns SET issued_count = issued_count + ? WHERE id = ?")
                .bind(*n)
                .bind(campaign_id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(settled.outcomes)
    }

    /// One redemption attempt; `None` when undecided (see [`redeem_until_decided`]).
    async fn redeem_once(&self, r: &Redemption) -> Result<Option<RedeemOutcome>, BackendError> {
        let done = sqlx::query(
            "UPDATE coupon_coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
             SET c.state = 'redeemed', c.redeemed_at = ?, c.order_id = ? \
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
        let found = self.coupon_with_min(&r.coupon_id).await?;
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
            "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until, record_token, admission_seq) ",
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
                .push_bind(seq_of(e));
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

    async fn coupon_with_min(&self, id: &CouponId) -> Result<Option<(Coupon, Option<i64>)>, BackendError> {
        let row = sqlx::query(
            "SELECT c.id, c.campaign_id, c.user_id, c.nth, c.issued_at, c.valid_until, c.state, c.redeemed_at, \
             c.order_id, k.min_order_amount FROM coupon_coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
             WHERE c.id = ?",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| backend_error(B, "redeem", e))?;
        match row {
            Some(row) => {
                let min: Option<i64> = row
                    .try_get("min_order_amount")
                    .map_err(|e| backend_error(B, "redeem", e))?;
                Ok(Some((coupon_from_row(&row)?, min)))
            }
            None => Ok(None),
        }
    }
}

/// Locks the rows of `ids` (those that exist) in id order, so that concurrent
/// batches over several campaigns cannot deadlock, and reads them.
async fn lock_campaigns(
    conn: &mut MySqlConnection,
    ids: &[CampaignId],
    operation: &'static str,
) -> Result<HashMap<CampaignId, LockedCampaign>, BackendError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut q: QueryBuilder<MySql> = QueryBuilder::new(CAMPAIGN_SELECT_COUNTED);
    q.push(" WHERE id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id.as_uuid());
    }
    list.push_unseparated(") ORDER BY id FOR UPDATE");
    let rows = q
        .build()
        .fetch_all(conn)
        .await
        .map_err(|e| backend_error(B, operation, e))?;
    LockedCampaign::from_rows(&rows, B, operation, campaign_from_row)
}

/// Which of `ids` the query `select` (ending in `IN (`) finds, in chunks.
async fn present(
    conn: &mut MySqlConnection,
    select: &'static str,
    ids: &[Uuid],
    operation: &'static str,
) -> Result<HashSet<Uuid>, BackendError> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(select);
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        list.push_unseparated(")");
        let rows: Vec<Uuid> = q
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| backend_error(B, operation, e))?;
        found.extend(rows);
    }
    Ok(found)
}

/// The stored coupons of each campaign that carry one of the admission numbers.
async fn seqs_taken(
    conn: &mut MySqlConnection,
    seqs: &[(CampaignId, Vec<i64>)],
) -> Result<HashMap<(CampaignId, i64), Uuid>, BackendError> {
    let mut taken = HashMap::new();
    for (campaign_id, numbers) in seqs {
        for chunk in numbers.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<MySql> =
                QueryBuilder::new("SELECT admission_seq, id FROM coupon_coupons WHERE campaign_id = ");
            q.push_bind(*campaign_id.as_uuid()).push(" AND admission_seq IN (");
            let mut list = q.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
            list.push_unseparated(")");
            let rows: Vec<(i64, Uuid)> = q
                .build_query_as()
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| backend_error(B, "record", e))?;
            taken.extend(rows.into_iter().map(|(seq, id)| ((*campaign_id, seq), id)));
        }
    }
    Ok(taken)
}

const VOIDED_AMONG: &str = "SELECT coupon_id FROM coupon_voids WHERE coupon_id IN (";
const STORED_AMONG: &str = "SELECT id FROM coupon_coupons WHERE id IN (";

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

#[async_trait]
impl IssueStore for MySqlStore {
    fn backend(&self) -> &'static str {
        B
    }

    async fn create_campaign(&self, campaign: &Campaign) -> Result<(), BackendError> {
        check_campaign(campaign, B)?;
        let c = CampaignColumns::from_campaign(campaign);
        sqlx::query(
            "INSERT INTO coupon_campaigns (id, name, total_quantity, per_user_limit, issue_starts_at, issue_ends_at, \
             valid_until, valid_days, min_order_amount, discount, state, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id)
        .bind(&c.name)
        .bind(c.total_quantity)
        .bind(c.per_user_limit)
        .bind(c.issue_starts_at)
        .bind(c.issue_ends_at)
        .bind(c.valid_until)
        .bind(c.valid_days)
        .bind(c.min_order_amount)
        .bind(&c.discount)
        .bind(&c.state)
        .bind(c.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| backend_error(B, "create_campaign", e))?;
        Ok(())
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, BackendError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CAMPAIGN_SELECT} WHERE id = ?")))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend_error(B, "campaign", e))?;
        row.as_ref().map(campaign_from_row).transpose()
    }

    async fn set_campaign_state(
        &self,
        id: &CampaignId,
        state: CampaignState,
    ) -> Result<Option<Campaign>, BackendError> {
        let allowed = crate::common::allowed_from(state);
        let mut q: QueryBuilder<MySql> = QueryBuilder::new("UPDATE coupon_campaigns SET state = ");
        q.push_bind(state.as_str())
            .push(" WHERE id = ")
            .push_bind(*id.as_uuid())
            .push(" AND state IN (");
        let mut list = q.separated(", ");
        for from in allowed {
            list.push_bind(from);
        }
        list.push_unseparated(")");
        q.build()
            .execute(&self.pool)
            .await
            .map_err(|e| backend_error(B, "set_campaign_state", e))?;
        self.campaign(id).await
    }

    async fn record(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        retry_deadlocks("record", || self.record_once(events)).await
    }

    async fn void(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<VoidOutcome>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e| backend_error(B, "void", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // The same lock as record(): a coupon id ends up stored or voided, never both.
        lock_campaigns(&mut tx, std::slice::from_ref(campaign_id), "void").await?;
        let stored = present(&mut tx, STORED_AMONG, &key_ids(keys), "void").await?;
        let (outcomes, to_void) = void_outcomes(keys, &stored);
        let now = Utc::now();
        for chunk in to_void.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<MySql> =
                QueryBuilder::new("INSERT INTO coupon_voids (coupon_id, campaign_id, user_id, nth, voided_at) ");
            q.push_values(chunk, |mut row, k| {
                row.push_bind(*k.coupon_id.as_uuid())
                    .push_bind(*campaign_id.as_uuid())
                    .push_bind(k.user_id.as_str())
                    .push_bind(k.nth as i32)
                    .push_bind(now);
            });
            q.push(" ON DUPLICATE KEY UPDATE coupon_id = coupon_id");
            q.build().execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(outcomes)
    }

    async fn coupon(&self, id: &CouponId) -> Result<Option<Coupon>, BackendError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COUPON_COLUMNS} FROM coupon_coupons WHERE id = ?"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| backend_error(B, "coupon", e))?;
        row.as_ref().map(coupon_from_row).transpose()
    }

    async fn coupons_of_user(&self, user_id: &UserId) -> Result<Vec<Coupon>, BackendError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COUPON_COLUMNS} FROM coupon_coupons WHERE user_id = ? ORDER BY issued_at DESC, id DESC"
        )))
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| backend_error(B, "coupons_of_user", e))?;
        rows.iter().map(coupon_from_row).collect()
    }

    async fn redeem(&self, r: &Redemption) -> Result<RedeemOutcome, BackendError> {
        redeem_until_decided(B, || self.redeem_once(r)).await
    }

    async fn open_campaigns(&self) -> Result<Vec<CampaignId>, BackendError> {
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM coupon_campaigns WHERE state = 'open' ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| backend_error(B, "open_campaigns", e))?;
        Ok(ids.into_iter().map(CampaignId::from_uuid).collect())
    }

    async fn issued_count(&self, campaign_id: &CampaignId) -> Result<u64, BackendError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupon_coupons WHERE campaign_id = ?")
            .bind(campaign_id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| backend_error(B, "issued_count", e))?;
        count(B, "issued_count", n)
    }

    async fn holders(&self, campaign_id: &CampaignId) -> Result<Vec<(UserId, u32)>, BackendError> {
        let rows: Vec<(String, i32)> = sqlx::query_as("SELECT user_id, nth FROM coupon_coupons WHERE campaign_id = ?")
            .bind(campaign_id.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| backend_error(B, "holders", e))?;
        crate::common::holders_from_rows(B, rows)
    }

    async fn highest_admission_seq(&self, campaign_id: &CampaignId) -> Result<u64, BackendError> {
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(admission_seq) FROM coupon_coupons WHERE campaign_id = ?")
                .bind(campaign_id.as_uuid())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| backend_error(B, "highest_admission_seq", e))?;
        Ok(highest.and_then(|h| u64::try_from(h).ok()).unwrap_or(0))
    }

    async fn voided_count(&self, campaign_id: &CampaignId) -> Result<u64, BackendError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupon_voids WHERE campaign_id = ?")
            .bind(campaign_id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| backend_error(B, "voided_count", e))?;
        count(B, "voided_count", n)
    }

    async fn stored_keys(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<bool>, BackendError> {
        let mut stored = HashSet::new();
        for chunk in key_ids(keys).chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new("SELECT id FROM coupon_coupons WHERE campaign_id = ");
            q.push_bind(*campaign_id.as_uuid()).push(" AND id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            list.push_unseparated(")");
            let ids: Vec<Uuid> = q
                .build_query_scalar()
                .fetch_all(&self.pool)
                .await
                .map_err(|e| backend_error(B, "stored_keys", e))?;
            stored.extend(ids);
        }
        Ok(crate::common::mark_stored(keys, &stored))
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
