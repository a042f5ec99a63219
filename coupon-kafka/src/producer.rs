//! The producer: idempotent, `acks=all`, and for every failed delivery whether the
//! message was certainly not written (the issuer may release at once) or possibly
//! written (left to the reconciler).

use std::time::Duration;

use coupon_core::{BackendError, Component, ErrorKind};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio::sync::oneshot;

use crate::config::KafkaConfig;

/// Whether a failed message may have been written, from librdkafka's own record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Never sent, or the broker refused it: certainly not written.
    NotPersisted,
    /// Sent, but no acknowledgement came: it may have been written.
    PossiblyPersisted,
    /// Written (and yet an error was reported).
    Persisted,
}

type Delivery = Result<(i32, i64), (KafkaError, Persistence)>;

/// Hands each delivery report to the task waiting for it.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<oneshot::Sender<Delivery>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((e, message)) => {
                // SAFETY: `message.ptr()` is the live rd_kafka_message_t of this delivery
                // report; rd_kafka_message_status only reads its status field.
                #[allow(unsafe_code)]
                let status = unsafe { rdkafka::bindings::rd_kafka_message_status(message.ptr()) };
                let persistence = match status {
                    rdkafka::bindings::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED => {
                        Persistence::NotPersisted
                    }
                    rdkafka::bindings::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_PERSISTED => Persistence::Persisted,
                    _ => Persistence::PossiblyPersisted,
                };
                Err((e.clone(), persistence))
            }
        };
        let _ = reply.send(outcome);
    }
}

/// A producer whose sends resolve when the broker acknowledged them (or certainly did not).
pub struct Publisher {
    producer: ThreadedProducer<DeliveryContext>,
    backstop: Duration,
}

impl Publisher {
    /// An idempotent `acks=all` producer for `config`.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut c = config.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", config.linger.as_millis().to_string());
        let producer: ThreadedProducer<DeliveryContext> = c.create_with_context(DeliveryContext)?;
        Ok(Self {
            producer,
            // librdkafka's own message timeout comes first; this catches anything past it.
            backstop: config.delivery_timeout + Duration::from_secs(2),
        })
    }

    /// Sends one message and waits for its acknowledgement. Returns (partition, offset).
    pub async fn send(
        &self,
        operation: &'static str,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(String, String)],
    ) -> Result<(i32, i64), BackendError> {
        let (tx, rx) = oneshot::channel();
        let mut record: BaseRecord<'_, [u8], [u8], Box<oneshot::Sender<Delivery>>> =
            BaseRecord::with_opaque_to(topic, Box::new(tx)).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            record = record.headers(h);
        }
        if let Err((e, _)) = self.producer.send(record) {
            // Refused locally (queue full, unknown topic in the client): nothing was sent.
            return Err(delivery_error(operation, e, Persistence::NotPersisted));
        }
        match tokio::time::timeout(self.backstop, rx).await {
            Ok(Ok(Ok(position))) => Ok(position),
            Ok(Ok(Err((e, persistence)))) => Err(delivery_error(operation, e, persistence)),
            Ok(Err(_)) => Err(BackendError::new(
                Component::Log,
                "kafka",
                operation,
                ErrorKind::OutcomeUnknown,
                "the producer dropped the delivery report",
            )),
            Err(_) => Err(BackendError::timeout(Component::Log, "kafka", operation, self.backstop)),
        }
    }

    /// Waits for everything queued to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), BackendError> {
        self.producer
            .flush(timeout)
            .map_err(|e| crate::errors::backend_error("flush", e))
    }
}

fn delivery_error(operation: &'static str, e: KafkaError, persistence: Persistence) -> BackendError {
    let (kind, what) = match persistence {
        Persistence::NotPersisted => (ErrorKind::Unavailable, "certainly not written"),
        Persistence::PossiblyPersisted | Persistence::Persisted => (ErrorKind::OutcomeUnknown, "possibly written"),
    };
    BackendError::new(Component::Log, "kafka", operation, kind, format!("{e} ({what})")).with_source(e)
}
