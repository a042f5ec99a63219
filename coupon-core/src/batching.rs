//! [`BatchingGate`]: coalesces concurrent admissions into [`IssueGate::admit_many`] calls.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::domain::{Admission, CampaignId, CouponId, GateCampaign, Reservation, ReservationKey, UserId};
use crate::error::{BackendError, Component, ErrorKind};
use crate::gate::{AdmitRequest, GateCounts, IssueGate, RestoreReport};

/// How a [`BatchingGate`] forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// The most admissions in one batch.
    pub max_batch: usize,
    /// How long a batch may wait for more requests after the first. Zero (the default)
    /// adds no delay: a batch is whatever queued up while earlier batches were in flight.
    pub max_wait: Duration,
    /// Batches in flight at once.
    pub max_in_flight: usize,
    /// Requests that may queue; further ones wait for room.
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 128,
            max_wait: Duration::ZERO,
            max_in_flight: 4,
            queue: 65_536,
        }
    }
}

impl BatchConfig {
    /// Sets the batch size.
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets the longest wait for a batch to fill.
    pub fn with_max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Sets the batches in flight.
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
}

struct Pending {
    request: AdmitRequest,
    now: DateTime<Utc>,
    reply: oneshot::Sender<Result<Admission, BackendError>>,
}

/// Wraps any gate: concurrent [`IssueGate::admit`] calls are queued and sent as
/// [`IssueGate::admit_many`] batches (bounded size and wait, a bounded number in
/// flight), each caller getting its own answer. Every other call goes straight through.
///
/// Under load this turns many round trips into a few: each batch makes one
/// [`IssueGate::admit_many`] call per campaign in it (for Redis: one script call), so a
/// failure of one campaign's call is reported to that campaign's requests only. A batch is decided with the time of its first request; the
/// [`crate::Issuer`] checks the window with each request's own time before the gate.
pub struct BatchingGate {
    inner: Arc<dyn IssueGate>,
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for BatchingGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchingGate")
            .field("inner", &self.inner.backend())
            .finish_non_exhaustive()
    }
}

impl BatchingGate {
    /// Starts the batching task on the current Tokio runtime. It ends when the gate is dropped.
    pub fn new(inner: Arc<dyn IssueGate>, config: BatchConfig) -> Self {
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        tokio::spawn(run(inner.clone(), rx, config));
        Self { inner, queue }
    }

    /// The wrapped gate.
    pub fn inner(&self) -> &Arc<dyn IssueGate> {
        &self.inner
    }
}

async fn run(inner: Arc<dyn IssueGate>, mut rx: mpsc::Receiver<Pending>, config: BatchConfig) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    loop {
        // Take a slot first: while every slot is busy, requests pile up into the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.len() < config.max_batch && !config.max_wait.is_zero() {
            let deadline = tokio::time::Instant::now() + config.max_wait;
            while batch.len() < config.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    _ => break,
                }
            }
        }
        // A caller that is gone (timed out, disconnected) must not be admitted: nobody
        // would ever publish its event, and its stock would wait for the reconciler.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let now = batch[0].now;
            // One call per campaign, all at once: a campaign whose call fails (its slot's
            // node is down, say) answers only its own requests; the others were admitted
            // or refused on their own and are told so (review finding F9).
            let mut groups: Vec<Vec<Pending>> = Vec::new();
            for p in batch {
                match groups
                    .iter_mut()
                    .find(|g| g[0].request.campaign_id == p.request.campaign_id)
                {
                    Some(group) => group.push(p),
                    None => groups.push(vec![p]),
                }
            }
            let calls = groups.into_iter().map(|group| {
                let inner = inner.clone();
                async move {
                    let requests: Vec<AdmitRequest> = group.iter().map(|p| p.request.clone()).collect();
                    match inner.admit_many(&requests, now).await {
                        Ok(answers) if answers.len() == group.len() => {
                            let mut orphans = Vec::new();
                            for (p, a) in group.into_iter().zip(answers) {
                                let Pending { request, reply, .. } = p;
                                if let Err(Ok(Admission::Admitted { nth, .. })) = reply.send(Ok(a)) {
                                    orphans.push(ReservationKey {
                                        coupon_id: request.coupon_id,
                                        user_id: request.user_id,
                                        nth,
                                    });
                                }
                            }
                            release_orphans(&*inner, &requests[0].campaign_id, &orphans).await;
                        }
                        Ok(answers) => {
                            let e = BackendError::new(
                                Component::Gate,
                                inner.backend(),
                                "admit",
                                ErrorKind::Corrupt,
                                format!("{} answers for {} requests", answers.len(), group.len()),
                            );
                            reply_all(group, &e);
                        }
                        Err(e) => reply_all(group, &e),
                    }
                }
            });
            futures::future::join_all(calls).await;
        });
    }
}

