//! The load generator, briefly, against the embedded server (in process, on a
//! loopback port): both modes run, the summary is well-formed JSON, and the
//! consistency check holds. No timing assertions.

use std::sync::Arc;

use coupon_server::{Backends, Server, ServerConfig};
use serde_json::Value;

async fn embedded_server() -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut config = ServerConfig::defaults();
    config.jwt_secret = Some("smoke-secret".into());
    config.user_rate_limit = 0;
    let backends = Backends {
        store: Arc::new(coupon_core::memory::MemoryStore::new()),
        ..Backends::in_memory()
    };
    let server = Server::build(&config, backends).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    (url, stop, running)
}

async fn loadgen(url: &str, extra: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_coupon-loadgen"))
        .args([
            "--url",
            url,
            "--secret",
            "smoke-secret",
            "--json",
            "--quiet",
            "--wait-stored",
            "10s",
        ])
        .args(extra)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "coupon-loadgen failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_runs_both_modes_against_the_embedded_server() {
    let (url, stop, running) = embedded_server().await;

    // Constant arrival rate: 600 requests over 2 s for 150 coupons, 10% repeats.
    let rate = loadgen(
        &url,
        &[
            "--mode",
            "rate",
            "--rate",
            "300",
            "--duration",
            "2s",
            "--stock",
            "150",
            "--repeat-share",
            "0.1",
        ],
    )
    .await;
    assert_eq!(rate["mode"], "rate");
    assert_eq!(
        rate["requests"].as_u64().unwrap() + rate["dropped"].as_u64().unwrap(),
        600,
        "{rate}"
    );
    let c = &rate["consistency"];
    assert_eq!(
        (c["ok"].as_bool(), c["over_issue"].as_u64(), c["issued"].as_u64()),
        (Some(true), Some(0), Some(150)),
        "{rate}"
    );
    assert_eq!(rate["answers"]["issued"], 150);
    assert!(rate["answers"]["sold_out"].as_u64().unwrap() > 0, "{rate}");
    for q in ["avg", "p50", "p95", "p99", "max"] {
        assert!(rate["latency_ms"][q].as_f64().unwrap() > 0.0, "{rate}");
    }

    // Closed loop: 400 requests, more users than stock.
    let max = loadgen(
        &url,
        &[
            "--mode",
            "max",
            "--concurrency",
            "16",
            "--requests",
            "400",
            "--duration",
            "60s",
            "--stock",
            "300",
        ],
    )
    .await;
    assert_eq!(max["requests"], 400, "{max}");
    assert_eq!(max["distinct_users"], 400);
    assert_eq!(
        (max["consistency"]["ok"].as_bool(), max["answers"]["issued"].as_u64()),
        (Some(true), Some(300)),
        "{max}"
    );

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
