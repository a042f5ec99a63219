//! Shared by the coupon-kafka integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coupon_core::EventLog;
use coupon_kafka::{KafkaConfig, KafkaLog, ensure_topics};
use coupon_testkit::{Service, service, services_required, unique_name};

/// A configuration with fresh topics (created, 3 partitions) on the test broker.
pub async fn fresh_config() -> Option<KafkaConfig> {
    let brokers = service(Service::Kafka).await?;
    let config = KafkaConfig::new(brokers, unique_name("coupons"));
    ensure_topics(&config, &coupon_kafka::TopicSettings::single_broker(3))
        .await
        .unwrap();
    Some(config)
}

pub async fn fresh_log() -> Option<Arc<dyn EventLog>> {
    Some(Arc::new(KafkaLog::new(fresh_config().await?).unwrap()))
}

/// A tansu broker of the test's own, on a free port, in a directory of its own (where a
/// `sqlite://` storage URL puts its file); killed and removed on drop.
pub struct OwnBroker {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl OwnBroker {
    fn binary() -> Option<PathBuf> {
        if let Ok(path) = std::env::var("COUPON_TANSU_BIN") {
            return Some(PathBuf::from(path));
        }
        let home = std::env::var("HOME").unwrap_or_default();
        let installed = PathBuf::from(home).join(".cargo/bin/tansu");
        installed.exists().then_some(installed)
    }

    /// Starts tansu on `storage` (`--storage-engine`), or `None` (skipped) when it is
    /// not installed and services are not required.
    pub async fn start(storage: &str) -> Option<Self> {
        let Some(binary) = Self::binary() else {
            assert!(!services_required(), "no tansu binary (set COUPON_TANSU_BIN)");
            eprintln!("skipped: no tansu binary");
            return None;
        };
        let port = coupon_testkit::free_port();
        let dir = coupon_testkit::scratch_dir("own-tansu");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", storage])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let broker = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(broker)
    }

    /// Its bootstrap address.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the broker.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
