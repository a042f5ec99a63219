//! Set-up for the hot-path benchmarks (`issuer.rs`): an [`Issuer`] over each pair
//! of backends with one huge open campaign, and a burst of distinct users.
//!
//! ```sh
//! cargo bench -p coupon-benches                      # memory backends, plus Redis/Kafka if reachable
//! COUPON_TEST_REDIS_URL=redis://127.0.0.1:6379/ COUPON_TEST_KAFKA_BROKERS=127.0.0.1:9092 cargo bench -p coupon-benches
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Duration, Utc};
use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
use coupon_core::{
    AckMode, CampaignCache, CampaignId, CampaignState, EventLog, IssueGate, IssueOutcome, IssueStore, Issuer,
    IssuerConfig, NewCampaign, UserId,
};

/// Issues per measured burst.
pub const PER_BURST: u64 = 2_000;
/// Concurrent callers in a burst (like concurrent HTTP requests).
pub const CALLERS: u64 = 64;

/// An issuer with one open campaign that never sells out.
pub struct Bench {
    /// The hot path.
    pub issuer: Arc<Issuer>,
    /// The campaign.
    pub campaign: CampaignId,
    next_user: AtomicU64,
}

/// Builds an issuer over `gate` and `log` (a memory store holds the campaign).
pub async fn bench(gate: Arc<dyn IssueGate>, log: Option<Arc<dyn EventLog>>, ack: AckMode) -> Bench {
    let store = Arc::new(MemoryStore::new());
    let now = Utc::now();
    let mut campaign = coupon_core::Campaign::from_new(
        NewCampaign::new(
            "bench",
            1_000_000_000,
            now - Duration::minutes(1),
            now + Duration::hours(6),
        ),
        now,
    );
    campaign.state = CampaignState::Open;
    store.create_campaign(&campaign).await.expect("memory store");
    gate.open(&campaign.gate_spec())
        .await
        .expect("opening the campaign in the gate");
    let cache = CampaignCache::new(store.clone()).with_ttl(std::time::Duration::from_secs(3_600));
    let issuer = Issuer::new(gate, log, store, cache, IssuerConfig::default().with_ack(ack)).expect("issuer");
    Bench {
        issuer: Arc::new(issuer),
        campaign: campaign.id,
        next_user: AtomicU64::new(0),
    }
}

/// The memory gate and log.
pub async fn memory(ack: AckMode) -> Bench {
    bench(Arc::new(MemoryGate::new()), Some(Arc::new(MemoryLog::new())), ack).await
}

impl Bench {
    /// [`PER_BURST`] issues of distinct users from [`CALLERS`] concurrent tasks; every
    /// one must be issued.
    pub async fn burst(self: &Arc<Self>) {
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let b = self.clone();
                tokio::spawn(async move {
                    for _ in 0..PER_BURST / CALLERS {
                        let n = b.next_user.fetch_add(1, Ordering::Relaxed);
                        let user = UserId::new(format!("u{n}")).expect("user id");
                        let outcome = b.issuer.issue(&b.campaign, &user).await.expect("issue");
                        assert!(matches!(outcome, IssueOutcome::Issued(_)), "{outcome:?}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    }
}
