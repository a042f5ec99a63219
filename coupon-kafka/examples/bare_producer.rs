//! The broker's own floor for `after-log`: a bare rdkafka producer with the settings
//! [`coupon_kafka::KafkaLog`] uses (idempotent, `acks=all`, `linger.ms` 1, keyed by user,
//! the same partition count) publishing at a constant rate, and the latency of its
//! delivery reports. An issue acknowledged after the log cannot be faster than this.
//!
//! ```sh
//! cargo run --release -p coupon-kafka --example bare_producer -- --rate 2800 --seconds 20
//! ```
//!
//! Latency is measured from when each message was due, not when it was sent, so a
//! producer that falls behind shows it (no coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use coupon_kafka::{KafkaConfig, TopicSettings, ensure_topics};
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Parser)]
#[command(about = "The broker's floor: a bare idempotent acks=all producer at a constant rate")]
struct Args {
    /// Bootstrap brokers.
    #[arg(long, env = "COUPON_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic (created when missing; default: a fresh one).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of a topic created here (the server's default is 6).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long to publish.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Payload size (an issue event is about 250 bytes of JSON).
    #[arg(long, default_value_t = 250)]
    payload_bytes: usize,
    /// `linger.ms` (KafkaLog's default is 1).
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// Seconds published at the same rate before measuring: the producer's id, the
    /// topic's metadata and the broker's first writes are not the steady state.
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// One JSON object on stdout instead of the two lines of text (for
    /// `scripts/bench-server.sh`).
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bare-producer-{}", std::process::id()));
    ensure_topics(
        &KafkaConfig::new(&args.brokers, &topic),
        &TopicSettings::single_broker(args.partitions),
    )
    .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "5000")
        .set("linger.ms", args.linger_ms.to_string())
        .create()?;

    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let payload = vec![b'x'; args.payload_bytes];
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let warmup = u64::from(args.rate) * args.warmup_seconds;
    let total = warmup + u64::from(args.rate) * args.seconds;
    let started = Instant::now();
    let mut measured_from = started;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + period.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        if n == warmup {
            measured_from = due;
        }
        let measured = n >= warmup;
        let (producer, topic, payload) = (producer.clone(), topic.clone(), payload.clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        tasks.spawn(async move {
            // Keyed by user, as KafkaLog's default partition key: distinct users spread
            // over every partition.
            let key = format!("user-{n}");
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            match producer.send(record, Duration::from_secs(5)).await {
                Ok(_) if !measured => {}
                Ok(_) => {
                    let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                    latencies.lock().expect("histogram").saturating_record(micros.max(1));
                }
                Err(_) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = measured_from.elapsed();

    let h = latencies.lock().expect("histogram");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let achieved = (total - warmup) as f64 / elapsed.as_secs_f64();
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    if args.json {
        let report = serde_json::json!({
            "rate": args.rate,
            "seconds": args.seconds,
            "achieved_rate": achieved,
            "delivered": h.len(),
            "errors": errors,
            "partitions": args.partitions,
            "linger_ms": args.linger_ms,
            "latency_ms": {"p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
        });
        println!("{report}");
        return Ok(());
    }
    println!(
        "bare producer: {} messages at {}/s for {} s ({:.0}/s achieved), {} errors, {} partitions, linger {} ms",
        h.len(),
        args.rate,
        args.seconds,
        achieved,
        errors,
        args.partitions,
        args.linger_ms
    );
    println!(
        "delivery report latency from due time: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.50),
        ms(0.95),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
    Ok(())
}
