//! [`SqliteStore`]: the store on SQLite, the embedded default.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coupon_core::{
    BackendError, Campaign, CampaignId, CampaignState, Coupon, CouponId, IssueEvent, IssueStore, RecordOutcome,
    RedeemOutcome, Redemption, ReservationKey, UserId, VoidOutcome,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::common::{
    BatchPlan, CampaignColumns, CouponColumns, LockedCampaign, amount, backend_error, campaign_ids, check_campaign,
    corrupt, count, explain_refusal, key_ids, redeem_until_decided, seq_of, void_outcomes,
};
use crate::config::{StoreConfig, connect_error};

const B: &str = "sqlite";
const CAMPAIGN_SELECT: &str = "SELECT id, name, total_quantity, per_user_limit, issue_starts_at, issue_ends_at, \
     valid_until, valid_days, min_order_amount, discount, state, created_at FROM coupon_campaigns";
const CAMPAIGN_SELECT_COUNTED: &str = "SELECT id, name, total_quantity, per_user_limit, issue_starts_at, \
     issue_ends_at, valid_until, valid_days, min_order_amount, discount, state, created_at, issued_count \
     FROM coupon_campaigns";
const COUPON_COLUMNS: &str = "id, campaign_id, user_id, nth, issued_at, valid_until, state, redeemed_at, order_id";
/// Rows per INSERT statement (7 parameters each, under SQLite's 32,766 limit); also ids
/// per `IN (...)` list.
const INSERT_CHUNK: usize = 4_000;
/// How `record` and `void` start their transaction: taking the write lock up front, so
/// that what they read stays true until they commit (the other dialects lock the
/// campaign rows instead).
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The migrations for SQLite (`migrations/sqlite`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// [`IssueStore`] on SQLite: WAL journal, a busy timeout, foreign keys on. Times are
/// stored as integer microseconds so SQL comparisons are numeric. `record` and `void`
/// are `BEGIN IMMEDIATE` transactions (one writer at a time); a batch is written with
/// multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        let store = Self { pool };
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
            "UPDATE coupon_coupons SET state = 'redeemed', redeemed_at = ?, order_id = ? \
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
        Ok(explain_refusal(self.coupon_with_min(&r.coupon_id).await?, r))
    }

    /// Every campaign id, oldest first (the embedded server restores open ones at start).
    pub async fn campaign_ids(&self) -> Result<Vec<CampaignId>, BackendError> {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM coupon_campaigns ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| backend_error(B, "campaign_ids", e))?;
        Ok(ids.into_iter().map(CampaignId::from_uuid).collect())
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

/// Reads the campaigns of `ids` (inside a `BEGIN IMMEDIATE` transaction, which holds
/// the database's write lock).
async fn locked_campaigns(
    conn: &mut SqliteConnection,
    ids: &[CampaignId],
    operation: &'static str,
) -> Result<HashMap<CampaignId, LockedCampaign>, BackendError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(CAMPAIGN_SELECT_COUNTED);
    q.push(" WHERE id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id.as_uuid());
    }
    list.push_unseparated(")");
    let rows = q
        .build()
        .fetch_all(conn)
        .await
        .map_err(|e| backend_error(B, operation, e))?;
    LockedCampaign::from_rows(&rows, B, operation, campaign_from_row)
}

/// Which of `ids` the query `select` (ending in `IN (`) finds, in chunks.
async fn present(
    conn: &mut SqliteConnection,
    select: &'static str,
    ids: &[Uuid],
    operation: &'static str,
) -> Result<HashSet<Uuid>, BackendError> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(select);
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
    conn: &mut SqliteConnection,
    seqs: &[(CampaignId, Vec<i64>)],
) -> Result<HashMap<(CampaignId, i64), Uuid>, BackendError> {
    let mut taken = HashMap::new();
    for (campaign_id, numbers) in seqs {
        for chunk in numbers.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Sqlite> =
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

#[async_trait]
impl IssueStore for SqliteStore {
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
        .bind(micros(c.issue_starts_at))
        .bind(micros(c.issue_ends_at))
        .bind(c.valid_until.map(micros))
        .bind(c.valid_days)
        .bind(c.min_order_amount)
        .bind(&c.discount)
        .bind(&c.state)
        .bind(micros(c.created_at))
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
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE coupon_campaigns SET state = ");
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
        let err = |e| backend_error(B, "record", e);
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
        let campaigns = locked_campaigns(&mut tx, &campaign_ids(events), "record").await?;
        let mut plan = BatchPlan::new(events, &campaigns);
        let voided = present(&mut tx, VOIDED_AMONG, &plan.undecided_ids(), "record").await?;
        plan.apply_voids(&voided);
        plan.apply_seqs(&seqs_taken(&mut tx, &plan.undecided_seqs()).await?);
        let to_insert = plan.choose_inserts();
        let mut inserted = HashSet::new();
        for chunk in to_insert.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until, admission_seq) ",
            );
            q.push_values(chunk, |mut row, e| {
                row.push_bind(*e.coupon_id.as_uuid())
                    .push_bind(*e.campaign_id.as_uuid())
                    .push_bind(e.user_id.as_str())
                    .push_bind(e.nth as i32)
                    .push_bind(*e.event_id.as_uuid())
                    .push_bind(micros(e.issued_at))
                    .push_bind(micros(e.valid_until))
                    .push_bind(seq_of(e));
            });
            q.push(" ON CONFLICT DO NOTHING RETURNING id");
            let ids: Vec<Uuid> = q.build_query_scalar().fetch_all(&mut *tx).await.map_err(err)?;
            inserted.extend(ids);
        }
        let stored = present(&mut tx, STORED_AMONG, &plan.ids_to_check(&inserted), "record").await?;
        let settled = plan.settle(&inserted, &stored);
        for chunk in settled.remove.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("DELETE FROM coupon_coupons WHERE id IN (");
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

    async fn void(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<VoidOutcome>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e| backend_error(B, "void", e);
        // The same write lock as record(): a coupon id ends up stored or voided, never both.
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
        let stored = present(&mut tx, STORED_AMONG, &key_ids(keys), "void").await?;
        let (outcomes, to_void) = void_outcomes(keys, &stored);
        let now = micros(Utc::now());
        for chunk in to_void.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO coupon_voids (coupon_id, campaign_id, user_id, nth, voided_at) ");
            q.push_values(chunk, |mut row, k| {
                row.push_bind(*k.coupon_id.as_uuid())
                    .push_bind(*campaign_id.as_uuid())
                    .push_bind(k.user_id.as_str())
                    .push_bind(k.nth as i32)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT DO NOTHING");
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
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT id FROM coupon_coupons WHERE campaign_id = ");
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
