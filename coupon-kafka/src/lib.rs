//! # coupon-kafka
//!
//! The [`coupon_core::EventLog`] on Kafka with `rdkafka`: an idempotent `acks=all`
//! producer whose `publish` returns once the event is durable, consumer-group sources
//! that commit only after the store write, and a dead-letter topic.
//!
//! ```no_run
//! use coupon_core::{EventLog, IssueEvent};
//! use coupon_kafka::{ensure_topics, KafkaConfig, KafkaLog, TopicSettings};
//!
//! # async fn demo(event: IssueEvent) -> Result<(), coupon_core::BackendError> {
//! let config = KafkaConfig::new("127.0.0.1:9092", "coupon-issued");
//! // The topic and coupon-issued.dlq: 6 partitions, 3 replicas, min.insync.replicas 2.
//! let described = ensure_topics(&config, &TopicSettings::default()).await?;
//! assert!(described[0].survives_one_broker_loss());
//! let log = KafkaLog::new(config)?;
//! log.publish(&event).await?; // durable once this returns
//! let mut source = log.subscribe("coupon-recorders").await?;
//! # let _ = &mut source;
//! # Ok(())
//! # }
//! ```
//!
//! A failed publish says whether the message was certainly not written
//! (`ErrorKind::Unavailable`: the issuer releases the reservation at once) or possibly
//! written (`ErrorKind::OutcomeUnknown`: left to the reconciler), from librdkafka's own
//! per-message persistence status.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod config;
mod errors;
mod log;
mod producer;
mod source;

pub use admin::{TopicDescription, TopicSettings, ensure_topics};
pub use config::{DEFAULT_TOPIC, KafkaConfig, PartitionKey};
pub use log::{GroupProgress, KafkaLog};
pub use producer::Persistence;
pub use source::KafkaSource;

// The README's example is compiled as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
