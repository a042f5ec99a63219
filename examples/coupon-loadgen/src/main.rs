//! `coupon-loadgen`: drives `POST /v1/campaigns/{id}/issue` on a coupon-server.
//!
//! Two modes, as in k6:
//! - `rate`: a constant arrival rate (requests/s for a duration), at most
//!   `--max-in-flight` at once; arrivals that find no free slot are counted as dropped.
//! - `max`: a closed loop, `--concurrency` workers sending back to back.
//!
//! Each request is a distinct user unless drawn as a repeat (`--repeat-share`), which
//! re-sends as a user already seen. Tokens are minted here from the server's secret.
//! At the end: answers per code, the rate achieved, latency from an HDR histogram,
//! then the campaign's counts read back: issued = min(stock, distinct users), over-issue 0.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

mod token;

use token::{DEV_JWT_SECRET, Minter};

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Constant arrival rate (k6 `constant-arrival-rate`).
    Rate,
    /// Closed loop at maximum throughput.
    Max,
}

/// Load generator for coupon-server.
#[derive(Debug, Parser)]
#[command(name = "coupon-loadgen", version, about)]
struct Args {
    /// The server (or NGINX in front of it).
    #[arg(long, env = "COUPON_LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's HS256 secret, to mint tokens.
    #[arg(long, env = "COUPON_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Use the development secret (a server started with `--dev`).
    #[arg(long)]
    dev: bool,
    /// Target this existing, open campaign instead of creating one.
    #[arg(long)]
    campaign: Option<String>,
    /// Stock of the campaign to create and open.
    #[arg(long, default_value_t = 100_000)]
    stock: u64,
    /// `rate` or `max`.
    #[arg(long, value_enum, default_value = "rate")]
    mode: Mode,
    /// Requests per second (`rate` mode).
    #[arg(long, default_value_t = 2_800)]
    rate: u64,
    /// How long to send.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// At most this many requests in flight (`rate` mode; k6's maxVUs).
    #[arg(long, default_value_t = 3_000)]
    max_in_flight: usize,
    /// Workers (`max` mode).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Stop after this many requests (`max` mode; default: when the duration ends).
    #[arg(long)]
    requests: Option<u64>,
    /// Share of requests re-sent as a user already seen (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    repeat_share: f64,
    /// Prefix of user ids (distinct per run by default).
    #[arg(long)]
    user_prefix: Option<String>,
    /// After the run, wait up to this long for the store to hold every issued coupon.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    wait_stored: Duration,
    /// Print the summary as JSON on stdout (the progress bar stays on stderr).
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Everything measured, also the `--json` output.
#[derive(Debug, Serialize)]
struct Summary {
    mode: &'static str,
    url: String,
    campaign: String,
    duration_secs: f64,
    requests: u64,
    dropped: u64,
    achieved_rate: f64,
    answers: BTreeMap<String, u64>,
    distinct_users: u64,
    latency_ms: Latency,
    consistency: Consistency,
}

#[derive(Debug, Serialize)]
struct Latency {
    avg: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Consistency {
    stock: u64,
    issued: u64,
    stored: u64,
    expected_issued: u64,
    acknowledged: u64,
    over_issue: u64,
    ok: bool,
}

struct Shared {
    http: reqwest::Client,
    auth: Minter,
    issue_url: String,
    prefix: String,
    repeat_share: f64,
    next_user: AtomicU64,
    /// Sharded so that concurrent requests rarely wait for each other's bookkeeping.
    stats: Vec<Mutex<Stats>>,
    next_shard: AtomicUsize,
    progress: ProgressBar,
}

struct Stats {
    histogram: Histogram<u64>,
    answers: BTreeMap<Cow<'static, str>, u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            answers: BTreeMap::new(),
        }
    }
}

/// The `error` field of an error answer.
#[derive(Deserialize)]
struct ErrorAnswer<'a> {
    #[serde(borrow)]
    error: Cow<'a, str>,
}

/// The answer's code: `issued` for a 201, else the error code of the body.
fn answer_code(status: u16, body: &[u8]) -> Cow<'static, str> {
    if status == 201 {
        return Cow::Borrowed("issued");
    }
    match serde_json::from_slice::<ErrorAnswer<'_>>(body) {
        // The codes of a flash sale, without an allocation per answer.
        Ok(answer) => match answer.error.as_ref() {
            "sold_out" => Cow::Borrowed("sold_out"),
            "already_issued" => Cow::Borrowed("already_issued"),
            "rate_limited" => Cow::Borrowed("rate_limited"),
            other => Cow::Owned(other.to_owned()),
        },
        Err(_) => Cow::Owned(format!("http_{status}")),
    }
}

