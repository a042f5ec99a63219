//! `scripts/services.sh` itself: two `up`s at once start one copy of each service and
//! both succeed (a lock around start-up), and a service that fails to start prints the
//! lines of its own log that say why. Each test uses a state directory and ports of
//! its own, so the shared services are reused, never restarted or stopped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coupon_testkit::{Service, service, unique_name};

/// A start with a cluster to create and a broker to start, on a busy 2-core machine.
const BOUND: Duration = Duration::from_secs(150);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(args: &[&str], env: &[(&str, String)]) -> Child {
    Command::new("bash")
        .arg(script())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) for `child`; its success and its stderr.
fn finish(mut child: Child) -> (bool, String) {
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("services.sh did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Stops what an `up` with `env` started (its cluster nodes and broker).
struct Down(Vec<(&'static str, String)>);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = finish(run(&["down"], &self.0));
        if let Some((_, dir)) = self.0.iter().find(|(k, _)| *k == "COUPON_SERVICES_DIR") {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ups_at_once_start_one_copy_of_each_service_and_both_succeed() {
    // The shared services this script reuses must be there (and tansu installed).
    if service(Service::Kafka).await.is_none() || service(Service::Postgres).await.is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(unique_name("coupon-services"));
    let cluster: Vec<String> = (0..3).map(|_| free_port().to_string()).collect();
    let kafka_port = free_port();
    let env = vec![
        ("COUPON_SERVICES_DIR", dir.display().to_string()),
        ("COUPON_REDIS_CLUSTER_PORTS", cluster.join(",")),
        ("COUPON_KAFKA_PORT", kafka_port.to_string()),
    ];
    let _down = Down(env.clone());
    let (first, second) = (run(&["up"], &env), run(&["up"], &env));
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(move || finish(first)),
        tokio::task::spawn_blocking(move || finish(second))
    );
    let ((a_ok, a_err), (b_ok, b_err)) = (a.unwrap(), b.unwrap());
    assert!(a_ok, "first up failed:\n{a_err}");
    assert!(b_ok, "second up failed:\n{b_err}");
    let both = format!("{a_err}\n{b_err}");
    assert_eq!(
        both.matches("kafka: starting").count(),
        1,
        "one broker started, the other up reused it:\n{both}"
    );
    assert_eq!(
        both.matches("kafka: something is already listening").count(),
        1,
        "{both}"
    );
    assert!(
        both.contains("waiting (up to"),
        "one up waited for the other's lock:\n{both}"
    );
    for port in &cluster {
        assert_eq!(
            both.matches(&format!("redis-cluster: starting node {port}\n")).count(),
            1,
            "node {port} started once:\n{both}"
        );
    }
    tokio::net::TcpStream::connect(("127.0.0.1", kafka_port)).await.unwrap();
}

#[tokio::test]
async fn a_broker_that_fails_to_start_prints_the_lines_of_its_own_log() {
    if service(Service::Kafka).await.is_none() || service(Service::RedisCluster).await.is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(unique_name("coupon-services"));
    let env = vec![
        ("COUPON_SERVICES_DIR", dir.display().to_string()),
        ("COUPON_KAFKA_PORT", free_port().to_string()),
        // tansu refuses a storage engine it does not know, at start.
        ("COUPON_TANSU_STORAGE", "bogus://nowhere/".to_owned()),
    ];
    let _down = Down(env.clone());
    let (ok, stderr) = tokio::task::spawn_blocking(move || finish(run(&["up"], &env)))
        .await
        .unwrap();
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("kafka: tansu exited during startup with status 1")
            && stderr.contains("--- last lines of")
            && stderr.contains("UnsupportedStorageUrl"),
        "{stderr}"
    );
}
