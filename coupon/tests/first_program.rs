//! The crate docs' first program (create, open, issue, record, redeem) on each backend
//! set, against the real services, through `coupon::connect`; and the refusals of
//! configurations that would break a promise.

use std::time::{Duration, Instant};

use coupon::{
    AckMode, Config, ConnectError, Coupons, IssueOutcome, NewCampaign, RecorderConfig, RedeemOutcome, Redemption,
    Unsafe, UserId,
};
use coupon_testkit::{Service, service, services, unique_name};

/// Creates a campaign of 3, opens it, issues to alice (twice: the second is refused),
/// records, redeems; checks the store at each step.
async fn first_program(coupons: &Coupons) {
    let now = chrono::Utc::now();
    let launch = NewCampaign::new(unique_name("launch"), 3, now, now + chrono::Duration::hours(1));
    let campaign = coupons.campaigns().create(launch).await.unwrap();
    coupons.campaigns().open(&campaign.id).await.unwrap();

    let alice = UserId::new(unique_name("alice")).unwrap();
    let IssueOutcome::Issued(coupon) = coupons.issuer().issue(&campaign.id, &alice).await.unwrap() else {
        panic!("alice is first");
    };
    assert_eq!(
        coupons.issuer().issue(&campaign.id, &alice).await.unwrap(),
        IssueOutcome::AlreadyIssued
    );

    // The cold path, when there is a log: record until the coupon is stored (bounded).
    if coupons.log().is_some() {
        let mut recorder = coupons.recorder(RecorderConfig::default()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while coupons.campaigns().counts(&campaign.id).await.unwrap().stored < 1 {
            assert!(Instant::now() < deadline, "the recorder stored nothing within 60 s");
            recorder.run_once().await;
        }
    }
    let counts = coupons.campaigns().counts(&campaign.id).await.unwrap();
    assert_eq!((counts.stored, counts.remaining), (1, Some(2)));

    let order = Redemption {
        coupon_id: coupon.id,
        user_id: alice,
        order_id: "o-1".into(),
        order_amount: 4_200,
        at: chrono::Utc::now(),
    };
    assert!(matches!(
        coupons.store().redeem(&order).await.unwrap(),
        RedeemOutcome::Redeemed { .. }
    ));
    // The same order again is the same answer (a retry); another order is refused.
    assert!(matches!(
        coupons.store().redeem(&order).await.unwrap(),
        RedeemOutcome::Redeemed { .. }
    ));
    let another = Redemption {
        order_id: "o-2".into(),
        ..order
    };
    assert_eq!(
        coupons.store().redeem(&another).await.unwrap(),
        RedeemOutcome::AlreadyRedeemed
    );
    coupons.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn the_first_program_runs_in_memory_with_an_in_process_recorder() {
    let coupons = coupon::connect(&Config::new().ack(AckMode::AfterGate)).await.unwrap();
    assert_eq!(coupons.log().map(|l| l.backend()), Some("memory"));
    first_program(&coupons).await;
}

#[tokio::test]
async fn the_first_program_runs_on_sqlite_alone() {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("coupon-first-program")));
    let config = Config::new().store_url(format!("sqlite://{}?mode=rwc", path.display()));
    let coupons = coupon::connect(&config).await.unwrap();
    assert_eq!(coupons.issuer().config().ack, AckMode::AfterStore);
    assert!(coupons.log().is_none());
    first_program(&coupons).await;
    drop(coupons);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn the_first_program_runs_on_redis_kafka_and_postgres() {
    let Some([redis, kafka, postgres]) = services([Service::Redis, Service::Kafka, Service::Postgres]).await else {
        return;
    };
    let config = Config::new()
        .gate_url(redis)
        .kafka_brokers(kafka)
        .kafka_topic(unique_name("first-program"))
        .kafka_single_broker(true)
        .consumer_group(unique_name("first-program"))
        .store_url(postgres);
    let coupons = coupon::connect(&config).await.unwrap();
    assert_eq!(coupons.issuer().config().ack, AckMode::AfterLog);
    assert_eq!(coupons.log().map(|l| l.backend()), Some("kafka"));
    first_program(&coupons).await;
}

#[tokio::test]
async fn the_first_program_runs_on_a_redis_cluster_and_mysql() {
    let Some([cluster, mysql]) = services([Service::RedisCluster, Service::Mysql]).await else {
        return;
    };
    let coupons = coupon::connect(&Config::new().gate_url(cluster).store_url(mysql))
        .await
        .unwrap();
    assert_eq!(coupons.issuer().config().ack, AckMode::AfterStore);
    first_program(&coupons).await;
}

fn refusal(result: Result<Coupons, ConnectError>) -> ConnectError {
    match result {
        Ok(coupons) => panic!("connected: {coupons:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn an_in_memory_gate_over_a_network_database_is_refused_unless_single_instance() {
    let Some(postgres) = service(Service::Postgres).await else {
        return;
    };
    let config = Config::new().store_url(postgres);
    let refused = refusal(coupon::connect(&config).await);
    assert!(
        matches!(
            refused,
            ConnectError::Unsafe(Unsafe::InProcessGateOverShared {
                shared: "a network database"
            })
        ),
        "{refused}"
    );
    let text = refused.to_string();
    assert!(
        text.contains("each would sell the whole stock") && text.contains("single_instance(true)"),
        "{text}"
    );
    // The safe variant starts.
    let coupons = coupon::connect(&config.single_instance(true)).await.unwrap();
    first_program(&coupons).await;
}

#[tokio::test]
async fn after_log_without_kafka_is_refused() {
    let refused = refusal(coupon::connect(&Config::new().ack(AckMode::AfterLog)).await);
    assert!(
        matches!(refused, ConnectError::Unsafe(Unsafe::AfterLogWithoutKafka)),
        "{refused}"
    );
    let text = refused.to_string();
    assert!(
        text.contains("after-log needs a durable log") && text.contains("kafka_brokers"),
        "{text}"
    );
}

#[tokio::test]
async fn a_url_of_no_known_backend_is_refused_by_setting_without_its_password() {
    let refused = refusal(coupon::connect(&Config::new().store_url("oracle://scott:tiger@db/orcl")).await);
    assert!(
        matches!(
            refused,
            ConnectError::UnknownScheme {
                setting: "store_url",
                ..
            }
        ),
        "{refused}"
    );
    assert!(!refused.to_string().contains("tiger"), "{refused}");
    let refused = refusal(coupon::connect(&Config::new().gate_url("memcached://cache")).await);
    assert!(
        matches!(
            refused,
            ConnectError::UnknownScheme {
                setting: "gate_url",
                ..
            }
        ),
        "{refused}"
    );
}

#[tokio::test]
async fn a_grace_shorter_than_the_acknowledgement_deadline_is_refused() {
    let config = Config::new().reconcile_grace(Duration::from_secs(1));
    let refused = refusal(coupon::connect(&config).await);
    assert!(refused.to_string().contains("grace"), "{refused}");
}

#[cfg(feature = "tls-rustls")]
#[tokio::test]
async fn an_unreadable_ca_file_for_the_gate_is_refused_by_setting() {
    let config = Config::new()
        .gate_url("rediss://127.0.0.1:1")
        .gate_root_certificate_file("/nonexistent/ca.pem");
    let text = refusal(coupon::connect(&config).await).to_string();
    assert!(
        text.contains("gate_root_certificate_file") && text.contains("/nonexistent/ca.pem"),
        "{text}"
    );
}

#[tokio::test]
async fn a_topic_layout_that_cannot_hold_is_refused_by_setting() {
    let config = Config::new()
        .kafka_brokers("127.0.0.1:1")
        .gate_url("redis://127.0.0.1:1")
        .kafka_topic_layout(6, 2, 3);
    let refused = refusal(coupon::connect(&config).await);
    let text = refused.to_string();
    assert!(
        text.contains("kafka_min_insync_replicas")
            && text.contains("3 must be between 1 and kafka_replication_factor 2"),
        "{text}"
    );
}

/// A process that only records (a consumer) connects store, log and gate with
/// `Backends::connect_recorder` and stores what an issuing process published.
#[tokio::test]
async fn a_recording_process_stores_what_an_issuing_process_published() {
    let Some([redis, kafka, postgres]) = services([Service::Redis, Service::Kafka, Service::Postgres]).await else {
        return;
    };
    let group = unique_name("recording-process");
    let config = Config::new()
        .gate_url(redis)
        .kafka_brokers(kafka)
        .kafka_topic(unique_name("recording-process"))
        .kafka_single_broker(true)
        .consumer_group(&group)
        .store_url(postgres);
    let issuing = coupon::connect(&config).await.unwrap();
    let now = chrono::Utc::now();
    let launch = NewCampaign::new(unique_name("launch"), 3, now, now + chrono::Duration::hours(1));
    let campaign = issuing.campaigns().create(launch).await.unwrap();
    issuing.campaigns().open(&campaign.id).await.unwrap();
    let bob = UserId::new(unique_name("bob")).unwrap();
    assert!(matches!(
        issuing.issuer().issue(&campaign.id, &bob).await.unwrap(),
        IssueOutcome::Issued(_)
    ));

    let recording = coupon::Backends::connect_recorder(&config).await.unwrap();
    assert_eq!(recording.log.backend(), "kafka");
    let gate = recording.gate.clone().expect("the Redis gate, to settle");
    let source = recording.log.subscribe(&group).await.unwrap();
    let mut recorder =
        coupon::Recorder::new(source, recording.store.clone(), RecorderConfig::default()).with_gate(gate);
    let deadline = Instant::now() + Duration::from_secs(60);
    while recording.store.issued_count(&campaign.id).await.unwrap() < 1 {
        assert!(
            Instant::now() < deadline,
            "the recording process stored nothing within 60 s"
        );
        recorder.run_once().await;
    }
    assert_eq!(issuing.campaigns().counts(&campaign.id).await.unwrap().stored, 1);
}

#[tokio::test]
async fn a_recording_process_without_kafka_is_refused_by_setting() {
    let refused = coupon::Backends::connect_recorder(&Config::new()).await.unwrap_err();
    assert!(refused.to_string().contains("kafka_brokers"), "{refused}");
}

/// The partitions of the topic that `count` issues to distinct users of one campaign
/// were published to, with `config`'s partition key.
async fn partitions_of_one_campaign(config: Config, count: usize) -> std::collections::BTreeSet<i32> {
    let group = unique_name("partition-key");
    let config = config.consumer_group(&group);
    let coupons = coupon::connect(&config).await.unwrap();
    let now = chrono::Utc::now();
    let launch = NewCampaign::new(unique_name("keyed"), 100, now, now + chrono::Duration::hours(1));
    let campaign = coupons.campaigns().create(launch).await.unwrap();
    coupons.campaigns().open(&campaign.id).await.unwrap();
    for _ in 0..count {
        let user = UserId::new(unique_name("user")).unwrap();
        assert!(matches!(
            coupons.issuer().issue(&campaign.id, &user).await.unwrap(),
            IssueOutcome::Issued(_)
        ));
    }
    let mut source = coupons.log().expect("the Kafka log").subscribe(&group).await.unwrap();
    let mut partitions = std::collections::BTreeSet::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < count {
        assert!(Instant::now() < deadline, "read {seen} of {count} events within 60 s");
        let batch = source.next_batch(100, Duration::from_millis(500)).await.unwrap();
        for record in &batch.records {
            assert_eq!(record.decode().unwrap().campaign_id, campaign.id);
            partitions.insert(record.partition);
            seen += 1;
        }
    }
    partitions
}

#[tokio::test]
async fn keyed_by_campaign_a_campaigns_events_share_one_partition_and_by_user_they_spread() {
    let Some([redis, kafka, postgres]) = services([Service::Redis, Service::Kafka, Service::Postgres]).await else {
        return;
    };
    let config = |by_campaign: bool| {
        Config::new()
            .gate_url(&redis)
            .kafka_brokers(&kafka)
            .kafka_topic(unique_name("partition-key"))
            .kafka_single_broker(true)
            .kafka_topic_layout(6, 1, 1)
            .kafka_key_by_campaign(by_campaign)
            .store_url(&postgres)
    };
    let by_campaign = partitions_of_one_campaign(config(true), 24).await;
    assert_eq!(by_campaign.len(), 1, "one campaign, one partition: {by_campaign:?}");
    // 24 users hashed over 6 partitions all landing on one: odds of 6^-23.
    let by_user = partitions_of_one_campaign(config(false), 24).await;
    assert!(by_user.len() > 1, "keyed by user, a campaign spreads: {by_user:?}");
}
