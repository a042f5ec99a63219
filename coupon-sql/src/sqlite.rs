//! [`SqliteStore`]: the store on SQLite, the embedded default.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use coupon_core::{
    BackendError, Campaign, CampaignId, Coupon, IssueEvent, RecordOutcome, RedeemOutcome, Redemption, ReservationKey,
    VoidOutcome,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Sqlite};
use uuid::Uuid;

use crate::common::{
    BatchPlan, CampaignColumns, CouponColumns, amount, backend_error, campaign_ids, corrupt, explain_refusal, key_ids,
    seq_of, void_outcomes,
};
use crate::config::{StoreConfig, connect_error, stored_notice};
use crate::statements::{COUPON_COLUMNS, Dialect, STORED_AMONG, VOIDED_AMONG, issue_store};

const B: &str = "sqlite";
/// The shared statements on SQLite: 3,000 rows per insert (9 parameters each, under
/// SQLite's 32,766 limit), also ids per `IN (...)` list.
const SQLITE: Dialect<Sqlite> = Dialect {
    backend: B,
    chunk: 3_000,
    campaign_from_row,
    coupon_from_row,
};
/// How `record` and `void` start their transaction: taking the write lock up front, so
/// that what they read stays true until they commit (the other dialects lock the
/// campaign rows instead).
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The migrations for SQLite (`migrations/sqlite`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// [`coupon_core::IssueStore`] on SQLite: WAL journal, a busy timeout, foreign keys on. Times are
/// stored as integer microseconds so SQL comparisons are numeric. `record` and `void`
/// are `BEGIN IMMEDIATE` transactions (one writer at a time); a batch is written with
/// multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// What `record` writes to `pending_notice`: `Some(1)` ("stored" pending) with
    /// [`StoreConfig::stored_notices`], else nothing pending.
    stored_notice: Option<i16>,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> Result<DateTime<Utc>, BackendError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(B, "read", "timestamp out of range"))
}

fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, BackendError> {
    us.map(time).transpose()
}

impl SqliteStore {
    /// Opens (creating if needed) the database file `config.url` names, running the
    /// migrations if it asks.
    pub async fn connect(config: &StoreConfig) -> Result<Self, BackendError> {
        crate::config::refuse_invalid(config, B)?;
        let options = SqliteConnectOptions::from_str(&config.url)
            .map_err(|e| connect_error(B, e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if config.sqlite_fsync_each_commit {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let in_memory = config.url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { config.max_connections })
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| connect_error(B, e))?;
        let store = Self {
            pool,
            stored_notice: stored_notice(config),
        };
        if config.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Runs the migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), BackendError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| backend_error(B, "migrate", sqlx::Error::Migrate(Box::new(e))))
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// One redemption attempt; `None` when undecided (see [`redeem_until_decided`]).
    async fn redeem_once(&self, r: &Redemption) -> Result<Option<RedeemOutcome>, BackendError> {
        let at = micros(r.at);
        let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE coupon_coupons SET state = 'redeemed', redeemed_at = ?, order_id = ?, \
             pending_notice = COALESCE(pending_notice, 0) | 2 \
             WHERE id = ? AND user_id = ? AND state = 'issued' AND issued_at <= ? AND valid_until > ? \
               AND ? >= COALESCE((SELECT min_order_amount FROM coupon_campaigns k WHERE k.id = coupon_coupons.campaign_id), 0) \
             RETURNING {COUPON_COLUMNS}"
        )))
        .bind(at)
        .bind(&r.order_id)
        .bind(r.coupon_id.as_uuid())
        .bind(r.user_id.as_str())
        .bind(at)
        .bind(at)
        .bind(amount(r.order_amount))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| backend_error(B, "redeem", e))?;
        if let Some(row) = updated {
            return Ok(Some(RedeemOutcome::Redeemed {
                coupon: coupon_from_row(&row)?,
            }));
        }
        Ok(explain_refusal(
            SQLITE.coupon_with_min(&self.pool, &r.coupon_id).await?,
            r,
        ))
    }

    /// Every campaign id, oldest first (the embedded server restores open ones at start).
    pub async fn campaign_ids(&self) -> Result<Vec<CampaignId>, BackendError> {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM coupon_campaigns ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| backend_error(B, "campaign_ids", e))?;
        Ok(ids.into_iter().map(CampaignId::from_uuid).collect())
    }
}

/// A campaign row as SQLite holds it: times as integers ([`time`]).
#[derive(sqlx::FromRow)]
struct CampaignRow {
    id: Uuid,
    name: String,
    total_quantity: i64,
    per_user_limit: i32,
    issue_starts_at: i64,
    issue_ends_at: i64,
    valid_until: Option<i64>,
    valid_days: Option<i32>,
    min_order_amount: Option<i64>,
    discount: String,
    state: String,
    created_at: i64,
}

