//! What every dialect shares: rows <-> domain, validation of events, the outcomes of a
//! batch and of a void, why a redemption was refused, and how sqlx errors become
//! [`BackendError`]s.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use coupon_core::{
    BackendError, Campaign, CampaignId, CampaignState, Component, Coupon, CouponId, CouponState, ErrorKind, Fence,
    IssueEvent, RecordOutcome, RedeemOutcome, Redemption, RejectReason, ReservationKey, UserId, Validity, VoidOutcome,
};
use uuid::Uuid;

/// A campaign's columns, dialect-neutral (read with `sqlx::FromRow` where the database
/// has the column types: PostgreSQL and MySQL; SQLite keeps times as integers).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CampaignColumns {
    pub id: Uuid,
    pub name: String,
    pub total_quantity: i64,
    pub per_user_limit: i32,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    pub valid_days: Option<i32>,
    pub min_order_amount: Option<i64>,
    pub discount: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
}

impl CampaignColumns {
    pub fn from_campaign(c: &Campaign) -> Self {
        let (valid_until, valid_days) = match c.validity {
            Validity::Until(t) => (Some(t), None),
            Validity::DaysAfterIssue(d) => (None, Some(d as i32)),
        };
        Self {
            id: *c.id.as_uuid(),
            name: c.name.clone(),
            total_quantity: c.total_quantity as i64,
            per_user_limit: c.per_user_limit as i32,
            issue_starts_at: c.issue_starts_at,
            issue_ends_at: c.issue_ends_at,
            valid_until,
            valid_days,
            min_order_amount: c.conditions.min_order_amount.map(|a| a as i64),
            discount: c.discount.clone(),
            state: c.state.as_str().to_owned(),
            created_at: c.created_at,
        }
    }

    pub fn into_campaign(self, backend: &'static str) -> Result<Campaign, BackendError> {
        let corrupt = |what: &str| corrupt(backend, "read campaign", what);
        let validity = match (self.valid_until, self.valid_days) {
            (Some(t), None) => Validity::Until(t),
            (None, Some(d)) => Validity::DaysAfterIssue(u32::try_from(d).map_err(|_| corrupt("negative valid_days"))?),
            _ => return Err(corrupt("exactly one of valid_until and valid_days must be set")),
        };
        Ok(Campaign {
            id: CampaignId::from_uuid(self.id),
            name: self.name,
            total_quantity: u64::try_from(self.total_quantity).map_err(|_| corrupt("negative total_quantity"))?,
            per_user_limit: u32::try_from(self.per_user_limit).map_err(|_| corrupt("negative per_user_limit"))?,
            issue_starts_at: self.issue_starts_at,
            issue_ends_at: self.issue_ends_at,
            validity,
            conditions: coupon_core::UsageConditions {
                min_order_amount: self
                    .min_order_amount
                    .map(u64::try_from)
                    .transpose()
                    .map_err(|_| corrupt("negative min_order_amount"))?,
            },
            discount: self.discount,
            state: CampaignState::parse(&self.state).ok_or_else(|| corrupt("unknown campaign state"))?,
            created_at: self.created_at,
        })
    }
}

/// A coupon's columns, dialect-neutral (`sqlx::FromRow` as [`CampaignColumns`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CouponColumns {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub user_id: String,
    pub nth: i32,
    pub issued_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub state: String,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
}

impl CouponColumns {
    pub fn into_coupon(self, backend: &'static str) -> Result<Coupon, BackendError> {
        let corrupt = |what: &str| corrupt(backend, "read coupon", what);
        Ok(Coupon {
            id: CouponId::from_uuid(self.id),
            campaign_id: CampaignId::from_uuid(self.campaign_id),
            user_id: UserId::new(self.user_id).map_err(|e| corrupt(&e.to_string()))?,
            nth: u32::try_from(self.nth).map_err(|_| corrupt("negative nth"))?,
            issued_at: self.issued_at,
            valid_until: self.valid_until,
            state: CouponState::parse(&self.state).ok_or_else(|| corrupt("unknown coupon state"))?,
            redeemed_at: self.redeemed_at,
            order_id: self.order_id,
        })
    }
}

