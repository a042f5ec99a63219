//! [`KafkaSource`]: a consumer-group member yielding batches, committing only when told.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coupon_core::{BackendError, Batch, CommitHandle, DeadLetter, EventSource, LogRecord};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::errors::backend_error;
use crate::producer::Publisher;

/// Logs rebalances; commits of revoked partitions are skipped by [`KafkaSource::commit`].
pub struct GroupContext;

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "consumer group rebalance");
    }
}

/// One member of a consumer group on one topic.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<GroupContext>>,
    publisher: Arc<Publisher>,
    topic: String,
    dead_letter_topic: String,
    group: String,
}

impl KafkaSource {
    pub(crate) fn new(
        consumer: StreamConsumer<GroupContext>,
        publisher: Arc<Publisher>,
        topic: String,
        dead_letter_topic: String,
        group: String,
    ) -> Self {
        Self {
            consumer: Arc::new(consumer),
            publisher,
            topic,
            dead_letter_topic,
            group,
        }
    }
}

fn record(m: &BorrowedMessage<'_>) -> LogRecord {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    LogRecord {
        payload: m.payload().unwrap_or_default().to_vec(),
        partition: m.partition(),
        offset: m.offset(),
        published_at: m
            .timestamp()
            .to_millis()
            .and_then(DateTime::<Utc>::from_timestamp_millis),
        headers,
    }
}

#[async_trait]
impl EventSource for KafkaSource {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut records = Vec::new();
        while records.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => records.push(record(&m)),
                Ok(Err(e)) if records.is_empty() => return Err(backend_error("consume", e)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error after a partial batch; returning what was read");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(Batch {
            commit: CommitHandle::covering(&records),
            records,
        })
    }

    async fn commit(&mut self, handle: &CommitHandle) -> Result<(), BackendError> {
        if handle.positions.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let positions = handle.positions.clone();
        tokio::task::spawn_blocking(move || {
            // Only partitions this member still owns: a revoked partition's records go to
            // the new owner again, which the idempotent store makes harmless.
            let owned: Vec<i32> = {
                let assignment = consumer.assignment().map_err(|e| backend_error("commit", e))?;
                let owned = assignment
                    .elements_for_topic(&topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                drop(assignment);
                owned
            };
            let mut tpl = TopicPartitionList::new();
            for (partition, next) in positions.iter().filter(|(p, _)| owned.contains(p)) {
                tpl.add_partition_offset(&topic, *partition, Offset::Offset(*next))
                    .map_err(|e| backend_error("commit", e))?;
            }
            if tpl.count() == 0 {
                return Ok(());
            }
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| backend_error("commit", e))
        })
        .await
        .map_err(|e| {
            BackendError::new(
                coupon_core::Component::Log,
                "kafka",
                "commit",
                coupon_core::ErrorKind::OutcomeUnknown,
                e.to_string(),
            )
        })?
    }

    async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), BackendError> {
        let headers = letter.headers(&self.group);
        self.publisher
            .send(
                "dead_letter",
                &self.dead_letter_topic,
                None,
                &letter.record.payload,
                &headers,
            )
            .await
            .map(|_| ())
    }
}