/// Admissions whose caller was gone when the answer came (it timed out, or its client
/// hung up): the coupon id never left this process, so no event can ever be published
/// for it, and its stock can go back at once without waiting for the reconciler (no void
/// needed: there is nothing to fence off). Review finding F8.
async fn release_orphans(inner: &dyn IssueGate, campaign_id: &CampaignId, orphans: &[ReservationKey]) {
    for key in orphans {
        if let Err(e) = inner.release(campaign_id, key).await {
            tracing::warn!(error = %e, coupon = %key.coupon_id, "could not release an admission whose caller is gone; the reconciler will");
        }
    }
}

fn reply_all(batch: Vec<Pending>, e: &BackendError) {
    for p in batch {
        let copy = BackendError::new(e.component, e.backend, e.operation, e.kind, e.message.clone());
        let _ = p.reply.send(Err(copy));
    }
}

// Every method forwarded: a default method left out would silently bypass the inner gate.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl IssueGate for BatchingGate {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn open(&self, campaign: &GateCampaign) -> Result<(), BackendError> {
        self.inner.open(campaign).await
    }

    async fn admit(
        &self,
        campaign_id: &CampaignId,
        user_id: &UserId,
        coupon_id: &CouponId,
        now: DateTime<Utc>,
    ) -> Result<Admission, BackendError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request: AdmitRequest {
                campaign_id: *campaign_id,
                user_id: user_id.clone(),
                coupon_id: *coupon_id,
            },
            now,
            reply,
        };
        let gone = || {
            BackendError::new(
                Component::Gate,
                self.inner.backend(),
                "admit",
                ErrorKind::OutcomeUnknown,
                "the batching task stopped",
            )
        };
        self.queue.send(pending).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn admit_many(&self, requests: &[AdmitRequest], now: DateTime<Utc>) -> Result<Vec<Admission>, BackendError> {
        self.inner.admit_many(requests, now).await
    }

    async fn release(&self, campaign_id: &CampaignId, key: &ReservationKey) -> Result<bool, BackendError> {
        self.inner.release(campaign_id, key).await
    }

    async fn settle(&self, campaign_id: &CampaignId, keys: &[ReservationKey]) -> Result<u64, BackendError> {
        self.inner.settle(campaign_id, keys).await
    }

    async fn reservations(
        &self,
        campaign_id: &CampaignId,
        admitted_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reservation>, BackendError> {
        self.inner.reservations(campaign_id, admitted_before, limit).await
    }

    async fn counts(&self, campaign_id: &CampaignId) -> Result<Option<GateCounts>, BackendError> {
        self.inner.counts(campaign_id).await
    }

    async fn holding(&self, campaign_id: &CampaignId, user_id: &UserId) -> Result<Vec<u32>, BackendError> {
        self.inner.holding(campaign_id, user_id).await
    }

    async fn clock(&self) -> Result<DateTime<Utc>, BackendError> {
        self.inner.clock().await
    }

    async fn restore(
        &self,
        campaign: &GateCampaign,
        holders: &[(UserId, u32)],
        seq_floor: u64,
    ) -> Result<RestoreReport, BackendError> {
        self.inner.restore(campaign, holders, seq_floor).await
    }

    async fn fence(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.inner.fence(campaign_id).await
    }

    async fn close(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.inner.close(campaign_id).await
    }

    async fn forget(&self, campaign_id: &CampaignId) -> Result<(), BackendError> {
        self.inner.forget(campaign_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CouponId, UserId};
    use crate::gate::MockIssueGate;

    /// F8: the caller gives up (a gate timeout, a client that hung up) while its batch is
    /// in flight; the admission that comes back is released at once, exactly that one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_admission_whose_caller_is_gone_is_released_at_once() {
        let (in_flight_tx, in_flight) = tokio::sync::oneshot::channel::<()>();
        let in_flight_tx = std::sync::Mutex::new(Some(in_flight_tx));
        let (go_tx, go) = std::sync::mpsc::channel::<()>();
        let go = std::sync::Mutex::new(go);
        let (released_tx, mut released) = tokio::sync::mpsc::unbounded_channel::<ReservationKey>();
        let mut inner = MockIssueGate::new();
        inner.expect_backend().return_const("mock");
        inner.expect_admit_many().times(1).returning(move |requests, _| {
            if let Some(tx) = in_flight_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            // Hold the batch until the caller is gone (a worker thread blocks; another runs the test).
            go.lock().unwrap().recv().unwrap();
            Ok(requests
                .iter()
                .map(|_| Admission::Admitted {
                    nth: 1,
                    remaining: 9,
                    seq: 1,
                    admitted_at: crate::domain::timestamp_now(),
                })
                .collect())
        });
        inner.expect_release().times(1).returning(move |_, key| {
            released_tx.send(key.clone()).unwrap();
            Ok(true)
        });
        let gate = Arc::new(BatchingGate::new(Arc::new(inner), BatchConfig::default()));
        let (campaign, user, coupon) = (CampaignId::new(), UserId::new("gone").unwrap(), CouponId::new());
        let caller = {
            let gate = gate.clone();
            let user = user.clone();
            tokio::spawn(async move { gate.admit(&campaign, &user, &coupon, chrono::Utc::now()).await })
        };
        in_flight.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        go_tx.send(()).unwrap();
        let key = tokio::time::timeout(Duration::from_secs(10), released.recv())
            .await
            .expect("released within the bound")
            .unwrap();
        assert_eq!(
            key,
            ReservationKey {
                coupon_id: coupon,
                user_id: user,
                nth: 1
            }
        );
    }

    /// F9: two campaigns in one batch; the call for one fails. The other campaign's
    /// requests get their own answers, not the failure.
    #[tokio::test]
    async fn one_campaign_failing_does_not_fail_another_in_the_same_batch() {
        let (good, bad) = (CampaignId::new(), CampaignId::new());
        let mut inner = MockIssueGate::new();
        inner.expect_backend().return_const("mock");
        inner.expect_admit_many().times(2).returning(move |requests, _| {
            if requests[0].campaign_id == bad {
                Err(BackendError::new(
                    Component::Gate,
                    "mock",
                    "admit",
                    ErrorKind::Unavailable,
                    "the slot's node is down",
                ))
            } else {
                Ok(requests
                    .iter()
                    .map(|_| Admission::Admitted {
                        nth: 1,
                        remaining: 0,
                        seq: 1,
                        admitted_at: crate::domain::timestamp_now(),
                    })
                    .collect())
            }
        });
        // Every request waits for the others, so all four form one batch.
        let gate = Arc::new(BatchingGate::new(
            Arc::new(inner),
            BatchConfig::default()
                .with_max_wait(Duration::from_millis(200))
                .with_max_batch(4),
        ));
        let calls: Vec<_> = [good, bad, good, bad]
            .into_iter()
            .enumerate()
            .map(|(i, campaign)| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    let user = UserId::new(format!("u{i}")).unwrap();
                    (
                        campaign,
                        gate.admit(&campaign, &user, &CouponId::new(), chrono::Utc::now()).await,
                    )
                })
            })
            .collect();
        for call in calls {
            let (campaign, answer) = call.await.unwrap();
            if campaign == good {
                assert!(matches!(answer, Ok(Admission::Admitted { .. })), "{answer:?}");
            } else {
                assert_eq!(answer.unwrap_err().kind, ErrorKind::Unavailable);
            }
        }
    }
}
