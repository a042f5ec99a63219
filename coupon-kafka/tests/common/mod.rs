//! Shared by the coupon-kafka integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use coupon_core::EventLog;
use coupon_kafka::{KafkaConfig, KafkaLog, ensure_topics};
use coupon_testkit::{Service, service, unique_name};

/// A configuration with fresh topics (created, 3 partitions) on the test broker.
pub async fn fresh_config() -> Option<KafkaConfig> {
    let brokers = service(Service::Kafka).await?;
    let config = KafkaConfig::new(brokers, unique_name("coupons"));
    ensure_topics(&config, &coupon_kafka::TopicSettings::single_broker(3))
        .await
        .unwrap();
    Some(config)
}

pub async fn fresh_log() -> Option<Arc<dyn EventLog>> {
    Some(Arc::new(KafkaLog::new(fresh_config().await?).unwrap()))
}
