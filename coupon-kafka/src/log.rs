//! [`KafkaLog`]: [`EventLog`] on Kafka.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coupon_core::{BackendError, Component, ErrorKind, EventLog, EventSource, IssueEvent};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::{KafkaConfig, PartitionKey};
use crate::errors::backend_error;
use crate::producer::{Outgoing, Publisher};
use crate::source::{GroupContext, KafkaSource};

/// How long metadata and offset queries may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The event log on Kafka. `publish` returns once every in-sync replica has the event
/// (`acks=all`, idempotent producer): that is what `AckMode::AfterLog` waits for.
pub struct KafkaLog {
    config: KafkaConfig,
    publisher: Arc<Publisher>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Creates the producer (connections are made lazily by librdkafka). A setting that
    /// [`KafkaConfig::validate`] refuses is a `Rejected` error naming it.
    pub fn new(config: KafkaConfig) -> Result<Self, BackendError> {
        if let Err(e) = config.validate() {
            return Err(BackendError::new(
                Component::Log,
                "kafka",
                "connect",
                ErrorKind::Rejected,
                e.to_string(),
            ));
        }
        let publisher = Publisher::new(&config).map_err(|e| backend_error("connect", e))?;
        Ok(Self {
            config,
            publisher: Arc::new(publisher),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// What `group` has committed on the event topic, beside what the topic retains
    /// (checked at start: see [`GroupProgress::never_committed`]).
    pub async fn group_progress(&self, group: &str) -> Result<GroupProgress, BackendError> {
        let (config, group) = (self.config.clone(), group.to_owned());
        blocking("group_progress", move || group_progress(&config, &group)).await
    }

    /// How many times a producer that could no longer publish was replaced (fatal
    /// state, or fenced by the broker after a stall; see the crate's README).
    pub fn producers_replaced(&self) -> u64 {
        self.publisher.replaced()
    }

    /// Puts the producer into librdkafka's fatal state, as a sequence gap after a long
    /// broker stall does: for tests of the recovery.
    #[doc(hidden)]
    pub fn inject_fatal_error(&self, reason: &str) {
        self.publisher.inject_fatal_error(reason);
    }

    /// Waits until everything published has been delivered (call at shutdown).
    pub async fn flush(&self, timeout: Duration) -> Result<(), BackendError> {
        let publisher = self.publisher.clone();
        tokio::task::spawn_blocking(move || publisher.flush(timeout))
            .await
            .map_err(|e| {
                BackendError::new(
                    Component::Log,
                    "kafka",
                    "flush",
                    ErrorKind::OutcomeUnknown,
                    e.to_string(),
                )
            })?
    }

    fn key(&self, event: &IssueEvent) -> String {
        match self.config.partition_key {
            PartitionKey::User => event.user_id.to_string(),
            PartitionKey::Campaign => event.campaign_id.to_string(),
        }
    }

    fn consumer(&self, group: &str, topic: &str) -> Result<StreamConsumer<GroupContext>, BackendError> {
        let consumer: StreamConsumer<GroupContext> = self
            .config
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create_with_context(GroupContext::default())
            .map_err(|e| backend_error("subscribe", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| backend_error("subscribe", e))?;
        Ok(consumer)
    }

    fn source(&self, group: &str, topic: &str) -> Result<Box<dyn EventSource>, BackendError> {
        Ok(Box::new(self.member_of(group, topic)?))
    }

    fn member_of(&self, group: &str, topic: &str) -> Result<KafkaSource, BackendError> {
        let watched = KafkaConfig {
            topic: topic.to_owned(),
            ..self.config.clone()
        };
        Ok(KafkaSource::new(
            self.consumer(group, topic)?,
            self.publisher.clone(),
            watched,
            group.to_owned(),
        ))
    }

    /// A member of `group` on the event topic, as [`EventLog::subscribe`] gives, with
    /// its own accessors ([`KafkaSource::assigned_partitions`], [`KafkaSource::rejoins`]).
    pub fn member(&self, group: &str) -> Result<KafkaSource, BackendError> {
        self.member_of(group, &self.config.topic)
    }
}

/// What a consumer group has committed on the event topic, beside what the topic holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupProgress {
    /// The topic's partitions.
    pub partitions: usize,
    /// Partitions on which the group has committed an offset.
    pub committed_partitions: usize,
    /// Events the topic still retains (high minus low watermark, over every partition).
    pub retained: i64,
    /// Retained events the group has not committed.
    pub uncommitted: i64,
    /// The group's positions summed over partitions: grows as the group commits.
    pub committed_total: i64,
    /// Events the broker deleted (retention, or a broker that lost data) before the
    /// group committed them: on each partition, from the group's committed offset up to
    /// the topic's low watermark. Acknowledged coupons may be among them; while any
    /// are, [`KafkaLog`]'s horizon holds every admission (nothing is released) and the
    /// group's members stop on those partitions, so that an operator decides.
    pub lost: i64,
}

impl GroupProgress {
    /// The topic holds events and the group has committed nothing at all: no consumer of
    /// this group has ever stored a batch. A reconciler reading this group releases
    /// nothing (its horizon is the oldest retained event), which usually means the
    /// server and the consumers were given different groups.
    pub fn never_committed(&self) -> bool {
        self.retained > 0 && self.committed_partitions == 0
    }
}

/// A client of `group` that never joins it (reading committed offsets needs no
/// membership), and per partition: (partition, committed position, low, high).
pub(crate) fn positions(config: &KafkaConfig, group: &str, operation: &'static str) -> Result<Positions, BackendError> {
    let err = |e| backend_error(operation, e);
    let topic = config.topic.as_str();
    let group_client: BaseConsumer = config
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(err)?;
    let metadata = group_client.fetch_metadata(Some(topic), QUERY_TIMEOUT).map_err(err)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    drop(metadata);
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = group_client.committed_offsets(wanted, QUERY_TIMEOUT).map_err(err)?;
    let offsets: Vec<(i32, Offset)> = committed
        .elements_for_topic(topic)
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    // Dropped before the client, or librdkafka's destroy blocks (CRATES.md).
    drop(committed);
    let mut out = Vec::with_capacity(offsets.len());
    for (partition, offset) in offsets {
        let (low, high) = group_client
            .fetch_watermarks(topic, partition, QUERY_TIMEOUT)
            .map_err(err)?;
        let committed = match offset {
            Offset::Offset(n) => Some(n),
            _ => None,
        };
        out.push(PartitionPosition {
            partition,
            committed,
            low,
            high,
        });
    }
    Ok(out)
}

pub(crate) type Positions = Vec<PartitionPosition>;

/// Where a group stands on one partition.
pub(crate) struct PartitionPosition {
    pub(crate) partition: i32,
    pub(crate) committed: Option<i64>,
    pub(crate) low: i64,
    pub(crate) high: i64,
}

impl PartitionPosition {
    /// The first offset the group has not stored.
    pub(crate) fn position(&self) -> i64 {
        self.committed.map_or(self.low, |n| n.max(self.low))
    }

    /// Retained events the group has not committed on this partition.
    pub(crate) fn uncommitted(&self) -> i64 {
        (self.high - self.position()).max(0)
    }

    /// Events deleted by the broker before the group committed them: the committed
    /// offset lies below the low watermark. (A group that never committed on the
    /// partition has nothing to compare; the start-up check for such a group is
    /// [`GroupProgress::never_committed`].)
    pub(crate) fn lost(&self) -> i64 {
        self.committed.map_or(0, |n| (self.low - n).max(0))
    }
}

impl GroupProgress {
    pub(crate) fn of(positions: &[PartitionPosition]) -> Self {
        Self {
            partitions: positions.len(),
            committed_partitions: positions.iter().filter(|p| p.committed.is_some()).count(),
            retained: positions.iter().map(|p| p.high - p.low).sum(),
            uncommitted: positions.iter().map(PartitionPosition::uncommitted).sum(),
            committed_total: positions.iter().map(PartitionPosition::position).sum(),
            lost: positions.iter().map(PartitionPosition::lost).sum(),
        }
    }
}

pub(crate) fn group_progress(config: &KafkaConfig, group: &str) -> Result<GroupProgress, BackendError> {
    Ok(GroupProgress::of(&positions(config, group, "group_progress")?))
}

/// The publish time of the oldest message `group` has not committed, over every partition.
///
/// Events the broker deleted before the group committed them ([`GroupProgress::lost`])
/// were published at a time nobody can read any more: the horizon is then the earliest
/// time there is, so the reconciler holds every admission rather than release a coupon
/// that may have been acknowledged.
fn oldest_uncommitted(config: &KafkaConfig, group: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
    let err = |e| backend_error("oldest_uncommitted", e);
    let topic = config.topic.as_str();
    let positions = positions(config, group, "oldest_uncommitted")?;
    if let Some(p) = positions.iter().find(|p| p.lost() > 0) {
        tracing::error!(
            topic,
            group,
            partition = p.partition,
            committed = p.committed,
            low_watermark = p.low,
            lost = p.lost(),
            "the broker deleted events this group never committed; nothing is released until an operator moves the group past them"
        );
        return Ok(Some(DateTime::<Utc>::UNIX_EPOCH));
    }
    let mut oldest: Option<DateTime<Utc>> = None;
    for p in positions {
        let (partition, position) = (p.partition, p.position());
        if position >= p.high {
            continue;
        }
        // Read the first uncommitted message for its time, with a throwaway reader.
        let reader: BaseConsumer = config
            .client_config()
            .set("group.id", format!("{group}.horizon-probe"))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(err)?;
        let mut at = TopicPartitionList::new();
        at.add_partition_offset(topic, partition, Offset::Offset(position))
            .map_err(err)?;
        reader.assign(&at).map_err(err)?;
        drop(at);
        let deadline = std::time::Instant::now() + QUERY_TIMEOUT;
        let published = loop {
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    break m
                        .timestamp()
                        .to_millis()
                        .and_then(DateTime::<Utc>::from_timestamp_millis);
                }
                Some(Err(e)) => return Err(err(e)),
                None if std::time::Instant::now() >= deadline => {
                    return Err(BackendError::new(
                        Component::Log,
                        "kafka",
                        "oldest_uncommitted",
                        ErrorKind::Unavailable,
                        format!("could not read {topic}/{partition}@{position} within {QUERY_TIMEOUT:?}"),
                    ));
                }
                None => {}
            }
        };
        // No timestamp: be conservative and treat it as published now (keeps everything).
        let published = published.unwrap_or_else(Utc::now);
        oldest = Some(oldest.map_or(published, |o| o.min(published)));
    }
    Ok(oldest)
}

#[async_trait]
impl EventLog for KafkaLog {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, event: &IssueEvent) -> Result<(), BackendError> {
        let key = self.key(event);
        // The record's time is the gate's admission time, not this host's clock: the
        // reconciler compares it with the gate's ledger (PROTOCOL.md section 6).
        let payload = event.encode();
        let out = Outgoing {
            key: Some(key.as_bytes()),
            timestamp_ms: event.admitted_at.map(|at| at.timestamp_millis()),
            ..Outgoing::to(&self.config.topic, &payload)
        };
        self.publisher.send("publish", out).await.map(|_| ())
    }

    async fn publish_raw(&self, payload: &[u8]) -> Result<(), BackendError> {
        self.publisher
            .send("publish", Outgoing::to(&self.config.topic, payload))
            .await
            .map(|_| ())
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        self.source(group, &self.config.topic)
    }

    async fn subscribe_dead_letters(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        self.source(group, &self.config.dead_letter_topic())
    }

    async fn oldest_uncommitted(&self, group: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
        let (config, group) = (self.config.clone(), group.to_owned());
        blocking("oldest_uncommitted", move || oldest_uncommitted(&config, &group)).await
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BackendError> {
        // The inherent method: librdkafka's flush, off the async threads.
        KafkaLog::flush(self, timeout).await
    }
}

/// Runs librdkafka's blocking admin queries off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    operation: &'static str,
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::new(Component::Log, "kafka", operation, ErrorKind::Corrupt, e.to_string()))?
}
