//! [`PgStore`]: the store on PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::Utc;
use coupon_core::{
    BackendError, Campaign, CampaignId, CampaignState, Coupon, IssueEvent, RecordOutcome, RedeemOutcome, Redemption,
    ReservationKey, VoidOutcome,
};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{FromRow, Postgres};
use uuid::Uuid;

use crate::common::{
    BatchPlan, CampaignColumns, CouponColumns, LockedCampaign, amount, backend_error, campaign_ids, corrupt,
    explain_refusal, key_ids, seq_of, void_outcomes,
};
use crate::config::{StoreConfig, stored_notice};
use crate::postgres_copy::{COPY_COUPONS, CouponRows};
use crate::statements::{CAMPAIGN_COLUMNS, COUPON_COLUMNS, Dialect, issue_store};

const B: &str = "postgres";
/// The shared statements on PostgreSQL (its own `= ANY($1)` statements need no chunks).
const POSTGRES: Dialect<Postgres> = Dialect {
    backend: B,
    chunk: 5_000,
    campaign_from_row,
    coupon_from_row,
};

/// The migrations for PostgreSQL (`migrations/postgres`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// [`coupon_core::IssueStore`] on PostgreSQL. A batch is one transaction that locks its campaigns'
/// rows (`FOR UPDATE`, in id order), reads the voids among its coupon ids, writes the
/// coupons in one statement whatever the batch size, and adds them to the campaigns'
/// `issued_count`. The statement is a binary `COPY` when the batch is fresh events (the
/// unique indexes confirm it), else `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO
/// NOTHING RETURNING id`.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// What `record` writes to `pending_notice`: `Some(1)` ("stored" pending) with
    /// [`StoreConfig::stored_notices`], else nothing pending.
    stored_notice: Option<i16>,
}

impl PgStore {
    /// Connects as `config` says, running the migrations if it asks.
    pub async fn connect(config: &StoreConfig) -> Result<Self, BackendError> {
        crate::config::refuse_invalid(config, B)?;
        let (statement_ms, lock_ms) = (
            config.statement_timeout.as_millis().to_string(),
            config.lock_timeout.as_millis().to_string(),
        );
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _| {
                let (statement_ms, lock_ms) = (statement_ms.clone(), lock_ms.clone());
                Box::pin(async move {
                    sqlx::query(
                        "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false)",
                    )
                    .bind(statement_ms)
                    .bind(lock_ms)
                    .execute(conn)
                    .await
                    .map(|_| ())
                })
            })
            .connect(&config.url)
            .await
            .map_err(|e| crate::config::connect_error(B, e))?;
        let store = Self::from_pool(pool).with_stored_notices(config.stored_notices);
        if config.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            stored_notice: None,
        }
    }

    /// Raises a "stored" notice for each coupon `record` stores
    /// ([`StoreConfig::stored_notices`]; off for a store made with [`PgStore::from_pool`]).
    pub fn with_stored_notices(mut self, on: bool) -> Self {
        self.stored_notice = stored_notice(&StoreConfig::default().with_stored_notices(on));
        self
    }

    /// One redemption attempt; `None` when undecided (see [`redeem_until_decided`]).
    async fn redeem_once(&self, r: &Redemption) -> Result<Option<RedeemOutcome>, BackendError> {
        let updated = sqlx::query(REDEEM.as_str())
            .bind(r.coupon_id.as_uuid())
            .bind(r.user_id.as_str())
            .bind(r.at)
            .bind(&r.order_id)
            .bind(amount(r.order_amount))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend_error(B, "redeem", e))?;
        if let Some(row) = updated {
            return Ok(Some(RedeemOutcome::Redeemed {
                coupon: coupon_from_row(&row)?,
            }));
        }
        let found = POSTGRES.coupon_with_min(&self.pool, &r.coupon_id).await?;
        Ok(explain_refusal(found, r))
    }

    /// Runs the migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), BackendError> {
        // A session of its own, outside the pool whose sessions carry the statement
        // timeout: a migration may take longer.
        let once = PgPoolOptions::new()
            .max_connections(1)
            .connect_with((*self.pool.connect_options()).clone())
            .await
            .map_err(|e| backend_error(B, "migrate", e))?;
        let ran = MIGRATOR
            .run(&once)
            .await
            .map_err(|e| backend_error(B, "migrate", sqlx::Error::Migrate(Box::new(e))));
        once.close().await;
        ran
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Locks the rows of `ids` (those that exist) in id order, so that concurrent
/// batches over several campaigns cannot deadlock, and reads them.
async fn lock_campaigns(
    conn: &mut PgConnection,
    ids: &[CampaignId],
    operation: &'static str,
) -> Result<HashMap<CampaignId, LockedCampaign>, BackendError> {
    let uuids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
    let rows = sqlx::query(LOCK_CAMPAIGNS.as_str())
        .bind(uuids)
        .fetch_all(conn)
        .await
        .map_err(|e| backend_error(B, operation, e))?;
    LockedCampaign::from_rows(&rows, B, operation, campaign_from_row)
}