/// Checks a campaign before it is stored ([`Campaign::validate`]).
pub(crate) fn check_campaign(c: &Campaign, backend: &'static str) -> Result<(), BackendError> {
    c.validate().map_err(|e| {
        BackendError::new(
            Component::Store,
            backend,
            "create_campaign",
            ErrorKind::Rejected,
            e.to_string(),
        )
    })
}

/// Why the store refuses `event`, if it does ([`Campaign::check_event`]).
pub(crate) fn check_event(event: &IssueEvent, campaign: Option<&Campaign>) -> Result<(), RejectReason> {
    campaign.ok_or(RejectReason::UnknownCampaign)?.check_event(event)
}

/// A campaign as read, under lock, at the start of a `record` or `void` transaction:
/// the campaign and the count of coupons stored for it (`coupon_campaigns.issued_count`).
#[derive(Debug, Clone)]
pub(crate) struct LockedCampaign {
    pub campaign: Campaign,
    pub issued_count: i64,
}

impl LockedCampaign {
    /// The locked rows as campaigns by id; `campaign_from_row` is the dialect's reader.
    pub fn from_rows<R: sqlx::Row>(
        rows: &[R],
        backend: &'static str,
        operation: &'static str,
        campaign_from_row: impl Fn(&R) -> Result<Campaign, BackendError>,
    ) -> Result<HashMap<CampaignId, LockedCampaign>, BackendError>
    where
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        &'static str: sqlx::ColumnIndex<R>,
    {
        rows.iter()
            .map(|row| {
                let campaign = campaign_from_row(row)?;
                let issued_count: i64 = row
                    .try_get("issued_count")
                    .map_err(|e| backend_error(backend, operation, e))?;
                Ok((campaign.id, LockedCampaign { campaign, issued_count }))
            })
            .collect()
    }
}

/// One `record` call, dialect-neutral. Each dialect runs it inside one transaction
/// that first locks the batch's campaign rows (`SELECT ... FOR UPDATE`, or SQLite's
/// `BEGIN IMMEDIATE`), so nothing else records into or voids for these campaigns
/// until it commits:
///
/// 1. [`BatchPlan::new`] with the locked campaigns: rejections ([`check_event`]);
/// 2. [`BatchPlan::apply_voids`] with the voided ids among [`BatchPlan::undecided_ids`],
///    then [`BatchPlan::apply_seqs`] with the stored coupons that carry one of
///    [`BatchPlan::undecided_seqs`];
/// 3. insert [`BatchPlan::choose_inserts`] with conflict-ignore, learning which ids were new;
/// 4. if [`BatchPlan::ids_to_check`] is not empty, read which of those ids are stored;
/// 5. [`BatchPlan::settle`]: the outcomes, the inserted rows to delete again (beyond
///    the stock), and how much each campaign's `issued_count` grows.
///
/// The outcomes are exactly those of applying the events one by one in batch order
/// (as `coupon_core::memory::MemoryStore` does): rejected; voided; the same coupon id
/// already stored (before or earlier in the batch) is a duplicate; an admission number
/// another coupon carries is reused; a slot held by another coupon is taken; beyond the
/// stock is exhausted; else stored. (One difference: of two events in one batch with the
/// same admission number, the second is refused as reused even if the first was not
/// stored; the memory store would try it. Only a gate gone back in time numbers alike.)
#[derive(Clone)]
pub(crate) struct BatchPlan<'a> {
    events: &'a [IssueEvent],
    /// Outcomes known before inserting: rejections and voids.
    outcomes: Vec<Option<RecordOutcome>>,
    /// Per campaign, how many more coupons fit (`total_quantity - issued_count`).
    room: HashMap<CampaignId, i64>,
    /// Indices of the events handed to the insert.
    attempted: Vec<usize>,
    /// Indices of the events held back from the insert because an earlier one in the
    /// batch carries their admission number.
    seq_held_back: HashSet<usize>,
}

/// What a settled batch comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settlement {
    /// One outcome per event, in order.
    pub outcomes: Vec<RecordOutcome>,
    /// Rows the insert wrote that are not stored after all (beyond the stock): delete
    /// them in the same transaction.
    pub remove: Vec<Uuid>,
    /// Coupons newly stored per campaign: add them to `issued_count`.
    pub added: Vec<(CampaignId, i64)>,
}