/// A coupon row as SQLite holds it.
#[derive(sqlx::FromRow)]
struct CouponRow {
    id: Uuid,
    campaign_id: Uuid,
    user_id: String,
    nth: i32,
    issued_at: i64,
    valid_until: i64,
    state: String,
    redeemed_at: Option<i64>,
    order_id: Option<String>,
}

fn campaign_from_row(row: &SqliteRow) -> Result<Campaign, BackendError> {
    let r = CampaignRow::from_row(row).map_err(|e| backend_error(B, "read campaign", e))?;
    CampaignColumns {
        id: r.id,
        name: r.name,
        total_quantity: r.total_quantity,
        per_user_limit: r.per_user_limit,
        issue_starts_at: time(r.issue_starts_at)?,
        issue_ends_at: time(r.issue_ends_at)?,
        valid_until: opt_time(r.valid_until)?,
        valid_days: r.valid_days,
        min_order_amount: r.min_order_amount,
        discount: r.discount,
        state: r.state,
        created_at: time(r.created_at)?,
    }
    .into_campaign(B)
}

fn coupon_from_row(row: &SqliteRow) -> Result<Coupon, BackendError> {
    let r = CouponRow::from_row(row).map_err(|e| backend_error(B, "read coupon", e))?;
    CouponColumns {
        id: r.id,
        campaign_id: r.campaign_id,
        user_id: r.user_id,
        nth: r.nth,
        issued_at: time(r.issued_at)?,
        valid_until: time(r.valid_until)?,
        state: r.state,
        redeemed_at: opt_time(r.redeemed_at)?,
        order_id: r.order_id,
    }
    .into_coupon(B)
}

issue_store!(SqliteStore, SQLITE, micros);

/// What this dialect does its own way (see [`issue_store`]).
impl SqliteStore {
    /// [`coupon_core::IssueStore::record`] of a batch that is not empty.
    async fn record_batch(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
        let err = |e| backend_error(B, "record", e);
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
        let campaigns = SQLITE
            .lock_campaigns(&mut tx, &campaign_ids(events), "", "record")
            .await?;
        let mut plan = BatchPlan::new(events, &campaigns);
        let voided = SQLITE
            .present(&mut tx, VOIDED_AMONG, &plan.undecided_ids(), "record")
            .await?;
        plan.apply_voids(&voided);
        plan.apply_seqs(&SQLITE.seqs_taken(&mut tx, &plan.undecided_seqs()).await?);
        let to_insert = plan.choose_inserts();
        let mut inserted = HashSet::new();
        for chunk in to_insert.chunks(SQLITE.chunk) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until, admission_seq, pending_notice) ",
            );
            q.push_values(chunk, |mut row, e| {
                row.push_bind(*e.coupon_id.as_uuid())
                    .push_bind(*e.campaign_id.as_uuid())
                    .push_bind(e.user_id.as_str())
                    .push_bind(e.nth as i32)
                    .push_bind(*e.event_id.as_uuid())
                    .push_bind(micros(e.issued_at))
                    .push_bind(micros(e.valid_until))
                    .push_bind(seq_of(e))
                    .push_bind(self.stored_notice);
            });
            q.push(" ON CONFLICT DO NOTHING RETURNING id");
            let ids: Vec<Uuid> = q.build_query_scalar().fetch_all(&mut *tx).await.map_err(err)?;
            inserted.extend(ids);
        }
        let stored = SQLITE
            .present(&mut tx, STORED_AMONG, &plan.ids_to_check(&inserted), "record")
            .await?;
        let settled = plan.settle(&inserted, &stored);
        SQLITE.settle_counts(&mut tx, &settled.remove, &settled.added).await?;
        tx.commit().await.map_err(err)?;
        Ok(settled.outcomes)
    }

    /// [`coupon_core::IssueStore::void`] of keys that are not empty.
    async fn void_keys(
        &self,
        campaign_id: &CampaignId,
        keys: &[ReservationKey],
    ) -> Result<Vec<VoidOutcome>, BackendError> {
        let err = |e| backend_error(B, "void", e);
        // The same write lock as record(): a coupon id ends up stored or voided, never both.
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
        let stored = SQLITE.present(&mut tx, STORED_AMONG, &key_ids(keys), "void").await?;
        let (outcomes, to_void) = void_outcomes(keys, &stored);
        SQLITE
            .insert_voids(
                &mut tx,
                campaign_id,
                &to_void,
                micros(Utc::now()),
                " ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.commit().await.map_err(err)?;
        Ok(outcomes)
    }
}