/// Which of `ids` the query `sql` (one `uuid[]` parameter) finds.
async fn present(
    conn: &mut PgConnection,
    sql: &'static str,
    ids: &[Uuid],
    operation: &'static str,
) -> Result<HashSet<Uuid>, BackendError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<Uuid> = sqlx::query_scalar(sql)
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(|e| backend_error(B, operation, e))?;
    Ok(found.into_iter().collect())
}

/// The stored coupons of each campaign that carry one of the admission numbers.
async fn seqs_taken(
    conn: &mut PgConnection,
    seqs: &[(CampaignId, Vec<i64>)],
) -> Result<HashMap<(CampaignId, i64), Uuid>, BackendError> {
    let mut taken = HashMap::new();
    for (campaign_id, numbers) in seqs {
        let rows: Vec<(i64, Uuid)> = sqlx::query_as(
            "SELECT admission_seq, id FROM coupon_coupons WHERE campaign_id = $1 AND admission_seq = ANY($2)",
        )
        .bind(campaign_id.as_uuid())
        .bind(numbers)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| backend_error(B, "record", e))?;
        taken.extend(rows.into_iter().map(|(seq, id)| ((*campaign_id, seq), id)));
    }
    Ok(taken)
}

/// Adds each campaign's newly stored coupons to its `issued_count`.
async fn add_issued(conn: &mut PgConnection, added: &[(CampaignId, i64)]) -> Result<(), BackendError> {
    if added.is_empty() {
        return Ok(());
    }
    let (ids, added): (Vec<Uuid>, Vec<i64>) = added.iter().map(|(id, n)| (*id.as_uuid(), *n)).unzip();
    sqlx::query(
        "UPDATE coupon_campaigns k SET issued_count = k.issued_count + d.n \
         FROM UNNEST($1::uuid[], $2::int8[]) AS d(id, n) WHERE k.id = d.id",
    )
    .bind(ids)
    .bind(added)
    .execute(conn)
    .await
    .map_err(|e| backend_error(B, "record", e))?;
    Ok(())
}

const VOIDED_AMONG: &str = "SELECT coupon_id FROM coupon_voids WHERE coupon_id = ANY($1)";
const STORED_AMONG: &str = "SELECT id FROM coupon_coupons WHERE id = ANY($1)";

// Statements that splice the column lists, built once.
static LOCK_CAMPAIGNS: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {CAMPAIGN_COLUMNS}, issued_count FROM coupon_campaigns WHERE id = ANY($1) ORDER BY id FOR UPDATE")
});
static SET_STATE: LazyLock<String> = LazyLock::new(|| {
    format!("UPDATE coupon_campaigns SET state = $2 WHERE id = $1 AND state = ANY($3) RETURNING {CAMPAIGN_COLUMNS}")
});
static REDEEM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE coupon_coupons SET state = 'redeemed', redeemed_at = $3, order_id = $4, \
         pending_notice = COALESCE(pending_notice, 0) | 2 \
         WHERE id = $1 AND user_id = $2 AND state = 'issued' AND issued_at <= $3 AND valid_until > $3 \
           AND $5 >= COALESCE((SELECT min_order_amount FROM coupon_campaigns k WHERE k.id = coupon_coupons.campaign_id), 0) \
         RETURNING {COUPON_COLUMNS}"
    )
});

fn campaign_from_row(row: &PgRow) -> Result<Campaign, BackendError> {
    CampaignColumns::from_row(row)
        .map_err(|e| backend_error(B, "read campaign", e))?
        .into_campaign(B)
}

