//! [`StoreWriter`]: the `after-store` group commit. Concurrent acknowledgements are
//! written as one [`IssueStore::record`] batch each, so a batch takes the campaign row's
//! lock (the store's stock guard) once, not once per coupon. Written one by one, every
//! request queued on that lock and the mode collapsed under 1,000 requests/s
//! (BENCHMARKS.md).

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::domain::{IssueEvent, RecordOutcome};
use crate::error::{BackendError, Component, ErrorKind};
use crate::store::IssueStore;

/// Events per `record` call at most.
const MAX_BATCH: usize = 512;
/// `record` calls in flight at once: while they run, the next batch fills.
const MAX_IN_FLIGHT: usize = 2;

struct Write {
    event: IssueEvent,
    reply: oneshot::Sender<Result<RecordOutcome, BackendError>>,
}

/// Queues events and writes them in batches (module docs).
pub(crate) struct StoreWriter {
    queue: mpsc::Sender<Write>,
    backend: &'static str,
}

impl StoreWriter {
    /// A writer over `store`; its task runs until the writer is dropped. Needs a runtime.
    pub(crate) fn new(store: Arc<dyn IssueStore>) -> Self {
        let backend = store.backend();
        let (queue, rx) = mpsc::channel(65_536);
        tokio::spawn(run(store, rx));
        Self { queue, backend }
    }

    /// Records `event` in the next batch and answers its own outcome.
    pub(crate) async fn record(&self, event: IssueEvent) -> Result<RecordOutcome, BackendError> {
        let gone = || {
            BackendError::new(
                Component::Store,
                self.backend,
                "record",
                ErrorKind::OutcomeUnknown,
                "the store writer stopped before answering",
            )
        };
        let (reply, answer) = oneshot::channel();
        self.queue.send(Write { event, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(store: Arc<dyn IssueStore>, mut rx: mpsc::Receiver<Write>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot lets the queue fill: the busier the store, the bigger the batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            // The events move into the batch; each reply waits for its outcome.
            let (events, replies): (Vec<IssueEvent>, Vec<_>) = batch.into_iter().map(|w| (w.event, w.reply)).unzip();
            match store.record(&events).await {
                Ok(outcomes) if outcomes.len() == replies.len() => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcomes) => {
                    let message = format!(
                        "the store answered {} outcomes for {} events",
                        outcomes.len(),
                        replies.len()
                    );
                    reply_all(
                        replies,
                        &BackendError::new(Component::Store, store.backend(), "record", ErrorKind::Corrupt, message),
                    );
                }
                Err(e) => reply_all(replies, &e),
            }
            drop(slot);
        });
    }
}

