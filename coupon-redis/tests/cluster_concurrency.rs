//! Concurrency on the Redis Cluster: 256 tasks, 200,000 attempts from 50,000 users
//! across 4 campaigns of 10,000 coupons each; then I1 and I2 checked from the answers
//! and from Redis itself. Run unbatched and through the micro-batching wrapper.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{Duration, Utc};
use coupon_core::{Admission, BatchConfig, BatchingGate, Campaign, CampaignState, IssueGate, NewCampaign, UserId};
use coupon_redis::RedisGate;
use redis::AsyncCommands;

const TASKS: usize = 256;
const ATTEMPTS: usize = 200_000;
const USERS: usize = 50_000;
const CAMPAIGNS: usize = 4;
const STOCK: u64 = 10_000;

async fn flash_sale(gate: Arc<dyn IssueGate>, raw: &RedisGate) {
    let now = Utc::now();
    let campaigns: Vec<Campaign> = (0..CAMPAIGNS)
        .map(|_| {
            let mut c = Campaign::from_new(
                NewCampaign::new("cluster", STOCK, now - Duration::minutes(1), now + Duration::hours(1)),
                now,
            );
            c.state = CampaignState::Open;
            c
        })
        .collect();
    for c in &campaigns {
        gate.open(&c.gate_spec()).await.unwrap();
    }
    let ids: Arc<Vec<_>> = Arc::new(campaigns.iter().map(|c| c.id).collect());
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let gate = gate.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut won: Vec<(usize, UserId)> = Vec::new();
                let (mut already, mut sold_out) = (0u64, 0u64);
                for i in (t..ATTEMPTS).step_by(TASKS) {
                    let campaign = i % CAMPAIGNS;
                    let user = UserId::new(format!("u{}", (i * 7_919) % USERS)).unwrap();
                    match gate
                        .admit(&ids[campaign], &user, &coupon_core::CouponId::new(), Utc::now())
                        .await
                        .unwrap()
                    {
                        Admission::Admitted { nth, .. } => {
                            assert_eq!(nth, 1);
                            won.push((campaign, user));
                        }
                        Admission::AlreadyIssued => already += 1,
                        Admission::SoldOut => sold_out += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (won, already, sold_out)
            })
        })
        .collect();
    let mut winners: Vec<(usize, UserId)> = Vec::new();
    let (mut already, mut sold_out) = (0, 0);
    for t in tasks {
        let (w, a, s) = t.await.unwrap();
        winners.extend(w);
        already += a;
        sold_out += s;
    }
    assert_eq!(winners.len() as u64 + already + sold_out, ATTEMPTS as u64);
    let distinct_users: HashSet<_> = (0..ATTEMPTS).map(|i| (i * 7_919) % USERS).collect();
    assert_eq!(distinct_users.len(), USERS);

    let mut per_campaign: HashMap<usize, HashSet<UserId>> = HashMap::new();
    for (c, u) in &winners {
        assert!(
            per_campaign.entry(*c).or_default().insert(u.clone()),
            "I2: {u} admitted twice to campaign {c}"
        );
    }
    let mut conn = raw.connection();
    for (i, c) in campaigns.iter().enumerate() {
        // I1 from the answers and from Redis.
        assert_eq!(
            per_campaign[&i].len() as u64,
            STOCK,
            "campaign {i} sold exactly its stock"
        );
        let counts = gate.counts(&c.id).await.unwrap().unwrap();
        assert_eq!((counts.remaining, counts.pending), (0, STOCK));
        // I2 from Redis: every holder holds one, and they are exactly the winners.
        let holders: HashMap<String, String> = conn.hgetall(raw.keys(&c.id).holds).await.unwrap();
        let holders: HashMap<String, String> = holders.into_iter().filter(|(u, _)| !u.is_empty()).collect();
        assert_eq!(holders.len() as u64, STOCK);
        assert!(holders.values().all(|n| n == "1"));
        let from_answers: HashSet<String> = per_campaign[&i].iter().map(|u| u.to_string()).collect();
        assert_eq!(holders.keys().cloned().collect::<HashSet<_>>(), from_answers);
        gate.close(&c.id).await.unwrap();
    }
    println!(
        "attempts={ATTEMPTS} users={USERS} campaigns={CAMPAIGNS} issued={} already_issued={already} sold_out={sold_out} violations=0",
        winners.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_flash_sale_unbatched() {
    let Some(config) = common::cluster_config().await else {
        return;
    };
    let gate = RedisGate::connect(config).await.unwrap();
    flash_sale(Arc::new(gate.clone()), &gate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_flash_sale_batched() {
    let Some(config) = common::cluster_config().await else {
        return;
    };
    let gate = RedisGate::connect(config).await.unwrap();
    let batched = BatchingGate::new(Arc::new(gate.clone()), BatchConfig::default());
    flash_sale(Arc::new(batched), &gate).await;
}
