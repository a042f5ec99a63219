//! Real processes for the end-to-end tests: the server and consumer binaries, a
//! concurrent flash-sale scenario over HTTP, and the checks against the database.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coupon_server::{Auth, Claims};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The secret every process of a test shares.
pub const SECRET: &str = "e2e-secret";

/// A process killed when dropped; its stderr goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// Starts `binary` with exactly `env` (plus PATH), logging to `dir/<name>.log`.
    pub fn start(binary: &Path, name: &str, dir: &Path, env: &[(&str, String)]) -> Self {
        Self::start_with_args(binary, name, dir, &[], env)
    }

    /// [`Proc::start`] with arguments.
    pub fn start_with_args(binary: &Path, name: &str, dir: &Path, args: &[&str], env: &[(&str, String)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            // tracing writes to stdout, panics and clap to stderr: both go to the log.
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Self {
            child,
            log,
            name: name.to_owned(),
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not stop within 60 s of SIGTERM; log: {}",
                    self.name,
                    self.tail()
                )
            })
            .unwrap();
        assert!(exit.success(), "{} exited with {exit}; log: {}", self.name, self.tail());
    }

    /// The end of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Starts the server binary on `port` with the tests' secret and `env`, and waits until
/// it is ready.
pub async fn start_server(dir: &Path, port: u16, env: &[(&str, String)]) -> (Proc, Client) {
    let mut all = vec![
        ("COUPON_LISTEN", format!("127.0.0.1:{port}")),
        ("COUPON_JWT_SECRET", SECRET.to_owned()),
    ];
    all.extend(env.iter().cloned());
    let mut server = Proc::start(Path::new(env!("CARGO_BIN_EXE_coupon-server")), "server", dir, &all);
    let client = Client::new(port);
    client.wait_ready(&mut server).await;
    (server, client)
}

