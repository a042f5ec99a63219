//! [`KafkaSource`]: a consumer-group member yielding batches, committing only when told.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coupon_core::{BackendError, Batch, CommitHandle, DeadLetter, EventSource, LogRecord};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::errors::backend_error;
use crate::log::{blocking, group_progress};
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
///
/// It watches for a stalled group: every `stall_check_every` it exports how many
/// partitions it holds (`coupon_consumer_assigned_partitions`) and what its group has
/// not committed (`coupon_consumer_group_uncommitted`), both labelled by group. When
/// it holds nothing while its group has uncommitted events and commits nothing, it
/// logs a warning, and after `rejoin_after` of that it leaves and joins the group
/// again: a broker that lost the members' sessions once left partitions unassigned
/// for over a minute while acknowledged coupons waited unstored. (An idle member of a
/// group whose other members commit is normal, with more members than partitions,
/// and is left alone: a rejoin makes the whole group rebalance.)
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<GroupContext>>,
    publisher: Arc<Publisher>,
    config: KafkaConfig,
    group: String,
    watch: StallWatch,
}

struct StallWatch {
    last_check: tokio::time::Instant,
    idle_since: Option<tokio::time::Instant>,
    committed_total: Option<i64>,
    assigned: Arc<AtomicU64>,
    rejoins: Arc<AtomicU64>,
}

impl KafkaSource {
    pub(crate) fn new(
        consumer: StreamConsumer<GroupContext>,
        publisher: Arc<Publisher>,
        config: KafkaConfig,
        group: String,
    ) -> Self {
        Self {
            consumer: Arc::new(consumer),
            publisher,
            config,
            group,
            watch: StallWatch {
                // The first check after one period: joining the group takes a moment.
                last_check: tokio::time::Instant::now(),
                idle_since: None,
                committed_total: None,
                assigned: Arc::default(),
                rejoins: Arc::default(),
            },
        }
    }

    /// Partitions this member held at its last check.
    pub fn assigned_partitions(&self) -> u64 {
        self.watch.assigned.load(Ordering::Relaxed)
    }

    /// How many times this member joined its group again after a stall.
    pub fn rejoins(&self) -> u64 {
        self.watch.rejoins.load(Ordering::Relaxed)
    }

    /// The stall check (at most every `stall_check_every`); never fails a batch.
    async fn watch_for_stall(&mut self) {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.watch.last_check) < self.config.stall_check_every {
            return;
        }
        self.watch.last_check = now;
        let assigned = match self.consumer.assignment() {
            Ok(list) => {
                let n = list.elements_for_topic(&self.config.topic).len() as u64;
                drop(list);
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read this member's assignment");
                return;
            }
        };
        self.watch.assigned.store(assigned, Ordering::Relaxed);
        metrics::gauge!("coupon_consumer_assigned_partitions", "group" => self.group.clone()).set(assigned as f64);
        let (config, group) = (self.config.clone(), self.group.clone());
        let progress = match blocking("group_progress", move || group_progress(&config, &group)).await {
            Ok(progress) => progress,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the group's progress");
                return;
            }
        };
        metrics::gauge!("coupon_consumer_group_uncommitted", "group" => self.group.clone())
            .set(progress.uncommitted as f64);
        let advanced = self
            .watch
            .committed_total
            .is_some_and(|before| progress.committed_total > before);
        self.watch.committed_total = Some(progress.committed_total);
        if assigned > 0 || progress.uncommitted == 0 || advanced {
            self.watch.idle_since = None;
            return;
        }
        let idle_since = *self.watch.idle_since.get_or_insert(now);
        let idle = now.duration_since(idle_since);
        tracing::warn!(
            group = %self.group,
            uncommitted = progress.uncommitted,
            idle_secs = idle.as_secs(),
            "this member holds no partition while its group has uncommitted events and commits nothing"
        );
        if idle >= self.config.rejoin_after {
            let topic = self.config.topic.clone();
            self.consumer.unsubscribe();
            match self.consumer.subscribe(&[&topic]) {
                Ok(()) => {
                    let n = self.watch.rejoins.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(group = %self.group, rejoins = n, "left and joined the consumer group again");
                }
                Err(e) => tracing::error!(error = %e, "could not join the consumer group again"),
            }
            self.watch.idle_since = None;
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
        self.watch_for_stall().await;
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
        let topic = self.config.topic.clone();
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
                &self.config.dead_letter_topic,
                None,
                &letter.record.payload,
                &headers,
            )
            .await
            .map(|_| ())
    }
}
