//! [`MemoryLog`]: the event log in process memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::domain::IssueEvent;
use crate::error::BackendError;
use crate::log::{Batch, CommitHandle, DeadLetter, EventLog, EventSource, LogRecord};

/// The event log in process memory: one partition, consumer groups with committed
/// offsets, and a dead-letter side.
///
/// It is not durable across a restart of the process; the embedded server pairs it
/// with a store that is, and restores the gate from that store at start. One
/// consumer per group is expected (a second one in the same group reads the same
/// records, which the idempotent store makes harmless).
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    main: Arc<Partition>,
    dead: Arc<Partition>,
}

#[derive(Debug)]
struct Partition {
    records: Mutex<Vec<LogRecord>>,
    committed: Mutex<HashMap<String, i64>>,
    length: watch::Sender<i64>,
}

impl Default for Partition {
    fn default() -> Self {
        Self {
            records: Mutex::new(Vec::new()),
            committed: Mutex::new(HashMap::new()),
            length: watch::Sender::new(0),
        }
    }
}

impl Partition {
    fn append(&self, payload: Vec<u8>, headers: Vec<(String, String)>) {
        let mut records = self.records.lock().expect("log lock");
        let offset = records.len() as i64;
        records.push(LogRecord {
            payload,
            partition: 0,
            offset,
            published_at: Some(Utc::now()),
            headers,
        });
        self.length.send_replace(offset + 1);
    }

    fn committed(&self, group: &str) -> i64 {
        self.committed
            .lock()
            .expect("log lock")
            .get(group)
            .copied()
            .unwrap_or(0)
    }
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records published so far.
    pub fn len(&self) -> usize {
        self.main.records.lock().expect("log lock").len()
    }

    /// Whether nothing was published yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dead letters so far, in order.
    pub fn dead_letters(&self) -> Vec<LogRecord> {
        self.dead.records.lock().expect("log lock").clone()
    }

    fn source(&self, partition: &Arc<Partition>, group: &str) -> Box<dyn EventSource> {
        Box::new(MemorySource {
            position: partition.committed(group),
            partition: partition.clone(),
            dead: self.dead.clone(),
            group: group.to_owned(),
            length: partition.length.subscribe(),
        })
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, event: &IssueEvent) -> Result<(), BackendError> {
        self.main.append(event.encode(), Vec::new());
        Ok(())
    }

    async fn publish_raw(&self, payload: &[u8]) -> Result<(), BackendError> {
        self.main.append(payload.to_vec(), Vec::new());
        Ok(())
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        Ok(self.source(&self.main, group))
    }

    async fn subscribe_dead_letters(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        Ok(self.source(&self.dead, group))
    }

    async fn oldest_uncommitted(&self, group: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
        let committed = self.main.committed(group);
        let records = self.main.records.lock().expect("log lock");
        Ok(records.get(committed as usize).and_then(|r| r.published_at))
    }
}

/// A consumer of a [`MemoryLog`] group.
#[derive(Debug)]
struct MemorySource {
    partition: Arc<Partition>,
    dead: Arc<Partition>,
    group: String,
    position: i64,
    length: watch::Receiver<i64>,
}

#[async_trait]
impl EventSource for MemorySource {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BackendError> {
        let position = self.position;
        // Waiting on the watch channel wakes us on the next append; a timeout gives an empty batch.
        let _ = tokio::time::timeout(wait, self.length.wait_for(|len| *len > position)).await;
        let records: Vec<LogRecord> = {
            let all = self.partition.records.lock().expect("log lock");
            all.iter().skip(position as usize).take(max).cloned().collect()
        };
        self.position += records.len() as i64;
        Ok(Batch {
            commit: CommitHandle::covering(&records),
            records,
        })
    }

    async fn commit(&mut self, handle: &CommitHandle) -> Result<(), BackendError> {
        let mut committed = self.partition.committed.lock().expect("log lock");
        for (_, next) in &handle.positions {
            let entry = committed.entry(self.group.clone()).or_insert(0);
            *entry = (*entry).max(*next);
        }
        Ok(())
    }

    async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), BackendError> {
        self.dead
            .append(letter.record.payload.clone(), letter.headers(&self.group));
        Ok(())
    }
}
