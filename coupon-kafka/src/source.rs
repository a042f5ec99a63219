//! [`KafkaSource`]: a consumer-group member yielding batches, committing only when told.

use std::collections::{BTreeSet, HashMap};
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
use crate::log::{GroupProgress, PartitionPosition, blocking, positions};
use crate::producer::{Outgoing, Publisher};

/// Logs rebalances and counts them; commits of revoked partitions are skipped by
/// [`KafkaSource::commit`].
#[derive(Default)]
pub(crate) struct GroupContext {
    rebalances: Arc<AtomicU64>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "consumer group rebalance");
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
    }
}

/// One member of a consumer group on one topic.
///
/// It watches for a stalled group: every `stall_check_every` it exports how many
/// partitions it holds (`coupon_consumer_assigned_partitions`) and what its group has
/// not committed (`coupon_consumer_group_uncommitted`), both labelled by group. When
/// it has nothing uncommitted on its own partitions (or holds none) while partitions
/// held elsewhere have uncommitted events and none of them advanced since the last
/// check, it logs a warning, and after `rejoin_after` of that it leaves and joins the
/// group again. Two stalls were seen on the local broker (tansu): partitions left
/// unassigned for over a minute after the members' sessions were lost, and the
/// partitions of a member killed with `kill -9` left to nobody (the broker dropped the
/// member on a heartbeat but kept the group's old assignment; the LeaveGroup of a
/// rejoin makes it assign again). Either way acknowledged coupons waited unstored. (An
/// idle member of a group whose other members commit is normal, with more members than
/// partitions, and is left alone: a rejoin makes the whole group rebalance.)
///
/// It stops on a partition whose records were deleted before its group committed them
/// (retention, or a broker that lost data): acknowledged coupons may be among them, so
/// it neither hands out nor commits anything past the gap, logs an error and counts the
/// lost records (`coupon_consumer_events_lost_total`). The group's committed offset so
/// stays below the topic's low watermark, which keeps [`crate::KafkaLog`]'s reconciler
/// horizon holding every admission until an operator moves the group past the gap
/// (RELIABILITY.md). Offsets on the event topic are contiguous (it is neither compacted
/// nor written in transactions), so a record beyond the next expected offset is a gap.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<GroupContext>>,
    publisher: Arc<Publisher>,
    config: KafkaConfig,
    group: String,
    watch: StallWatch,
    gaps: GapWatch,
}

/// What [`KafkaSource`] knows to tell a gap in a partition's offsets.
#[derive(Default)]
struct GapWatch {
    /// The group's rebalances as of `next`: a new assignment starts over.
    rebalances: u64,
    /// Per partition, the offset after the last record handed out (or the group's
    /// committed offset before the first).
    next: HashMap<i32, i64>,
    /// Partitions this member stopped on: (first missing offset, first offset after).
    halted: HashMap<i32, (i64, i64)>,
}