type Slot<'a> = (CampaignId, &'a str, u32);

fn slot(e: &IssueEvent) -> Slot<'_> {
    (e.campaign_id, e.user_id.as_str(), e.nth)
}

impl<'a> BatchPlan<'a> {
    /// Rejects the events that can never be stored.
    pub fn new(events: &'a [IssueEvent], campaigns: &HashMap<CampaignId, LockedCampaign>) -> Self {
        let outcomes = events
            .iter()
            .map(|e| {
                check_event(e, campaigns.get(&e.campaign_id).map(|c| &c.campaign))
                    .err()
                    .map(|reason| RecordOutcome::Rejected { reason })
            })
            .collect();
        let room = campaigns
            .iter()
            .map(|(id, c)| {
                let total = i64::try_from(c.campaign.total_quantity).unwrap_or(i64::MAX);
                (*id, total.saturating_sub(c.issued_count))
            })
            .collect();
        Self {
            events,
            outcomes,
            room,
            attempted: Vec::new(),
            seq_held_back: HashSet::new(),
        }
    }

    fn undecided(&self) -> impl Iterator<Item = (usize, &'a IssueEvent)> + '_ {
        self.events
            .iter()
            .enumerate()
            .filter(|(i, _)| self.outcomes[*i].is_none())
    }

    /// The distinct coupon ids of the events not yet decided (to look up among voids).
    pub fn undecided_ids(&self) -> Vec<Uuid> {
        distinct(self.undecided().map(|(_, e)| *e.coupon_id.as_uuid()))
    }

    /// Fences the events whose coupon id is voided.
    pub fn apply_voids(&mut self, voided: &HashSet<Uuid>) {
        for (i, e) in self.events.iter().enumerate() {
            if self.outcomes[i].is_none() && voided.contains(e.coupon_id.as_uuid()) {
                self.outcomes[i] = Some(RecordOutcome::Fenced { fence: Fence::Voided });
            }
        }
    }

    /// Per campaign, the admission numbers of the undecided events (to look up among the
    /// stored coupons).
    pub fn undecided_seqs(&self) -> Vec<(CampaignId, Vec<i64>)> {
        let mut by_campaign: HashMap<CampaignId, Vec<i64>> = HashMap::new();
        for (_, e) in self.undecided() {
            if let Some(seq) = seq_of(e) {
                by_campaign.entry(e.campaign_id).or_default().push(seq);
            }
        }
        let mut out: Vec<(CampaignId, Vec<i64>)> = by_campaign.into_iter().collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Fences the undecided events whose admission number a stored coupon with another
    /// id carries (`stored`: `(campaign, number)` to coupon id).
    pub fn apply_seqs(&mut self, stored: &HashMap<(CampaignId, i64), Uuid>) {
        for (i, e) in self.events.iter().enumerate() {
            if self.outcomes[i].is_none()
                && let Some(seq) = seq_of(e)
                && stored
                    .get(&(e.campaign_id, seq))
                    .is_some_and(|id| id != e.coupon_id.as_uuid())
            {
                self.outcomes[i] = Some(RecordOutcome::Fenced {
                    fence: Fence::SequenceReused,
                });
            }
        }
    }

    /// The events to insert: of the undecided ones, the first of each coupon id, of
    /// each `(campaign, user, nth)` slot and of each admission number, in batch order.
    /// Their coupon ids are distinct.
    pub fn choose_inserts(&mut self) -> Vec<&'a IssueEvent> {
        let mut ids = HashSet::new();
        let mut slots = HashSet::new();
        let mut seqs = HashSet::new();
        let mut attempted = Vec::new();
        let mut seq_held_back = HashSet::new();
        for (i, e) in self.undecided() {
            if ids.contains(&e.coupon_id) || slots.contains(&slot(e)) {
                continue;
            }
            if let Some(seq) = seq_of(e)
                && !seqs.insert((e.campaign_id, seq))
            {
                seq_held_back.insert(i);
                continue;
            }
            ids.insert(e.coupon_id);
            slots.insert(slot(e));
            attempted.push(i);
        }
        self.seq_held_back = seq_held_back;
        self.attempted = attempted;
        self.attempted.iter().map(|&i| &self.events[i]).collect()
    }

    /// The settlement if the store holds none of the undecided events' coupon ids, slots
    /// or admission numbers, provided it stores every one of them. `None` when some would
    /// be refused anyway (a coupon id, slot or number repeated in the batch, or no stock
    /// left), since their outcomes depend on what the store holds. With `Some`, a dialect
    /// may write the stored events with no conflict handling, as long as a conflict fails
    /// the write and it then falls back to the full protocol.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub fn settle_if_nothing_stored(mut self) -> Option<Settlement> {
        let chosen: HashSet<Uuid> = self.choose_inserts().iter().map(|e| *e.coupon_id.as_uuid()).collect();
        let settled = self.settle(&chosen, &HashSet::new());
        let unconditional = |o: &RecordOutcome| {
            matches!(
                o,
                RecordOutcome::Stored | RecordOutcome::Rejected { .. } | RecordOutcome::Fenced { fence: Fence::Voided }
            )
        };
        settled.outcomes.iter().all(unconditional).then_some(settled)
    }

