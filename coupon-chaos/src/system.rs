//! The system under test: two `coupon-server` and two `coupon-consumer` processes of
//! the workspace's binaries, in the distributed setup, over the tool's own services.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::procs::{Proc, Spec, free_port, wait_for};
use crate::services::{Broker, Postgres, RedisCluster};

/// The secret the servers verify and the clients sign with.
pub const SECRET: &str = "coupon-chaos-secret";
/// Seconds before the reconciler may void an unconfirmed admission.
pub const GRACE_SECS: u64 = 10;
/// Seconds between reconcile passes.
pub const RECONCILE_SECS: u64 = 2;
/// The servers' log acknowledgement timeout.
pub const ACK_TIMEOUT_MS: u64 = 2_000;
/// The gate timeout the issuer uses (its default).
pub const GATE_TIMEOUT_MS: u64 = 500;

/// Everything the run starts.
pub struct System {
    /// The run's directory: logs, data, history.
    pub dir: PathBuf,
    /// The gate.
    pub redis: RedisCluster,
    /// The log.
    pub broker: Broker,
    /// The store.
    pub postgres: Postgres,
    /// `server-a`, `server-b`.
    pub servers: Vec<Server>,
    /// `consumer-1`, `consumer-2`.
    pub consumers: Vec<Consumer>,
    bin_dir: PathBuf,
    topic: String,
    group: String,
}

/// One server process.
pub struct Server {
    /// Its HTTP port.
    pub port: u16,
    /// The process.
    pub proc: Proc,
}

/// One consumer process.
pub struct Consumer {
    /// Its `/metrics` port.
    pub metrics_port: u16,
    /// The process.
    pub proc: Proc,
}

/// An admin client of the servers.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    token: String,
}

impl System {
    /// Starts the services (not the servers and consumers: [`System::start_processes`]).
    pub async fn start_services(dir: &Path, bin_dir: &Path) -> Result<Self> {
        for binary in ["coupon-server", "coupon-consumer"] {
            if !bin_dir.join(binary).is_file() {
                bail!(
                    "{} is missing: build the workspace's binaries first (`cargo build --workspace --bins`), \
                     or pass --bin-dir",
                    bin_dir.join(binary).display()
                );
            }
        }
        eprintln!(
            "chaos: starting Redis Cluster, broker and PostgreSQL in {}",
            dir.display()
        );
        let redis = RedisCluster::start(dir).await.context("starting the Redis Cluster")?;
        let broker = Broker::start(dir).await.context("starting the broker")?;
        let postgres = Postgres::start(dir).await.context("starting PostgreSQL")?;
        Ok(Self {
            dir: dir.to_owned(),
            redis,
            broker,
            postgres,
            servers: Vec::new(),
            consumers: Vec::new(),
            bin_dir: bin_dir.to_owned(),
            topic: "chaos-issued".into(),
            group: "chaos-recorder".into(),
        })
    }

    fn shared_env(&self, spec: Spec) -> Spec {
        spec.env("RUST_LOG", "info,coupon=info")
            .env("COUPON_REDIS_URL", self.redis.url())
            .env("COUPON_KAFKA_BROKERS", self.broker.brokers())
            .env("COUPON_KAFKA_TOPIC", &self.topic)
            .env("COUPON_KAFKA_PARTITIONS", "4")
            .env("COUPON_KAFKA_SINGLE_BROKER", "true")
            .env("COUPON_CONSUMER_GROUP", &self.group)
            .env("COUPON_DATABASE_URL", self.postgres.url())
            // A member lost in a rebalance is noticed after the session timeout; the
            // Kafka minimum (6 s) instead of librdkafka's 45 s.
            .env(
                "COUPON_KAFKA_OPTIONS",
                "session.timeout.ms=6000,heartbeat.interval.ms=1000",
            )
            // A partition kept by a dead member is taken back by a rejoin after this
            // (the default 60 s would spend most of the drain's bound waiting).
            .env("COUPON_CONSUMER_REJOIN_AFTER_SECS", "20")
    }