/// A binary of the workspace, next to this package's server binary.
pub fn sibling_binary(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_coupon-server"));
    let path = server.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p {name}`; `cargo nextest run --workspace` does)",
        path.display()
    );
    path
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory for one test.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(coupon_testkit::unique_name(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub auth: Arc<Auth>,
}

impl Client {
    pub fn new(port: u16) -> Self {
        Self {
            http: reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            auth: Arc::new(Auth::new(SECRET)),
        }
    }

    pub fn token(&self, sub: &str, role: Option<&str>) -> String {
        self.auth.mint(&Claims::new(sub, role.map(str::to_owned), 3_600))
    }

    /// Waits until `/readyz` answers 200 (the process is up and its backends answer).
    pub async fn wait_ready(&self, proc: &mut Proc) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("{} exited early with {status}; log:\n{}", proc.name, proc.tail());
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within 120 s; log:\n{}",
                proc.name,
                proc.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates and opens a campaign of `total` coupons; returns its id.
    pub async fn open_campaign(&self, total: u64) -> String {
        let admin = self.token("ops", Some("admin"));
        let now = chrono::Utc::now();
        let body = json!({
            "name": "e2e",
            "total_quantity": total,
            "issue_starts_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
            "issue_ends_at": (now + chrono::Duration::hours(2)).to_rfc3339(),
        });
        let (s, v) = self
            .send(reqwest::Method::POST, "/v1/campaigns", Some(&admin), Some(body))
            .await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (s, v) = self
            .send(
                reqwest::Method::POST,
                &format!("/v1/campaigns/{id}/open"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        id
    }

    pub async fn issue(&self, campaign: &str, token: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/campaigns/{campaign}/issue"),
            Some(token),
            None,
        )
        .await
    }
}

/// What a flash sale answered.
#[derive(Debug, Default)]
pub struct SaleResult {
    /// user -> coupon id, for every 201.
    pub issued: HashMap<String, String>,
    /// Answers by status and code.
    pub answers: HashMap<String, u64>,
}

impl SaleResult {
    pub fn count(&self, key: &str) -> u64 {
        self.answers.get(key).copied().unwrap_or(0)
    }
}

/// `users` distinct users (`user-<prefix>-<n>`), each asking once, every `retry_every`th
/// asking twice (0: nobody), `concurrency` in flight. Panics on a second 201 for one user.
pub async fn flash_sale(
    client: &Client,
    campaign: &str,
    prefix: &str,
    users: usize,
    retry_every: usize,
    concurrency: usize,
) -> SaleResult {
    let mut requests: Vec<String> = (0..users).map(|n| format!("user-{prefix}-{n}")).collect();
    if retry_every > 0 {
        let retries: Vec<String> = requests.iter().step_by(retry_every).cloned().collect();
        requests.extend(retries);
    }
    let answers = futures::stream::iter(requests)
        .map(|user| {
            let client = client.clone();
            let campaign = campaign.to_owned();
            async move {
                let token = client.token(&user, None);
                let (status, body) = client.issue(&campaign, &token).await;
                (user, status, body)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let mut result = SaleResult::default();
    for (user, status, body) in answers {
        let key = match status {
            201 => {
                let coupon = body["coupon_id"].as_str().unwrap().to_owned();
                assert!(
                    result.issued.insert(user.clone(), coupon).is_none(),
                    "{user} got a second 201"
                );
                "issued".to_owned()
            }
            _ => format!("{status} {}", body["error"].as_str().unwrap_or("?")),
        };
        *result.answers.entry(key).or_default() += 1;
    }
    result
}

/// Polls `count` until it reaches `want` or stops moving for 60 s.
pub async fn wait_for_count<F, Fut>(want: u64, mut count: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut last = (u64::MAX, Instant::now());
    loop {
        let n = count().await;
        if n >= want {
            return n;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (coupon id, user id) of every stored coupon of `campaign`, read from the database
/// `db` names (PostgreSQL, MySQL/MariaDB or SQLite).
pub async fn stored_rows(db: &str, campaign: &str) -> Vec<(String, String)> {
    use sqlx::Row;
    let id = uuid::Uuid::parse_str(campaign).unwrap();
    macro_rules! read {
        ($pool:ty, $sql:literal) => {{
            let pool = <$pool>::connect(db).await.unwrap();
            let rows = sqlx::query($sql).bind(id).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows.iter()
                .map(|r| (r.get::<uuid::Uuid, _>(0).to_string(), r.get::<String, _>(1)))
                .collect()
        }};
    }
    match db.split(':').next() {
        Some("postgres" | "postgresql") => {
            read!(
                sqlx::PgPool,
                "SELECT id, user_id FROM coupon_coupons WHERE campaign_id = $1"
            )
        }
        Some("mysql" | "mariadb") => read!(
            sqlx::MySqlPool,
            "SELECT id, user_id FROM coupon_coupons WHERE campaign_id = ?"
        ),
        _ => read!(
            sqlx::SqlitePool,
            "SELECT id, user_id FROM coupon_coupons WHERE campaign_id = ?"
        ),
    }
}

/// Checks I1-I3 against the rows read back: `rows` is (coupon id, user id) of every
/// stored coupon of the campaign.
pub fn check_invariants(stock: u64, sale: &SaleResult, rows: &[(String, String)]) {
    let stored_ids: HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    let users: HashSet<&str> = rows.iter().map(|(_, u)| u.as_str()).collect();
    assert!(rows.len() as u64 <= stock, "I1: {} stored > stock {stock}", rows.len());
    assert_eq!(users.len(), rows.len(), "I2: a user holds two coupons");
    for (user, coupon) in &sale.issued {
        assert!(
            stored_ids.contains(coupon.as_str()),
            "I3: {user}'s acknowledged coupon {coupon} is not stored"
        );
    }
    assert_eq!(
        rows.len(),
        sale.issued.len(),
        "every stored coupon was acknowledged to someone"
    );
}

/// Reads one SSE stream until an event named `name` arrives; returns its data line,
/// or what was read when the stream ended or two minutes passed without it.
pub async fn wait_for_event(client: &Client, coupon: &str, token: &str, name: &str) -> Result<String, String> {
    let response = client
        .http
        .get(format!("{}/v1/coupons/{coupon}/events", client.base))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let want = format!("event: {name}\n");
    let read = async {
        while let Some(chunk) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.map_err(|e| e.to_string())?));
            if let Some(at) = buffer.find(&want) {
                return Ok(buffer[at..].lines().nth(1).unwrap_or_default().to_owned());
            }
        }
        Err(format!("the stream ended before `{name}`: {buffer}"))
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .unwrap_or_else(|_| Err(format!("no `{name}` event within 120 s")))
}

/// Sends `n` concurrent redemptions of one coupon; returns the statuses.
pub async fn redemption_race(client: &Client, coupon: &str, token: &str, n: usize) -> Vec<u16> {
    let futures = (0..n).map(|i| {
        let client = client.clone();
        let path = format!("/v1/coupons/{coupon}/redeem");
        let token = token.to_owned();
        async move {
            client
                .send(
                    reqwest::Method::POST,
                    &path,
                    Some(&token),
                    Some(json!({"order_id": format!("order-{i}"), "order_amount": 1})),
                )
                .await
                .0
        }
    });
    futures::future::join_all(futures).await
}

/// The `deploy/` folder of the workspace.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A metric's name without Prometheus's histogram suffixes.
pub fn metric_base(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// The `coupon_*` metric names `text` (a rule file, a dashboard) queries, without
/// histogram suffixes.
pub fn metrics_queried(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("coupon_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(metric_base(&name).to_owned());
    }
    names
}

/// Every metric the shipped alert rules and Grafana dashboard query.
pub fn metrics_in_rules_and_dashboard() -> std::collections::BTreeSet<String> {
    let read = |path: &str| std::fs::read_to_string(deploy_dir().join(path)).unwrap();
    let mut names = metrics_queried(&read("prometheus/alerts.yml"));
    names.extend(metrics_queried(&read("grafana/dashboards/coupon.json")));
    names
}

/// A PostgreSQL database of the test's own on the server `url` names, named from
/// `prefix`; its URL.
pub async fn own_database(url: &str, prefix: &str) -> String {
    use sqlx::Connection;
    let name = coupon_testkit::unique_name(prefix).replace('-', "_");
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').expect("a database URL ends in /<database>");
    format!("{base}/{name}")
}

/// Drops the database `db` (a URL from [`own_database`]) on the server `url` names.
pub async fn drop_database(url: &str, db: &str) {
    use sqlx::Connection;
    let name = db.rsplit('/').next().unwrap();
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// A webhook receiver that takes everything (204); its URL.
pub async fn accepting_webhook() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
