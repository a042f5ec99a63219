//! Fail fast (I5) and recovery, on a redis-server of the test's own: stopped, paused,
//! unreachable, scripts flushed and a restart in the middle of traffic.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::OwnRedis;
use coupon_core::memory::MemoryStore;
use coupon_core::{
    Admission, BatchConfig, BatchingGate, Campaign, CampaignState, CouponId, ErrorKind, Fence, IssueEvent, IssueGate,
    IssueStore, NewCampaign, RecordOutcome, UserId, VoidOutcome,
};
use coupon_redis::{RedisGate, RedisGateConfig};
use redis::AsyncCommands;

const RESPONSE: Duration = Duration::from_millis(300);
const CONNECT: Duration = Duration::from_millis(300);
/// Allowed on top of the configured timeouts: scheduling on a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

fn config(url: &str) -> RedisGateConfig {
    RedisGateConfig::from_url(url)
        .unwrap()
        .with_response_timeout(RESPONSE)
        .with_connection_timeout(CONNECT)
}

fn open_campaign(stock: u64) -> Campaign {
    let now = Utc::now();
    let mut c = Campaign::from_new(
        NewCampaign::new(
            "faults",
            stock,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ),
        now,
    );
    c.state = CampaignState::Open;
    c
}

fn user(i: usize) -> UserId {
    UserId::new(format!("user-{i}")).unwrap()
}

#[tokio::test]
async fn a_stopped_server_fails_admissions_fast() {
    let Some(mut own) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&own.url())).await.unwrap();
    let c = open_campaign(10);
    gate.open(&c.gate_spec()).await.unwrap();
    assert!(matches!(
        gate.admit(&c.id, &user(0), &coupon_core::CouponId::new(), Utc::now())
            .await
            .unwrap(),
        Admission::Admitted { .. }
    ));
    own.kill().await;
    for i in 1..4 {
        let started = Instant::now();
        let e = gate
            .admit(&c.id, &user(i), &coupon_core::CouponId::new(), Utc::now())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(took < RESPONSE + CONNECT + MARGIN, "failed after {took:?}: {e}");
        assert!(e.to_string().contains("gate backend `redis` failed to admit"), "{e}");
        assert!(e.is_retryable(), "{e}");
    }
}

#[tokio::test]
async fn a_paused_server_times_out_with_an_unknown_outcome_then_recovers() {
    let Some(own) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&own.url())).await.unwrap();
    let c = open_campaign(10);
    gate.open(&c.gate_spec()).await.unwrap();
    let mut admin = own.admin().await;
    // Writes (scripts count as writes) are held for a second; reads still answer.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = Instant::now();
    let e = gate
        .admit(&c.id, &user(0), &coupon_core::CouponId::new(), Utc::now())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < RESPONSE + CONNECT + MARGIN, "failed after {took:?}: {e}");
    assert_eq!(e.kind, ErrorKind::OutcomeUnknown, "{e}");
    // Unknown means either: the held script may run when the pause ends, or be dropped
    // with the timed-out connection. Keep trying (bounded) until the server answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match gate
            .admit(&c.id, &user(0), &coupon_core::CouponId::new(), Utc::now())
            .await
        {
            Ok(answer) => break answer,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                assert!(Instant::now() < deadline, "the server never answered again: {e}");
            }
        }
    };
    assert!(
        matches!(answer, Admission::Admitted { nth: 1, .. } | Admission::AlreadyIssued),
        "{answer:?}"
    );
    // However many attempts were held or dropped, the user is in exactly once.
    assert_eq!(
        gate.counts(&c.id).await.unwrap().unwrap().remaining,
        9,
        "admitted exactly once"
    );
    assert_eq!(gate.holding(&c.id, &user(0)).await.unwrap(), vec![1]);
}

