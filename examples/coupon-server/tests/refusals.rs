//! Unsafe deployments are refused at start (F7, F12, F17), through the real server and
//! consumer binaries: each exits non-zero before serving, and its message names the
//! setting that fixes it. The safe variant of each starts.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use coupon_core::EventLog;
use coupon_kafka::{KafkaConfig, KafkaLog, TopicSettings, ensure_topics};
use coupon_testkit::{Service, service, unique_name};
use support::{Client, Proc, SECRET, free_port, sibling_binary, temp_dir};

/// How long a refusing binary may take to exit (it connects to the services first).
const REFUSAL_BOUND: Duration = Duration::from_secs(60);

/// Runs `binary` with exactly `env` until it exits; panics if it is still running after
/// [`REFUSAL_BOUND`] (it started instead of refusing). Returns its output.
async fn refused(binary: &Path, env: &[(&str, String)]) -> String {
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(REFUSAL_BOUND, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} started instead of refusing", binary.display()))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "expected a refusal: {text}");
    text
}

fn server_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_coupon-server"))
}

fn base_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("COUPON_LISTEN", format!("127.0.0.1:{port}")),
        ("COUPON_JWT_SECRET", SECRET.to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

/// Starts the server with `env` and waits until it is ready: the safe variant runs.
async fn starts(name: &str, env: Vec<(&'static str, String)>, port: u16) {
    let dir = temp_dir("coupon-refusals");
    let mut server = Proc::start(server_binary(), name, &dir, &env);
    Client::new(port).wait_ready(&mut server).await;
    server.terminate().await;
}

/// F12: an in-memory gate over PostgreSQL. Two such servers would each count the whole
/// stock (I1 broken N times over); refused unless this is declared the only server.
#[tokio::test]
async fn f12_an_in_memory_gate_over_a_shared_database_is_refused_unless_single_instance() {
    let Some(postgres) = service(Service::Postgres).await else {
        return;
    };
    let port = free_port();
    let mut env = base_env(port);
    env.push(("COUPON_DATABASE_URL", postgres));
    let text = refused(server_binary(), &env).await;
    assert!(
        text.contains("COUPON_REDIS_URL is not set")
            && text.contains("each would sell the whole stock")
            && text.contains("COUPON_SINGLE_INSTANCE=true"),
        "{text}"
    );
    env.push(("COUPON_SINGLE_INSTANCE", "true".to_owned()));
    starts("single-instance", env, port).await;
}

/// F12: `after-log` with the in-memory log would acknowledge coupons that a crash loses.
#[tokio::test]
async fn f12_after_log_without_kafka_is_refused() {
    let dir = temp_dir("coupon-refusals");
    let port = free_port();
    let mut env = base_env(port);
    env.push((
        "COUPON_DATABASE_URL",
        format!("sqlite://{}?mode=rwc", dir.join("c.db").display()),
    ));
    env.push(("COUPON_ACK", "after-log".to_owned()));
    let text = refused(server_binary(), &env).await;
    assert!(
        text.contains("COUPON_ACK=after-log needs a durable log") && text.contains("COUPON_KAFKA_BROKERS"),
        "{text}"
    );
    env.retain(|(k, _)| *k != "COUPON_ACK");
    env.push(("COUPON_ACK", "after-store".to_owned()));
    starts("after-store", env, port).await;
}

/// Redis, PostgreSQL and the broker, or `None` when they are not there (and not required).
async fn distributed_services() -> Option<(String, String, String)> {
    Some((
        service(Service::Redis).await?,
        service(Service::Postgres).await?,
        service(Service::Kafka).await?,
    ))
}

fn kafka_env(
    port: u16,
    redis: &str,
    postgres: &str,
    kafka: &str,
    topic: &str,
    group: &str,
) -> Vec<(&'static str, String)> {
    let mut env = base_env(port);
    env.extend([
        ("COUPON_REDIS_URL", redis.to_owned()),
        ("COUPON_DATABASE_URL", postgres.to_owned()),
        ("COUPON_KAFKA_BROKERS", kafka.to_owned()),
        ("COUPON_KAFKA_TOPIC", topic.to_owned()),
        ("COUPON_CONSUMER_GROUP", group.to_owned()),
    ]);
    env
}

/// F7: with `after-log`, a topic of one replica (which the server used to create) loses
/// acknowledged coupons with one broker's disk. Described at start and refused, unless
/// the single broker is declared; the consumer only warns (it acknowledges nobody).
#[tokio::test]
async fn f7_after_log_on_a_topic_of_one_replica_is_refused_unless_single_broker() {
    let Some((redis, postgres, kafka)) = distributed_services().await else {
        return;
    };
    let topic = unique_name("f7-issued");
    let config = KafkaConfig::new(kafka.clone(), topic.clone());
    let described = ensure_topics(&config, &TopicSettings::single_broker(2)).await.unwrap();
    assert_eq!(
        (described[0].partitions, described[0].replication_factor),
        (2, 1),
        "{described:?}"
    );
    assert!(!described[0].survives_one_broker_loss());
    let port = free_port();
    let env = kafka_env(port, &redis, &postgres, &kafka, &topic, &unique_name("f7-group"));
    let text = refused(server_binary(), &env).await;
    assert!(
        text.contains(&format!("topic {topic} has replication factor 1"))
            && text.contains("COUPON_KAFKA_SINGLE_BROKER=true"),
        "{text}"
    );
    // An impossible pair of settings is refused before anything connects.
    let mut bad = env.clone();
    bad.extend([
        ("COUPON_KAFKA_REPLICATION_FACTOR", "2".to_owned()),
        ("COUPON_KAFKA_MIN_INSYNC_REPLICAS", "3".to_owned()),
    ]);
    let text = refused(sibling_binary("coupon-consumer").as_path(), &bad).await;
    assert!(
        text.contains("COUPON_KAFKA_MIN_INSYNC_REPLICAS=3 must be between 1 and COUPON_KAFKA_REPLICATION_FACTOR=2"),
        "{text}"
    );
    let mut single = env;
    single.push(("COUPON_KAFKA_SINGLE_BROKER", "true".to_owned()));
    starts("single-broker", single, port).await;
}

/// F17: a server whose consumer group is not the consumers' reads a group that never
/// committed, so its reconciler would never release anything. With events in the topic,
/// that is refused; the server given the consumers' group starts.
#[tokio::test]
async fn f17_a_consumer_group_that_never_committed_is_refused_while_the_topic_holds_events() {
    let Some((redis, postgres, kafka)) = distributed_services().await else {
        return;
    };
    let topic = unique_name("f17-issued");
    let config = KafkaConfig::new(kafka.clone(), topic.clone());
    ensure_topics(&config, &TopicSettings::single_broker(2)).await.unwrap();
    let log = KafkaLog::new(config).unwrap();
    log.publish_raw(b"an event nobody stored").await.unwrap();
    // The consumers' group: it has committed what it read.
    let consumers = unique_name("f17-recorders");
    let mut source = log.subscribe(&consumers).await.unwrap();
    let deadline = std::time::Instant::now() + REFUSAL_BOUND;
    let batch = loop {
        let batch = source.next_batch(10, Duration::from_millis(500)).await.unwrap();
        if !batch.records.is_empty() {
            break batch;
        }
        assert!(std::time::Instant::now() < deadline, "the event never arrived");
    };
    source.commit(&batch.commit).await.unwrap();
    drop(source);
    let port = free_port();
    let mut env = kafka_env(port, &redis, &postgres, &kafka, &topic, "coupon-recorder-typo");
    env.push(("COUPON_KAFKA_SINGLE_BROKER", "true".to_owned()));
    let text = refused(server_binary(), &env).await;
    assert!(
        text.contains("consumer group coupon-recorder-typo has committed nothing")
            && text.contains("COUPON_CONSUMER_GROUP"),
        "{text}"
    );
    env.retain(|(k, _)| *k != "COUPON_CONSUMER_GROUP");
    env.push(("COUPON_CONSUMER_GROUP", consumers));
    starts("right-group", env, port).await;
}

/// F17, while serving: a server started on an empty topic passes the start check, but
/// once it has published and no consumer of its group commits, every reconcile pass
/// reports it (`coupon_reconciler_group_never_committed` 1 and an error in the log).
#[tokio::test]
async fn f17_a_consumer_group_that_never_commits_is_reported_while_serving() {
    let Some((redis, postgres, kafka)) = distributed_services().await else {
        return;
    };
    let topic = unique_name("f17-serving");
    let port = free_port();
    let mut env = kafka_env(port, &redis, &postgres, &kafka, &topic, &unique_name("nobody"));
    env.extend([
        ("COUPON_KAFKA_SINGLE_BROKER", "true".to_owned()),
        ("COUPON_KAFKA_PARTITIONS", "1".to_owned()),
        ("COUPON_RECONCILE_SECS", "5".to_owned()),
        ("COUPON_USER_RATE_LIMIT", "0".to_owned()),
    ]);
    let dir = temp_dir("coupon-refusals");
    let mut server = Proc::start(server_binary(), "never-commits", &dir, &env);
    let client = Client::new(port);
    client.wait_ready(&mut server).await;
    let campaign = client.open_campaign(10).await;
    let (status, body) = client.issue(&campaign, &client.token("alice", None)).await;
    assert_eq!(status, 201, "{body}");
    let deadline = std::time::Instant::now() + REFUSAL_BOUND;
    loop {
        if client
            .metrics()
            .await
            .contains("coupon_reconciler_group_never_committed 1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reported; log: {}",
            server.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        server.tail().contains("the consumer group has committed nothing"),
        "{}",
        server.tail()
    );
    server.terminate().await;
}