    /// The coupon ids whose being stored already decides an outcome: those of undecided
    /// events the insert did not write. Empty when every insert went in (no query needed).
    pub fn ids_to_check(&self, inserted: &HashSet<Uuid>) -> Vec<Uuid> {
        distinct(
            self.undecided()
                .map(|(_, e)| *e.coupon_id.as_uuid())
                .filter(|id| !inserted.contains(id)),
        )
    }

    /// Every outcome, given the ids the insert wrote and those stored before it.
    pub fn settle(self, inserted: &HashSet<Uuid>, stored_before: &HashSet<Uuid>) -> Settlement {
        let mut room = self.room;
        let attempted: HashSet<usize> = self.attempted.iter().copied().collect();
        // Slots the database already held: an attempted row that did not go in met a
        // row in its slot (its own, for a redelivery, or another coupon's).
        let taken_before: HashSet<Slot<'_>> = self
            .attempted
            .iter()
            .map(|&i| &self.events[i])
            .filter(|e| !inserted.contains(e.coupon_id.as_uuid()))
            .map(slot)
            .collect();
        let mut stored_ids = HashSet::new();
        let mut stored_slots = HashSet::new();
        let mut added: HashMap<CampaignId, i64> = HashMap::new();
        let mut remove = Vec::new();
        let mut outcomes = Vec::with_capacity(self.events.len());
        for (i, (known, e)) in self.outcomes.into_iter().zip(self.events).enumerate() {
            let id = e.coupon_id.as_uuid();
            let written = attempted.contains(&i) && inserted.contains(id);
            let fenced = |fence| RecordOutcome::Fenced { fence };
            let outcome = if let Some(known) = known {
                known
            } else if stored_before.contains(id) || stored_ids.contains(id) {
                RecordOutcome::Duplicate
            } else if self.seq_held_back.contains(&i) {
                // An earlier event of the batch carries its admission number.
                fenced(Fence::SequenceReused)
            } else if taken_before.contains(&slot(e)) || stored_slots.contains(&slot(e)) {
                fenced(Fence::SlotTaken)
            } else if room.get(&e.campaign_id).is_none_or(|r| *r <= 0) {
                fenced(Fence::StockExhausted)
            } else if written {
                *room.get_mut(&e.campaign_id).expect("checked above") -= 1;
                *added.entry(e.campaign_id).or_insert(0) += 1;
                stored_ids.insert(*id);
                stored_slots.insert(slot(e));
                RecordOutcome::Stored
            } else {
                // Only for a coupon id repeated in the batch under another slot, whose
                // first copy met a taken slot: nothing was written for it.
                fenced(Fence::SlotTaken)
            };
            if written && outcome != RecordOutcome::Stored {
                remove.push(*id);
            }
            outcomes.push(outcome);
        }
        let mut added: Vec<(CampaignId, i64)> = added.into_iter().collect();
        added.sort();
        Settlement {
            outcomes,
            remove,
            added,
        }
    }
}

/// The event's admission number as the database stores it.
pub(crate) fn seq_of(e: &IssueEvent) -> Option<i64> {
    e.admission_seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX))
}

fn distinct(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}