#[tokio::test]
async fn an_unreachable_server_fails_fast() {
    // Refused: nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let e = RedisGate::connect(config(&format!("redis://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    assert!(started.elapsed() < CONNECT * 2 + MARGIN, "{e}");
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    // Black hole: something accepts the connection and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let e = RedisGate::connect(config(&format!("redis://{addr}/")))
        .await
        .unwrap_err();
    assert!(started.elapsed() < CONNECT * 2 + MARGIN, "{e}");
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_flush_in_the_middle_of_traffic_reloads_and_counts_once() {
    let Some(own) = OwnRedis::start(false).await else {
        return;
    };
    let gate = Arc::new(
        RedisGate::connect(config(&own.url()).with_response_timeout(Duration::from_secs(3)))
            .await
            .unwrap(),
    );
    let c = open_campaign(3_000);
    gate.open(&c.gate_spec()).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let flusher = {
        let done = done.clone();
        let mut admin = own.admin().await;
        tokio::spawn(async move {
            let mut flushes = 0;
            while !done.load(Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut admin).await.unwrap();
                flushes += 1;
                tokio::task::yield_now().await;
            }
            flushes
        })
    };
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let gate = gate.clone();
            let id = c.id;
            tokio::spawn(async move {
                let mut won = Vec::new();
                for i in 0..400 {
                    let u = user((t * 400 + i) % 5_000);
                    if let Admission::Admitted { .. } = gate
                        .admit(&id, &u, &coupon_core::CouponId::new(), Utc::now())
                        .await
                        .unwrap()
                    {
                        won.push(u);
                    }
                }
                won
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let flushes = flusher.await.unwrap();
    assert!(flushes > 1, "scripts were flushed during the traffic ({flushes} times)");
    let distinct: HashSet<_> = winners.iter().collect();
    assert_eq!(distinct.len(), winners.len(), "nobody twice");
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!(
        counts.remaining,
        3_000 - winners.len() as u64,
        "every admission counted exactly once"
    );
    assert_eq!(counts.pending, winners.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_middle_of_traffic_double_counts_nothing() {
    let Some(mut own) = OwnRedis::start(true).await else {
        return;
    };
    let gate = Arc::new(RedisGate::connect(config(&own.url())).await.unwrap());
    let c = open_campaign(100_000);
    gate.open(&c.gate_spec()).await.unwrap();
    let restarted = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let gate = gate.clone();
            let (restarted, progress) = (restarted.clone(), progress.clone());
            let id = c.id;
            tokio::spawn(async move {
                let (mut won, mut failed, mut after_restart) = (Vec::new(), 0usize, 0usize);
                let mut i = 0;
                // Keep going until 50 admissions of this task succeeded after the restart.
                while after_restart < 50 && i < 100_000 {
                    let u = user(t * 100_000 + i);
                    i += 1;
                    match gate.admit(&id, &u, &coupon_core::CouponId::new(), Utc::now()).await {
                        Ok(Admission::Admitted { .. }) => {
                            won.push(u);
                            progress.fetch_add(1, Ordering::Relaxed);
                            if restarted.load(Ordering::Relaxed) {
                                after_restart += 1;
                            }
                        }
                        Ok(other) => panic!("unexpected {other:?}"),
                        Err(e) => {
                            assert!(e.is_retryable(), "{e}");
                            failed += 1;
                            tokio::task::yield_now().await;
                        }
                    }
                }
                (won, failed)
            })
        })
        .collect();
    while progress.load(Ordering::Relaxed) < 500 {
        tokio::task::yield_now().await;
    }
    own.restart().await;
    restarted.store(true, Ordering::Relaxed);
    let (mut winners, mut failures) = (Vec::new(), 0);
    for t in tasks {
        let (w, f) = t.await.unwrap();
        winners.extend(w);
        failures += f;
    }
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    let mut conn = gate.connection();
    let holders: std::collections::HashMap<String, String> = conn.hgetall(gate.keys(&c.id).holds).await.unwrap();
    let holders: Vec<(String, String)> = holders.into_iter().filter(|(u, _)| !u.is_empty()).collect();
    assert!(holders.iter().all(|(_, n)| n == "1"), "nobody counted twice");
    assert_eq!(
        100_000 - counts.remaining,
        holders.len() as u64,
        "stock taken equals holders: nothing double-counted"
    );
    assert_eq!(counts.pending, holders.len() as u64);
    let held: HashSet<&str> = holders.iter().map(|(u, _)| u.as_str()).collect();
    assert!(
        winners.iter().all(|w| held.contains(w.as_str())),
        "every acknowledged admission survived the restart"
    );
    // Failed calls whose outcome was unknown may have been applied: at most that many extra holders.
    assert!(
        holders.len() <= winners.len() + failures,
        "{} holders, {} winners, {failures} failures",
        holders.len(),
        winners.len()
    );
    println!(
        "restart: winners={} failures={failures} holders={}",
        winners.len(),
        holders.len()
    );
}

/// F4: a Redis that may evict keys would silently forget holders and ledger entries and
/// sell their stock again; the gate refuses it at start, naming the setting.
#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused_at_start() {
    let Some(redis) = OwnRedis::start(false).await else {
        return;
    };
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = RedisGate::connect(config(&redis.url())).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert!(e.to_string().contains("maxmemory-policy noeviction"), "{e}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut conn)
        .await
        .unwrap();
    RedisGate::connect(config(&redis.url())).await.unwrap();
}

/// F5: `meta` was lost while the holdings and ledger survived. Sync must rebuild the stock
/// from the store's slots alone: survivors that the store does not hold are dropped, and
/// every stored slot takes its unit (v1 kept the survivors and reset stock near the total).
#[tokio::test]
async fn f5_restore_after_losing_meta_rebuilds_stock_from_the_store_only() {
    let Some(redis) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&redis.url())).await.unwrap();
    let c = open_campaign(10);
    gate.open(&c.gate_spec()).await.unwrap();
    for i in 0..5 {
        let admitted = gate
            .admit(&c.id, &user(i), &coupon_core::CouponId::new(), Utc::now())
            .await
            .unwrap();
        assert!(matches!(admitted, Admission::Admitted { .. }));
    }
    let mut conn = gate.connection();
    let _: u64 = conn.del(gate.keys(&c.id).meta).await.unwrap();
    // The store holds users 0, 1 and 2; users 3 and 4 were never stored.
    let stored: Vec<_> = (0..3).map(|i| (user(i), 1)).collect();
    let report = gate.restore(&c.gate_spec(), &stored, 0).await.unwrap();
    assert!(report.created);
    assert_eq!((report.stock_taken, report.remaining), (3, 7), "{report:?}");
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending), (7, 0));
    assert!(gate.holding(&c.id, &user(3)).await.unwrap().is_empty());
    assert_eq!(gate.holding(&c.id, &user(0)).await.unwrap(), vec![1]);
}

