//! The statements whose text is the same in every dialect but for placeholders, written
//! once over sqlx's [`Database`]: [`QueryBuilder`] writes each dialect's placeholders
//! (`$1` on PostgreSQL, `?` elsewhere). What differs between dialects (how a row's times
//! are read, how long an `IN (...)` list may be) is a [`Dialect`] value.
//!
//! The hot statements (`record`'s insert, `redeem`'s update) stay in each dialect's
//! module, written for what that database does best.

use std::collections::{HashMap, HashSet};

use coupon_core::hooks::{Notice, PendingNotices};
use coupon_core::{BackendError, Campaign, CampaignId, CampaignState, Coupon, CouponId, ReservationKey, UserId};
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Row, Type};
use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::common::{
    CampaignColumns, LockedCampaign, allowed_from, backend_error, check_campaign, count, holders_from_rows, key_ids,
    mark_stored,
};

/// A campaign's columns, in the order every dialect selects them.
pub(crate) const CAMPAIGN_COLUMNS: &str = "id, name, total_quantity, per_user_limit, issue_starts_at, \
     issue_ends_at, valid_until, valid_days, min_order_amount, discount, state, created_at";
/// A coupon's columns.
pub(crate) const COUPON_COLUMNS: &str =
    "id, campaign_id, user_id, nth, issued_at, valid_until, state, redeemed_at, order_id";

/// A coupon's columns (prefixed `c.`) with its campaign's `min_order_amount`, up to
/// `WHERE c.id = `; built once.
static COUPON_WITH_MIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns: Vec<String> = COUPON_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect();
    format!(
        "SELECT {}, k.min_order_amount FROM coupon_coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
         WHERE c.id = ",
        columns.join(", ")
    )
});

/// Coupon ids already voided, among a list (`present`).
pub(crate) const VOIDED_AMONG: &str = "SELECT coupon_id FROM coupon_voids WHERE coupon_id IN (";
/// Coupon ids already stored, among a list (`present`).
pub(crate) const STORED_AMONG: &str = "SELECT id FROM coupon_coupons WHERE id IN (";

