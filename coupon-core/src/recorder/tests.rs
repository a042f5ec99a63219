//! Every branch of the cold path, with mocked backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mockall::Sequence;

use super::*;
use crate::domain::{CampaignState, RejectReason};
use crate::error::{Component, ErrorKind};
use crate::gate::MockIssueGate;
use crate::log::{CommitHandle, MockEventSource};
use crate::store::MockIssueStore;
use crate::test_support::*;

fn records(events: &[IssueEvent]) -> Vec<LogRecord> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| LogRecord {
            payload: e.encode(),
            partition: 0,
            offset: i as i64,
            published_at: None,
            headers: Vec::new(),
        })
        .collect()
}

fn events(n: usize) -> Vec<IssueEvent> {
    let c = campaign(CampaignState::Open);
    (0..n)
        .map(|i| IssueEvent::new(&c, UserId::new(format!("u{i}")).unwrap(), 1, c.created_at))
        .collect()
}

/// A source that yields `records` once, then nothing.
fn source_once(records: Vec<LogRecord>, seq: &mut Sequence) -> MockEventSource {
    let mut source = MockEventSource::new();
    let batch = Batch {
        commit: CommitHandle::covering(&records),
        records,
    };
    source
        .expect_next_batch()
        .times(1)
        .in_sequence(seq)
        .return_once(move |_, _| Ok(batch));
    source
}

/// A store that fences `coupon` with `fence` and stores the rest, once.
fn store_fencing_one(coupon: crate::domain::CouponId, fence: crate::domain::Fence) -> MockIssueStore {
    let mut store = MockIssueStore::new();
    store.expect_record().times(1).returning(move |events| {
        Ok(events
            .iter()
            .map(|e| {
                if e.coupon_id == coupon {
                    RecordOutcome::Fenced { fence }
                } else {
                    RecordOutcome::Stored
                }
            })
            .collect())
    });
    store
}

/// One dead letter (handed to `seen`), then the commit, in that order.
fn dead_letter_then_commit(
    source: &mut MockEventSource,
    seq: &mut Sequence,
    seen: impl Fn(&DeadLetter) + Send + 'static,
) {
    source
        .expect_dead_letter()
        .times(1)
        .in_sequence(seq)
        .returning(move |letter| {
            seen(letter);
            Ok(())
        });
    source.expect_commit().times(1).in_sequence(seq).returning(|_| Ok(()));
}

fn config() -> RecorderConfig {
    RecorderConfig::default().with_max_attempts(3)
}

use crate::domain::UserId;

#[tokio::test(start_paused = true)]
async fn an_unreachable_store_is_retried_until_back_without_commit_or_dead_letter() {
    let sent = events(4);
    let mut seq = Sequence::new();
    let mut source = source_once(records(&sent), &mut seq);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut store = MockIssueStore::new();
    store.expect_backend().return_const("mock");
    let c = calls.clone();
    store
        .expect_record()
        .times(6)
        .in_sequence(&mut seq)
        .returning(move |events| {
            if c.fetch_add(1, Ordering::SeqCst) < 5 {
                Err(err(Component::Store, ErrorKind::Unavailable))
            } else {
                Ok(vec![RecordOutcome::Stored; events.len()])
            }
        });
    source.expect_dead_letter().never();
    source
        .expect_commit()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let mut recorder = Recorder::new(Box::new(source), arc(store), config());
    let started = tokio::time::Instant::now();
    let report = recorder.run_once().await;
    assert_eq!((report.stored, report.store_retries, report.dead_lettered), (4, 5, 0));
    // Backoff doubles: 50 + 100 + 200 + 400 + 800 ms of (virtual) waiting, each wait
    // with a jitter of up to as much again.
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(1_550)..Duration::from_millis(3_100)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_the_store_rejects_is_dead_lettered_after_n_attempts_while_the_rest_is_stored() {
    let sent = events(3);
    let poison = sent[1].event_id;
    let mut seq = Sequence::new();
    let mut source = source_once(records(&sent), &mut seq);
    let mut store = MockIssueStore::new();
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let s = seen.clone();
    store.expect_record().times(3).returning(move |events| {
        s.lock().unwrap().push(events.len());
        Ok(events
            .iter()
            .map(|e| {
                if e.event_id == poison {
                    RecordOutcome::Rejected {
                        reason: RejectReason::NthOutOfRange,
                    }
                } else {
                    RecordOutcome::Stored
                }
            })
            .collect())
    });
    // F10: before it is dead-lettered, its admission is voided, so a replay cannot be
    // stored after the reconciler gives its stock back.
    store
        .expect_void()
        .withf(move |_, keys| keys.len() == 1)
        .times(1)
        .returning(|_, keys| Ok(vec![crate::domain::VoidOutcome::Voided; keys.len()]));
    let letters: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let l = letters.clone();
    dead_letter_then_commit(&mut source, &mut seq, move |letter| {
        l.lock().unwrap().push(letter.clone())
    });
    let mut recorder = Recorder::new(Box::new(source), arc(store), config());
    let report = recorder.run_once().await;
    assert_eq!((report.stored, report.dead_lettered), (2, 1));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![3, 1, 1],
        "the rejected event alone is retried"
    );
    let letters = letters.lock().unwrap();
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(letters[0].record.offset, 1);
    assert!(letters[0].error.contains("nth"), "{}", letters[0].error);
}