    /// Starts (or replaces) both servers in `ack` mode and both consumers.
    pub async fn start_processes(&mut self, ack: &str) -> Result<()> {
        self.stop_processes().await?;
        for name in ["server-a", "server-b"] {
            let port = free_port()?;
            let spec = self
                .shared_env(Spec::new(name, self.bin_dir.join("coupon-server")))
                .env("COUPON_LISTEN", format!("127.0.0.1:{port}"))
                .env("COUPON_JWT_SECRET", SECRET)
                .env("COUPON_ACK", ack)
                .env("COUPON_USER_RATE_LIMIT", "0")
                .env("COUPON_RECONCILE_SECS", RECONCILE_SECS.to_string())
                .env("COUPON_RECONCILE_GRACE_SECS", GRACE_SECS.to_string())
                .env("COUPON_ACK_TIMEOUT_MS", ACK_TIMEOUT_MS.to_string());
            let proc = Proc::start(spec, &self.dir)?;
            self.servers.push(Server { port, proc });
        }
        for name in ["consumer-1", "consumer-2"] {
            let metrics_port = free_port()?;
            let spec = self
                .shared_env(Spec::new(name, self.bin_dir.join("coupon-consumer")))
                .env("COUPON_CONSUMER_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"));
            let proc = Proc::start(spec, &self.dir)?;
            self.consumers.push(Consumer { metrics_port, proc });
        }
        for i in 0..self.servers.len() {
            self.wait_server_ready(i).await?;
        }
        Ok(())
    }

    /// Waits until server `i` answers `/readyz` with 200 (its backends answer).
    pub async fn wait_server_ready(&mut self, i: usize) -> Result<()> {
        self.wait_server(i, "/readyz").await
    }

    /// Waits until server `i` answers `/healthz` (the process serves). The schedule
    /// goes on from there: readiness asks every backend, the broker's horizon
    /// included, which can take seconds under load, and the history shows when
    /// answers come back.
    pub async fn wait_server_live(&mut self, i: usize) -> Result<()> {
        self.wait_server(i, "/healthz").await
    }

    async fn wait_server(&mut self, i: usize, path: &str) -> Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let port = self.servers[i].port;
        let result = wait_for(
            &format!("{} to answer {path}", self.servers[i].proc.spec.name),
            Duration::from_secs(120),
            || {
                let http = http.clone();
                async move {
                    let r = http.get(format!("http://127.0.0.1:{port}{path}")).send().await.ok()?;
                    (r.status() == 200).then_some(())
                }
            },
        )
        .await;
        result.with_context(|| {
            format!(
                "log {}:\n{}",
                self.servers[i].proc.log.display(),
                self.servers[i].proc.tail(30)
            )
        })
    }

    /// SIGTERM to every server and consumer.
    pub async fn stop_processes(&mut self) -> Result<()> {
        for mut server in self.servers.drain(..) {
            server.proc.stop("TERM", Duration::from_secs(30)).await?;
        }
        for mut consumer in self.consumers.drain(..) {
            consumer.proc.stop("TERM", Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// The base URL of server `i`.
    pub fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.servers[i].port)
    }

    /// The consumer group's progress on the event topic.
    pub async fn group_progress(&self) -> Result<coupon_kafka::GroupProgress> {
        let log = coupon_kafka::KafkaLog::new(coupon_kafka::KafkaConfig::new(self.broker.brokers(), &self.topic))?;
        Ok(log.group_progress(&self.group).await?)
    }

    /// The sum of `coupon_recorder_fenced_total` for `fences` over both consumers'
    /// `/metrics` (a consumer that does not answer counts 0).
    pub async fn consumers_fenced(&self, fences: &[&str]) -> u64 {
        let mut total = 0;
        for consumer in &self.consumers {
            let Ok(response) = reqwest::get(format!("http://127.0.0.1:{}/metrics", consumer.metrics_port)).await else {
                continue;
            };
            let text = response.text().await.unwrap_or_default();
            for line in text.lines().filter(|l| l.starts_with("coupon_recorder_fenced_total{")) {
                if fences.iter().any(|f| line.contains(&format!("fence=\"{f}\""))) {
                    total += line
                        .rsplit(' ')
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0) as u64;
                }
            }
        }
        total
    }

    /// An admin client.
    pub fn admin(&self) -> Admin {
        let auth = coupon_server::Auth::new(SECRET);
        Admin {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            token: auth.mint(&coupon_server::Claims::new(
                "chaos-ops",
                Some("admin".into()),
                24 * 3_600,
            )),
        }
    }
}

impl Admin {
    /// Sends an admin request; its JSON body when it answers `expected`, else an error
    /// naming `what` with the status and body.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
        expected: u16,
    ) -> Result<Value> {
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        if status != expected {
            bail!("{what} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Creates and opens a campaign of `stock` coupons, `per_user_limit` per user.
    pub async fn open_campaign(&self, base: &str, stock: u64, per_user_limit: u32) -> Result<String> {
        let now = chrono::Utc::now();
        let body = json!({
            "name": "chaos",
            "total_quantity": stock,
            "per_user_limit": per_user_limit,
            "issue_starts_at": (now - chrono::Duration::minutes(10)).to_rfc3339(),
            "issue_ends_at": (now + chrono::Duration::hours(6)).to_rfc3339(),
        });
        let post = reqwest::Method::POST;
        let view = self
            .call(
                "creating the campaign",
                post.clone(),
                format!("{base}/v1/campaigns"),
                Some(body),
                201,
            )
            .await?;
        let id = view["id"].as_str().context("a campaign id")?.to_owned();
        let open = format!("{base}/v1/campaigns/{id}/open");
        self.call("opening the campaign", post, open, None, 200).await?;
        Ok(id)
    }

    /// The operator's sync after the gate went back in time (PROTOCOL.md 5a): refused
    /// until the log is drained.
    pub async fn sync(&self, base: &str, campaign: &str) -> Result<Value> {
        let url = format!("{base}/v1/campaigns/{campaign}/sync");
        self.call("the sync", reqwest::Method::POST, url, None, 200).await
    }

    /// The campaign's view (`remaining`, `issued`, `stored`, `pending`).
    pub async fn view(&self, base: &str, campaign: &str) -> Result<Value> {
        let url = format!("{base}/v1/campaigns/{campaign}");
        self.call("reading the campaign", reqwest::Method::GET, url, None, 200)
            .await
    }
}