struct StallWatch {
    last_check: tokio::time::Instant,
    idle_since: Option<tokio::time::Instant>,
    /// Each partition's position at the last check.
    positions: HashMap<i32, i64>,
    /// This member's partitions at the last check.
    mine: Vec<i32>,
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
        // Exported at zero from the start, so an alert on their increase sees the series.
        metrics::counter!("coupon_consumer_dead_lettered_total", "group" => group.clone()).increment(0);
        metrics::counter!("coupon_consumer_events_lost_total", "group" => group.clone()).increment(0);
        Self {
            consumer: Arc::new(consumer),
            publisher,
            config,
            group,
            watch: StallWatch {
                // The first check after one period: joining the group takes a moment.
                last_check: tokio::time::Instant::now(),
                idle_since: None,
                positions: HashMap::new(),
                mine: Vec::new(),
                assigned: Arc::default(),
                rejoins: Arc::default(),
            },
            gaps: GapWatch::default(),
        }
    }

    /// Partitions this member stopped on because records before them were deleted
    /// unread, with the missing offsets (`from..to`).
    pub fn halted_partitions(&self) -> Vec<(i32, std::ops::Range<i64>)> {
        let mut halted: Vec<_> = self
            .gaps
            .halted
            .iter()
            .map(|(p, (from, to))| (*p, *from..*to))
            .collect();
        halted.sort_by_key(|(p, _)| *p);
        halted
    }

    /// `records` without those at or after a gap in their partition's offsets; a
    /// partition with a gap is paused and stays so until the group rebalances.
    async fn hold_back_gaps(&mut self, records: Vec<LogRecord>) -> Vec<LogRecord> {
        let rebalances = self.consumer.context().rebalances.load(Ordering::Relaxed);
        if rebalances != self.gaps.rebalances {
            self.gaps = GapWatch {
                rebalances,
                ..GapWatch::default()
            };
        }
        let unknown: BTreeSet<i32> = records
            .iter()
            .map(|r| r.partition)
            .filter(|p| !self.gaps.next.contains_key(p) && !self.gaps.halted.contains_key(p))
            .collect();
        if !unknown.is_empty() {
            match self.committed(unknown).await {
                Ok(committed) => self.gaps.next.extend(committed),
                // Unchecked until the next assignment: the check only ever holds back.
                Err(e) => tracing::warn!(error = %e, "could not read the group's committed offsets"),
            }
        }
        let mut kept = Vec::with_capacity(records.len());
        for r in records {
            if self.gaps.halted.contains_key(&r.partition) {
                continue;
            }
            match self.gaps.next.get(&r.partition).copied() {
                Some(expected) if r.offset > expected => self.halt(r.partition, expected, r.offset),
                expected => {
                    let next = expected.map_or(r.offset + 1, |e| e.max(r.offset + 1));
                    self.gaps.next.insert(r.partition, next);
                    kept.push(r);
                }
            }
        }
        kept
    }

    /// The group's committed offsets of `partitions` (those it has committed on).
    async fn committed(&self, partitions: BTreeSet<i32>) -> Result<Vec<(i32, i64)>, BackendError> {
        let (consumer, topic) = (self.consumer.clone(), self.config.topic.clone());
        blocking("committed_offsets", move || {
            let mut wanted = TopicPartitionList::new();
            for p in partitions {
                wanted.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(wanted, Duration::from_secs(5))
                .map_err(|e| backend_error("committed_offsets", e))?;
            let out = committed
                .elements_for_topic(&topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(n) => Some((e.partition(), n)),
                    _ => None,
                })
                .collect();
            drop(committed);
            Ok(out)
        })
        .await
    }

    fn halt(&mut self, partition: i32, from: i64, to: i64) {
        self.gaps.halted.insert(partition, (from, to));
        metrics::counter!("coupon_consumer_events_lost_total", "group" => self.group.clone())
            .increment((to - from) as u64);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(error = %e, partition, "could not pause the partition; its records are held back all the same");
        }
        tracing::error!(
            topic = %self.config.topic,
            group = %self.group,
            partition,
            missing = ?(from..to),
            lost = to - from,
            "the broker deleted records this group never committed; this member stops on the partition (nothing past the gap is stored or committed) until an operator moves the group past it"
        );
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
        let mine: Vec<i32> = match self.consumer.assignment() {
            Ok(list) => {
                let mut mine: Vec<i32> = list
                    .elements_for_topic(&self.config.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                drop(list);
                mine.sort_unstable();
                mine
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read this member's assignment");
                return;
            }
        };
        self.watch.assigned.store(mine.len() as u64, Ordering::Relaxed);
        metrics::gauge!("coupon_consumer_assigned_partitions", "group" => self.group.clone()).set(mine.len() as f64);
        let (config, group) = (self.config.clone(), self.group.clone());
        let positions = match blocking("group_progress", move || positions(&config, &group, "group_progress")).await {
            Ok(positions) => positions,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the group's progress");
                return;
            }
        };
        let progress = GroupProgress::of(&positions);
        metrics::gauge!("coupon_consumer_group_uncommitted", "group" => self.group.clone())
            .set(progress.uncommitted as f64);
        metrics::gauge!("coupon_consumer_group_lost", "group" => self.group.clone()).set(progress.lost as f64);
        let stall = Stall::judge(&positions, &mine, &self.watch.positions);
        self.watch.positions = positions.iter().map(|p| (p.partition, p.position())).collect();
        // A new assignment means the group rebalanced (perhaps on another member's
        // rejoin): it gets a whole bound of its own, or members rejoining in turn would
        // keep the group rebalancing.
        let rebalanced = std::mem::replace(&mut self.watch.mine, mine.clone()) != mine;
        let Some(stall) = stall.filter(|_| !rebalanced) else {
            self.watch.idle_since = None;
            return;
        };
        let idle_since = *self.watch.idle_since.get_or_insert(now);
        let idle = now.duration_since(idle_since);
        tracing::warn!(
            group = %self.group,
            held = mine.len(),
            waiting_elsewhere = stall.waiting,
            partitions = ?stall.partitions,
            idle_secs = idle.as_secs(),
            "this member has drained its partitions while others of its group hold uncommitted events and commit nothing"
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

/// Partitions this member does not hold, waiting with uncommitted events while
/// their owner commits nothing, and this member with nothing left of its own.
#[derive(Debug, PartialEq)]
struct Stall {
    partitions: Vec<i32>,
    waiting: i64,
}

impl Stall {
    /// `before`: each partition's position at the previous check (empty at the first,
    /// which never judges a stall: nothing is known about progress yet).
    fn judge(positions: &[PartitionPosition], mine: &[i32], before: &HashMap<i32, i64>) -> Option<Self> {
        let (held, elsewhere): (Vec<_>, Vec<_>) = positions.iter().partition(|p| mine.contains(&p.partition));
        if held.iter().any(|p| p.uncommitted() > 0) {
            return None;
        }
        // A partition stopped on a gap waits for an operator, not for a rejoin.
        let waiting: Vec<&PartitionPosition> = elsewhere
            .into_iter()
            .filter(|p| p.uncommitted() > 0 && p.lost() == 0)
            .collect();
        let stuck = |p: &&PartitionPosition| before.get(&p.partition).is_some_and(|&b| p.position() <= b);
        if waiting.is_empty() || !waiting.iter().all(stuck) {
            return None;
        }
        Some(Self {
            partitions: waiting.iter().map(|p| p.partition).collect(),
            waiting: waiting.iter().map(|p| p.uncommitted()).sum(),
        })
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
        let records = self.hold_back_gaps(records).await;
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
        let (headers, topic) = (letter.headers(&self.group), self.config.dead_letter_topic());
        let out = Outgoing {
            headers: &headers,
            ..Outgoing::to(&topic, &letter.record.payload)
        };
        self.publisher.send("dead_letter", out).await?;
        metrics::counter!("coupon_consumer_dead_lettered_total", "group" => self.group.clone()).increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partition `partition` holding offsets 0..`high`, committed up to `committed`.
    fn at(partition: i32, committed: i64, high: i64) -> PartitionPosition {
        PartitionPosition {
            partition,
            committed: Some(committed),
            low: 0,
            high,
        }
    }

    fn before(positions: &[(i32, i64)]) -> HashMap<i32, i64> {
        positions.iter().copied().collect()
    }

    #[test]
    fn a_drained_member_beside_a_partition_that_waits_and_does_not_advance_is_stalled() {
        let positions = [at(0, 10, 10), at(1, 4, 9)];
        let stall = Stall::judge(&positions, &[0], &before(&[(0, 8), (1, 4)]));
        assert_eq!(
            stall,
            Some(Stall {
                partitions: vec![1],
                waiting: 5
            })
        );
    }

    #[test]
    fn a_member_holding_nothing_beside_a_group_that_commits_nothing_is_stalled() {
        let positions = [at(0, 2, 5)];
        assert!(Stall::judge(&positions, &[], &before(&[(0, 2)])).is_some());
    }

    #[test]
    fn no_stall_while_this_member_has_work_of_its_own() {
        let positions = [at(0, 3, 10), at(1, 4, 9)];
        assert_eq!(Stall::judge(&positions, &[0], &before(&[(0, 3), (1, 4)])), None);
    }

    #[test]
    fn no_stall_while_a_waiting_partition_advances() {
        let positions = [at(0, 10, 10), at(1, 6, 9)];
        assert_eq!(Stall::judge(&positions, &[0], &before(&[(0, 10), (1, 4)])), None);
    }

    #[test]
    fn a_partition_stopped_on_a_gap_is_not_a_stall() {
        // Partition 1's group committed 4, but the broker kept only offsets 6 and up.
        let gap = PartitionPosition {
            partition: 1,
            committed: Some(4),
            low: 6,
            high: 9,
        };
        assert_eq!(gap.lost(), 2);
        let positions = [at(0, 10, 10), gap];
        assert_eq!(Stall::judge(&positions, &[0], &before(&[(0, 10), (1, 6)])), None);
    }

    #[test]
    fn no_stall_when_nothing_waits_or_at_the_first_check() {
        let drained = [at(0, 10, 10), at(1, 9, 9)];
        assert_eq!(Stall::judge(&drained, &[0], &before(&[(0, 10), (1, 9)])), None);
        let waiting = [at(0, 10, 10), at(1, 4, 9)];
        assert_eq!(Stall::judge(&waiting, &[0], &HashMap::new()), None);
    }
}