#[tokio::test]
async fn an_undecodable_record_is_dead_lettered_at_once_and_the_rest_flow_on() {
    let sent = events(2);
    let mut recs = records(&sent);
    recs.push(LogRecord {
        payload: b"{\"version\": 1, \"not\": \"an event\"}".to_vec(),
        partition: 0,
        offset: 2,
        published_at: None,
        headers: Vec::new(),
    });
    let mut seq = Sequence::new();
    let mut source = source_once(recs, &mut seq);
    source
        .expect_dead_letter()
        .withf(|l| l.record.offset == 2 && l.attempts == 1 && l.error.contains("malformed"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let mut store = MockIssueStore::new();
    store
        .expect_record()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|e| Ok(vec![RecordOutcome::Stored; e.len()]));
    source
        .expect_commit()
        .withf(|h| h.positions == vec![(0, 3)])
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let mut recorder = Recorder::new(Box::new(source), arc(store), config());
    let report = recorder.run_once().await;
    assert_eq!((report.received, report.stored, report.dead_lettered), (3, 2, 1));
}

#[tokio::test]
async fn a_redelivered_batch_duplicates_nothing_and_still_settles_and_commits() {
    let sent = events(3);
    let mut seq = Sequence::new();
    let mut source = source_once(records(&sent), &mut seq);
    let mut store = MockIssueStore::new();
    store
        .expect_record()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|e| Ok(vec![RecordOutcome::Duplicate; e.len()]));
    let mut gate = MockIssueGate::new();
    gate.expect_settle()
        .withf(|_, keys| keys.len() == 3)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(0));
    source
        .expect_commit()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    struct Count(AtomicUsize);
    impl RecordObserver for Count {
        fn stored(&self, events: &[IssueEvent]) {
            self.0.fetch_add(events.len(), Ordering::SeqCst);
        }
    }
    let observer = Arc::new(Count(AtomicUsize::new(0)));
    let mut recorder = Recorder::new(Box::new(source), arc(store), config())
        .with_gate(arc(gate))
        .with_observer(observer.clone());
    let report = recorder.run_once().await;
    assert_eq!((report.stored, report.duplicates), (0, 3));
    assert_eq!(
        observer.0.load(Ordering::SeqCst),
        0,
        "nothing newly stored, nobody notified"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_dead_letter_side_is_retried_before_the_commit() {
    let mut seq = Sequence::new();
    let poison = LogRecord {
        payload: b"garbage".to_vec(),
        partition: 0,
        offset: 0,
        published_at: None,
        headers: Vec::new(),
    };
    let mut source = source_once(vec![poison], &mut seq);
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    source
        .expect_dead_letter()
        .times(3)
        .in_sequence(&mut seq)
        .returning(move |_| {
            if t.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(err(Component::Log, ErrorKind::Unavailable))
            } else {
                Ok(())
            }
        });
    source
        .expect_commit()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let mut store = MockIssueStore::new();
    store.expect_record().never();
    let mut recorder = Recorder::new(Box::new(source), arc(store), config());
    assert_eq!(recorder.run_once().await.dead_lettered, 1);
}

#[tokio::test]
async fn an_empty_poll_commits_nothing() {
    let mut source = MockEventSource::new();
    source
        .expect_next_batch()
        .times(1)
        .returning(|_, _| Ok(Batch::default()));
    source.expect_commit().never();
    let mut store = MockIssueStore::new();
    store.expect_record().never();
    let mut recorder = Recorder::new(Box::new(source), arc(store), config());
    assert_eq!(recorder.run_once().await, BatchReport::default());
}

