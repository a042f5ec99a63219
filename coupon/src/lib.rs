//! # coupon
//!
//! First-come-first-served coupon issuance at flash-sale scale: a million people press
//! "get coupon" in the same second, the first N get one, nobody gets more than their
//! limit, and nobody who was told "you got it" loses it.
//!
//! This is the crate to depend on: it re-exports [`coupon_core`] and, behind features,
//! the backends, and [`connect`] builds the whole system from URLs. A first program
//! (create a campaign, open it, issue, record, redeem), in process memory:
//!
//! ```
//! use coupon::{Config, IssueOutcome, NewCampaign, RecorderConfig, RedeemOutcome, Redemption, UserId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let coupons = coupon::connect(&Config::new().ack(coupon::AckMode::AfterGate)).await?;
//! let now = chrono::Utc::now();
//! let launch = NewCampaign::new("Launch", 100, now, now + chrono::Duration::hours(1));
//! let campaign = coupons.campaigns().create(launch).await?;
//! coupons.campaigns().open(&campaign.id).await?;
//!
//! let alice = UserId::new("alice")?;
//! let IssueOutcome::Issued(coupon) = coupons.issuer().issue(&campaign.id, &alice).await? else { panic!() };
//! coupons.recorder(RecorderConfig::default()).await?.drain().await; // the cold path stores it
//!
//! let order = Redemption { coupon_id: coupon.id, user_id: alice, order_id: "o-1".into(), order_amount: 4_200,
//!     at: chrono::Utc::now() };
//! assert!(matches!(coupons.store().redeem(&order).await?, RedeemOutcome::Redeemed { .. }));
//! # Ok(())
//! # }
//! ```
//!
//! The distributed setup changes only the configuration (features `redis`, `kafka`,
//! `postgres`): `Config::new().gate_url("redis://…").kafka_brokers("…").store_url("postgres://…")`.
//! Every server runs the reconciler (`coupons.reconciler().run_until(every, shutdown)`);
//! recorders run wherever suits, usually a consumer process of their own
//! (`coupons.recorder(config)`).
//!
//! ## Features
//!
//! | feature | adds |
//! |---|---|
//! | `redis` | the Redis / Redis Cluster gate (`gate_url = "redis://…"`), [`redis`] |
//! | `kafka` | the Kafka event log (`kafka_brokers`), [`kafka`] |
//! | `postgres`, `mysql`, `sqlite` | the SQL stores (`store_url`), [`sql`] |
//! | `tls-rustls` | TLS for `rediss://` and for database URLs that ask for it (`sslmode=verify-full`) |
//! | `kafka-ssl` | TLS (and SASL over TLS) to the Kafka brokers, with librdkafka built on OpenSSL |
//! | `metrics` | metrics layers over gate and log ([`layers::metrics`]) |
//!
//! Without any, everything runs in process memory (one process, nothing survives a restart).
//!
//! ## Which acknowledgement
//!
//! [`AckMode::AfterLog`] (the default with Kafka) answers "issued" once the event is
//! durable in the log; [`AckMode::AfterGate`] answers after the gate and publishes in the
//! background (fastest; a crash can lose acknowledged coupons); [`AckMode::AfterStore`]
//! (the default without Kafka) stores each coupon before answering. The repository's
//! `docs/PROTOCOL.md` and `RELIABILITY.md` say what each survives.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connect;

pub use config::Config;
pub use connect::{Backends, ConnectError, RecorderBackends, Unsafe, connect};
pub use coupon_core::*;

/// The Redis gate ([`coupon_redis`]).
#[cfg(feature = "redis")]
pub use coupon_redis as redis;

/// The Kafka event log ([`coupon_kafka`]).
#[cfg(feature = "kafka")]
pub use coupon_kafka as kafka;

/// The SQL stores ([`coupon_sql`]).
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use coupon_sql as sql;

// The READMEs' examples are compiled (and the workspace's run) as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct WorkspaceReadmeDoctests;
