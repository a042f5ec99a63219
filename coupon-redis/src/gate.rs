//! [`RedisGate`]: [`IssueGate`] on Redis, one Lua call per admission (or per campaign per batch).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coupon_core::{
    Admission, AdmitRequest, BackendError, CampaignId, Component, CouponId, ErrorKind, GateCampaign, GateCounts,
    IssueGate, Reservation, ReservationKey, RestoreReport, UserId,
};
use redis::AsyncCommands;

use crate::config::RedisGateConfig;
use crate::connection::Connection;
use crate::errors::{backend_error, unexpected_reply};
use crate::keys::{CampaignKeys, ledger_member, parse_holding, parse_ledger_member};
use crate::scripts;

/// The gate on Redis or Redis Cluster. Cheap to clone (clones share the connection).
///
/// Every admission is one `EVALSHA` of `lua/admit.lua` touching the campaign's three
/// keys, all in one hash slot: holder check, stock check, decrement, holder and ledger
/// entry, atomically. [`IssueGate::admit_many`] sends one script call per campaign in
/// the batch; wrap the gate in [`coupon_core::BatchingGate`] to coalesce concurrent
/// requests into such batches.
#[derive(Clone)]
pub struct RedisGate {
    conn: Connection,
    config: RedisGateConfig,
    backstop: Duration,
}

impl std::fmt::Debug for RedisGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGate")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisGate {
    /// Connects as `config` says (fails fast if Redis is not there). A setting that
    /// [`RedisGateConfig::validate`] refuses is a `Rejected` error naming it.
    pub async fn connect(config: RedisGateConfig) -> Result<Self, BackendError> {
        if let Err(e) = config.validate() {
            return Err(BackendError::new(
                Component::Gate,
                "redis",
                "connect",
                ErrorKind::Rejected,
                e.to_string(),
            ));
        }
        let connect = Connection::connect(&config);
        let conn = match tokio::time::timeout(config.connection_timeout * 2, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                let mut err = backend_error("connect", e);
                if err.kind == ErrorKind::OutcomeUnknown {
                    err.kind = ErrorKind::Unavailable; // connecting changes nothing
                }
                return Err(err);
            }
            Err(_) => {
                return Err(BackendError::new(
                    Component::Gate,
                    "redis",
                    "connect",
                    ErrorKind::Unavailable,
                    format!(
                        "no connection within {} ms",
                        (config.connection_timeout * 2).as_millis()
                    ),
                ));
            }
        };
        // The client's own timeouts come first; this catches anything that slips past them
        // (a reconnect in progress, say).
        let backstop = config.response_timeout + config.connection_timeout;
        let gate = Self { conn, config, backstop };
        gate.refuse_eviction().await?;
        Ok(gate)
    }

    /// Refuses a Redis that may evict keys: an evicted holding or ledger re-sells stock
    /// and re-admits holders without anyone noticing (review finding F4). Every node the
    /// configuration names is asked; a server that does not answer `CONFIG GET` (a managed
    /// Redis with the command renamed) is let through with a warning.
    async fn refuse_eviction(&self) -> Result<(), BackendError> {
        let urls: Vec<String> = match &self.config.topology {
            crate::config::Topology::Standalone(url) => vec![url.clone()],
            crate::config::Topology::Cluster(nodes) => nodes.clone(),
        };
        for url in urls {
            let policy = async {
                let client = redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let reply: Vec<String> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, redis::RedisError>(reply.get(1).cloned())
            };
            match tokio::time::timeout(self.backstop, policy).await {
                Ok(Ok(Some(policy))) if policy != "noeviction" => {
                    return Err(BackendError::new(
                        Component::Gate,
                        "redis",
                        "connect",
                        ErrorKind::Rejected,
                        format!(
                            "the Redis node {} has maxmemory-policy {policy}, which can evict the gate's keys and so sell stock twice; set `maxmemory-policy noeviction` on every node",
                            coupon_core::error::redact_url(&url)
                        ),
                    ));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node = %coupon_core::error::redact_url(&url), error = %e, "could not read maxmemory-policy; make sure it is noeviction")
                }
                Err(_) => {
                    tracing::warn!(node = %coupon_core::error::redact_url(&url), "no answer to CONFIG GET maxmemory-policy in time; make sure it is noeviction")
                }
            }
        }
        Ok(())
    }

    /// Connects to `url` (see [`RedisGateConfig::from_url`]) with default settings.
    pub async fn from_url(url: &str) -> Result<Self, BackendError> {
        let config = RedisGateConfig::from_url(url)
            .map_err(|e| BackendError::new(Component::Gate, "redis", "connect", ErrorKind::Rejected, e.to_string()))?;
        Self::connect(config).await
    }

    /// The configuration.
    pub fn config(&self) -> &RedisGateConfig {
        &self.config
    }

    /// A clone of the connection (for tools and tests that inspect keys).
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// The keys of a campaign.
    pub fn keys(&self, campaign_id: &CampaignId) -> CampaignKeys {
        CampaignKeys::new(&self.config.key_prefix, campaign_id)
    }

    /// The SHA1 of the admission script (for `redis-benchmark EVALSHA` comparisons).
    pub fn admit_script_sha() -> &'static str {
        scripts::ADMIT.sha()
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.backstop, call).await {
            Ok(result) => result.map_err(|e| backend_error(operation, e)),
            Err(_) => Err(BackendError::timeout(
                Component::Gate,
                "redis",
                operation,
                self.backstop,
            )),
        }
    }

    fn expire_at_ms(&self, campaign: &GateCampaign) -> i64 {
        let grace = i64::try_from(self.config.expiry_grace.as_millis()).unwrap_or(i64::MAX / 4);
        campaign.issue_ends_at.timestamp_millis().saturating_add(grace)
    }

    async fn admit_group(
        &self,
        campaign_id: &CampaignId,
        admissions: &[(&UserId, &CouponId)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Admission>, BackendError> {
        let keys = self.keys(campaign_id);
        let mut invocation = scripts::ADMIT.call(&keys.all());
        invocation.arg(now.timestamp_millis());
        // Hyphenated text into a stack buffer: no allocation per admission.
        let mut id = [0u8; 36];
        for (user, coupon_id) in admissions {
            invocation
                .arg(&*coupon_id.as_uuid().hyphenated().encode_lower(&mut id))
                .arg(user.as_str());
        }
        let mut conn = self.conn.clone();
        let flat: Vec<i64> = self.run("admit", invocation.run(&mut conn)).await?;
        if flat.len() != admissions.len() * 5 {
            return Err(unexpected_reply(
                "admit",
                format!(
                    "admit.lua returned {} values for {} admissions",
                    flat.len(),
                    admissions.len()
                ),
            ));
        }
        flat.chunks_exact(5)
            .map(|c| match c[0] {
                0 => Ok(Admission::Admitted {
                    nth: u32::try_from(c[1]).map_err(|_| unexpected_reply("admit", "nth out of range"))?,
                    remaining: u64::try_from(c[2]).map_err(|_| unexpected_reply("admit", "negative stock"))?,
                    seq: u64::try_from(c[3]).map_err(|_| unexpected_reply("admit", "negative admission number"))?,
                    admitted_at: DateTime::<Utc>::from_timestamp_micros(c[4])
                        .ok_or_else(|| unexpected_reply("admit", "admission time out of range"))?,
                }),
                1 => Ok(Admission::AlreadyIssued),
                2 => Ok(Admission::SoldOut),
                3 => Ok(Admission::NotOpen),
                4 => Ok(Admission::Closed),
                5 => Ok(Admission::Fenced),
                other => Err(unexpected_reply("admit", format!("unknown status {other}"))),
            })
            .collect()
    }
}

#[async_trait]
impl IssueGate for RedisGate {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn open(&self, campaign: &GateCampaign) -> Result<(), BackendError> {
        let keys = self.keys(&campaign.id);
        let mut invocation = scripts::OPEN.call(&keys.all());
        invocation
            .arg(campaign.total_quantity)
            .arg(campaign.per_user_limit)
            .arg(campaign.issue_starts_at.timestamp_millis())
            .arg(campaign.issue_ends_at.timestamp_millis())
            .arg(self.expire_at_ms(campaign));
        let mut conn = self.conn.clone();
        let _opened_now: i64 = self.run("open", invocation.run(&mut conn)).await?;
        Ok(())
    }

    async fn admit(
        &self,
        campaign_id: &CampaignId,
        user_id: &UserId,
        coupon_id: &CouponId,
        now: DateTime<Utc>,
    ) -> Result<Admission, BackendError> {
        let mut answers = self.admit_group(campaign_id, &[(user_id, coupon_id)], now).await?;
        answers.pop().ok_or_else(|| unexpected_reply("admit", "no answer"))
    }

    async fn admit_many(&self, requests: &[AdmitRequest], now: DateTime<Utc>) -> Result<Vec<Admission>, BackendError> {
        // One script call per campaign (one slot each), all in flight at once.
        let mut groups: Vec<(CampaignId, Vec<usize>)> = Vec::new();
        let mut index: HashMap<CampaignId, usize> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            let g = *index.entry(r.campaign_id).or_insert_with(|| {
                groups.push((r.campaign_id, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let calls = groups.iter().map(|(campaign, positions)| {
            let admissions: Vec<(&UserId, &CouponId)> = positions
                .iter()
                .map(|&i| (&requests[i].user_id, &requests[i].coupon_id))
                .collect();
            async move { self.admit_group(campaign, &admissions, now).await }
        });
        let answers = futures::future::try_join_all(calls).await?;
        let mut out = vec![Admission::NotOpen; requests.len()];
        for ((_, positions), group) in groups.iter().zip(answers) {
            for (&i, admission) in positions.iter().zip(group) {
                out[i] = admission;
            }
        }
        Ok(out)
    }

    async fn release(&self, campaign_id: &CampaignId, key: &ReservationKey) -> Result<bool, BackendError> {
        let keys = self.keys(campaign_id);
        let mut invocation = scripts::RELEASE.call(&keys.all());
        invocation
            .arg(ledger_member(key))
            .arg(key.user_id.as_str())
            .arg(key.nth);
        let mut conn = self.conn.clone();
        let released: i64 = self.run("release", invocation.run(&mut conn)).await?;
        Ok(released == 1)
    }

    async fn settle(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<u64, BackendError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let members: Vec<String> = keys.iter().map(ledger_member).collect();
        let ledger = self.keys(campaign_id).ledger;
        let mut conn = self.conn.clone();
        self.run("settle", conn.zrem(ledger, members)).await
    }

    async fn reservations(
        &self,
        campaign_id: &CampaignId,
        admitted_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reservation>, BackendError> {
        let ledger = self.keys(campaign_id).ledger;
        let mut conn = self.conn.clone();
        let before = format!("({}", admitted_before.timestamp_micros());
        let rows: Vec<(String, f64)> = self
            .run(
                "reservations",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&ledger)
                    .arg("-inf")
                    .arg(before)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
        rows.into_iter()
            .filter(|(member, _)| !member.is_empty())
            .map(|(member, score)| {
                let key = parse_ledger_member(&member)
                    .ok_or_else(|| unexpected_reply("reservations", format!("malformed ledger member {member:?}")))?;
                let admitted_at = DateTime::from_timestamp_micros(score as i64)
                    .ok_or_else(|| unexpected_reply("reservations", format!("bad ledger score {score}")))?;
                Ok(Reservation { key, admitted_at })
            })
            .collect()
    }

    async fn counts(&self, campaign_id: &CampaignId) -> Result<Option<GateCounts>, BackendError> {
        let keys = self.keys(campaign_id);
        let mut conn = self.conn.clone();
        let ((stock, seq, fenced), ledger_len): ((Option<u64>, Option<u64>, Option<String>), u64) = self
            .run(
                "counts",
                redis::pipe()
                    .cmd("HMGET")
                    .arg(&keys.meta)
                    .arg(&["stock", "seq", "fenced"])
                    .zcard(&keys.ledger)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(stock.map(|remaining| GateCounts {
            remaining,
            // Minus the sentinel.
            pending: ledger_len.saturating_sub(1),
            seq: seq.unwrap_or(0),
            fenced: fenced.is_some(),
        }))
    }

    async fn holding(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<Vec<u32>, BackendError> {
        let holds = self.keys(campaign_id).holds;
        let mut conn = self.conn.clone();
        let held: Option<String> = self.run("holding", conn.hget(holds, user_id.as_str())).await?;
        Ok(held.as_deref().map(parse_holding).unwrap_or_default())
    }

    async fn clock(&self) -> Result<DateTime<Utc>, BackendError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = self.run("clock", redis::cmd("TIME").query_async(&mut conn)).await?;
        DateTime::from_timestamp_micros(secs * 1_000_000 + micros)
            .ok_or_else(|| unexpected_reply("clock", format!("TIME answered {secs} s {micros} us")))
    }

    async fn restore(
        &self,
        campaign: &GateCampaign,
        holders: &[(UserId, u32)],
        seq_floor: u64,
    ) -> Result<RestoreReport, BackendError> {
        let keys = self.keys(&campaign.id);
        let mut report = RestoreReport::default();
        let chunk = self.config.restore_chunk.max(1);
        let chunks: Vec<&[(UserId, u32)]> = if holders.is_empty() {
            vec![&[]]
        } else {
            holders.chunks(chunk).collect()
        };
        let last = chunks.len() - 1;
        for (i, part) in chunks.into_iter().enumerate() {
            let mut invocation = scripts::RESTORE.call(&keys.all());
            invocation
                .arg(campaign.total_quantity)
                .arg(campaign.per_user_limit)
                .arg(campaign.issue_starts_at.timestamp_millis())
                .arg(campaign.issue_ends_at.timestamp_millis())
                .arg(self.expire_at_ms(campaign))
                .arg(seq_floor)
                .arg(u8::from(i == last));
            for (user, nth) in part {
                invocation.arg(user.as_str()).arg(*nth);
            }
            let mut conn = self.conn.clone();
            let (created, restored, taken, remaining, unfenced): (i64, u64, u64, u64, i64) =
                self.run("restore", invocation.run(&mut conn)).await?;
            report.unfenced = unfenced == 1;
            if i == 0 {
                report.created = created == 1;
            }
            report.users_restored += restored;
            report.stock_taken += taken;
            report.remaining = remaining;
        }
        Ok(report)
    }

    async fn fence(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        let keys = self.keys(campaign_id);
        let mut conn = self.conn.clone();
        let _held: i64 = self
            .run("fence", scripts::FENCE.call(&[&keys.meta]).run(&mut conn))
            .await?;
        Ok(())
    }

    async fn forget(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        let keys = self.keys(campaign_id);
        let mut conn = self.conn.clone();
        let _forgotten: i64 = self
            .run("forget", scripts::FORGET.call(&keys.all()).run(&mut conn))
            .await?;
        Ok(())
    }

    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        let keys = self.keys(campaign_id);
        let mut conn = self.conn.clone();
        let tombstone_ms = u64::try_from(self.config.expiry_grace.as_millis()).unwrap_or(u64::MAX / 4);
        let _closed: i64 = self
            .run(
                "close",
                scripts::CLOSE.call(&keys.all()).arg(tombstone_ms.max(1)).run(&mut conn),
            )
            .await?;
        Ok(())
    }
}