fn coupon_from_row(row: &PgRow) -> Result<Coupon, BackendError> {
    CouponColumns::from_row(row)
        .map_err(|e| backend_error(B, "read coupon", e))?
        .into_coupon(B)
}

issue_store!(PgStore, POSTGRES, std::convert::identity, own_updates);

/// What this dialect does its own way (see [`issue_store`]).
impl PgStore {
    /// [`coupon_core::IssueStore::set_campaign_state`] in one `UPDATE ... RETURNING`.
    async fn move_campaign(&self, id: &CampaignId, state: CampaignState) -> Result<Option<Campaign>, BackendError> {
        let allowed_from = crate::common::allowed_from(state);
        let row = sqlx::query(SET_STATE.as_str())
            .bind(id.as_uuid())
            .bind(state.as_str())
            .bind(allowed_from)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend_error(B, "set_campaign_state", e))?;
        match row {
            Some(row) => campaign_from_row(&row).map(Some),
            // Not changed: missing, or the lifecycle refused; report it as it is.
            None => POSTGRES.campaign(&self.pool, id).await,
        }
    }

    /// [`coupon_core::IssueStore::record`] of a batch that is not empty: by `COPY` when it can,
    /// else by the insert that settles every case.
    ///
    /// The common batch, fresh events, goes as one binary `COPY` with no conflict handling:
    /// `ON CONFLICT`'s speculative insertion against three unique indexes made the insert
    /// take nearly twice as long as `COPY` (BENCHMARKS.md, "The recorder against `COPY`").
    /// Under the campaigns' row locks, once the rejected and voided events are refused, if
    /// every other event would be stored unless the store already holds its coupon id,
    /// slot or admission number, they are all copied, and the unique indexes check that
    /// assumption: one conflict fails the `COPY`, the transaction rolls back, and the batch
    /// starts again by insert. A batch whose outcomes depend on the store anyway (a coupon
    /// id, slot or number repeated in it, or more events than stock left) goes by insert
    /// in the same transaction.
    async fn record_batch(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
        let err = |e| backend_error(B, "record", e);
        let (mut tx, plan) = self.open_batch(events).await?;
        let Some(settled) = plan.clone().settle_if_nothing_stored() else {
            return self.record_by_insert(tx, plan).await;
        };
        if !self.copy_stored(&mut tx, events, &settled.outcomes).await? {
            tx.rollback().await.map_err(err)?;
            let (tx, plan) = self.open_batch(events).await?;
            return self.record_by_insert(tx, plan).await;
        }
        add_issued(&mut tx, &settled.added).await?;
        tx.commit().await.map_err(err)?;
        Ok(settled.outcomes)
    }

    /// Begins a `record` transaction: locks the batch's campaigns and fences its voided events.
    async fn open_batch<'e>(
        &self,
        events: &'e [IssueEvent],
    ) -> Result<(sqlx::Transaction<'static, Postgres>, BatchPlan<'e>), BackendError> {
        let mut tx = self.pool.begin().await.map_err(|e| backend_error(B, "record", e))?;
        let campaigns = lock_campaigns(&mut tx, &campaign_ids(events), "record").await?;
        let mut plan = BatchPlan::new(events, &campaigns);
        let voided = present(&mut tx, VOIDED_AMONG, &plan.undecided_ids(), "record").await?;
        plan.apply_voids(&voided);
        Ok((tx, plan))
    }

    /// Copies the events whose outcome is `Stored`, as one binary `COPY`; `false` if one of
    /// them met a stored coupon (a unique violation, which aborts the transaction).
    async fn copy_stored(
        &self,
        conn: &mut PgConnection,
        events: &[IssueEvent],
        outcomes: &[RecordOutcome],
    ) -> Result<bool, BackendError> {
        let err = |e| backend_error(B, "record", e);
        let mut rows = CouponRows::with_capacity(events.len());
        let mut n = 0u64;
        for (e, outcome) in events.iter().zip(outcomes) {
            if *outcome == RecordOutcome::Stored {
                rows.push(e, self.stored_notice);
                n += 1;
            }
        }
        if n == 0 {
            return Ok(true);
        }
        let mut copy = conn.copy_in_raw(COPY_COUPONS).await.map_err(err)?;
        copy.send(rows.finish()).await.map_err(err)?;
        match copy.finish().await {
            Ok(copied) if copied == n => Ok(true),
            Ok(copied) => Err(corrupt(B, "record", &format!("COPY wrote {copied} coupons of {n}"))),
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                tracing::debug!(error = %e, "a coupon of the batch is stored already; recording it by insert");
                Ok(false)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// A batch of any kind, in the transaction [`PgStore::open_batch`] began: every event's
    /// outcome settled by one `INSERT ... ON CONFLICT DO NOTHING RETURNING id` and the
    /// lookups around it (see [`BatchPlan`]).
    async fn record_by_insert(
        &self,
        mut tx: sqlx::Transaction<'static, Postgres>,
        mut plan: BatchPlan<'_>,
    ) -> Result<Vec<RecordOutcome>, BackendError> {
        let err = |e| backend_error(B, "record", e);
        plan.apply_seqs(&seqs_taken(&mut tx, &plan.undecided_seqs()).await?);
        let to_insert = plan.choose_inserts();
        let mut inserted = HashSet::new();
        if !to_insert.is_empty() {
            let n = to_insert.len();
            let mut seqs: Vec<Option<i64>> = Vec::with_capacity(n);
            let (mut ids, mut campaign_ids, mut users, mut nths, mut event_ids, mut issued, mut valid) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for e in &to_insert {
                ids.push(*e.coupon_id.as_uuid());
                campaign_ids.push(*e.campaign_id.as_uuid());
                users.push(e.user_id.as_str());
                nths.push(e.nth as i32);
                event_ids.push(*e.event_id.as_uuid());
                issued.push(e.issued_at);
                valid.push(e.valid_until);
                seqs.push(seq_of(e));
            }
            let rows: Vec<Uuid> = sqlx::query_scalar(
                "INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until, admission_seq, pending_notice) \
                 SELECT u.*, $9::int2 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::uuid[], $6::timestamptz[], $7::timestamptz[], $8::int8[]) AS u \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(ids)
            .bind(campaign_ids)
            .bind(users)
            .bind(nths)
            .bind(event_ids)
            .bind(issued)
            .bind(valid)
            .bind(seqs)
            .bind(self.stored_notice)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            inserted.extend(rows);
        }
        let stored = present(&mut tx, STORED_AMONG, &plan.ids_to_check(&inserted), "record").await?;
        let settled = plan.settle(&inserted, &stored);
        if !settled.remove.is_empty() {
            sqlx::query("DELETE FROM coupon_coupons WHERE id = ANY($1)")
                .bind(&settled.remove)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        add_issued(&mut tx, &settled.added).await?;
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
        let mut tx = self.pool.begin().await.map_err(err)?;
        // The same lock as record(): a coupon id ends up stored or voided, never both.
        lock_campaigns(&mut tx, std::slice::from_ref(campaign_id), "void").await?;
        let stored = present(&mut tx, STORED_AMONG, &key_ids(keys), "void").await?;
        let (outcomes, to_void) = void_outcomes(keys, &stored);
        if !to_void.is_empty() {
            let ids: Vec<Uuid> = to_void.iter().map(|k| *k.coupon_id.as_uuid()).collect();
            let users: Vec<&str> = to_void.iter().map(|k| k.user_id.as_str()).collect();
            let nths: Vec<i32> = to_void.iter().map(|k| k.nth as i32).collect();
            sqlx::query(
                "INSERT INTO coupon_voids (coupon_id, campaign_id, user_id, nth, voided_at) \
                 SELECT v.id, $1, v.user_id, v.nth, $5 FROM UNNEST($2::uuid[], $3::text[], $4::int4[]) AS v(id, user_id, nth) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(campaign_id.as_uuid())
            .bind(ids)
            .bind(users)
            .bind(nths)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(outcomes)
    }

    /// [`coupon_core::IssueStore::stored_keys`] with one `= ANY($2)` (no chunks, one prepared statement).
    async fn stored_keys_of(
        &self,
        campaign_id: &CampaignId,
        keys: &[ReservationKey],
    ) -> Result<Vec<bool>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM coupon_coupons WHERE campaign_id = $1 AND id = ANY($2)")
                .bind(campaign_id.as_uuid())
                .bind(key_ids(keys))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| backend_error(B, "stored_keys", e))?;
        Ok(crate::common::mark_stored(keys, &ids.into_iter().collect()))
    }
}