/// What [`coupon_core::IssueStore::void`] answers, given which of the keys' coupon ids
/// are stored; also the distinct voids to insert (with conflict-ignore).
pub(crate) fn void_outcomes<'k>(
    keys: &'k [ReservationKey],
    stored: &HashSet<Uuid>,
) -> (Vec<VoidOutcome>, Vec<&'k ReservationKey>) {
    let mut seen = HashSet::new();
    let mut to_void = Vec::new();
    let outcomes = keys
        .iter()
        .map(|k| {
            if stored.contains(k.coupon_id.as_uuid()) {
                VoidOutcome::Stored
            } else {
                if seen.insert(k.coupon_id) {
                    to_void.push(k);
                }
                VoidOutcome::Voided
            }
        })
        .collect();
    (outcomes, to_void)
}

/// The distinct coupon ids of `keys`.
pub(crate) fn key_ids(keys: &[ReservationKey]) -> Vec<Uuid> {
    distinct(keys.iter().map(|k| *k.coupon_id.as_uuid()))
}

/// The distinct campaign ids of a batch.
pub(crate) fn campaign_ids(events: &[IssueEvent]) -> Vec<CampaignId> {
    let mut ids: Vec<CampaignId> = events.iter().map(|e| e.campaign_id).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Why a redemption that updated nothing was refused ([`Coupon::redemption_refusal`]).
pub(crate) fn explain_refusal(coupon: Option<(Coupon, Option<i64>)>, r: &Redemption) -> Option<RedeemOutcome> {
    let Some((coupon, min_order_amount)) = coupon else {
        return Some(RedeemOutcome::NotFound);
    };
    let min = min_order_amount.map(|m| u64::try_from(m).unwrap_or(0));
    // `None`: redeemable now, so the update ran before the recorder stored the coupon.
    coupon.redemption_answer(r, min)
}

/// Tries a redemption until its answer is decided: an attempt that finds the coupon
/// redeemable after its update matched nothing (the coupon was stored in between) runs
/// again, rather than telling the user "already redeemed" (F16).
pub(crate) async fn redeem_until_decided<F, Fut>(
    backend: &'static str,
    mut attempt: F,
) -> Result<RedeemOutcome, BackendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<RedeemOutcome>, BackendError>>,
{
    const ATTEMPTS: usize = 3;
    for _ in 0..ATTEMPTS {
        if let Some(answer) = attempt().await? {
            return Ok(answer);
        }
    }
    Err(BackendError::new(
        Component::Store,
        backend,
        "redeem",
        ErrorKind::Unavailable,
        format!("the coupon changed under each of {ATTEMPTS} attempts; nothing was redeemed"),
    ))
}

/// Runs a transaction again when the database chose it as a deadlock victim, at most
/// `DEADLOCK_RETRIES` more times. The victim is rolled back whole, so nothing of it
/// applied; the statements here are idempotent in any case. (MySQL picks victims among a
/// batch of inserts and a redemption racing it for the same rows.)
#[cfg(feature = "mysql")]
pub(crate) async fn retry_deadlocks<T, F, Fut>(operation: &'static str, mut attempt: F) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    const DEADLOCK_RETRIES: usize = 3;
    let mut left = DEADLOCK_RETRIES;
    loop {
        match attempt().await {
            Err(e) if left > 0 && is_deadlock(&e) => {
                left -= 1;
                tracing::debug!(operation, error = %e, "deadlock victim; running the transaction again");
            }
            other => return other,
        }
    }
}

/// Whether the database rolled the transaction back as a deadlock victim (SQLSTATE
/// 40001 on MySQL/MariaDB, 40P01 on PostgreSQL).
#[cfg(feature = "mysql")]
fn is_deadlock(e: &BackendError) -> bool {
    e.source
        .as_deref()
        .and_then(|s| s.downcast_ref::<sqlx::Error>())
        .and_then(sqlx::Error::as_database_error)
        .is_some_and(|db| matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// The states a campaign may move to `state` from, as column values.
pub(crate) fn allowed_from(state: CampaignState) -> Vec<&'static str> {
    CampaignState::allowed_from(state)
        .into_iter()
        .map(CampaignState::as_str)
        .collect()
}

/// An order amount as a signed column value (amounts beyond i64 compare as i64::MAX).
pub(crate) fn amount(a: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX)
}

pub(crate) fn corrupt(backend: &'static str, operation: &'static str, what: &str) -> BackendError {
    BackendError::new(
        Component::Store,
        backend,
        operation,
        ErrorKind::Corrupt,
        what.to_owned(),
    )
}

/// Classifies a sqlx error for `operation`.
pub(crate) fn backend_error(backend: &'static str, operation: &'static str, e: sqlx::Error) -> BackendError {
    let kind = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => ErrorKind::Unavailable,
        // SQLite's worker thread died: it may have run the statement before it did.
        sqlx::Error::WorkerCrashed => ErrorKind::OutcomeUnknown,
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ErrorKind::Unavailable,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => ErrorKind::OutcomeUnknown,
        sqlx::Error::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation
            | sqlx::error::ErrorKind::ForeignKeyViolation
            | sqlx::error::ErrorKind::NotNullViolation
            | sqlx::error::ErrorKind::CheckViolation => ErrorKind::Rejected,
            // Deadlocks, serialization failures, lock timeouts: the statement was rolled back.
            _ if is_transient(db.code().as_deref()) || is_transient(mysql_number(db.as_ref()).as_deref()) => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Rejected,
        },
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => ErrorKind::Rejected,
        _ => ErrorKind::Corrupt,
    };
    BackendError::new(Component::Store, backend, operation, kind, e.to_string()).with_source(e)
}

