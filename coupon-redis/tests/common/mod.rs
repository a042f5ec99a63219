//! Shared by the coupon-redis integration tests.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use coupon_core::IssueGate;
use coupon_redis::{RedisGate, RedisGateConfig};
use coupon_testkit::{Service, service, unique_name};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Generous for tests: both cores are busy running several test processes at once.
pub const TEST_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn standalone_config() -> Option<RedisGateConfig> {
    let url = service(Service::Redis).await?;
    Some(
        RedisGateConfig::from_url(&url)
            .unwrap()
            .with_key_prefix(unique_name("t"))
            .with_response_timeout(TEST_RESPONSE_TIMEOUT),
    )
}

pub async fn cluster_config() -> Option<RedisGateConfig> {
    let urls = service(Service::RedisCluster).await?;
    let nodes = urls.split(',').map(|s| s.trim().to_owned()).collect();
    Some(
        RedisGateConfig::cluster(nodes)
            .with_key_prefix(unique_name("t"))
            .with_response_timeout(TEST_RESPONSE_TIMEOUT),
    )
}

pub async fn standalone_gate() -> Option<Arc<dyn IssueGate>> {
    Some(Arc::new(RedisGate::connect(standalone_config().await?).await.unwrap()))
}

pub async fn cluster_gate() -> Option<Arc<dyn IssueGate>> {
    Some(Arc::new(RedisGate::connect(cluster_config().await?).await.unwrap()))
}

/// A redis-server of the test's own, on a free loopback port, for tests that stop,
/// pause or restart it. Killed when dropped.
pub struct OwnRedis {
    pub port: u16,
    pub dir: std::path::PathBuf,
    child: Option<Child>,
    persistent: bool,
    /// More arguments, after the defaults (a later `--port` wins).
    extra: Vec<String>,
}

impl OwnRedis {
    /// Starts one, or `None` (skipped, or failed under COUPON_REQUIRE_SERVICES) if
    /// redis-server is not installed.
    pub async fn start(persistent: bool) -> Option<Self> {
        Self::start_with(persistent, |_| Vec::new()).await
    }

    /// One that speaks only TLS, on its port, with the certificate `ca` signed
    /// (clients are not asked for a certificate).
    #[allow(dead_code)] // only the TLS tests
    pub async fn start_tls(ca: &coupon_testkit::tls::ThrowawayCa) -> Option<Self> {
        let file = |p: std::path::PathBuf| p.display().to_string();
        let (cert, key, ca) = (file(ca.cert_file()), file(ca.key_file()), file(ca.ca_file()));
        Self::start_with(false, move |port| {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert,
                "--tls-key-file".into(),
                key,
                "--tls-ca-cert-file".into(),
                ca,
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })
        .await
    }

    async fn start_with(persistent: bool, extra: impl FnOnce(u16) -> Vec<String>) -> Option<Self> {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            let msg = "redis-server is not installed; it is needed to stop and restart a server of the test's own";
            assert!(!coupon_testkit::services_required(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let port = coupon_testkit::free_port();
        let dir = coupon_testkit::scratch_dir("own-redis");
        let mut own = Self {
            port,
            dir,
            child: None,
            persistent,
            extra: extra(port),
        };
        own.launch().await;
        Some(own)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the process and waits for its "Ready to accept connections" line.
    async fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--appendonly")
            .arg(if self.persistent { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always")
            .args(&self.extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("redis-server starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            ready,
            Ok(true),
            "redis-server on port {} did not become ready",
            self.port
        );
        // Keep draining its output so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Kills the process (no persistence step).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Shuts down gracefully (persisting the append-only file), then starts again on the same port.
    pub async fn restart(&mut self) {
        let mut conn = redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: Result<(), _> = redis::cmd("SHUTDOWN").query_async(&mut conn).await;
        if let Some(mut child) = self.child.take() {
            child.wait().await.unwrap();
        }
        self.launch().await;
    }

    /// Writes a snapshot now (`SAVE`) and keeps a copy of it; returns the copy's path.
    pub async fn snapshot(&self) -> std::path::PathBuf {
        let mut conn = self.admin().await;
        let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
        let copy = self.dir.join(format!("snapshot-{}.rdb", unique_name("s")));
        std::fs::copy(self.dir.join("dump.rdb"), &copy).unwrap();
        copy
    }

    /// Kills the process (`kill -9`: nothing persisted on the way down) and starts it
    /// again from `snapshot` (taken by [`OwnRedis::snapshot`]): the server goes back in
    /// time to when the snapshot was taken. Needs a non-persistent server (no AOF).
    pub async fn kill_and_restore(&mut self, snapshot: &std::path::Path) {
        assert!(!self.persistent, "an AOF would be loaded instead of the snapshot");
        self.kill().await;
        std::fs::copy(snapshot, self.dir.join("dump.rdb")).unwrap();
        self.launch().await;
    }

    /// A plain connection for admin commands.
    pub async fn admin(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
