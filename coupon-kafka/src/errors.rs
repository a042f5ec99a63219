//! Kafka errors as [`BackendError`]s.

use coupon_core::{BackendError, Component, ErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Classifies a client error for `operation` (producer side errors carry their
/// persistence status separately, see [`crate::producer`]).
pub fn backend_error(operation: &'static str, e: KafkaError) -> BackendError {
    let kind = match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidArgument,
        ) => ErrorKind::Rejected,
        _ => match &e {
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => ErrorKind::Rejected,
            _ => ErrorKind::Unavailable,
        },
    };
    BackendError::new(Component::Log, "kafka", operation, kind, e.to_string()).with_source(e)
}