/// MySQL's own error number: its SQLSTATE is `HY000` for most errors (a lock wait
/// timeout among them), so the number is what tells them apart.
fn mysql_number(db: &dyn sqlx::error::DatabaseError) -> Option<String> {
    #[cfg(feature = "mysql")]
    if let Some(e) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return Some(e.number().to_string());
    }
    let _ = db;
    None
}

/// SQLSTATE / vendor codes of errors after which the statement did not apply and a retry can succeed.
fn is_transient(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P03" | "53300" // PostgreSQL
            | "1205" | "1213" // MySQL lock wait timeout, deadlock
            | "1969" | "3024" // MariaDB max_statement_time, MySQL max_execution_time
            | "5" | "6" | "517" // SQLite BUSY / LOCKED / BUSY_SNAPSHOT
        )
    )
}

/// `(user, nth)` rows as holders, ordered by user then `nth` (in Rust, so the order
/// does not depend on the database's collation).
pub(crate) fn holders_from_rows(
    backend: &'static str,
    rows: Vec<(String, i32)>,
) -> Result<Vec<(UserId, u32)>, BackendError> {
    let mut holders = rows
        .into_iter()
        .map(|(u, n)| {
            let user = UserId::new(u).map_err(|e| corrupt(backend, "holders", &e.to_string()))?;
            Ok((
                user,
                u32::try_from(n).map_err(|_| corrupt(backend, "holders", "negative nth"))?,
            ))
        })
        .collect::<Result<Vec<_>, BackendError>>()?;
    holders.sort();
    Ok(holders)
}

/// For each key, whether its coupon id is among the stored ids.
pub(crate) fn mark_stored(keys: &[ReservationKey], stored: &HashSet<Uuid>) -> Vec<bool> {
    keys.iter().map(|k| stored.contains(k.coupon_id.as_uuid())).collect()
}

/// A count read from the database as a `u64`.
pub(crate) fn count(backend: &'static str, operation: &'static str, n: i64) -> Result<u64, BackendError> {
    u64::try_from(n).map_err(|_| corrupt(backend, operation, "negative count"))
}

#[cfg(test)]
mod tests {
    use coupon_core::conformance::{event, now_ms, open_campaign, user};

    use super::*;

    const STORED: RecordOutcome = RecordOutcome::Stored;
    const DUPLICATE: RecordOutcome = RecordOutcome::Duplicate;
    const VOIDED: RecordOutcome = RecordOutcome::Fenced { fence: Fence::Voided };
    const TAKEN: RecordOutcome = RecordOutcome::Fenced {
        fence: Fence::SlotTaken,
    };
    const EXHAUSTED: RecordOutcome = RecordOutcome::Fenced {
        fence: Fence::StockExhausted,
    };