/// Writes `impl IssueStore for $store` once for every dialect: the statements that read
/// alike go to `$dialect` (a [`Dialect`]), `create_campaign` writes times with `$time`,
/// and what each database does its own way goes to the store's inherent methods
/// `record_batch`, `void_keys` and `redeem_once` (with `own_updates`, also
/// `move_campaign` and `stored_keys_of`).
/// (A macro because `#[async_trait]` must see the whole impl.)
macro_rules! issue_store {
    // `set_campaign_state` and `stored_keys` from the shared statements.
    ($store:ty, $dialect:expr, $time:expr) => {
        issue_store!(@impl $store, $dialect, $time, {
            async fn set_campaign_state(
                &self,
                id: &coupon_core::CampaignId,
                state: coupon_core::CampaignState,
            ) -> Result<Option<coupon_core::Campaign>, coupon_core::BackendError> {
                $dialect.set_campaign_state(&self.pool, id, state).await
            }

            async fn stored_keys(
                &self,
                campaign_id: &coupon_core::CampaignId,
                keys: &[coupon_core::ReservationKey],
            ) -> Result<Vec<bool>, coupon_core::BackendError> {
                $dialect.stored_keys(&self.pool, campaign_id, keys).await
            }
        });
    };
    // ... or from the store's own `move_campaign` and `stored_keys_of`.
    ($store:ty, $dialect:expr, $time:expr, own_updates) => {
        issue_store!(@impl $store, $dialect, $time, {
            async fn set_campaign_state(
                &self,
                id: &coupon_core::CampaignId,
                state: coupon_core::CampaignState,
            ) -> Result<Option<coupon_core::Campaign>, coupon_core::BackendError> {
                self.move_campaign(id, state).await
            }

            async fn stored_keys(
                &self,
                campaign_id: &coupon_core::CampaignId,
                keys: &[coupon_core::ReservationKey],
            ) -> Result<Vec<bool>, coupon_core::BackendError> {
                self.stored_keys_of(campaign_id, keys).await
            }
        });
    };
    (@impl $store:ty, $dialect:expr, $time:expr, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl coupon_core::IssueStore for $store {
            $($own)*

            fn backend(&self) -> &'static str {
                $dialect.backend
            }

            async fn create_campaign(&self, campaign: &coupon_core::Campaign) -> Result<(), coupon_core::BackendError> {
                $dialect.create_campaign(&self.pool, campaign, $time).await
            }

            async fn campaign(
                &self,
                id: &coupon_core::CampaignId,
            ) -> Result<Option<coupon_core::Campaign>, coupon_core::BackendError> {
                $dialect.campaign(&self.pool, id).await
            }

            async fn record(
                &self,
                events: &[coupon_core::IssueEvent],
            ) -> Result<Vec<coupon_core::RecordOutcome>, coupon_core::BackendError> {
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                self.record_batch(events).await
            }

            async fn void(
                &self,
                campaign_id: &coupon_core::CampaignId,
                keys: &[coupon_core::ReservationKey],
            ) -> Result<Vec<coupon_core::VoidOutcome>, coupon_core::BackendError> {
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                self.void_keys(campaign_id, keys).await
            }

            async fn open_campaigns(&self) -> Result<Vec<coupon_core::CampaignId>, coupon_core::BackendError> {
                $dialect.open_campaigns(&self.pool).await
            }

            async fn coupon(
                &self,
                id: &coupon_core::CouponId,
            ) -> Result<Option<coupon_core::Coupon>, coupon_core::BackendError> {
                $dialect.coupon(&self.pool, id).await
            }

            async fn coupons_of_user(
                &self,
                user_id: &coupon_core::UserId,
            ) -> Result<Vec<coupon_core::Coupon>, coupon_core::BackendError> {
                $dialect.coupons_of_user(&self.pool, user_id).await
            }

            async fn redeem(
                &self,
                r: &coupon_core::Redemption,
            ) -> Result<coupon_core::RedeemOutcome, coupon_core::BackendError> {
                $crate::common::redeem_until_decided($dialect.backend, || self.redeem_once(r)).await
            }

            async fn issued_count(
                &self,
                campaign_id: &coupon_core::CampaignId,
            ) -> Result<u64, coupon_core::BackendError> {
                $dialect
                    .count_of_campaign(&self.pool, "coupon_coupons", campaign_id, "issued_count")
                    .await
            }

            async fn holders(
                &self,
                campaign_id: &coupon_core::CampaignId,
            ) -> Result<Vec<(coupon_core::UserId, u32)>, coupon_core::BackendError> {
                $dialect.holders(&self.pool, campaign_id).await
            }

            async fn highest_admission_seq(
                &self,
                campaign_id: &coupon_core::CampaignId,
            ) -> Result<u64, coupon_core::BackendError> {
                $dialect.highest_admission_seq(&self.pool, campaign_id).await
            }

            async fn voided_count(
                &self,
                campaign_id: &coupon_core::CampaignId,
            ) -> Result<u64, coupon_core::BackendError> {
                $dialect
                    .count_of_campaign(&self.pool, "coupon_voids", campaign_id, "voided_count")
                    .await
            }

            async fn pending_notices(
                &self,
                after: Option<coupon_core::CouponId>,
                limit: usize,
            ) -> Result<Vec<coupon_core::PendingNotices>, coupon_core::BackendError> {
                $dialect.pending_notices(&self.pool, after, limit).await
            }

            async fn clear_notices(
                &self,
                notice: coupon_core::Notice,
                ids: &[coupon_core::CouponId],
            ) -> Result<(), coupon_core::BackendError> {
                $dialect.clear_notices(&self.pool, notice, ids).await
            }
        }
    };
}
pub(crate) use issue_store;