/// F4: Redis restarted from an older snapshot (what a failover to a lagging replica also
/// does) has gone back in time: it hands out admission numbers it already gave. The
/// store refuses the first reused number (`sequence_reused`), the campaign is fenced in
/// the gate until a sync, and the sync numbers on above the store's highest. On 2f412b2
/// the old gate re-sold the lost window's stock and nothing noticed.
#[tokio::test]
async fn f4_a_gate_restarted_from_an_older_snapshot_is_found_and_fenced() {
    let Some(mut redis) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&redis.url())).await.unwrap();
    let store = MemoryStore::new();
    let c = open_campaign(10);
    store.create_campaign(&c).await.unwrap();
    gate.open(&c.gate_spec()).await.unwrap();
    // Admit and store user i's coupon, as the issuer and the recorder would.
    let issue = |i: usize| {
        let (gate, store, c) = (&gate, &store, &c);
        async move {
            let coupon_id = CouponId::new();
            let admission = gate.admit(&c.id, &user(i), &coupon_id, Utc::now()).await.unwrap();
            let Admission::Admitted { nth, seq, .. } = admission else {
                return (admission, None, None);
            };
            let event = IssueEvent::for_admission(c, coupon_id, user(i), nth, Utc::now()).with_admission_seq(seq);
            let outcome = store.record(std::slice::from_ref(&event)).await.unwrap().remove(0);
            if outcome == RecordOutcome::Stored {
                gate.settle(&c.id, &[event.reservation_key()]).await.unwrap();
            }
            (admission, Some(outcome), Some(event.reservation_key()))
        }
    };
    for i in 0..3 {
        assert_eq!(issue(i).await.1, Some(RecordOutcome::Stored));
    }
    let snapshot = redis.snapshot().await;
    for i in 3..6 {
        assert_eq!(issue(i).await.1, Some(RecordOutcome::Stored));
    }
    redis.kill_and_restore(&snapshot).await;
    let counts = wait_for_counts(&gate, &c).await;
    assert_eq!(
        (counts.seq, counts.remaining),
        (3, 7),
        "the gate is back at the snapshot"
    );

    // The first admission after the restart takes number 4 again: the store refuses it.
    let (admission, outcome, refused) = issue(6).await;
    assert!(matches!(admission, Admission::Admitted { seq: 4, .. }), "{admission:?}");
    assert_eq!(
        outcome,
        Some(RecordOutcome::Fenced {
            fence: Fence::SequenceReused
        })
    );
    assert!(Fence::SequenceReused.proves_gate_loss());
    // What the recorder does on that proof: fence the campaign until a sync, then void
    // and release the refused admission (the sync takes the forgotten slots again).
    gate.fence(&c.id).await.unwrap();
    let refused = refused.unwrap();
    assert_eq!(
        store.void(&c.id, std::slice::from_ref(&refused)).await.unwrap(),
        vec![VoidOutcome::Voided]
    );
    assert!(gate.release(&c.id, &refused).await.unwrap());
    assert_eq!(issue(7).await, (Admission::Fenced, None, None));

    // The sync: every stored slot back, numbering on above the store's highest.
    let holders = store.holders(&c.id).await.unwrap();
    let floor = store.highest_admission_seq(&c.id).await.unwrap();
    assert_eq!((holders.len(), floor), (6, 6));
    let report = gate.restore(&c.gate_spec(), &holders, floor).await.unwrap();
    assert!(report.unfenced, "{report:?}");
    // Users 3, 4, 5 came back; user 6's refused admission gave its unit back: I4,
    // stored + remaining = stock (it was 6 + 3 before the recorder released it).
    assert_eq!((report.stock_taken, report.remaining), (3, 4), "{report:?}");
    assert_eq!(holders.len() as u64 + report.remaining, c.total_quantity, "I4");
    assert_eq!(
        issue(4).await.0,
        Admission::AlreadyIssued,
        "a stored holder is known again"
    );
    let (admission, outcome, _) = issue(8).await;
    assert!(matches!(admission, Admission::Admitted { seq: 7, .. }), "{admission:?}");
    assert_eq!(outcome, Some(RecordOutcome::Stored));
    assert!(store.issued_count(&c.id).await.unwrap() <= c.total_quantity, "I1");
}

