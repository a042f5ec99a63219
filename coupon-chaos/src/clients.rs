//! The client population and the history it records.
//!
//! Each user behaves like a person in a flash sale: arrives once at a seeded moment,
//! asks either server, retries a 503 or a failed connection a few times with a short
//! backoff, and gives up. Some press again after their answer. Some winners redeem
//! their coupon, a few with several orders at once. Every request is one history
//! line: user, operation, server, start, end, status, error code, coupon.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/campaigns/{id}/issue`.
    Issue,
    /// `POST /v1/coupons/{id}/redeem`.
    Redeem,
}

/// One request of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The user (`u<n>`).
    pub user: String,
    /// What it asked.
    pub op: Op,
    /// Which server (0 or 1).
    pub server: usize,
    /// Sent, in milliseconds since the run started.
    pub start_ms: u64,
    /// Answered (or failed), in milliseconds since the run started.
    pub end_ms: u64,
    /// The HTTP status; 0 when no answer came (connection refused or reset, timeout).
    pub status: u16,
    /// The `error` code of an error answer, or what the client saw when none came.
    pub code: String,
    /// The coupon: issued (201) or being redeemed.
    pub coupon: Option<String>,
    /// A redemption's order id.
    pub order: Option<String>,
}

impl Entry {
    /// No answer, or an answer that leaves the outcome open (503, 500).
    pub fn unknown_outcome(&self) -> bool {
        self.status == 0 || self.status >= 500
    }

    /// The status and code as the summary counts them: `201`, `503 gate_unavailable`, `0 timeout`.
    pub fn answer(&self) -> String {
        if self.code.is_empty() {
            self.status.to_string()
        } else {
            format!("{} {}", self.status, self.code)
        }
    }
}

/// The shape of the population.
#[derive(Debug, Clone)]
pub struct Population {
    /// Distinct users.
    pub users: usize,
    /// Over how long they arrive.
    pub arrival: Duration,
    /// Share of users who press again after their answer.
    pub repeat_share: f64,
    /// Share of winners who redeem.
    pub redeem_share: f64,
    /// Share of winners who redeem with several orders at once.
    pub race_share: f64,
    /// Tries per press before giving up.
    pub tries: u32,
    /// How long a request may take before the client gives up on it.
    pub request_timeout: Duration,
}

/// The shared recorder of the history.
#[derive(Clone)]
pub struct History {
    started: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            entries: Arc::default(),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn push(&self, entry: Entry) {
        self.entries.lock().expect("history lock").push(entry);
    }

    /// Everything recorded so far, in completion order.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().expect("history lock").clone()
    }
}

/// The clients of both servers.
#[derive(Clone)]
pub struct Clients {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    auth: Arc<coupon_server::Auth>,
    campaign: Arc<String>,
    history: History,
    population: Population,
}