/// Appends `values` as bind parameters separated by commas, then `)`: the rest of an
/// `IN (` list.
fn push_list<DB, T>(q: &mut QueryBuilder<DB>, values: impl IntoIterator<Item = T>)
where
    DB: Database,
    T: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut list = q.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
}

/// What the shared statements need to know of a dialect.
pub(crate) struct Dialect<DB: Database> {
    /// The backend's name in errors.
    pub backend: &'static str,
    /// Values per `IN (...)` list and rows per multi-row insert, under the database's
    /// limit on bind parameters.
    pub chunk: usize,
    /// Reads a campaign row (of [`CAMPAIGN_COLUMNS`]).
    pub campaign_from_row: fn(&DB::Row) -> Result<Campaign, BackendError>,
    /// Reads a coupon row (of [`COUPON_COLUMNS`]).
    pub coupon_from_row: fn(&DB::Row) -> Result<Coupon, BackendError>,
}

impl<DB> Dialect<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i16: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (Option<i64>,): FromRow<'r, DB::Row>,
    for<'r> (Uuid,): FromRow<'r, DB::Row>,
    for<'r> (i64, Uuid): FromRow<'r, DB::Row>,
    for<'r> (String, i32): FromRow<'r, DB::Row>,
    &'static str: sqlx::ColumnIndex<DB::Row>,
{
    fn error(&self, operation: &'static str) -> impl Fn(sqlx::Error) -> BackendError + use<DB> {
        let backend = self.backend;
        move |e| backend_error(backend, operation, e)
    }

    /// Stores a new campaign; `time` writes a time as the dialect keeps it.
    pub async fn create_campaign<T>(
        &self,
        pool: &Pool<DB>,
        campaign: &Campaign,
        time: fn(DateTime<Utc>) -> T,
    ) -> Result<(), BackendError>
    where
        T: for<'q> Encode<'q, DB> + Type<DB>,
        Option<T>: for<'q> Encode<'q, DB> + Type<DB>,
    {
        check_campaign(campaign, self.backend)?;
        let c = CampaignColumns::from_campaign(campaign);
        let mut q = QueryBuilder::<DB>::new(format!("INSERT INTO coupon_campaigns ({CAMPAIGN_COLUMNS}) "));
        q.push_values([c], |mut row, c| {
            row.push_bind(c.id)
                .push_bind(c.name)
                .push_bind(c.total_quantity)
                .push_bind(c.per_user_limit)
                .push_bind(time(c.issue_starts_at))
                .push_bind(time(c.issue_ends_at))
                .push_bind(c.valid_until.map(time))
                .push_bind(c.valid_days)
                .push_bind(c.min_order_amount)
                .push_bind(c.discount)
                .push_bind(c.state)
                .push_bind(time(c.created_at));
        });
        q.build().execute(pool).await.map_err(self.error("create_campaign"))?;
        Ok(())
    }

    /// A campaign by id.
    pub async fn campaign(&self, pool: &Pool<DB>, id: &CampaignId) -> Result<Option<Campaign>, BackendError> {
        let select = format!("SELECT {CAMPAIGN_COLUMNS} FROM coupon_campaigns WHERE id = ");
        self.by_id(pool, select, id.as_uuid(), self.campaign_from_row, "campaign")
            .await
    }

    /// The row `select` (ending in `id = `) finds for `id`, read by `read`.
    async fn by_id<T>(
        &self,
        pool: &Pool<DB>,
        select: String,
        id: &Uuid,
        read: fn(&DB::Row) -> Result<T, BackendError>,
        operation: &'static str,
    ) -> Result<Option<T>, BackendError> {
        let mut q = QueryBuilder::<DB>::new(select);
        q.push_bind(*id);
        let row = q.build().fetch_optional(pool).await.map_err(self.error(operation))?;
        row.as_ref().map(read).transpose()
    }

    /// Moves a campaign to `state` where its lifecycle allows, then reads it as it is
    /// (for the dialects without `UPDATE ... RETURNING`).
    pub async fn set_campaign_state(
        &self,
        pool: &Pool<DB>,
        id: &CampaignId,
        state: CampaignState,
    ) -> Result<Option<Campaign>, BackendError> {
        let mut q = QueryBuilder::<DB>::new("UPDATE coupon_campaigns SET state = ");
        q.push_bind(state.as_str())
            .push(" WHERE id = ")
            .push_bind(*id.as_uuid())
            .push(" AND state IN (");
        push_list(&mut q, allowed_from(state).into_iter().map(str::to_owned));
        q.build()
            .execute(pool)
            .await
            .map_err(self.error("set_campaign_state"))?;
        self.campaign(pool, id).await
    }

    /// The rows of `ids` that exist, with their stored counts, `suffix` appended (the
    /// row lock, where the dialect takes one).
    pub async fn lock_campaigns(
        &self,
        conn: &mut DB::Connection,
        ids: &[CampaignId],
        suffix: &str,
        operation: &'static str,
    ) -> Result<HashMap<CampaignId, LockedCampaign>, BackendError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut q = QueryBuilder::<DB>::new(format!(
            "SELECT {CAMPAIGN_COLUMNS}, issued_count FROM coupon_campaigns WHERE id IN ("
        ));
        push_list(&mut q, ids.iter().map(|id| *id.as_uuid()));
        q.push(suffix);
        let rows = q.build().fetch_all(conn).await.map_err(self.error(operation))?;
        LockedCampaign::from_rows(&rows, self.backend, operation, self.campaign_from_row)
    }

    /// Which of `ids` the query `select` (ending in `IN (`) finds, in chunks.
    pub async fn present(
        &self,
        conn: &mut DB::Connection,
        select: &'static str,
        ids: &[Uuid],
        operation: &'static str,
    ) -> Result<HashSet<Uuid>, BackendError> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(self.chunk) {
            let mut q = QueryBuilder::<DB>::new(select);
            push_list(&mut q, chunk.iter().copied());
            let rows: Vec<Uuid> = q
                .build_query_scalar()
                .fetch_all(&mut *conn)
                .await
                .map_err(self.error(operation))?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// The stored coupons of each campaign that carry one of the admission numbers.
    pub async fn seqs_taken(
        &self,
        conn: &mut DB::Connection,
        seqs: &[(CampaignId, Vec<i64>)],
    ) -> Result<HashMap<(CampaignId, i64), Uuid>, BackendError> {
        let mut taken = HashMap::new();
        for (campaign_id, numbers) in seqs {
            for chunk in numbers.chunks(self.chunk) {
                let mut q =
                    QueryBuilder::<DB>::new("SELECT admission_seq, id FROM coupon_coupons WHERE campaign_id = ");
                q.push_bind(*campaign_id.as_uuid()).push(" AND admission_seq IN (");
                push_list(&mut q, chunk.iter().copied());
                let rows: Vec<(i64, Uuid)> = q
                    .build_query_as()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(self.error("record"))?;
                taken.extend(rows.into_iter().map(|(seq, id)| ((*campaign_id, seq), id)));
            }
        }
        Ok(taken)
    }

    /// Deletes the coupons `ids` (rows a batch wrote beyond the stock) and adds each
    /// campaign's newly stored coupons to its `issued_count`: the end of a `record`.
    pub async fn settle_counts(
        &self,
        conn: &mut DB::Connection,
        remove: &[Uuid],
        added: &[(CampaignId, i64)],
    ) -> Result<(), BackendError> {
        let err = self.error("record");
        for chunk in remove.chunks(self.chunk) {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM coupon_coupons WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.build().execute(&mut *conn).await.map_err(&err)?;
        }
        for (campaign_id, n) in added {
            let mut q = QueryBuilder::<DB>::new("UPDATE coupon_campaigns SET issued_count = issued_count + ");
            q.push_bind(*n).push(" WHERE id = ").push_bind(*campaign_id.as_uuid());
            q.build().execute(&mut *conn).await.map_err(&err)?;
        }
        Ok(())
    }

    /// Writes the voids of `keys` (distinct coupon ids) at `now`; `on_conflict` is the
    /// dialect's clause that makes a second void of the same id a no-op.
    pub async fn insert_voids<T>(
        &self,
        conn: &mut DB::Connection,
        campaign_id: &CampaignId,
        keys: &[&ReservationKey],
        now: T,
        on_conflict: &str,
    ) -> Result<(), BackendError>
    where
        T: Copy + for<'q> Encode<'q, DB> + Type<DB>,
    {
        for chunk in keys.chunks(self.chunk) {
            let mut q =
                QueryBuilder::<DB>::new("INSERT INTO coupon_voids (coupon_id, campaign_id, user_id, nth, voided_at) ");
            q.push_values(chunk, |mut row, k| {
                row.push_bind(*k.coupon_id.as_uuid())
                    .push_bind(*campaign_id.as_uuid())
                    .push_bind(k.user_id.as_str())
                    .push_bind(k.nth as i32)
                    .push_bind(now);
            });
            q.push(on_conflict);
            q.build().execute(&mut *conn).await.map_err(self.error("void"))?;
        }
        Ok(())
    }

    /// A coupon by id.
    pub async fn coupon(&self, pool: &Pool<DB>, id: &CouponId) -> Result<Option<Coupon>, BackendError> {
        let select = format!("SELECT {COUPON_COLUMNS} FROM coupon_coupons WHERE id = ");
        self.by_id(pool, select, id.as_uuid(), self.coupon_from_row, "coupon")
            .await
    }

    /// A coupon with its campaign's minimum order amount (to explain a refused redemption).
    pub async fn coupon_with_min(
        &self,
        pool: &Pool<DB>,
        id: &CouponId,
    ) -> Result<Option<(Coupon, Option<i64>)>, BackendError> {
        let mut q = QueryBuilder::<DB>::new(COUPON_WITH_MIN.as_str());
        q.push_bind(*id.as_uuid());
        let err = self.error("redeem");
        let Some(row) = q.build().fetch_optional(pool).await.map_err(&err)? else {
            return Ok(None);
        };
        let min: Option<i64> = row.try_get("min_order_amount").map_err(&err)?;
        Ok(Some(((self.coupon_from_row)(&row)?, min)))
    }

    /// A user's coupons, newest first.
    pub async fn coupons_of_user(&self, pool: &Pool<DB>, user_id: &UserId) -> Result<Vec<Coupon>, BackendError> {
        let mut q = QueryBuilder::<DB>::new(format!("SELECT {COUPON_COLUMNS} FROM coupon_coupons WHERE user_id = "));
        q.push_bind(user_id.as_str()).push(" ORDER BY issued_at DESC, id DESC");
        let rows = q.build().fetch_all(pool).await.map_err(self.error("coupons_of_user"))?;
        rows.iter().map(self.coupon_from_row).collect()
    }

    /// The open campaigns, oldest first.
    pub async fn open_campaigns(&self, pool: &Pool<DB>) -> Result<Vec<CampaignId>, BackendError> {
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM coupon_campaigns WHERE state = 'open' ORDER BY created_at, id")
                .fetch_all(pool)
                .await
                .map_err(self.error("open_campaigns"))?;
        Ok(ids.into_iter().map(CampaignId::from_uuid).collect())
    }

    /// `SELECT {what} FROM {table} WHERE campaign_id = <campaign>`.
    fn of_campaign(what: &str, table: &str, campaign_id: &CampaignId) -> QueryBuilder<DB> {
        let mut q = QueryBuilder::<DB>::new(format!("SELECT {what} FROM {table} WHERE campaign_id = "));
        q.push_bind(*campaign_id.as_uuid());
        q
    }

    /// How many rows of `table` (coupons or voids) a campaign has.
    pub async fn count_of_campaign(
        &self,
        pool: &Pool<DB>,
        table: &str,
        campaign_id: &CampaignId,
        operation: &'static str,
    ) -> Result<u64, BackendError> {
        let mut q = Self::of_campaign("COUNT(*)", table, campaign_id);
        let n: i64 = q
            .build_query_scalar()
            .fetch_one(pool)
            .await
            .map_err(self.error(operation))?;
        count(self.backend, operation, n)
    }

    /// Who holds a campaign's coupons.
    pub async fn holders(&self, pool: &Pool<DB>, campaign_id: &CampaignId) -> Result<Vec<(UserId, u32)>, BackendError> {
        let mut q = Self::of_campaign("user_id, nth", "coupon_coupons", campaign_id);
        let rows: Vec<(String, i32)> = q
            .build_query_as()
            .fetch_all(pool)
            .await
            .map_err(self.error("holders"))?;
        holders_from_rows(self.backend, rows)
    }

    /// The highest admission number among a campaign's stored coupons (0 for none).
    pub async fn highest_admission_seq(&self, pool: &Pool<DB>, campaign_id: &CampaignId) -> Result<u64, BackendError> {
        let mut q = Self::of_campaign("MAX(admission_seq)", "coupon_coupons", campaign_id);
        let highest: Option<i64> = q
            .build_query_scalar()
            .fetch_one(pool)
            .await
            .map_err(self.error("highest_admission_seq"))?;
        Ok(highest.and_then(|h| u64::try_from(h).ok()).unwrap_or(0))
    }

    /// For each key, whether its coupon is stored for the campaign (`IN` lists in chunks).
    pub async fn stored_keys(
        &self,
        pool: &Pool<DB>,
        campaign_id: &CampaignId,
        keys: &[ReservationKey],
    ) -> Result<Vec<bool>, BackendError> {
        let mut stored = HashSet::new();
        for chunk in key_ids(keys).chunks(self.chunk) {
            let mut q = Self::of_campaign("id", "coupon_coupons", campaign_id);
            q.push(" AND id IN (");
            push_list(&mut q, chunk.iter().copied());
            let ids: Vec<Uuid> = q
                .build_query_scalar()
                .fetch_all(pool)
                .await
                .map_err(self.error("stored_keys"))?;
            stored.extend(ids);
        }
        Ok(mark_stored(keys, &stored))
    }

    /// Up to `limit` coupons with pending notices, in id order after `after`.
    pub async fn pending_notices(
        &self,
        pool: &Pool<DB>,
        after: Option<CouponId>,
        limit: usize,
    ) -> Result<Vec<PendingNotices>, BackendError> {
        let mut q = QueryBuilder::<DB>::new(format!(
            "SELECT {COUPON_COLUMNS}, pending_notice FROM coupon_coupons WHERE pending_notice IS NOT NULL"
        ));
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(*after.as_uuid());
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let err = self.error("pending_notices");
        let rows = q.build().fetch_all(pool).await.map_err(&err)?;
        rows.iter()
            .map(|row| {
                let bits: Option<i16> = row.try_get("pending_notice").map_err(&err)?;
                let coupon = (self.coupon_from_row)(row)?;
                Ok(PendingNotices::new(coupon, Notice::from_bits(bits.unwrap_or(0))))
            })
            .collect()
    }

    /// Clears `notice` of the coupons `ids`, keeping the other bit; NULL once none is left.
    pub async fn clear_notices(&self, pool: &Pool<DB>, notice: Notice, ids: &[CouponId]) -> Result<(), BackendError> {
        // `bits & keep` with the literal mask: no dialect differs on it.
        let keep = 3 ^ notice.bit();
        for chunk in ids.chunks(self.chunk) {
            let mut q = QueryBuilder::<DB>::new(format!(
                "UPDATE coupon_coupons SET pending_notice = NULLIF(pending_notice & {keep}, 0) WHERE id IN ("
            ));
            push_list(&mut q, chunk.iter().map(|id| *id.as_uuid()));
            q.build().execute(pool).await.map_err(self.error("clear_notices"))?;
        }
        Ok(())
    }
}
