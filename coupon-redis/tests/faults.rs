//! Fail fast (I5) and recovery, on a redis-server of the test's own: stopped, paused,
//! unreachable, scripts flushed and a restart in the middle of traffic.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::OwnRedis;
use coupon_core::{Admission, Campaign, CampaignState, ErrorKind, IssueGate, NewCampaign, UserId};
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
    let report = gate.restore(&c.gate_spec(), &stored).await.unwrap();
    assert!(report.created);
    assert_eq!((report.stock_taken, report.remaining), (3, 7), "{report:?}");
    let counts = gate.counts(&c.id).await.unwrap().unwrap();
    assert_eq!((counts.remaining, counts.pending), (7, 0));
    assert!(gate.holding(&c.id, &user(3)).await.unwrap().is_empty());
    assert_eq!(gate.holding(&c.id, &user(0)).await.unwrap(), vec![1]);
}
