//! Heavy concurrency on the memory backends, then invariants I1-I4 checked on gate and store.
//!
//! 64 tasks make 100,000 attempts for 25,000 distinct users (so many users try
//! several times) against a stock of 5,000, with the recorder running alongside.
//! Faults are injected: every 97th publish fails (the issuer must release at once),
//! and 40 admissions "crash" between gate and publish (the reconciler must release them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use coupon_core::conformance::protocol::FlakyLog;
use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
use coupon_core::{
    Admission, Component, Coupon, Coupons, EventLog, IssueGate, IssueOutcome, IssueStore, NewCampaign, Recorder,
    RecorderConfig, UserId,
};

const TASKS: usize = 64;
const ATTEMPTS: usize = 100_000;
const USERS: usize = 25_000;
const STOCK: u64 = 5_000;
const CRASHED: usize = 40;

#[derive(Default, Debug)]
struct Tally {
    issued: Vec<Coupon>,
    already_issued: u64,
    sold_out: u64,
    log_failures: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_on_memory_backends_keeps_every_invariant() {
    let gate = Arc::new(MemoryGate::new());
    let memory_log = MemoryLog::new();
    let log = Arc::new(FlakyLog::new(memory_log.clone(), 97));
    let store = Arc::new(MemoryStore::new());
    let coupons = Coupons::builder(gate.clone(), store.clone())
        .log(log.clone(), "recorders")
        .build()
        .await
        .unwrap();
    let (campaigns, issuer, reconciler) = (coupons.campaigns(), coupons.issuer(), coupons.reconciler());

    let now = Utc::now();
    let campaign = campaigns
        .create(NewCampaign::new(
            "flash",
            STOCK,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ))
        .await
        .unwrap();
    campaigns.open(&campaign.id).await.unwrap();

    // The cold path runs alongside the traffic.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut recorder = Recorder::new(
        log.subscribe("recorders").await.unwrap(),
        store.clone(),
        RecorderConfig::default().with_batch_wait(Duration::from_millis(5)),
    )
    .with_gate(gate.clone());
    let recorder_task = tokio::spawn(async move {
        let mut total = recorder.run_until(async { stop_rx.await.unwrap_or(()) }).await;
        total += recorder.drain().await;
        total
    });

    // Admissions that "crash" between the gate and the publish: admitted, never published.
    let mut crashed = Vec::new();
    for i in 0..CRASHED {
        let user = UserId::new(format!("crashed-{i}")).unwrap();
        let at = coupon_core::timestamp_now();
        assert!(matches!(
            gate.admit(&campaign.id, &user, &coupon_core::CouponId::new(), at)
                .await
                .unwrap(),
            Admission::Admitted { .. }
        ));
        crashed.push(user);
    }

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let issuer = issuer.clone();
            let id = campaign.id;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for i in (t..ATTEMPTS).step_by(TASKS) {
                    // A fixed stride through the users: every user is tried 4 times, by different tasks.
                    let user = UserId::new(format!("user-{}", (i * 7_919) % USERS)).unwrap();
                    match issuer.issue(&id, &user).await {
                        Ok(IssueOutcome::Issued(c)) => tally.issued.push(c),
                        Ok(IssueOutcome::AlreadyIssued) => tally.already_issued += 1,
                        Ok(IssueOutcome::SoldOut) => tally.sold_out += 1,
                        Ok(other) => panic!("unexpected {other:?}"),
                        Err(e) => {
                            assert!(
                                matches!(&e, coupon_core::Error::Backend(b) if b.component == Component::Log),
                                "{e}"
                            );
                            tally.log_failures += 1;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        let part = t.await.unwrap();
        tally.issued.extend(part.issued);
        tally.already_issued += part.already_issued;
        tally.sold_out += part.sold_out;
        tally.log_failures += part.log_failures;
    }
    stop_tx.send(()).unwrap();
    let recorded = recorder_task.await.unwrap();

    let attempts = tally.issued.len() as u64 + tally.already_issued + tally.sold_out + tally.log_failures;
    assert_eq!(attempts, ATTEMPTS as u64);
    let distinct_users: HashSet<_> = (0..ATTEMPTS).map(|i| (i * 7_919) % USERS).collect();
    assert_eq!(distinct_users.len(), USERS);

    // I4 (compensation part): every failed publish gave its stock back, so with demand far
    // above stock everything except the crashed admissions was sold.
    let issued = tally.issued.len() as u64;
    assert!(tally.log_failures > 0, "faults were injected");
    assert_eq!(
        issued,
        STOCK - CRASHED as u64,
        "failed publishes were released and re-sold"
    );

    // I1: no over-issue, in gate and store.
    let counts = campaigns.counts(&campaign.id).await.unwrap();
    assert_eq!(counts.remaining, Some(0));
    assert_eq!(counts.stored, issued);
    assert!(counts.stored <= STOCK);

    // I2: no duplicates, in the answers and in the store.
    let mut per_user: HashMap<&UserId, u32> = HashMap::new();
    for c in &tally.issued {
        *per_user.entry(&c.user_id).or_default() += 1;
    }
    let duplicate_answers = per_user.values().filter(|n| **n > 1).count();
    assert_eq!(duplicate_answers, 0);
    let holders = store.holders(&campaign.id).await.unwrap();
    assert!(holders.iter().all(|(_, nth)| *nth == 1));
    assert_eq!(holders.len() as u64, issued);

    // I3: every "issued" answer is exactly one stored coupon, the same one.
    for c in &tally.issued {
        assert_eq!(
            store.coupon(&c.id).await.unwrap().as_ref(),
            Some(c),
            "acknowledged coupon stored as told"
        );
    }
    assert_eq!(recorded.stored as u64, issued);
    assert_eq!(recorded.dead_lettered, 0);

    // I4 (reconciler part): the crashed admissions are released once past the grace period
    // and the log's horizon; nothing stored is touched.
    assert_eq!(
        counts.pending,
        Some(CRASHED as u64),
        "only the crashed admissions are unsettled"
    );
    let later = coupon_core::timestamp_now() + chrono::Duration::seconds(61);
    let report = reconciler.reconcile(&campaign.id, later).await.unwrap();
    assert_eq!((report.released, report.kept, report.settled), (CRASHED as u64, 0, 0));
    let after = campaigns.counts(&campaign.id).await.unwrap();
    assert_eq!(
        after.remaining,
        Some(CRASHED as u64),
        "crashed stock is back in the pool"
    );
    assert_eq!(after.pending, Some(0));
    assert_eq!(
        after.stored + after.remaining.unwrap(),
        STOCK,
        "no stock lost, none invented"
    );
    for user in &crashed {
        assert!(gate.holding(&campaign.id, user).await.unwrap().is_empty());
    }
    assert_eq!(memory_log.dead_letters().len(), 0);

    println!(
        "attempts={attempts} distinct_users={USERS} stock={STOCK} issued={issued} duplicates_rejected={} sold_out={} \
         publish_failures_released={} crashed_released_by_reconciler={} violations=0",
        tally.already_issued, tally.sold_out, tally.log_failures, report.released
    );
}