impl Shared {
    fn user(&self) -> String {
        let fresh = self.next_user.load(Ordering::Relaxed);
        let repeat = fresh > 0 && self.repeat_share > 0.0 && rand::rng().random_bool(self.repeat_share.min(1.0));
        let n = if repeat {
            rand::rng().random_range(0..fresh)
        } else {
            self.next_user.fetch_add(1, Ordering::Relaxed)
        };
        format!("{}-{n}", self.prefix)
    }

    async fn one(&self) {
        let token = self.auth.mint(&self.user(), None, 3_600);
        let started = Instant::now();
        let answer = self.http.post(&self.issue_url).bearer_auth(token).send().await;
        let code = match answer {
            // The body is always read to its end: only then is the connection reused.
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(body) => answer_code(status, &body),
                    Err(_) => Cow::Borrowed("connection_error"),
                }
            }
            Err(e) if e.is_timeout() => Cow::Borrowed("timeout"),
            Err(_) => Cow::Borrowed("connection_error"),
        };
        let micros = started.elapsed().as_micros().max(1) as u64;
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.stats.len();
        let mut stats = self.stats[shard].lock().expect("stats lock");
        stats.histogram.saturating_record(micros);
        *stats.answers.entry(code).or_default() += 1;
        drop(stats);
        self.progress.inc(1);
    }

    /// Every shard's figures together.
    fn totals(&self) -> (Histogram<u64>, BTreeMap<String, u64>) {
        let mut total = Stats::new();
        for shard in &self.stats {
            let shard = shard.lock().expect("stats lock");
            total.histogram.add(&shard.histogram).expect("same bounds");
            for (code, n) in &shard.answers {
                *total.answers.entry(code.clone()).or_default() += n;
            }
        }
        let answers = total.answers.into_iter().map(|(k, v)| (k.into_owned(), v)).collect();
        (total.histogram, answers)
    }
}

// A faster allocator than glibc's for many small, short-lived allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = match (&args.secret, args.dev) {
        (Some(s), _) => s.clone(),
        (None, true) => DEV_JWT_SECRET.to_owned(),
        (None, false) => {
            bail!("give the server's secret (--secret or COUPON_JWT_SECRET), or --dev for a server started with --dev")
        }
    };
    if !(0.0..=1.0).contains(&args.repeat_share) {
        bail!("--repeat-share must be between 0 and 1");
    }
    let base = args.url.trim_end_matches('/').to_owned();
    let auth = Minter::new(&secret);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight.max(args.concurrency))
        .timeout(Duration::from_secs(30))
        .build()?;
    let admin = auth.mint("loadgen-admin", Some("admin"), 3_600);
    let campaign = match &args.campaign {
        Some(id) => id.clone(),
        None => create_campaign(&http, &base, &admin, args.stock).await?,
    };

    let expected = match args.mode {
        Mode::Rate => args.rate * args.duration.as_secs().max(1),
        Mode::Max => args.requests.unwrap_or(0),
    };
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else if expected > 0 {
        ProgressBar::new(expected)
    } else {
        ProgressBar::new_spinner()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}")
            .expect("template"),
    );
    let shared = Arc::new(Shared {
        http,
        auth,
        issue_url: format!("{base}/v1/campaigns/{campaign}/issue"),
        prefix: args
            .user_prefix
            .clone()
            .unwrap_or_else(|| format!("lg{}", chrono::Utc::now().timestamp_millis())),
        repeat_share: args.repeat_share,
        next_user: AtomicU64::new(0),
        stats: (0..16).map(|_| Mutex::new(Stats::new())).collect(),
        next_shard: AtomicUsize::new(0),
        progress: progress.clone(),
    });

    let started = Instant::now();
    let dropped = match args.mode {
        Mode::Rate => constant_rate(&shared, args.rate, args.duration, args.max_in_flight).await,
        Mode::Max => closed_loop(&shared, args.concurrency, args.duration, args.requests).await,
    };
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let (histogram, answers) = shared.totals();
    let requests: u64 = answers.values().sum();
    let distinct_users = shared.next_user.load(Ordering::Relaxed);
    let acknowledged = answers.get("issued").copied().unwrap_or(0);
    let consistency = check(
        &shared.http,
        &base,
        &campaign,
        distinct_users,
        acknowledged,
        args.wait_stored,
        args.campaign.is_none(),
    )
    .await?;
    let ms = |v: u64| v as f64 / 1_000.0;
    let summary = Summary {
        mode: match args.mode {
            Mode::Rate => "rate",
            Mode::Max => "max",
        },
        url: base,
        campaign,
        duration_secs: elapsed.as_secs_f64(),
        requests,
        dropped,
        achieved_rate: requests as f64 / elapsed.as_secs_f64(),
        answers,
        distinct_users,
        latency_ms: Latency {
            avg: histogram.mean() / 1_000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        },
        consistency,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if !summary.consistency.ok {
        bail!("consistency check failed");
    }
    Ok(())
}