/// Every write of a failed batch gets the error (the batch is one transaction: nothing of
/// it was written, or, for an unknown outcome, any of it may have been).
fn reply_all(replies: Vec<oneshot::Sender<Result<RecordOutcome, BackendError>>>, e: &BackendError) {
    for reply in replies {
        let copy = BackendError::new(e.component, e.backend, e.operation, e.kind, e.message.clone());
        let _ = reply.send(Err(copy));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::domain::{CampaignState, UserId};
    use crate::memory::MemoryStore;
    use crate::test_support::campaign;

    /// The memory store, counting `record` calls, each waiting for a permit of `open`.
    struct Held {
        inner: MemoryStore,
        calls: AtomicUsize,
        open: Semaphore,
        fail: bool,
    }

    #[async_trait]
    impl IssueStore for Held {
        fn backend(&self) -> &'static str {
            "held"
        }
        async fn record(&self, events: &[IssueEvent]) -> Result<Vec<RecordOutcome>, BackendError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.open.acquire().await.expect("open").forget();
            if self.fail {
                return Err(BackendError::new(
                    Component::Store,
                    "held",
                    "record",
                    ErrorKind::Unavailable,
                    "down",
                ));
            }
            self.inner.record(events).await
        }
        // The rest is never called by the writer.
        async fn create_campaign(&self, c: &crate::Campaign) -> Result<(), BackendError> {
            self.inner.create_campaign(c).await
        }
        async fn campaign(&self, id: &crate::CampaignId) -> Result<Option<crate::Campaign>, BackendError> {
            self.inner.campaign(id).await
        }
        async fn set_campaign_state(
            &self,
            id: &crate::CampaignId,
            state: CampaignState,
        ) -> Result<Option<crate::Campaign>, BackendError> {
            self.inner.set_campaign_state(id, state).await
        }
        async fn void(
            &self,
            id: &crate::CampaignId,
            keys: &[crate::ReservationKey],
        ) -> Result<Vec<crate::VoidOutcome>, BackendError> {
            self.inner.void(id, keys).await
        }
        async fn open_campaigns(&self) -> Result<Vec<crate::CampaignId>, BackendError> {
            self.inner.open_campaigns().await
        }
        async fn coupon(&self, id: &crate::CouponId) -> Result<Option<crate::Coupon>, BackendError> {
            self.inner.coupon(id).await
        }
        async fn coupons_of_user(&self, user: &UserId) -> Result<Vec<crate::Coupon>, BackendError> {
            self.inner.coupons_of_user(user).await
        }
        async fn redeem(&self, r: &crate::Redemption) -> Result<crate::RedeemOutcome, BackendError> {
            self.inner.redeem(r).await
        }
        async fn issued_count(&self, id: &crate::CampaignId) -> Result<u64, BackendError> {
            self.inner.issued_count(id).await
        }
        async fn holders(&self, id: &crate::CampaignId) -> Result<Vec<(UserId, u32)>, BackendError> {
            self.inner.holders(id).await
        }
        async fn highest_admission_seq(&self, id: &crate::CampaignId) -> Result<u64, BackendError> {
            self.inner.highest_admission_seq(id).await
        }
        async fn voided_count(&self, id: &crate::CampaignId) -> Result<u64, BackendError> {
            self.inner.voided_count(id).await
        }
        async fn stored_keys(
            &self,
            id: &crate::CampaignId,
            keys: &[crate::ReservationKey],
        ) -> Result<Vec<bool>, BackendError> {
            self.inner.stored_keys(id, keys).await
        }
        async fn pending_notices(
            &self,
            after: Option<crate::CouponId>,
            limit: usize,
        ) -> Result<Vec<crate::PendingNotices>, BackendError> {
            self.inner.pending_notices(after, limit).await
        }
        async fn clear_notices(&self, notice: crate::Notice, ids: &[crate::CouponId]) -> Result<(), BackendError> {
            self.inner.clear_notices(notice, ids).await
        }
    }

    /// Writes `n` events at once while the store holds its first calls, then opens it.
    async fn write_concurrently(
        fail: bool,
        n: usize,
    ) -> (Arc<Held>, Vec<IssueEvent>, Vec<Result<RecordOutcome, BackendError>>) {
        let c = campaign(CampaignState::Open);
        let store = Arc::new(Held {
            inner: MemoryStore::new(),
            calls: AtomicUsize::new(0),
            open: Semaphore::new(0),
            fail,
        });
        store.inner.create_campaign(&c).await.unwrap();
        let writer = StoreWriter::new(store.clone());
        // Every write queued while the store holds the first batches: they cannot finish
        // before the rest is queued behind them.
        let mut answers = Vec::new();
        let mut events = Vec::new();
        for i in 0..n {
            let (reply, answer) = oneshot::channel();
            let event = IssueEvent::new(&c, UserId::new(format!("u{i}")).unwrap(), 1, c.created_at);
            events.push(event.clone());
            writer.queue.send(Write { event, reply }).await.unwrap();
            answers.push(answer);
        }
        store.open.add_permits(n);
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        (store, events, outcomes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_batches_and_each_gets_its_own_outcome() {
        let (store, events, answers) = write_concurrently(false, 60).await;
        // The campaign has 10 coupons: 10 writes are stored (which ones depends on which
        // of two concurrent batches commits first), and each answer is its own event's.
        let mut stored = 0;
        for (event, answer) in events.iter().zip(&answers) {
            let held = store.inner.coupon(&event.coupon_id).await.unwrap().is_some();
            match answer {
                Ok(RecordOutcome::Stored) => {
                    assert!(held, "told stored, not in the store");
                    stored += 1;
                }
                Ok(RecordOutcome::Fenced {
                    fence: crate::Fence::StockExhausted,
                }) => assert!(!held, "told refused, but stored"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(stored, 10);
        let calls = store.calls.load(Ordering::SeqCst);
        assert!(calls <= MAX_IN_FLIGHT + 1, "60 writes in {calls} record calls");
        let c = store.inner.open_campaigns().await.unwrap()[0];
        assert_eq!(store.inner.issued_count(&c).await.unwrap(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_answers_its_error_to_every_write() {
        let (_, _, answers) = write_concurrently(true, 20).await;
        for a in answers {
            let e = a.expect_err("the store is down");
            assert_eq!((e.kind, e.operation), (ErrorKind::Unavailable, "record"));
        }
    }
}
