//! The naive design, the baseline `scripts/bench-server.sh` measures beside the reference
//! server: one axum handler that checks the bearer token (with the server's own
//! [`coupon_server::Auth`]: signature, expiry, algorithm pinned) and runs the gate's
//! `admit.lua` once by `EVALSHA` ([`RedisGate::admit`], unbatched), then answers.
//!
//! Nothing else: no event log, no store, no settlement of the ledger, no rate limits, no
//! metrics. A coupon it answers for exists only in Redis, so it keeps none of the
//! reference server's promises (a Redis restart loses every coupon); it shows what those
//! promises cost.
//!
//! ```sh
//! cargo run --release -p coupon-server --example naive_evalsha -- \
//!     --listen 127.0.0.1:18081 --redis redis://127.0.0.1:6379/ --secret S &
//! cargo run --release -p coupon-loadgen -- --url http://127.0.0.1:18081 --secret S --mode max --duration 10s
//! ```
//!
//! It speaks the part of the HTTP contract `coupon-loadgen` uses: create and open a
//! campaign, issue, and read the counts back. Having no store, it reports `stored` equal
//! to `issued`, so the load generator's check reads over-issue and issued = min(stock,
//! distinct users), nothing about durability.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use clap::Parser;
use coupon_core::{Admission, CampaignId, CouponId, GateCampaign, IssueGate, UserId};
use coupon_redis::RedisGate;
use coupon_server::Auth;
use serde::Deserialize;
use serde_json::{Value, json};

/// The naive baseline: JWT check plus one `EVALSHA` per request.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18081")]
    listen: String,
    /// The Redis the gate's script runs on.
    #[arg(long, env = "COUPON_REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// The HS256 secret tokens are checked with.
    #[arg(long, env = "COUPON_JWT_SECRET", hide_env_values = true)]
    secret: String,
}

struct Naive {
    gate: RedisGate,
    auth: Auth,
    /// Campaigns created here: the stock, to report `issued` as stock minus remaining.
    campaigns: Mutex<HashMap<CampaignId, u64>>,
}

type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: &str) -> Answer {
    (status, Json(json!({ "error": code })))
}

/// The claims' user, or the 401 answer.
fn user(naive: &Naive, headers: &HeaderMap) -> Result<UserId, Answer> {
    let claims = naive
        .auth
        .from_headers(headers)
        .map_err(|_| error(StatusCode::UNAUTHORIZED, "unauthorized"))?;
    UserId::new(claims.sub).map_err(|_| error(StatusCode::UNAUTHORIZED, "unauthorized"))
}

fn campaign(raw: &str) -> Result<CampaignId, Answer> {
    raw.parse()
        .map_err(|_| error(StatusCode::BAD_REQUEST, "invalid_request"))
}

async fn issue(State(naive): State<Arc<Naive>>, Path(id): Path<String>, headers: HeaderMap) -> Answer {
    let (user, id) = match (user(&naive, &headers), campaign(&id)) {
        (Ok(user), Ok(id)) => (user, id),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let coupon = CouponId::new();
    match naive.gate.admit(&id, &user, &coupon, Utc::now()).await {
        Ok(Admission::Admitted { nth, admitted_at, .. }) => (
            StatusCode::CREATED,
            Json(json!({
                "coupon_id": coupon.to_string(),
                "campaign_id": id.to_string(),
                "user_id": user.to_string(),
                "nth": nth,
                "issued_at": admitted_at,
            })),
        ),
        Ok(Admission::AlreadyIssued) => error(StatusCode::CONFLICT, "already_issued"),
        Ok(Admission::SoldOut) => error(StatusCode::GONE, "sold_out"),
        Ok(Admission::Closed) => error(StatusCode::GONE, "closed"),
        Ok(_) => error(StatusCode::CONFLICT, "not_open"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "gate_unavailable"),
    }
}

#[derive(Deserialize)]
struct NewCampaign {
    total_quantity: u64,
    #[serde(default = "one")]
    per_user_limit: u32,
    issue_starts_at: DateTime<Utc>,
    issue_ends_at: DateTime<Utc>,
}

fn one() -> u32 {
    1
}

async fn create(State(naive): State<Arc<Naive>>, headers: HeaderMap, Json(new): Json<NewCampaign>) -> Answer {
    if let Err(e) = user(&naive, &headers) {
        return e;
    }
    let spec = GateCampaign {
        id: CampaignId::new(),
        total_quantity: new.total_quantity,
        per_user_limit: new.per_user_limit,
        issue_starts_at: new.issue_starts_at,
        issue_ends_at: new.issue_ends_at,
    };
    if naive.gate.open(&spec).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "gate_unavailable");
    }
    naive
        .campaigns
        .lock()
        .expect("campaigns")
        .insert(spec.id, spec.total_quantity);
    (StatusCode::CREATED, Json(json!({ "id": spec.id.to_string() })))
}

/// Opening is done at creation (the gate holds the campaign from then on).
async fn open(Path(id): Path<String>) -> Answer {
    match campaign(&id) {
        Ok(_) => (StatusCode::OK, Json(json!({ "state": "open" }))),
        Err(e) => e,
    }
}

async fn counts(State(naive): State<Arc<Naive>>, Path(id): Path<String>) -> Answer {
    let id = match campaign(&id) {
        Ok(id) => id,
        Err(e) => return e,
    };
    let Some(total) = naive.campaigns.lock().expect("campaigns").get(&id).copied() else {
        return error(StatusCode::NOT_FOUND, "campaign_not_found");
    };
    match naive.gate.counts(&id).await {
        Ok(Some(counts)) => {
            let issued = total - counts.remaining;
            (
                StatusCode::OK,
                Json(json!({ "total_quantity": total, "issued": issued, "stored": issued })),
            )
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "campaign_not_found"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "gate_unavailable"),
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let naive = Arc::new(Naive {
        gate: RedisGate::from_url(&args.redis).await?,
        auth: Auth::new(&args.secret),
        campaigns: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/v1/campaigns", post(create))
        .route("/v1/campaigns/{id}", get(counts))
        .route("/v1/campaigns/{id}/open", post(open))
        .route("/v1/campaigns/{id}/issue", post(issue))
        .with_state(naive);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
