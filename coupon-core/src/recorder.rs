//! [`Recorder`]: the cold path. Read a batch from the log, store it idempotently,
//! settle the gate's ledger, then commit; retry while the store is unreachable;
//! dead-letter poison.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{
    CampaignId, DecodeError, Fence, ISSUE_EVENT_VERSION, IssueEvent, RecordOutcome, ReservationKey, VoidOutcome,
};
use crate::error::BackendError;
use crate::gate::IssueGate;
use crate::log::{Batch, DeadLetter, EventSource, LogRecord};
use crate::store::IssueStore;

/// How the [`Recorder`] batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderConfig {
    /// The most records handled in one batch.
    pub max_batch: usize,
    /// The longest wait for a batch to fill.
    pub batch_wait: Duration,
    /// Attempts at an event the store rejects before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubled after each failure. Each wait adds a random jitter
    /// of up to as much again.
    pub backoff_initial: Duration,
    /// Longest retry delay (before its jitter).
    pub backoff_max: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            batch_wait: Duration::from_millis(20),
            max_attempts: 3,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RecorderConfig {
    /// Sets the batch size.
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets the batch wait.
    pub fn with_batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = wait;
        self
    }

    /// Sets the attempts before dead-lettering.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the retry delays.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }
}

/// Told about what the recorder stored (notifications: SSE, e-mail, ...).
pub trait RecordObserver: Send + Sync {
    /// These events were newly stored.
    fn stored(&self, events: &[IssueEvent]);

    /// The store's fences refused this event ([`RecordOutcome::Fenced`]): a coupon
    /// that is not stored although its admission got this far. Count and alert on it.
    fn fenced(&self, _event: &IssueEvent, _fence: Fence) {}
}

/// Runs several observers, in order (the server's notifications and its metrics, say).
pub struct Observers(pub Vec<Arc<dyn RecordObserver>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers").field("len", &self.0.len()).finish()
    }
}

#[deny(clippy::missing_trait_methods)]
impl RecordObserver for Observers {
    fn stored(&self, events: &[IssueEvent]) {
        for o in &self.0 {
            o.stored(events);
        }
    }

