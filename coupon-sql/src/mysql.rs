//! [`MySqlStore`]: the store on MySQL 8 and MariaDB 10.5+.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use coupon_core::{
    BackendError, Campaign, CampaignId, CampaignState, Coupon, CouponId, IssueEvent, IssueStore, RecordOutcome,
    RedeemOutcome, Redemption, ReservationKey, UserId,
};
use sqlx::mysql::{MySql, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::common::{
    CampaignColumns, CouponColumns, SettledCampaigns, amount, backend_error, campaign_ids, check_campaign,
    explain_refusal, plan_batch,
};
use crate::config::{StoreConfig, connect_error};

const B: &str = "mysql";
const CAMPAIGN_SELECT: &str = "SELECT id, name, total_quantity, per_user_limit, issue_starts_at, issue_ends_at, \
     valid_until, valid_days, min_order_amount, discount, state, created_at FROM coupon_campaigns";
const COUPON_COLUMNS: &str = "id, campaign_id, user_id, nth, issued_at, valid_until, state, redeemed_at, order_id";
/// Rows per INSERT statement (8 parameters each, under the 65,535 limit).
const INSERT_CHUNK: usize = 5_000;

/// The migrations for MySQL and MariaDB (`migrations/mysql`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

/// How a batch learns which of its rows were new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewRows {
    /// MariaDB: `INSERT IGNORE ... RETURNING id` returns only the inserted rows (one round trip).
    Returning,
    /// MySQL (no `RETURNING`): rows carry a per-call token, read back after the insert.
    Token,
}

/// [`IssueStore`] on MySQL or MariaDB. Batches are one multi-row `INSERT IGNORE`; on
/// MariaDB with `RETURNING`, on MySQL followed by one `SELECT` of the call's token.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    campaigns: SettledCampaigns,
    new_rows: NewRows,
}

impl MySqlStore {
    /// Connects as `config` says, running the migrations if it asks.
    pub async fn connect(config: &StoreConfig) -> Result<Self, BackendError> {
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
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
        let store = Self {
            pool,
            campaigns: SettledCampaigns::default(),
            new_rows,
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

    /// Runs the migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), BackendError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| backend_error(B, "migrate", sqlx::Error::Migrate(Box::new(e))))
    }

    /// The pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    async fn load_campaigns(&self, ids: &[CampaignId]) -> Result<HashMap<CampaignId, Campaign>, BackendError> {
        let (mut found, missing) = self.campaigns.split(ids);
        if !missing.is_empty() {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new(CAMPAIGN_SELECT);
            q.push(" WHERE id IN (");
            let mut list = q.separated(", ");
            for id in &missing {
                list.push_bind(*id.as_uuid());
            }
            list.push_unseparated(")");
            let rows = q
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(|e| backend_error(B, "record", e))?;
            let loaded = rows.iter().map(campaign_from_row).collect::<Result<Vec<_>, _>>()?;
            self.campaigns.remember(loaded.iter().cloned());
            found.extend(loaded.into_iter().map(|c| (c.id, c)));
        }
        Ok(found)
    }

    async fn insert(&self, chunk: &[(usize, &IssueEvent)]) -> Result<Vec<Uuid>, BackendError> {
        let token = Uuid::new_v4();
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT IGNORE INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until, record_token) ",
        );
        q.push_values(chunk, |mut row, (_, e)| {
            row.push_bind(*e.coupon_id.as_uuid())
                .push_bind(*e.campaign_id.as_uuid())
                .push_bind(e.user_id.as_str())
                .push_bind(e.nth as i32)
                .push_bind(*e.event_id.as_uuid())
                .push_bind(e.issued_at)
                .push_bind(e.valid_until)
                .push_bind(token);
        });
        match self.new_rows {
            NewRows::Returning => {
                q.push(" RETURNING id");
                q.build_query_scalar()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| backend_error(B, "record", e))
            }
            NewRows::Token => {
                q.build()
                    .execute(&self.pool)
                    .await
                    .map_err(|e| backend_error(B, "record", e))?;
                sqlx::query_scalar("SELECT id FROM coupon_coupons WHERE record_token = ?")
                    .bind(token)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| backend_error(B, "record", e))
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

fn campaign_from_row(row: &MySqlRow) -> Result<Campaign, BackendError> {
    let get = || -> Result<CampaignColumns, sqlx::Error> {
        Ok(CampaignColumns {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            total_quantity: row.try_get("total_quantity")?,
            per_user_limit: row.try_get("per_user_limit")?,
            issue_starts_at: row.try_get("issue_starts_at")?,
            issue_ends_at: row.try_get("issue_ends_at")?,
            valid_until: row.try_get("valid_until")?,
            valid_days: row.try_get("valid_days")?,
            min_order_amount: row.try_get("min_order_amount")?,
            discount: row.try_get("discount")?,
            state: row.try_get("state")?,
            created_at: row.try_get("created_at")?,
        })
    };
    get()
        .map_err(|e| backend_error(B, "read campaign", e))?
        .into_campaign(B)
}

fn coupon_from_row(row: &MySqlRow) -> Result<Coupon, BackendError> {
    let get = || -> Result<CouponColumns, sqlx::Error> {
        Ok(CouponColumns {
            id: row.try_get("id")?,
            campaign_id: row.try_get("campaign_id")?,
            user_id: row.try_get("user_id")?,
            nth: row.try_get("nth")?,
            issued_at: row.try_get("issued_at")?,
            valid_until: row.try_get("valid_until")?,
            state: row.try_get("state")?,
            redeemed_at: row.try_get("redeemed_at")?,
            order_id: row.try_get("order_id")?,
        })
    };
    get().map_err(|e| backend_error(B, "read coupon", e))?.into_coupon(B)
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
        let campaigns = self.load_campaigns(&campaign_ids(events)).await?;
        let plan = plan_batch(events, &campaigns);
        let mut inserted = HashSet::new();
        for chunk in plan.to_insert.chunks(INSERT_CHUNK) {
            inserted.extend(self.insert(chunk).await?);
        }
        Ok(plan.finish(&inserted))
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
            return Ok(RedeemOutcome::Redeemed { coupon });
        }
        Ok(explain_refusal(found, r))
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
        Ok(n as u64)
    }

    async fn holders(&self, campaign_id: &CampaignId) -> Result<Vec<(UserId, u32)>, BackendError> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT user_id, MAX(nth) FROM coupon_coupons WHERE campaign_id = ? GROUP BY user_id ORDER BY user_id",
        )
        .bind(campaign_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| backend_error(B, "holders", e))?;
        crate::common::holders_from_rows(B, rows)
    }

    async fn stored_keys(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<Vec<bool>, BackendError> {
        let mut rows: Vec<(String, i32)> = Vec::new();
        for chunk in keys.chunks(1_000) {
            let mut q: QueryBuilder<MySql> =
                QueryBuilder::new("SELECT user_id, nth FROM coupon_coupons WHERE campaign_id = ");
            q.push_bind(*campaign_id.as_uuid()).push(" AND (user_id, nth) IN (");
            let mut list = q.separated(", ");
            for k in chunk {
                list.push("(")
                    .push_bind_unseparated(k.user_id.as_str())
                    .push_unseparated(", ");
                list.push_bind_unseparated(k.nth as i32).push_unseparated(")");
            }
            list.push_unseparated(")");
            rows.extend(
                q.build_query_as::<(String, i32)>()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| backend_error(B, "stored_keys", e))?,
            );
        }
        Ok(crate::common::mark_stored(keys, rows))
    }
}