/// The gate's counts once the restarted server has loaded its data and answers.
async fn wait_for_counts(gate: &RedisGate, c: &Campaign) -> coupon_core::GateCounts {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match gate.counts(&c.id).await {
            Ok(Some(counts)) => return counts,
            other => assert!(
                Instant::now() < deadline,
                "the restarted server never answered: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// F8, on a real Redis: callers that leave while Redis holds their batch (a pause longer
/// than their patience: an HTTP timeout, a client that hung up) hold no stock afterwards,
/// at once, not after the reconciler's grace: queued ones are never sent, and admissions
/// answered after their caller left are released by the batcher. A caller that waited
/// keeps its admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f8_callers_that_left_mid_batch_hold_no_stock() {
    let Some(redis) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&redis.url()).with_response_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    let batched = Arc::new(BatchingGate::new(
        Arc::new(gate.clone()),
        BatchConfig::default().with_max_batch(2).with_max_in_flight(1),
    ));
    let c = open_campaign(10);
    gate.open(&c.gate_spec()).await.unwrap();
    let mut admin = redis.admin().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let admit = |i: usize| {
        let (batched, id) = (batched.clone(), c.id);
        async move { batched.admit(&id, &user(i), &CouponId::new(), Utc::now()).await }
    };
    let patient = tokio::spawn(admit(0));
    let impatient: Vec<_> = (1..7)
        .map(|i| tokio::spawn(tokio::time::timeout(Duration::from_millis(200), admit(i))))
        .collect();
    for caller in impatient {
        assert!(
            caller.await.unwrap().is_err(),
            "the caller gave up before the pause ended"
        );
    }
    assert!(matches!(patient.await.unwrap().unwrap(), Admission::Admitted { .. }));
    // Bounded: the batcher releases as soon as Redis answers, well within the pause's end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = gate.counts(&c.id).await.unwrap().unwrap();
        if (counts.remaining, counts.pending) == (9, 1) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "callers that left still hold stock: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for i in 1..7 {
        assert!(gate.holding(&c.id, &user(i)).await.unwrap().is_empty(), "user {i}");
    }
    assert_eq!(gate.holding(&c.id, &user(0)).await.unwrap(), vec![1]);
    println!(
        "f8: {} admissions made for 7 callers ({} never sent)",
        counts.seq,
        7 - counts.seq
    );
}

