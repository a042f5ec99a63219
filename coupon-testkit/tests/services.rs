//! The harness itself: every service the suite needs answers its own protocol.
//! With `COUPON_REQUIRE_SERVICES=1` a missing one fails here first, with a clear message.

use std::time::Duration;

use coupon_testkit::{Service, service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

async fn connect(addr: &str) -> TcpStream {
    timeout(LIMIT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

async fn redis_command(addr: &str, command: &str) -> String {
    let mut s = connect(addr).await;
    let parts: Vec<&str> = command.split(' ').collect();
    let mut req = format!("*{}\r\n", parts.len());
    for p in parts {
        req.push_str(&format!("${}\r\n{p}\r\n", p.len()));
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = timeout(LIMIT, s.read(&mut buf)).await.expect("redis answer").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn redis_answers_ping() {
    let Some(url) = service(Service::Redis).await else {
        return;
    };
    assert_eq!(redis_command(&host_port(&url), "PING").await, "+PONG\r\n");
}

#[tokio::test]
async fn redis_cluster_is_formed_on_every_seed() {
    let Some(urls) = service(Service::RedisCluster).await else {
        return;
    };
    let nodes: Vec<_> = urls.split(',').map(host_port).collect();
    assert!(nodes.len() >= 3, "a cluster of at least three masters: {urls}");
    for node in nodes {
        let info = redis_command(&node, "CLUSTER INFO").await;
        assert!(info.contains("cluster_state:ok"), "{node}: {info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{node}: {info}");
    }
}

#[tokio::test]
async fn mysql_sends_its_handshake() {
    let Some(url) = service(Service::Mysql).await else {
        return;
    };
    let mut s = connect(&host_port(&url)).await;
    let mut buf = [0u8; 5];
    timeout(LIMIT, s.read_exact(&mut buf))
        .await
        .expect("handshake")
        .unwrap();
    assert_eq!(buf[4], 10, "MySQL protocol version 10 handshake");
}

#[tokio::test]
async fn postgres_answers_an_ssl_probe() {
    let Some(url) = service(Service::Postgres).await else {
        return;
    };
    let mut s = connect(&host_port(&url)).await;
    // SSLRequest: length 8, code 80877103. The server answers 'S' or 'N'.
    s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap();
    let mut b = [0u8; 1];
    timeout(LIMIT, s.read_exact(&mut b)).await.expect("answer").unwrap();
    assert!(b[0] == b'N' || b[0] == b'S', "{:?}", b[0] as char);
}

#[tokio::test]
async fn kafka_answers_api_versions() {
    let Some(brokers) = service(Service::Kafka).await else {
        return;
    };
    let addr = brokers.split(',').next().unwrap().trim().to_owned();
    let mut s = connect(&addr).await;
    // ApiVersions v0: api_key 18, version 0, correlation id 7, client id "t".
    let body: [u8; 11] = [0, 18, 0, 0, 0, 0, 0, 7, 0, 1, b't'];
    let mut req = (body.len() as u32).to_be_bytes().to_vec();
    req.extend_from_slice(&body);
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 8];
    timeout(LIMIT, s.read_exact(&mut head)).await.expect("answer").unwrap();
    assert_eq!(&head[4..8], &[0, 0, 0, 7], "the broker echoes the correlation id");
}

#[test]
fn every_service_has_its_own_variable() {
    let vars: std::collections::HashSet<_> = Service::ALL.iter().map(|s| s.env_var()).collect();
    assert_eq!(vars.len(), Service::ALL.len());
    assert!(Service::ALL.iter().all(|s| s.env_var().starts_with("COUPON_TEST_")));
}

#[tokio::test]
async fn nginx_runs() {
    let Some(nginx) = service(Service::Nginx).await else {
        return;
    };
    let out = tokio::process::Command::new(&nginx)
        .arg("-v")
        .output()
        .await
        .expect("nginx starts");
    assert!(out.status.success(), "{nginx} -v failed");
    let version = String::from_utf8_lossy(&out.stderr);
    assert!(version.contains("nginx/"), "{version}");
}