async fn create_campaign(http: &reqwest::Client, base: &str, admin: &str, stock: u64) -> anyhow::Result<String> {
    let now = chrono::Utc::now();
    let body = json!({
        "name": "coupon-loadgen",
        "total_quantity": stock,
        "issue_starts_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "issue_ends_at": (now + chrono::Duration::hours(6)).to_rfc3339(),
    });
    let created: Value = http
        .post(format!("{base}/v1/campaigns"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .context("creating the campaign")?
        .error_for_status()
        .context("creating the campaign")?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .context("the campaign answer has no id")?
        .to_owned();
    http.post(format!("{base}/v1/campaigns/{id}/open"))
        .bearer_auth(admin)
        .send()
        .await
        .context("opening the campaign")?
        .error_for_status()
        .context("opening the campaign")?;
    Ok(id)
}

/// Starts one request every 1/rate s for `duration`; returns the arrivals dropped
/// because `max_in_flight` requests were already running.
async fn constant_rate(shared: &Arc<Shared>, rate: u64, duration: Duration, max_in_flight: usize) -> u64 {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let total = rate.saturating_mul(duration.as_micros() as u64) / 1_000_000;
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut dropped = 0;
    let mut running = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let shared = shared.clone();
        running.spawn(async move {
            shared.one().await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    dropped
}

/// `concurrency` workers back to back until `duration` or `requests`.
async fn closed_loop(shared: &Arc<Shared>, concurrency: usize, duration: Duration, requests: Option<u64>) -> u64 {
    let deadline = Instant::now() + duration;
    let budget = Arc::new(AtomicU64::new(requests.unwrap_or(u64::MAX)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let shared = shared.clone();
        let budget = budget.clone();
        workers.spawn(async move {
            while Instant::now() < deadline
                && budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_ok()
            {
                shared.one().await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    0
}

/// Reads the campaign back: issued must be min(stock, distinct users) when this run
/// created the campaign, never above the stock, and every acknowledged coupon stored.
async fn check(
    http: &reqwest::Client,
    base: &str,
    campaign: &str,
    distinct_users: u64,
    acknowledged: u64,
    wait_stored: Duration,
    own_campaign: bool,
) -> anyhow::Result<Consistency> {
    let deadline = Instant::now() + wait_stored;
    loop {
        let view: Value = http
            .get(format!("{base}/v1/campaigns/{campaign}"))
            .send()
            .await
            .context("reading the campaign back")?
            .json()
            .await?;
        let stock = view["total_quantity"].as_u64().unwrap_or(0);
        let issued = view["issued"].as_u64().unwrap_or(0);
        let stored = view["stored"].as_u64().unwrap_or(0);
        if stored >= issued || Instant::now() >= deadline {
            let expected_issued = stock.min(distinct_users);
            let over_issue = issued.saturating_sub(stock);
            let ok = over_issue == 0
                && stored == issued
                && (!own_campaign || (issued == expected_issued && acknowledged == issued));
            return Ok(Consistency {
                stock,
                issued,
                stored,
                expected_issued,
                acknowledged,
                over_issue,
                ok,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_summary(s: &Summary) {
    let line = |k: &str, v: String| println!("  {k:.<22} {v}");
    println!();
    line("mode", format!("{} against {}", s.mode, s.url));
    line("campaign", s.campaign.clone());
    line("duration", format!("{:.1}s", s.duration_secs));
    line(
        "requests",
        format!("{} ({:.1}/s), {} dropped", s.requests, s.achieved_rate, s.dropped),
    );
    for (code, n) in &s.answers {
        line(
            code,
            format!("{n} ({:.2}%)", 100.0 * *n as f64 / s.requests.max(1) as f64),
        );
    }
    line("distinct users", s.distinct_users.to_string());
    let l = &s.latency_ms;
    line(
        "latency",
        format!(
            "avg={:.2}ms p50={:.2}ms p95={:.2}ms p99={:.2}ms max={:.2}ms",
            l.avg, l.p50, l.p95, l.p99, l.max
        ),
    );
    let c = &s.consistency;
    line(
        "consistency",
        format!(
            "{} stock={} issued={} stored={} expected={} acknowledged={} over_issue={}",
            if c.ok { "OK" } else { "FAILED" },
            c.stock,
            c.issued,
            c.stored,
            c.expected_issued,
            c.acknowledged,
            c.over_issue
        ),
    );
}