/// A fenced event (voided, slot taken, beyond the stock) is final: dead-lettered at
/// once with the fence's name, never retried, its ledger entry settled, the observer told.
#[tokio::test(start_paused = true)]
async fn a_fenced_event_is_dead_lettered_at_once_and_settled() {
    let sent = events(2);
    let fenced = sent[0].coupon_id;
    let mut seq = Sequence::new();
    let mut source = source_once(records(&sent), &mut seq);
    let store = store_fencing_one(fenced, crate::domain::Fence::Voided);
    let mut gate = MockIssueGate::new();
    gate.expect_settle()
        .withf(|_, keys| keys.len() == 2)
        .times(1)
        .returning(|_, keys| Ok(keys.len() as u64));
    let letters: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let l = letters.clone();
    dead_letter_then_commit(&mut source, &mut seq, move |letter| {
        l.lock().unwrap().push(letter.clone())
    });
    struct Fenced(Mutex<Vec<crate::domain::Fence>>);
    impl RecordObserver for Fenced {
        fn stored(&self, _: &[IssueEvent]) {}
        fn fenced(&self, _: &IssueEvent, fence: crate::domain::Fence) {
            self.0.lock().unwrap().push(fence);
        }
    }
    let observer = Arc::new(Fenced(Mutex::default()));
    let mut recorder = Recorder::new(Box::new(source), arc(store), config())
        .with_gate(arc(gate))
        .with_observer(observer.clone());
    let report = recorder.run_once().await;
    assert_eq!((report.stored, report.fenced, report.dead_lettered), (1, 1, 1));
    let letters = letters.lock().unwrap();
    assert_eq!(letters[0].attempts, 1);
    assert!(letters[0].error.contains("voided"), "{}", letters[0].error);
    assert_eq!(*observer.0.lock().unwrap(), vec![crate::domain::Fence::Voided]);
}

/// An admission of a gate that went back in time, refused by the store
/// (`sequence_reused`): the campaign is fenced, the event dead-lettered, and the
/// admission voided then released, not settled. The sync takes a unit again for every
/// stored slot the gate forgot; a settled refusal would keep a second unit spent for
/// good (stored + remaining < stock: `coupon-chaos run redis-snapshot` found 46 of 1,500).
#[tokio::test(start_paused = true)]
async fn a_refusal_proving_the_gate_went_back_is_voided_and_released_not_settled() {
    let sent = events(2);
    let refused = sent[0].coupon_id;
    let mut seq = Sequence::new();
    let mut source = source_once(records(&sent), &mut seq);
    let mut store = store_fencing_one(refused, crate::domain::Fence::SequenceReused);
    store
        .expect_void()
        .withf(move |_, keys| keys.len() == 1 && keys[0].coupon_id == refused)
        .times(1)
        .returning(|_, _| Ok(vec![crate::domain::VoidOutcome::Voided]));
    let mut gate = MockIssueGate::new();
    gate.expect_fence().times(1).returning(|_| Ok(()));
    gate.expect_release()
        .withf(move |_, key| key.coupon_id == refused)
        .times(1)
        .returning(|_, _| Ok(true));
    gate.expect_settle()
        .withf(move |_, keys| keys.len() == 1 && keys[0].coupon_id != refused)
        .times(1)
        .returning(|_, keys| Ok(keys.len() as u64));
    dead_letter_then_commit(&mut source, &mut seq, |_| ());
    let mut recorder = Recorder::new(Box::new(source), arc(store), config()).with_gate(arc(gate));
    let report = recorder.run_once().await;
    assert_eq!((report.stored, report.fenced, report.dead_lettered), (1, 1, 1));
}

/// F10: an event of a schema version this build does not read is neither stored nor
/// dead-lettered (a dead letter could be replayed after its stock was re-sold), and its
/// batch is not committed: the recorder halts, saying why, until it is upgraded.
#[tokio::test(start_paused = true)]
async fn an_event_of_an_unknown_version_halts_the_recorder_without_commit() {
    let sent = events(2);
    let mut recs = records(&sent);
    recs.insert(
        1,
        LogRecord {
            payload: b"{\"version\": 99}".to_vec(),
            partition: 0,
            offset: 7,
            published_at: None,
            headers: Vec::new(),
        },
    );
    let mut seq = Sequence::new();
    let mut source = source_once(recs, &mut seq);
    source.expect_dead_letter().never();
    source.expect_commit().never();
    let mut store = MockIssueStore::new();
    store.expect_record().never();
    let mut recorder = Recorder::new(Box::new(source), arc(store), config());
    // run_until returns by itself: the recorder halted.
    let report = recorder.run_until(std::future::pending()).await;
    assert!(report.halted);
    assert_eq!((report.received, report.stored, report.dead_lettered), (3, 0, 0));
    let why = recorder.halted().unwrap();
    assert!(why.contains("version 99") && why.contains("offset 7"), "{why}");
    assert!(recorder.drain().await.halted, "stays halted");
}