    /// F17: SQLite's worker thread may have run the statement before it died.
    #[test]
    fn a_crashed_sqlite_worker_is_an_unknown_outcome() {
        let e = backend_error("sqlite", "record", sqlx::Error::WorkerCrashed);
        assert_eq!(e.kind, ErrorKind::OutcomeUnknown, "{e}");
    }

    fn locked(c: &Campaign, issued_count: i64) -> HashMap<CampaignId, LockedCampaign> {
        HashMap::from([(
            c.id,
            LockedCampaign {
                campaign: c.clone(),
                issued_count,
            },
        )])
    }

    fn ids(events: &[&IssueEvent]) -> HashSet<Uuid> {
        events.iter().map(|e| *e.coupon_id.as_uuid()).collect()
    }

    /// Runs a plan against a fake database holding `stored` ids in `taken` slots and the
    /// `voided` ids: the insert writes what is neither a stored id nor a taken slot.
    fn run(
        events: &[IssueEvent],
        campaigns: &HashMap<CampaignId, LockedCampaign>,
        voided: &[&IssueEvent],
        stored: &[&IssueEvent],
    ) -> (Settlement, usize) {
        let mut plan = BatchPlan::new(events, campaigns);
        let undecided: HashSet<Uuid> = plan.undecided_ids().into_iter().collect();
        plan.apply_voids(&ids(voided).intersection(&undecided).copied().collect());
        let to_insert = plan.choose_inserts();
        let stored_ids = ids(stored);
        let taken: HashSet<Slot<'_>> = stored.iter().map(|e| slot(e)).collect();
        let inserted: HashSet<Uuid> = to_insert
            .iter()
            .filter(|e| !stored_ids.contains(e.coupon_id.as_uuid()) && !taken.contains(&slot(e)))
            .map(|e| *e.coupon_id.as_uuid())
            .collect();
        let check = plan.ids_to_check(&inserted);
        let checked = check.len();
        let before = check.into_iter().filter(|id| stored_ids.contains(id)).collect();
        (plan.settle(&inserted, &before), checked)
    }

    #[test]
    fn a_clean_batch_is_stored_without_extra_reads() {
        let c = open_campaign(10, 1);
        let events: Vec<_> = (0..3).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect();
        let (s, checked) = run(&events, &locked(&c, 0), &[], &[]);
        assert_eq!(s.outcomes, vec![STORED; 3]);
        assert!(s.remove.is_empty());
        assert_eq!(s.added, vec![(c.id, 3)]);
        assert_eq!(checked, 0, "no stored-id lookup when everything went in");
    }

    #[test]
    fn fences_and_duplicates_in_the_order_of_the_memory_store() {
        let c = open_campaign(3, 2);
        let t = now_ms();
        let old = event(&c, &user(&c.id, 0), 1, t);
        let gone = event(&c, &user(&c.id, 1), 1, t);
        let events = vec![
            old.clone(),                      // redelivery
            gone.clone(),                     // voided
            event(&c, &user(&c.id, 0), 1, t), // slot held by `old`
            event(&c, &user(&c.id, 1), 1, t), // the voided one's slot is free
            event(&c, &user(&c.id, 2), 1, t), // stored (last room)
            event(&c, &user(&c.id, 2), 2, t), // beyond the stock
            event(&c, &user(&c.id, 2), 0, t), // rejected
        ];
        let mut repeat = events.clone();
        repeat.push(events[3].clone()); // the same coupon twice: the first copy decides
        repeat.push(events[5].clone());
        let mut other = events[3].clone();
        other.coupon_id = CouponId::new(); // a second coupon in a slot filled by this batch
        repeat.push(other);
        let (s, _) = run(&repeat, &locked(&c, 1), &[&gone], &[&old]);
        assert_eq!(
            s.outcomes,
            vec![
                DUPLICATE,
                VOIDED,
                TAKEN,
                STORED,
                STORED,
                EXHAUSTED,
                RecordOutcome::Rejected {
                    reason: RejectReason::NthOutOfRange
                },
                DUPLICATE,
                EXHAUSTED,
                TAKEN,
            ]
        );
        assert_eq!(s.remove, vec![*events[5].coupon_id.as_uuid()]);
        assert_eq!(s.added, vec![(c.id, 2)]);
    }

