//! A real Prometheus scrapes a running server and consumer, with the shipped alert rules
//! loaded: every metric the rules and the Grafana dashboard query is in what it scraped.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use coupon_testkit::{Service, services, unique_name};
use support::{
    Proc, accepting_webhook, deploy_dir as deploy, drop_database, free_port, metric_base as base,
    metrics_in_rules_and_dashboard, own_database, sibling_binary, start_server, temp_dir,
};

/// The metric names Prometheus holds (histogram suffixes removed).
async fn scraped(http: &reqwest::Client, prometheus: &str) -> BTreeSet<String> {
    let Ok(answer) = http
        .get(format!("{prometheus}/api/v1/label/__name__/values"))
        .send()
        .await
    else {
        return BTreeSet::new();
    };
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    body["data"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str())
                .map(|n| base(n).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn prometheus_scrapes_every_metric_the_rules_and_the_dashboard_query() {
    let Some([redis, kafka, postgres, promtool]) =
        services([Service::Redis, Service::Kafka, Service::Postgres, Service::Promtool]).await
    else {
        return;
    };
    // The Debian package that brings promtool brings the server beside it.
    let prometheus_binary = Path::new(&promtool).with_file_name("prometheus");
    assert!(prometheus_binary.exists(), "{} is missing", prometheus_binary.display());

    let dir = temp_dir("coupon-prometheus");
    // The consumer runs a webhook (its metrics are queried by the rules), so the store is
    // the test's own: a hook runner delivers every pending notice of its store.
    let db = own_database(&postgres, "coupon_prometheus").await;
    let shared = [
        ("COUPON_KAFKA_BROKERS", kafka),
        ("COUPON_KAFKA_TOPIC", unique_name("prom-issued")),
        ("COUPON_KAFKA_PARTITIONS", "2".to_owned()),
        ("COUPON_KAFKA_SINGLE_BROKER", "true".to_owned()),
        ("COUPON_CONSUMER_GROUP", unique_name("prom-recorder")),
        ("COUPON_DATABASE_URL", db.clone()),
        ("COUPON_REDIS_URL", redis),
    ];
    let (server_port, consumer_port, prometheus_port) = (free_port(), free_port(), free_port());
    let mut server_env = shared.to_vec();
    server_env.push(("COUPON_RECONCILE_SECS", "1".to_owned()));
    let (server, client) = start_server(&dir, server_port, &server_env).await;
    let mut consumer_env = shared.to_vec();
    consumer_env.extend([
        ("COUPON_CONSUMER_METRICS_LISTEN", format!("127.0.0.1:{consumer_port}")),
        ("COUPON_CONSUMER_REJOIN_AFTER_SECS", "2".to_owned()),
        ("COUPON_WEBHOOK_URL", accepting_webhook().await),
    ]);
    let consumer = Proc::start(&sibling_binary("coupon-consumer"), "consumer", &dir, &consumer_env);

    // A sale that sells out: issued, sold out, stored by the consumer.
    let campaign = client.open_campaign(3).await;
    for user in ["u1", "u2", "u3", "u4"] {
        let (status, body) = client.issue(&campaign, &client.token(user, None)).await;
        assert!(status == 201 || status == 410, "{status} {body}");
    }

    // The operator's page over the real log: the recorders' lag is there.
    let admin = client.token("ops", Some("admin"));
    let (status, view) = client
        .send(
            reqwest::Method::GET,
            &format!("/v1/campaigns/{campaign}/status"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["gate"], "serving", "{view}");
    assert!(
        view["recorder_lag_seconds"].as_f64().is_some_and(|lag| lag >= 0.0),
        "{view}"
    );

    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n\
             \x20 - job_name: coupon-server\n\
             \x20   static_configs: [{{ targets: ['127.0.0.1:{server_port}'] }}]\n\
             \x20 - job_name: coupon-consumer\n\
             \x20   static_configs: [{{ targets: ['127.0.0.1:{consumer_port}'] }}]\n",
            rules = deploy().join("prometheus/alerts.yml").display().to_string(),
        ),
    )
    .unwrap();
    let _prometheus = Proc::start_with_args(
        &prometheus_binary,
        "prometheus",
        &dir,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ],
        &[],
    );

    let queried = metrics_in_rules_and_dashboard();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{prometheus_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let have = scraped(&http, &url).await;
        let missing: Vec<&String> = queried.iter().filter(|name| !have.contains(*name)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "queried but not scraped within 60 s: {missing:?}\nserver log: {}\nconsumer log: {}",
        server.tail(),
        consumer.tail()
    );

    // The rules loaded into this Prometheus, and none fires on a healthy sale.
    let get = |path: &'static str| {
        let request = http.get(format!("{url}{path}"));
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let rules = get("/api/v1/rules").await;
    let loaded = rules["data"]["groups"][0]["rules"].as_array().map_or(0, Vec::len);
    assert!(loaded >= 10, "{rules}");
    let alerts = get("/api/v1/alerts").await;
    let firing: Vec<_> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(firing.is_empty(), "alerts firing on a healthy sale: {firing:?}");
    server.terminate().await;
    consumer.terminate().await;
    drop_database(&postgres, &db).await;
}
