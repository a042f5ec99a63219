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
use crate::producer::Publisher;
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
    /// Creates the producer (connections are made lazily by librdkafka).
    pub fn new(config: KafkaConfig) -> Result<Self, BackendError> {
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
            .create_with_context(GroupContext)
            .map_err(|e| backend_error("subscribe", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| backend_error("subscribe", e))?;
        Ok(consumer)
    }

    fn source(&self, group: &str, topic: &str) -> Result<Box<dyn EventSource>, BackendError> {
        Ok(Box::new(KafkaSource::new(
            self.consumer(group, topic)?,
            self.publisher.clone(),
            topic.to_owned(),
            self.config.dead_letter_topic.clone(),
            group.to_owned(),
        )))
    }
}

/// The publish time of the oldest message `group` has not committed, over every partition.
fn oldest_uncommitted(config: &KafkaConfig, group: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
    let err = |e| backend_error("oldest_uncommitted", e);
    let topic = config.topic.as_str();
    // A client of the group that never joins it: reading committed offsets needs no membership.
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
    let positions: Vec<(i32, Offset)> = committed
        .elements_for_topic(topic)
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    drop(committed);
    let mut oldest: Option<DateTime<Utc>> = None;
    for (partition, offset) in positions {
        let (low, high) = group_client
            .fetch_watermarks(topic, partition, QUERY_TIMEOUT)
            .map_err(err)?;
        let position = match offset {
            Offset::Offset(n) => n.max(low),
            _ => low,
        };
        if position >= high {
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
        self.publisher
            .send(
                "publish",
                &self.config.topic,
                Some(key.as_bytes()),
                &event.encode(),
                &[],
            )
            .await
            .map(|_| ())
    }

    async fn publish_raw(&self, payload: &[u8]) -> Result<(), BackendError> {
        self.publisher
            .send("publish", &self.config.topic, None, payload, &[])
            .await
            .map(|_| ())
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        self.source(group, &self.config.topic)
    }

    async fn subscribe_dead_letters(&self, group: &str) -> Result<Box<dyn EventSource>, BackendError> {
        self.source(group, &self.config.dead_letter_topic)
    }

    async fn oldest_uncommitted(&self, group: &str) -> Result<Option<DateTime<Utc>>, BackendError> {
        let config = self.config.clone();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || oldest_uncommitted(&config, &group))
            .await
            .map_err(|e| {
                BackendError::new(
                    Component::Log,
                    "kafka",
                    "oldest_uncommitted",
                    ErrorKind::Corrupt,
                    e.to_string(),
                )
            })?
    }
}