impl Clients {
    /// Clients of `bases` for `campaign`.
    pub fn new(bases: Vec<String>, campaign: &str, history: History, population: Population) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(population.request_timeout)
                .connect_timeout(Duration::from_secs(1))
                .build()
                .expect("an HTTP client"),
            bases: Arc::new(bases),
            auth: Arc::new(coupon_server::Auth::new(crate::system::SECRET)),
            campaign: Arc::new(campaign.to_owned()),
            history,
            population,
        }
    }

    /// Runs the whole population: user `n` arrives at a seeded moment of the arrival
    /// window. Returns when every user has finished.
    pub async fn run(&self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut arrivals: Vec<(Duration, usize, u64)> = (0..self.population.users)
            .map(|n| {
                let at = self.population.arrival.mul_f64(rng.random::<f64>());
                (at, n, rng.random::<u64>())
            })
            .collect();
        arrivals.sort();
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(arrivals.len());
        for (at, n, user_seed) in arrivals {
            // Pacing the arrivals, not waiting for anything.
            tokio::time::sleep_until(start + at).await;
            let clients = self.clone();
            tasks.push(tokio::spawn(async move { clients.user(n, user_seed).await }));
        }
        join_all(tasks).await;
    }

    async fn user(&self, n: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let user = format!("u{n}");
        let token = self.auth.mint(&coupon_server::Claims::new(&user, None, 6 * 3_600));
        let mut coupon = self.press(&user, &token, &mut rng).await;
        if rng.random_bool(self.population.repeat_share) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
            if let Some(second) = self.press(&user, &token, &mut rng).await {
                coupon.get_or_insert(second);
            }
        }
        let Some(coupon) = coupon else { return };
        let racing = rng.random_bool(self.population.race_share);
        if !racing && !rng.random_bool(self.population.redeem_share) {
            return;
        }
        // Checking out takes a person a moment.
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
        if racing {
            // Several orders at once (two tabs, a double click): exactly one may win.
            let racers = (0..4).map(|k| {
                let order = format!("{user}-race-{k}");
                let seed = rng.random::<u64>();
                let (user, token, coupon) = (&user, &token, &coupon);
                async move { self.redeem_until_decided(user, token, coupon, &order, seed).await }
            });
            join_all(racers).await;
        } else {
            let order = format!("{user}-order");
            self.redeem_until_decided(&user, &token, &coupon, &order, rng.random())
                .await;
        }
    }

    /// Redeems with one order id until an answer decides it: a 404 (not stored yet),
    /// a 503 or no answer is tried again a moment later, a few times.
    async fn redeem_until_decided(&self, user: &str, token: &str, coupon: &str, order: &str, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..6 {
            let server = rng.random_range(0..self.bases.len());
            let status = self.redeem(user, token, coupon, order, server).await;
            if (200..500).contains(&status) && status != 404 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
        }
    }

    /// One press of the button, with its retries: the coupon id if it was issued.
    async fn press(&self, user: &str, token: &str, rng: &mut StdRng) -> Option<String> {
        for attempt in 0..self.population.tries {
            let server = rng.random_range(0..self.bases.len());
            let url = format!("{}/v1/campaigns/{}/issue", self.bases[server], self.campaign);
            let entry = self.send(user, Op::Issue, server, url, token, None, None).await;
            match entry.status {
                201 => return entry.coupon,
                0 | 500.. => {
                    let backoff = 100u64 << attempt.min(4);
                    tokio::time::sleep(Duration::from_millis(backoff + rng.random_range(0..backoff))).await;
                }
                _ => return None,
            }
        }
        None
    }

    async fn redeem(&self, user: &str, token: &str, coupon: &str, order: &str, server: usize) -> u16 {
        let url = format!("{}/v1/coupons/{coupon}/redeem", self.bases[server]);
        let body = json!({"order_id": order, "order_amount": 10_000});
        self.send(user, Op::Redeem, server, url, token, Some(body), Some((coupon, order)))
            .await
            .status
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        user: &str,
        op: Op,
        server: usize,
        url: String,
        token: &str,
        body: Option<Value>,
        redeeming: Option<(&str, &str)>,
    ) -> Entry {
        let start_ms = self.history.now_ms();
        let mut request = self.http.post(url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, code, answer) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                let code = answer["error"].as_str().unwrap_or_default().to_owned();
                (status, code, answer)
            }
            Err(e) => {
                let code = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "connection"
                };
                (0, code.to_owned(), Value::Null)
            }
        };
        let coupon = match redeeming {
            Some((coupon, _)) => Some(coupon.to_owned()),
            None => answer["coupon_id"].as_str().map(str::to_owned),
        };
        let entry = Entry {
            user: user.to_owned(),
            op,
            server,
            start_ms,
            end_ms: self.history.now_ms(),
            status,
            code,
            coupon,
            order: redeeming.map(|(_, order)| order.to_owned()),
        };
        self.history.push(entry.clone());
        entry
    }
}
