//! Topic creation, for the server and consumer at start (and tests).

use std::time::Duration;

use coupon_core::{BackendError, Component, ErrorKind};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::errors::backend_error;

/// Creates the event topic and the dead-letter topic if they do not exist.
pub async fn ensure_topics(config: &KafkaConfig, partitions: i32, replication: i32) -> Result<(), BackendError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| backend_error("create_topics", e))?;
    let topics = [
        NewTopic::new(&config.topic, partitions, TopicReplication::Fixed(replication)),
        NewTopic::new(
            &config.dead_letter_topic,
            partitions,
            TopicReplication::Fixed(replication),
        ),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(topics.iter(), &options)
        .await
        .map_err(|e| backend_error("create_topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(BackendError::new(
                    Component::Log,
                    "kafka",
                    "create_topics",
                    ErrorKind::Rejected,
                    format!("could not create topic {topic}: {code}"),
                ));
            }
        }
    }
    Ok(())
}