/// F8, the other half, on a real Redis: callers that were there when their batch was
/// sent and left while Redis held it (paused longer than their patience). Their
/// admissions are made when Redis answers, and the batcher releases them at once: the
/// coupon ids never left the process, so no event can exist for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f8_admissions_answered_after_their_callers_left_are_released_at_once() {
    let Some(redis) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&redis.url()).with_response_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    // One batch of all seven: it is sent only once every caller has queued.
    let batched = Arc::new(BatchingGate::new(
        Arc::new(gate.clone()),
        BatchConfig::default()
            .with_max_batch(7)
            .with_max_wait(Duration::from_secs(60)),
    ));
    let c = open_campaign(10);
    gate.open(&c.gate_spec()).await.unwrap();
    let mut admin = redis.admin().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let admit = |i: usize| {
        let (batched, id) = (batched.clone(), c.id);
        async move { batched.admit(&id, &user(i), &CouponId::new(), Utc::now()).await }
    };
    let patient = tokio::spawn(admit(0));
    let impatient: Vec<_> = (1..7)
        .map(|i| tokio::spawn(tokio::time::timeout(Duration::from_secs(1), admit(i))))
        .collect();
    for caller in impatient {
        assert!(
            caller.await.unwrap().is_err(),
            "the caller gave up before the pause ended"
        );
    }
    assert!(matches!(patient.await.unwrap().unwrap(), Admission::Admitted { .. }));
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = gate.counts(&c.id).await.unwrap().unwrap();
        if (counts.remaining, counts.pending) == (9, 1) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "admissions of callers that left still hold stock: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        counts.seq, 7,
        "all seven were admitted by Redis, six released by the batcher"
    );
    for i in 1..7 {
        assert!(gate.holding(&c.id, &user(i)).await.unwrap().is_empty(), "user {i}");
    }
}