    /// PostgreSQL's `COPY` path: trusted only where the full plan, run against a store
    /// that holds nothing the batch writes, gives the same outcomes.
    #[test]
    fn the_nothing_stored_settlement_is_the_full_plans_or_none() {
        let c = open_campaign(4, 1);
        let t = now_ms();
        let fresh: Vec<_> = (0..3).map(|i| event(&c, &user(&c.id, i), 1, t)).collect();
        let other = event(&c, &user(&c.id, 9), 1, t); // stored, in no slot of the batch
        let mut batch = fresh.clone();
        batch.push(event(&c, &user(&c.id, 3), 0, t)); // rejected
        let gone = batch[1].clone();
        let settle = |events: &[IssueEvent], issued: i64, voided: &[&IssueEvent]| {
            let campaigns = locked(&c, issued);
            let mut plan = BatchPlan::new(events, &campaigns);
            plan.apply_voids(&ids(voided));
            plan.settle_if_nothing_stored()
        };
        let copied = settle(&batch, 0, &[&gone]).expect("fresh events, a void and a rejection");
        let (full, _) = run(&batch, &locked(&c, 0), &[&gone], &[&other]);
        assert_eq!(copied, full);
        assert_eq!(copied.outcomes[..2], [STORED, VOIDED]);

        let mut repeated = fresh.clone();
        repeated.push(fresh[0].clone());
        assert_eq!(
            settle(&repeated, 0, &[]),
            None,
            "a repeat is a duplicate or not by the store"
        );
        let mut same_slot = fresh[0].clone();
        same_slot.coupon_id = CouponId::new();
        assert_eq!(settle(&[fresh[0].clone(), same_slot], 0, &[]), None);
        assert_eq!(
            settle(&fresh, 2, &[]),
            None,
            "beyond the stock: exhausted or a duplicate"
        );
    }

    #[test]
    fn earlier_events_win_the_last_of_the_stock() {
        let c = open_campaign(5, 1);
        let events: Vec<_> = (0..6).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect();
        let (s, _) = run(&events, &locked(&c, 3), &[], &[]);
        assert_eq!(
            s.outcomes,
            vec![STORED, STORED, EXHAUSTED, EXHAUSTED, EXHAUSTED, EXHAUSTED]
        );
        let last: Vec<Uuid> = events[2..].iter().map(|e| *e.coupon_id.as_uuid()).collect();
        assert_eq!(s.remove, last, "the excess rows are deleted again");
        assert_eq!(s.added, vec![(c.id, 2)]);
        // A campaign already over its stock (migrated as is) takes nothing more, and a
        // slot conflict is still reported as such.
        let (s, _) = run(&events[..2], &locked(&c, 7), &[], &[&events[1]]);
        assert_eq!(s.outcomes, vec![EXHAUSTED, DUPLICATE]);
        assert!(s.added.is_empty());
    }

    #[test]
    fn a_slot_freed_by_an_exhausted_event_is_exhausted_too() {
        let c = open_campaign(1, 1);
        let t = now_ms();
        let a = event(&c, &user(&c.id, 0), 1, t);
        let b = event(&c, &user(&c.id, 1), 1, t);
        let mut b2 = b.clone();
        b2.coupon_id = CouponId::new();
        let (s, _) = run(&[a, b, b2], &locked(&c, 0), &[], &[]);
        assert_eq!(s.outcomes, vec![STORED, EXHAUSTED, EXHAUSTED]);
    }

    #[test]
    fn void_answers_stored_or_voided_and_voids_each_id_once() {
        let c = open_campaign(5, 1);
        let t = now_ms();
        let a = event(&c, &user(&c.id, 0), 1, t).reservation_key();
        let b = event(&c, &user(&c.id, 1), 1, t).reservation_key();
        let stored = HashSet::from([*a.coupon_id.as_uuid()]);
        let keys = [a.clone(), b.clone(), b.clone()];
        let (outcomes, to_void) = void_outcomes(&keys, &stored);
        assert_eq!(
            outcomes,
            vec![VoidOutcome::Stored, VoidOutcome::Voided, VoidOutcome::Voided]
        );
        assert_eq!(to_void, vec![&b]);
        assert_eq!(key_ids(&keys).len(), 2);
        assert_eq!(mark_stored(&keys, &stored), vec![true, false, false]);
    }
}