    fn fenced(&self, event: &IssueEvent, fence: Fence) {
        for o in &self.0 {
            o.fenced(event, fence);
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Records read.
    pub received: usize,
    /// Coupons newly stored.
    pub stored: usize,
    /// Events already stored (redeliveries).
    pub duplicates: usize,
    /// Records sent to the dead-letter side.
    pub dead_lettered: usize,
    /// Events the store's fences refused (also dead-lettered, with the fence's name).
    pub fenced: usize,
    /// Store calls that failed and were retried.
    pub store_retries: usize,
    /// The recorder stopped at this batch without storing or committing it
    /// ([`Recorder::halted`] says why).
    pub halted: bool,
}

impl std::ops::AddAssign for BatchReport {
    fn add_assign(&mut self, o: Self) {
        self.received += o.received;
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.dead_lettered += o.dead_lettered;
        self.fenced += o.fenced;
        self.store_retries += o.store_retries;
        self.halted |= o.halted;
    }
}

/// The cold-path loop over any [`EventSource`] and [`IssueStore`].
///
/// Guarantees: a batch is committed only after every record in it is stored (or
/// already was) or dead-lettered; while the store is unreachable the same batch is
/// retried with backoff, never dropped, never committed; redelivery is harmless
/// because recording is idempotent.
pub struct Recorder {
    source: Box<dyn EventSource>,
    store: Arc<dyn IssueStore>,
    gate: Option<Arc<dyn IssueGate>>,
    observer: Option<Arc<dyn RecordObserver>>,
    config: RecorderConfig,
    halted: Option<String>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("store", &self.store.backend())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder reading `source` into `store`.
    pub fn new(source: Box<dyn EventSource>, store: Arc<dyn IssueStore>, config: RecorderConfig) -> Self {
        Self {
            source,
            store,
            gate: None,
            observer: None,
            config,
            halted: None,
        }
    }

    /// Why the recorder stopped, if it did: it met an event of a schema version this build
    /// does not know. Such an event is neither stored nor dead-lettered and its batch is
    /// not committed (a dead-lettered event could be replayed after the reconciler gave its
    /// stock back); upgrade the consumer and restart it, and the batch is delivered again.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// Settles the gate's reservation ledger after each stored batch (one call per
    /// campaign in the batch).
    pub fn with_gate(mut self, gate: Arc<dyn IssueGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Tells `observer` about stored events.
    pub fn with_observer(mut self, observer: Arc<dyn RecordObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs until `shutdown` completes, or until it halts ([`Recorder::halted`]). A batch
    /// in progress at shutdown is not committed; it will be delivered again.
    pub async fn run_until(&mut self, shutdown: impl Future<Output = ()>) -> BatchReport {
        let mut total = BatchReport::default();
        tokio::pin!(shutdown);
        while self.halted.is_none() {
            tokio::select! {
                biased;
                () = &mut shutdown => return total,
                report = self.run_once() => total += report,
            }
        }
        total
    }

    /// Handles batches until a read comes back empty (the log is drained for now);
    /// returns the sum of the batches handled.
    pub async fn drain(&mut self) -> BatchReport {
        let mut total = BatchReport::default();
        loop {
            let report = self.run_once().await;
            if report.received == 0 || report.halted {
                total += report;
                return total;
            }
            total += report;
        }
    }

    /// Reads and handles one batch (possibly empty), retrying until it is done.
    pub async fn run_once(&mut self) -> BatchReport {
        if self.halted.is_some() {
            return BatchReport {
                halted: true,
                ..BatchReport::default()
            };
        }
        let mut backoff = Backoff::new(&self.config);
        let batch = loop {
            match self
                .source
                .next_batch(self.config.max_batch, self.config.batch_wait)
                .await
            {
                Ok(batch) => break batch,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event log failed; retrying");
                    backoff.wait().await;
                }
            }
        };
        if batch.records.is_empty() {
            return BatchReport::default();
        }
        if let Some(reason) = unknown_version(&batch) {
            tracing::error!(%reason, "recorder halted: upgrade the consumer, then restart it");
            self.halted = Some(reason);
            return BatchReport {
                received: batch.records.len(),
                halted: true,
                ..BatchReport::default()
            };
        }
        let report = self.handle(&batch).await;
        let mut backoff = Backoff::new(&self.config);
        for _ in 0..3 {
            match self.source.commit(&batch.commit).await {
                Ok(()) => break,
                // Not fatal: the batch will be delivered again and deduplicated.
                Err(e) => {
                    tracing::warn!(error = %e, "commit failed; the batch may be delivered again");
                    if !e.is_retryable() {
                        break;
                    }
                    backoff.wait().await;
                }
            }
        }
        report
    }

    async fn handle(&mut self, batch: &Batch) -> BatchReport {
        let mut report = BatchReport {
            received: batch.records.len(),
            ..BatchReport::default()
        };
        let mut pending: Vec<(&LogRecord, IssueEvent)> = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            match record.decode() {
                Ok(event) => pending.push((record, event)),
                // Decoding is deterministic: retrying cannot help, so it goes at once.
                Err(e) => {
                    self.dead_letter(record, &e.to_string(), 1).await;
                    report.dead_lettered += 1;
                }
            }
        }

        let mut attempt = 1;
        let mut backoff = Backoff::new(&self.config);
        while !pending.is_empty() {
            let events: Vec<IssueEvent> = pending.iter().map(|(_, e)| e.clone()).collect();
            let outcomes = match self.store.record(&events).await {
                Ok(outcomes) if outcomes.len() == events.len() => outcomes,
                Ok(outcomes) => {
                    tracing::error!(
                        expected = events.len(),
                        got = outcomes.len(),
                        "store answered the wrong number of outcomes; retrying"
                    );
                    report.store_retries += 1;
                    backoff.wait().await;
                    continue;
                }
                Err(e) => {
                    // Unreachable, timed out or refused as a whole: recording is idempotent,
                    // so the same batch is retried until the store takes it.
                    tracing::warn!(error = %e, "store write failed; retrying the batch");
                    report.store_retries += 1;
                    backoff.wait().await;
                    continue;
                }
            };
            let mut done: Vec<IssueEvent> = Vec::new();
            let mut stored: Vec<IssueEvent> = Vec::new();
            let mut rejected = Vec::new();
            let mut fenced = Vec::new();
            for ((record, event), outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    RecordOutcome::Stored => {
                        report.stored += 1;
                        stored.push(event.clone());
                        done.push(event);
                    }
                    RecordOutcome::Duplicate => {
                        report.duplicates += 1;
                        done.push(event);
                    }
                    RecordOutcome::Rejected { reason } => rejected.push((record, event, reason)),
                    RecordOutcome::Fenced { fence } => {
                        report.fenced += 1;
                        fenced.push((record, event, fence));
                    }
                }
            }
            self.fence_gate(fenced.iter().map(|(_, e, fence)| (e.campaign_id, *fence)))
                .await;
            let mut gate_lost = Vec::new();
            for (record, event, fence) in fenced {
                // Never retried: the fence's answer is final. A voided entry is gone
                // already and an exhausted stock's unit must stay spent: settled. An
                // admission of a gate that went back in time is released (below).
                tracing::error!(coupon = %event.coupon_id, campaign = %event.campaign_id, fence = fence.as_str(), "the store fenced off an event");
                if let Some(observer) = &self.observer {
                    observer.fenced(&event, fence);
                }
                self.dead_letter(record, &format!("fenced by the store: {}: {fence}", fence.as_str()), 1)
                    .await;
                report.dead_lettered += 1;
                if fence.proves_gate_loss() {
                    gate_lost.push(event);
                } else {
                    done.push(event);
                }
            }
            self.release_refused(&gate_lost).await;
            self.settle(&done).await;
            if let Some(observer) = &self.observer
                && !stored.is_empty()
            {
                observer.stored(&stored);
            }
            if rejected.is_empty() {
                break;
            }
            if attempt >= self.config.max_attempts {
                // Void before dead-lettering: a later replay of the dead letter must not be
                // stored after the reconciler gave its stock back.
                let events: Vec<IssueEvent> = rejected.iter().map(|(_, e, _)| e.clone()).collect();
                self.void(&events).await;
                for (record, _, reason) in &rejected {
                    self.dead_letter(record, &format!("rejected by the store: {reason}"), attempt)
                        .await;
                    report.dead_lettered += 1;
                }
                break;
            }
            attempt += 1;
            backoff.wait().await;
            pending = rejected.into_iter().map(|(r, e, _)| (r, e)).collect();
        }
        report
    }

    async fn settle(&self, events: &[IssueEvent]) {
        let Some(gate) = &self.gate else { return };
        for (campaign, keys) in keys_by_campaign(events) {
            // Best effort: the reconciler finds stored entries and settles them too.
            if let Err(e) = gate.settle(&campaign, &keys).await {
                tracing::warn!(error = %e, %campaign, "settling the ledger failed; the reconciler will");
            }
        }
    }

    /// Voids, then releases, the admissions of a gate that went back in time which the
    /// store refused (`SequenceReused`, `SlotTaken`). Their campaign is fenced already,
    /// so no admission can take the unit back before a sync; the sync takes a unit for
    /// every stored slot the gate forgot. Settling them instead would spend two units
    /// for one stored coupon, and stored + remaining would stay below the stock for
    /// good (found by `coupon-chaos run redis-snapshot`).
    async fn release_refused(&self, events: &[IssueEvent]) {
        let Some(gate) = &self.gate else { return };
        for (campaign, keys) in keys_by_campaign(events) {
            let mut backoff = Backoff::new(&self.config);
            let outcomes = loop {
                match self.store.void(&campaign, &keys).await {
                    Ok(outcomes) => break outcomes,
                    Err(e) => {
                        tracing::warn!(error = %e, %campaign, "voiding refused admissions failed; retrying");
                        backoff.wait().await;
                    }
                }
            };
            for (key, outcome) in keys.iter().zip(outcomes) {
                let done = match outcome {
                    VoidOutcome::Voided => gate.release(&campaign, key).await.map(drop),
                    VoidOutcome::Stored => gate.settle(&campaign, std::slice::from_ref(key)).await.map(drop),
                };
                if let Err(e) = done {
                    tracing::warn!(error = %e, %campaign, "releasing a refused admission failed; the reconciler will");
                }
            }
        }
    }

    /// Fences in the gate every campaign for which the store proved the gate went back
    /// in time ([`Fence::proves_gate_loss`]), retrying until the gate answers: the batch
    /// is not committed before, so a crash here finds the same proof again.
    async fn fence_gate(&self, fenced: impl Iterator<Item = (CampaignId, Fence)>) {
        let Some(gate) = &self.gate else { return };
        let mut campaigns: Vec<CampaignId> = fenced
            .filter(|(_, fence)| fence.proves_gate_loss())
            .map(|(campaign, _)| campaign)
            .collect();
        campaigns.sort();
        campaigns.dedup();
        for campaign in campaigns {
            let mut backoff = Backoff::new(&self.config);
            while let Err(e) = gate.fence(&campaign).await {
                tracing::warn!(error = %e, %campaign, "fencing the campaign in the gate failed; retrying");
                backoff.wait().await;
            }
            tracing::error!(%campaign, "the store proved the gate went back in time: the campaign is fenced in the gate (503 gate_fenced) until a sync rebuilds it from the store");
        }
    }

    /// Voids these events' admissions, retrying until the store answers.
    async fn void(&self, events: &[IssueEvent]) {
        for (campaign, keys) in keys_by_campaign(events) {
            let mut backoff = Backoff::new(&self.config);
            while let Err(e) = self.store.void(&campaign, &keys).await {
                tracing::warn!(error = %e, %campaign, "voiding rejected events failed; retrying");
                backoff.wait().await;
            }
        }
    }

    async fn dead_letter(&mut self, record: &LogRecord, error: &str, attempts: u32) {
        let letter = DeadLetter {
            record: record.clone(),
            error: error.to_owned(),
            attempts,
        };
        let mut backoff = Backoff::new(&self.config);
        // Never commit past a record that is neither stored nor dead-lettered.
        while let Err(e) = self.source.dead_letter(&letter).await {
            log_dead_letter_failure(&e);
            backoff.wait().await;
        }
        tracing::warn!(
            partition = record.partition,
            offset = record.offset,
            error,
            "record dead-lettered"
        );
    }
}

/// The events' ledger keys, one list per campaign (gate and store calls are per campaign).
fn keys_by_campaign(events: &[IssueEvent]) -> HashMap<CampaignId, Vec<ReservationKey>> {
    let mut by_campaign: HashMap<CampaignId, Vec<ReservationKey>> = HashMap::new();
    for e in events {
        by_campaign.entry(e.campaign_id).or_default().push(e.reservation_key());
    }
    by_campaign
}

/// The first record of a schema version this build does not read, described.
fn unknown_version(batch: &Batch) -> Option<String> {
    batch.records.iter().find_map(|r| match r.decode() {
        Err(DecodeError::UnknownVersion(v)) => Some(format!(
            "the event at partition {} offset {} has schema version {v}, which this build does not read (it reads version {ISSUE_EVENT_VERSION})",
            r.partition, r.offset
        )),
        _ => None,
    })
}

fn log_dead_letter_failure(e: &BackendError) {
    tracing::warn!(error = %e, "dead-letter publish failed; retrying");
}

/// Exponential backoff between retries.
/// Exponential waits between retries (backon), doubling from `backoff_initial` up to
/// `backoff_max`, each with up to as much again of random jitter, so that recorders
/// that failed together do not retry together.
struct Backoff(backon::ExponentialBackoff);

impl Backoff {
    fn new(config: &RecorderConfig) -> Self {
        use backon::BackoffBuilder;
        Self(
            backon::ExponentialBuilder::new()
                .with_min_delay(config.backoff_initial)
                .with_max_delay(config.backoff_max)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }

    async fn wait(&mut self) {
        // Without a limit on the number of retries the iterator never ends.
        let delay = self.0.next().unwrap_or_default();
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests;
