//! The post-processing hooks end to end, with real processes: the server and a consumer
//! running the example webhook (`COUPON_WEBHOOK_URL`) over Redis, the broker and a
//! PostgreSQL database of the test's own, posting to a receiver in this test that
//! answers 503 to every third request. Every coupon stored, and the one redeemed,
//! reaches it; the failures were retried; nothing is left pending in the store.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use coupon_testkit::{Service, services, unique_name};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use support::{Proc, drop_database, free_port, own_database, sibling_binary, start_server, temp_dir};

/// What the receiver saw: requests, refusals, and each idempotency key's first body.
#[derive(Debug, Default)]
struct Received {
    requests: usize,
    refused: usize,
    delivered: BTreeMap<String, Value>,
    repeated: usize,
}

async fn receive(State(seen): State<Arc<Mutex<Received>>>, headers: HeaderMap, Json(body): Json<Value>) -> StatusCode {
    let mut seen = seen.lock().unwrap();
    seen.requests += 1;
    if seen.requests % 3 == 0 {
        seen.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|k| k.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if seen.delivered.insert(key, body).is_some() {
        seen.repeated += 1;
    }
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_and_redeemed_coupon_reaches_a_flaky_webhook_at_least_once() {
    let Some([redis, kafka, postgres]) = services([Service::Redis, Service::Kafka, Service::Postgres]).await else {
        return;
    };
    // Its own database: the hook runner delivers every pending notice of its store, and
    // the shared database holds other tests' coupons.
    let db = own_database(&postgres, "coupon_hooks").await;
    let seen = Arc::new(Mutex::new(Received::default()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook = format!("http://{}/coupons", receiver.local_addr().unwrap());
    let app = Router::new().route("/coupons", post(receive)).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await });

    let dir = temp_dir("coupon-webhook");
    let shared = [
        ("COUPON_KAFKA_BROKERS", kafka),
        ("COUPON_KAFKA_TOPIC", unique_name("hooks-issued")),
        ("COUPON_KAFKA_SINGLE_BROKER", "true".to_owned()),
        ("COUPON_CONSUMER_GROUP", unique_name("hooks-recorder")),
        ("COUPON_DATABASE_URL", db.clone()),
        ("COUPON_REDIS_URL", redis),
    ];
    let (server, client) = start_server(&dir, free_port(), &shared).await;
    let mut consumer_env = shared.to_vec();
    consumer_env.push(("COUPON_WEBHOOK_URL", webhook));
    let consumer = Proc::start(&sibling_binary("coupon-consumer"), "consumer", &dir, &consumer_env);

    const STOCK: usize = 12;
    let campaign = client.open_campaign(STOCK as u64).await;
    let mut issued: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..STOCK + 3 {
        let user = format!("hooked-{i}");
        let (status, body) = client.issue(&campaign, &client.token(&user, None)).await;
        if status == 201 {
            issued.insert(body["coupon_id"].as_str().unwrap().to_owned(), user);
        } else {
            assert_eq!(status, 410, "{body}");
        }
    }
    assert_eq!(issued.len(), STOCK);
    let (redeemed, owner) = issued.iter().next().map(|(c, u)| (c.clone(), u.clone())).unwrap();
    // The coupon may not be stored yet: redeeming waits until the consumer stored it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = client
            .send(
                reqwest::Method::POST,
                &format!("/v1/coupons/{redeemed}/redeem"),
                Some(&client.token(&owner, None)),
                Some(json!({"order_id": "order-hooked", "order_amount": 1})),
            )
            .await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "redeeming: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut expected: BTreeSet<String> = issued.keys().map(|c| format!("{c}:stored")).collect();
    expected.insert(format!("{redeemed}:redeemed"));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let delivered: BTreeSet<String> = seen.lock().unwrap().delivered.keys().cloned().collect();
        if delivered == expected {
            break;
        }
        assert!(
            Instant::now() < deadline && delivered.is_subset(&expected),
            "delivered {delivered:?}, expected {expected:?}\nconsumer log: {}",
            consumer.tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let seen = seen.lock().unwrap();
        assert!(seen.refused > 0, "the receiver failed now and then: {seen:?}");
        for (key, body) in &seen.delivered {
            let (coupon, notice) = key.split_once(':').unwrap();
            assert_eq!(body["notice"], notice, "{body}");
            assert_eq!(body["coupon"]["id"], coupon, "{body}");
            assert_eq!(body["coupon"]["user_id"], issued[coupon].as_str(), "{body}");
        }
        assert_eq!(
            seen.delivered[&format!("{redeemed}:redeemed")]["coupon"]["order_id"],
            "order-hooked"
        );
        println!(
            "webhook: {} requests, {} refused, {} repeated",
            seen.requests, seen.refused, seen.repeated
        );
    }
    // Cleared after the receiver's 2xx: wait, bounded, for the store to say so.
    let mut conn = PgConnection::connect(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupon_coupons WHERE pending_notice IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} notices still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate().await;
    consumer.terminate().await;
    drop(conn);
    drop_database(&postgres, &db).await;
}
