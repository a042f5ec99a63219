//! Checks every [`EventLog`] must pass. Each test gets a log of its own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::support::{event, now_ms, open_campaign, user};
use crate::domain::{EventId, IssueEvent};
use crate::log::{DeadLetter, EventLog, EventSource, LogRecord, dead_letter_headers};

/// How long one poll may wait. Polls end early as soon as records arrive.
const POLL: Duration = Duration::from_millis(500);
/// Polls that may come back empty before a reader gives up.
pub const PATIENCE: usize = 40;

fn events(n: usize) -> Vec<IssueEvent> {
    let c = open_campaign(n as u64, 1);
    (0..n).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect()
}

fn group() -> String {
    format!("conformance-{}", uuid::Uuid::new_v4().simple())
}

/// Reads until `n` records came, committing each batch if `commit`; gives up after
/// [`PATIENCE`] empty polls.
pub async fn read(source: &mut dyn EventSource, n: usize, commit: bool) -> Vec<LogRecord> {
    let mut got = Vec::new();
    let mut empty = 0;
    while got.len() < n && empty < PATIENCE {
        let batch = source.next_batch(n - got.len(), POLL).await.unwrap();
        if batch.records.is_empty() {
            empty += 1;
            continue;
        }
        if commit {
            source.commit(&batch.commit).await.unwrap();
        }
        got.extend(batch.records);
    }
    got
}

/// Reads whatever comes in a few polls (to show nothing more comes).
async fn read_more(source: &mut dyn EventSource) -> Vec<LogRecord> {
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(
            source
                .next_batch(100, Duration::from_millis(300))
                .await
                .unwrap()
                .records,
        );
    }
    got
}

fn ids(records: &[LogRecord]) -> Vec<EventId> {
    records.iter().map(|r| r.decode().expect("decodes").event_id).collect()
}

/// Published events are read back intact; once committed, the group does not see them again.
pub async fn publish_consume_commit(log: Arc<dyn EventLog>) {
    let sent = events(20);
    for e in &sent {
        log.publish(e).await.unwrap();
    }
    let g = group();
    let mut source = log.subscribe(&g).await.unwrap();
    let got = read(&mut *source, sent.len(), true).await;
    let decoded: Vec<IssueEvent> = got.iter().map(|r| r.decode().unwrap()).collect();
    let mut want = sent.clone();
    let mut have = decoded.clone();
    want.sort_by_key(|e| e.event_id);
    have.sort_by_key(|e| e.event_id);
    assert_eq!(have, want, "every event read back once and intact");
    drop(source);
    let mut again = log.subscribe(&g).await.unwrap();
    assert!(
        read_more(&mut *again).await.is_empty(),
        "committed records are not delivered again"
    );
}

/// A batch read but not committed is delivered again to the next consumer of the group.
pub async fn uncommitted_batch_is_redelivered(log: Arc<dyn EventLog>) {
    let sent = events(5);
    for e in &sent {
        log.publish(e).await.unwrap();
    }
    let g = group();
    let mut first = log.subscribe(&g).await.unwrap();
    let read_once = read(&mut *first, sent.len(), false).await;
    assert_eq!(read_once.len(), sent.len());
    drop(first);
    let mut second = log.subscribe(&g).await.unwrap();
    let again = read(&mut *second, sent.len(), true).await;
    let (a, b): (HashSet<_>, HashSet<_>) = (ids(&read_once).into_iter().collect(), ids(&again).into_iter().collect());
    assert_eq!(a, b, "the uncommitted batch came again");
}

/// Consumer groups keep their own positions.
pub async fn groups_are_independent(log: Arc<dyn EventLog>) {
    let sent = events(4);
    for e in &sent {
        log.publish(e).await.unwrap();
    }
    let (g1, g2) = (group(), group());
    let mut a = log.subscribe(&g1).await.unwrap();
    assert_eq!(read(&mut *a, 4, true).await.len(), 4);
    let mut b = log.subscribe(&g2).await.unwrap();
    assert_eq!(read(&mut *b, 4, true).await.len(), 4, "another group reads everything");
}

/// The oldest uncommitted record's time is reported until the group commits it.
pub async fn oldest_uncommitted_tracks_commits(log: Arc<dyn EventLog>) {
    let before = now_ms() - chrono::Duration::seconds(5);
    let sent = events(3);
    for e in &sent {
        log.publish(e).await.unwrap();
    }
    let g = group();
    let mut source = log.subscribe(&g).await.unwrap();
    let oldest = log
        .oldest_uncommitted(&g)
        .await
        .unwrap()
        .expect("nothing committed yet");
    assert!(oldest >= before, "publish time is recent: {oldest}");
    let got = read(&mut *source, 3, true).await;
    assert_eq!(got.len(), 3);
    assert_eq!(log.oldest_uncommitted(&g).await.unwrap(), None, "all committed");
}

/// Dead letters keep the payload and carry the error, attempts and source position.
pub async fn dead_letters_carry_headers(log: Arc<dyn EventLog>) {
    log.publish_raw(b"not an event").await.unwrap();
    let g = group();
    let mut source = log.subscribe(&g).await.unwrap();
    let got = read(&mut *source, 1, false).await;
    assert_eq!(got.len(), 1);
    let letter = DeadLetter {
        record: got[0].clone(),
        error: "malformed issue event".into(),
        attempts: 3,
    };
    source.dead_letter(&letter).await.unwrap();
    source.commit(&crate::log::CommitHandle::covering(&got)).await.unwrap();
    let mut dead = log.subscribe_dead_letters(&group()).await.unwrap();
    let letters = read(&mut *dead, 1, true).await;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(l.payload, b"not an event");
    assert_eq!(l.header(dead_letter_headers::ERROR), Some("malformed issue event"));
    assert_eq!(l.header(dead_letter_headers::ATTEMPTS), Some("3"));
    assert_eq!(
        l.header(dead_letter_headers::SOURCE_OFFSET),
        Some(got[0].offset.to_string().as_str())
    );
    assert_eq!(
        l.header(dead_letter_headers::SOURCE_PARTITION),
        Some(got[0].partition.to_string().as_str())
    );
    assert_eq!(l.header(dead_letter_headers::GROUP), Some(g.as_str()));
}

/// Raw payloads arrive byte for byte and do not decode as events.
pub async fn raw_payloads_pass_through(log: Arc<dyn EventLog>) {
    let payload = vec![0u8, 159, 146, 150, b'{'];
    log.publish_raw(&payload).await.unwrap();
    let mut source = log.subscribe(&group()).await.unwrap();
    let got = read(&mut *source, 1, true).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, payload);
    assert!(got[0].decode().is_err());
}

/// Concurrent publishers: every event arrives.
pub async fn concurrent_publishers_lose_nothing(log: Arc<dyn EventLog>) {
    let sent = events(200);
    let tasks: Vec<_> = sent
        .chunks(25)
        .map(|chunk| {
            let log = log.clone();
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                for e in &chunk {
                    log.publish(e).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut source = log.subscribe(&group()).await.unwrap();
    let got: HashSet<EventId> = ids(&read(&mut *source, sent.len(), true).await).into_iter().collect();
    let want: HashSet<EventId> = sent.iter().map(|e| e.event_id).collect();
    assert_eq!(got, want);
}
