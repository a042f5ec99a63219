//! The distributed setup end to end, with real processes: the server binary and two
//! consumer processes over the Redis Cluster, the Kafka-protocol broker and
//! PostgreSQL (and MariaDB). A flash sale of 5,000 among 20,000 users (some
//! retrying, 128 in flight), then I1-I3 against the database, a redemption race and
//! an SSE `stored` event.

mod support;

use coupon_testkit::{Service, services, unique_name};
use support::{
    Proc, check_invariants, flash_sale, free_port, redemption_race, sibling_binary, start_server, stored_rows,
    temp_dir, wait_for_count, wait_for_event,
};

const STOCK: u64 = 5_000;
const USERS: usize = 20_000;

async fn scenario(database: Service) {
    let Some([redis, kafka, db]) = services([Service::RedisCluster, Service::Kafka, database]).await else {
        return;
    };
    let dir = temp_dir("coupon-distributed");
    let topic = unique_name("e2e-issued");
    let group = unique_name("e2e-recorder");
    let shared = [
        ("COUPON_KAFKA_BROKERS", kafka.clone()),
        ("COUPON_KAFKA_TOPIC", topic.clone()),
        ("COUPON_KAFKA_PARTITIONS", "4".to_owned()),
        ("COUPON_KAFKA_SINGLE_BROKER", "true".to_owned()),
        ("COUPON_CONSUMER_GROUP", group.clone()),
        ("COUPON_DATABASE_URL", db.clone()),
        ("COUPON_REDIS_URL", redis.clone()),
    ];
    let mut server_env = shared.to_vec();
    server_env.push(("COUPON_USER_RATE_LIMIT", "0".to_owned()));
    let (server, client) = start_server(&dir, free_port(), &server_env).await;
    let consumer = sibling_binary("coupon-consumer");
    let mut consumer_env = shared.to_vec();
    // A member lost in a rebalance is noticed after the session timeout; the Kafka
    // minimum (6 s) instead of librdkafka's 45 s keeps a stalled group short.
    consumer_env.push((
        "COUPON_KAFKA_OPTIONS",
        "session.timeout.ms=6000,heartbeat.interval.ms=1000".to_owned(),
    ));
    let consumers = [
        Proc::start(&consumer, "consumer-1", &dir, &consumer_env),
        Proc::start(&consumer, "consumer-2", &dir, &consumer_env),
    ];

    let campaign = client.open_campaign(STOCK).await;
    // One early coupon with an SSE client waiting for it to be stored by a consumer.
    let early = client.token("sse-user", None);
    let (status, body) = client.issue(&campaign, &early).await;
    assert_eq!(status, 201, "{body}");
    let early_coupon = body["coupon_id"].as_str().unwrap().to_owned();
    let sse = {
        let client = client.clone();
        let coupon = early_coupon.clone();
        tokio::spawn(async move { wait_for_event(&client, &coupon, &early, "stored").await })
    };

    let mut sale = flash_sale(&client, &campaign, "dist", USERS, 10, 128).await;
    println!("distributed sale over {database}: {:?}", sale.answers);
    sale.issued.insert("sse-user".into(), early_coupon.clone());
    assert_eq!(sale.issued.len() as u64, STOCK, "{:?}", sale.answers);
    assert_eq!(
        sale.count("409 already_issued") + sale.count("410 sold_out") + STOCK - 1,
        (USERS + USERS / 10) as u64
    );

    match sse.await.unwrap() {
        Ok(data) => assert!(data.contains(&early_coupon), "{data}"),
        Err(e) => {
            let rows = stored_rows(&db, &campaign).await;
            let early_stored = rows.iter().any(|(id, _)| *id == early_coupon);
            panic!(
                "SSE `stored` for {early_coupon}: {e}; stored rows {}, the early coupon stored: {early_stored}\n\
                 server log: {}\nconsumer-1 log: {}\nconsumer-2 log: {}",
                rows.len(),
                server.tail(),
                consumers[0].tail(),
                consumers[1].tail()
            );
        }
    }

    let stored = wait_for_count(STOCK, || async { stored_rows(&db, &campaign).await.len() as u64 }).await;
    if stored != STOCK {
        // What the group did with the missing ones (seen once in ~5 full runs on MariaDB:
        // 9 of 5,000 not stored within 60 s, no warning in any log).
        let rows = stored_rows(&db, &campaign).await;
        let stored_ids: std::collections::HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
        let missing: Vec<&String> = sale
            .issued
            .values()
            .filter(|id| !stored_ids.contains(id.as_str()))
            .collect();
        let progress = coupon_kafka::KafkaLog::new(coupon_kafka::KafkaConfig::new(kafka.clone(), topic.clone()))
            .unwrap()
            .group_progress(&group)
            .await;
        panic!(
            "the consumers stored {stored} of {STOCK}; missing {missing:?}; group progress {progress:?}\n\
             server log: {}\nconsumer-1 log: {}\nconsumer-2 log: {}",
            server.tail(),
            consumers[0].tail(),
            consumers[1].tail()
        );
    }
    check_invariants(STOCK, &sale, &stored_rows(&db, &campaign).await);

    let (user, coupon) = sale.issued.iter().find(|(u, _)| u.as_str() != "sse-user").unwrap();
    let statuses = redemption_race(&client, coupon, &client.token(user, None), 24).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");

    let (status, view) = client
        .send(reqwest::Method::GET, &format!("/v1/campaigns/{campaign}"), None, None)
        .await;
    assert_eq!(
        (status, view["remaining"].as_u64(), view["stored"].as_u64()),
        (200, Some(0), Some(STOCK)),
        "{view}"
    );

    server.terminate().await;
    for c in consumers {
        c.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_distributed_over_postgres() {
    scenario(Service::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_distributed_over_mariadb() {
    scenario(Service::Mysql).await;
}
