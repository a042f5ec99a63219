//! [`EventLog`]: durable publication of issue events, and the consumer side.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::IssueEvent;
use crate::error::BackendError;

/// One record read from the log: the raw payload (so that undecodable records can be
/// dead-lettered as they are) and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The payload as published.
    pub payload: Vec<u8>,
    /// The partition it sits in.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// When the log accepted it, if the log says.
    pub published_at: Option<DateTime<Utc>>,
    /// Headers (dead letters carry the error, attempts and source position here).
    pub headers: Vec<(String, String)>,
}

impl LogRecord {
    /// Decodes the payload as an [`IssueEvent`].
    pub fn decode(&self) -> Result<IssueEvent, crate::domain::DecodeError> {
        IssueEvent::decode(&self.payload)
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Positions to commit once a batch is safely stored: for each partition, the
/// offset of the next record to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitHandle {
    /// `(partition, next offset)` pairs.
    pub positions: Vec<(i32, i64)>,
}

impl CommitHandle {
    /// The handle that commits everything in `records`.
    pub fn covering(records: &[LogRecord]) -> Self {
        let mut positions: Vec<(i32, i64)> = Vec::new();
        for r in records {
            match positions.iter_mut().find(|(p, _)| *p == r.partition) {
                Some((_, next)) => *next = (*next).max(r.offset + 1),
                None => positions.push((r.partition, r.offset + 1)),
            }
        }
        Self { positions }
    }
}

/// A batch read from the log, with the handle that commits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The records, in log order per partition.
    pub records: Vec<LogRecord>,
    /// Commit this (with [`EventSource::commit`]) only after the records are stored.
    pub commit: CommitHandle,
}

/// Header names on dead letters.
pub mod dead_letter_headers {
    /// Why the record was dead-lettered.
    pub const ERROR: &str = "coupon-error";
    /// How many times it was tried.
    pub const ATTEMPTS: &str = "coupon-attempts";
    /// Its partition in the source topic.
    pub const SOURCE_PARTITION: &str = "coupon-source-partition";
    /// Its offset in the source topic.
    pub const SOURCE_OFFSET: &str = "coupon-source-offset";
    /// The consumer group that gave up on it.
    pub const GROUP: &str = "coupon-group";
}

/// A record given up on: it goes to the dead-letter side with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record as read.
    pub record: LogRecord,
    /// Why it was given up on.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}

impl DeadLetter {
    /// The headers a dead letter carries, [`dead_letter_headers`].
    pub fn headers(&self, group: &str) -> Vec<(String, String)> {
        use dead_letter_headers::*;
        vec![
            (ERROR.to_owned(), self.error.clone()),
            (ATTEMPTS.to_owned(), self.attempts.to_string()),
            (SOURCE_PARTITION.to_owned(), self.record.partition.to_string()),
            (SOURCE_OFFSET.to_owned(), self.record.offset.to_string()),
            (GROUP.to_owned(), group.to_owned()),
        ]
    }
}

/// The durable log of issue events between the hot path and the cold path.
///
/// `publish` returning `Ok` means the event is durable (for Kafka: acknowledged by
/// all in-sync replicas); that is what [`crate::AckMode::AfterLog`] waits for.
///
/// Implementations: [`crate::memory::MemoryLog`] here, `KafkaLog` in `coupon-kafka`.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The backend's name for errors and metrics (`memory`, `kafka`, ...).
    fn backend(&self) -> &'static str;

    /// Publishes one event; `Ok` once it is durable.
    async fn publish(&self, event: &IssueEvent) -> Result<(), BackendError>;

    /// Publishes bytes as they are (operators replaying dead letters; tests injecting poison).
    async fn publish_raw(&self, payload: &[u8]) -> Result<(), BackendError>;

    /// Joins consumer group `group` and returns its source of batches. Reading starts
    /// at the group's committed position (the beginning for a new group).
    async fn subscribe(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError>;

    /// Reads the dead letters, as consumer group `group` of the dead-letter side.
    async fn subscribe_dead_letters(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError>;

    /// When the oldest record that `group` has not committed was published, or `None`
    /// if the group has committed everything published so far. The [`crate::Reconciler`]
    /// uses it to tell "never published" from "still on its way".
    async fn oldest_uncommitted(&self, group: &str) -> Result<Option<DateTime<Utc>>, BackendError>;

    /// Waits up to `timeout` until everything published so far is delivered (a
    /// producer's buffered records, at shutdown). A log whose `publish` returns only once
    /// the event is delivered has nothing to flush.
    async fn flush(&self, timeout: Duration) -> Result<(), BackendError> {
        let _ = timeout;
        Ok(())
    }
}

/// The consumer side of an [`EventLog`]: batches, commits, dead letters.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait EventSource: Send + Sync {
    /// Waits up to `wait` for records and returns at most `max` of them (possibly none).
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BackendError>;

    /// Commits a batch's positions: the group will not see those records again.
    async fn commit(&mut self, handle: &CommitHandle) -> Result<(), BackendError>;

    /// Sends a record to the dead-letter side, with the error in its headers.
    async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), BackendError>;
}