/// F9, on a real Redis: a batch spanning two campaigns where one campaign's script call
/// fails (its keys are broken: WRONGTYPE) answers the error to that campaign's requests
/// only; the other campaign's requests are admitted and told so (v1 failed the whole
/// batch, leaving the other campaign's admissions unanswered but held).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f9_a_failing_campaign_in_a_mixed_batch_fails_only_its_own_requests() {
    let Some(redis) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&redis.url())).await.unwrap();
    // One batch of exactly four: it waits (up to a minute) until all four have queued.
    let batched = Arc::new(BatchingGate::new(
        Arc::new(gate.clone()),
        BatchConfig::default()
            .with_max_batch(4)
            .with_max_wait(Duration::from_secs(60)),
    ));
    let (good, broken) = (open_campaign(10), open_campaign(10));
    gate.open(&good.gate_spec()).await.unwrap();
    gate.open(&broken.gate_spec()).await.unwrap();
    let mut conn = gate.connection();
    let meta = gate.keys(&broken.id).meta;
    let _: () = conn.del(&meta).await.unwrap();
    let _: () = conn.set(&meta, "not a hash").await.unwrap();
    let calls: Vec<_> = [(good.id, 0), (broken.id, 1), (good.id, 2), (broken.id, 3)]
        .into_iter()
        .map(|(id, i)| {
            let batched = batched.clone();
            tokio::spawn(async move { batched.admit(&id, &user(i), &CouponId::new(), Utc::now()).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    for (i, answer) in answers.iter().enumerate() {
        if i % 2 == 0 {
            assert!(matches!(answer, Ok(Admission::Admitted { .. })), "user {i}: {answer:?}");
        } else {
            let e = answer.as_ref().unwrap_err();
            assert!(e.to_string().contains("admit"), "user {i}: {e}");
        }
    }
    let counts = gate.counts(&good.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending, counts.seq), (8, 2, 2));
}

/// Sets one server setting on `own`.
async fn config_set(own: &OwnRedis, name: &str, value: &str) {
    let mut admin = own.admin().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(&mut admin)
        .await
        .unwrap();
}

/// F14: a Redis at its `maxmemory` refuses the script's first write (`OOM`). Nothing was
/// written, so the gate answers a retryable `Unavailable` (503 `gate_unavailable`), not
/// `Corrupt` (500 on 2f412b2), and the user holds nothing afterwards.
#[tokio::test]
async fn f14_a_redis_out_of_memory_answers_unavailable_and_writes_nothing() {
    let Some(own) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&own.url())).await.unwrap();
    let c = open_campaign(10);
    gate.open(&c.gate_spec()).await.unwrap();
    config_set(&own, "maxmemory", "1").await;
    let e = gate
        .admit(&c.id, &user(0), &CouponId::new(), Utc::now())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable() && e.to_string().contains("OOM"), "{e}");
    config_set(&own, "maxmemory", "0").await;
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending, counts.seq), (10, 0, 0), "{counts:?}");
    assert!(matches!(
        gate.admit(&c.id, &user(0), &CouponId::new(), Utc::now()).await.unwrap(),
        Admission::Admitted { nth: 1, seq: 1, .. }
    ));
}

/// F14: while another client's script runs past `busy-reply-threshold`, Redis answers
/// `BUSY` without running anything. The gate answers a retryable `Unavailable` (it was
/// `Corrupt`, a 500), the refused user holds nothing, and admissions work again once the
/// script is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f14_a_redis_busy_with_a_long_script_answers_unavailable_and_writes_nothing() {
    let Some(own) = OwnRedis::start(false).await else {
        return;
    };
    let gate = RedisGate::connect(config(&own.url())).await.unwrap();
    let c = open_campaign(100);
    gate.open(&c.gate_spec()).await.unwrap();
    config_set(&own, "busy-reply-threshold", "50").await;
    let mut hog = own.admin().await;
    let hog = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query_async::<redis::Value>(&mut hog)
            .await
    });
    // Until the threshold passes, a call may time out (outcome unknown) under a fresh
    // user; wait (bounded) for the BUSY answer itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    let busy_user = loop {
        attempt += 1;
        let u = user(attempt);
        let e = gate.admit(&c.id, &u, &CouponId::new(), Utc::now()).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        if e.kind == ErrorKind::Unavailable {
            assert!(e.to_string().contains("BUSY"), "{e}");
            break u;
        }
        assert_eq!(e.kind, ErrorKind::OutcomeUnknown, "{e}");
        assert!(Instant::now() < deadline, "Redis never answered BUSY: {e}");
    };
    let mut admin = own.admin().await;
    let _: () = redis::cmd("SCRIPT").arg("KILL").query_async(&mut admin).await.unwrap();
    assert!(hog.await.unwrap().is_err(), "the killed script answers an error");
    assert!(gate.holding(&c.id, &busy_user).await.unwrap().is_empty());
    assert!(matches!(
        gate.admit(&c.id, &busy_user, &CouponId::new(), Utc::now())
            .await
            .unwrap(),
        Admission::Admitted { .. }
    ));
}
