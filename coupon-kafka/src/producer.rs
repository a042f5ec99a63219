//! The producer: idempotent, `acks=all`, and for every failed delivery whether the
//! message was certainly not written (the issuer may release at once) or possibly
//! written (left to the reconciler). A producer that librdkafka declares fatally
//! failed (an idempotent producer's sequence gap after a long broker stall, for
//! instance) refuses every later message; it is logged and replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) {
            // Said at once, in the log: every publish fails from now until the producer
            // is replaced (on the next failed publish).
            tracing::error!(%error, reason, "the Kafka producer failed fatally; it will be replaced");
        } else {
            tracing::warn!(%error, reason, "librdkafka error");
        }
    }
}

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

type Inner = ThreadedProducer<DeliveryContext>;

/// A producer whose sends resolve when the broker acknowledged them (or certainly did
/// not), replaced when it can no longer publish (see `replace_if_broken`).
pub struct Publisher {
    config: rdkafka::ClientConfig,
    producer: RwLock<Arc<Inner>>,
    backstop: Duration,
    replaced: AtomicU64,
}

/// One message for [`Publisher::send`].
pub struct Outgoing<'a> {
    /// The topic to publish to.
    pub topic: &'a str,
    /// The partitioning key, if any.
    pub key: Option<&'a [u8]>,
    /// The message body.
    pub payload: &'a [u8],
    /// Headers, as text.
    pub headers: &'a [(String, String)],
    /// The record's time (`CreateTime`, milliseconds since the epoch); this host's clock
    /// when unset.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Outgoing<'a> {
    /// `payload` to `topic`, without key, headers or a time of its own.
    pub fn to(topic: &'a str, payload: &'a [u8]) -> Self {
        Self {
            topic,
            key: None,
            payload,
            headers: &[],
            timestamp_ms: None,
        }
    }
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
        let producer: Inner = c.create_with_context(DeliveryContext)?;
        Ok(Self {
            config: c,
            producer: RwLock::new(Arc::new(producer)),
            // librdkafka's own message timeout comes first; this catches anything past it.
            backstop: config.delivery_timeout + Duration::from_secs(2),
            replaced: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Arc<Inner> {
        self.producer.read().expect("producer lock").clone()
    }

    /// How many times a producer that could no longer publish was replaced.
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// Replaces `failed` if it can no longer publish: librdkafka says it failed
    /// fatally, or the broker no longer accepts its producer id (after a stall longer
    /// than the delivery timeout, tansu answered `ProducerFenced` to every message for
    /// 44 s). Once per producer, however many sends noticed. What it had outstanding
    /// was reported failed to its senders (certainly not written, or possibly: then
    /// left to the reconciler).
    fn replace_if_broken(&self, failed: &Arc<Inner>, error: &KafkaError) {
        use rdkafka::types::RDKafkaErrorCode as C;
        let (code, reason) = match failed.client().fatal_error() {
            Some(fatal) => fatal,
            None => match error.rdkafka_error_code() {
                Some(
                    code @ (C::ProducerFenced
                    | C::InvalidProducerEpoch
                    | C::UnknownProducerId
                    | C::OutOfOrderSequenceNumber
                    | C::InvalidProducerIdMapping),
                ) => (code, "the broker no longer accepts this producer's id".to_owned()),
                _ => return,
            },
        };
        let mut current = self.producer.write().expect("producer lock");
        if !Arc::ptr_eq(&current, failed) {
            return; // Another send replaced it already.
        }
        match self.config.create_with_context::<_, Inner>(DeliveryContext) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *current, Arc::new(fresh));
                let n = self.replaced.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(%code, reason, replaced = n, "replaced a Kafka producer that could no longer publish");
                // Destroying a producer can block while librdkafka winds it down.
                std::thread::spawn(move || drop(old));
            }
            Err(e) => tracing::error!(error = %e, "could not create a new Kafka producer; the next failure retries"),
        }
    }

    /// Declares the current producer fatally failed, as librdkafka would (for tests of
    /// the recovery on a real broker).
    #[doc(hidden)]
    pub fn inject_fatal_error(&self, reason: &str) {
        let reason = std::ffi::CString::new(reason).expect("no NUL in the reason");
        // SAFETY: the client pointer is live for as long as `producer`; the call only
        // raises librdkafka's fatal-error state (it exists for tests).
        #[allow(unsafe_code)]
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.current().client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }

    /// Sends one message and waits for its acknowledgement. Returns (partition, offset).
    pub async fn send(&self, operation: &'static str, out: Outgoing<'_>) -> Result<(i32, i64), BackendError> {
        let Outgoing {
            topic,
            key,
            payload,
            headers,
            timestamp_ms,
        } = out;
        let (tx, rx) = oneshot::channel();
        let mut record: BaseRecord<'_, [u8], [u8], Box<oneshot::Sender<Delivery>>> =
            BaseRecord::with_opaque_to(topic, Box::new(tx)).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(ms) = timestamp_ms {
            record = record.timestamp(ms);
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
        let producer = self.current();
        if let Err((e, _)) = producer.send(record) {
            // Refused locally (queue full, unknown topic, a fatal state): nothing was sent.
            self.replace_if_broken(&producer, &e);
            return Err(delivery_error(operation, e, Persistence::NotPersisted));
        }
        match tokio::time::timeout(self.backstop, rx).await {
            Ok(Ok(Ok(position))) => Ok(position),
            Ok(Ok(Err((e, persistence)))) => {
                self.replace_if_broken(&producer, &e);
                Err(delivery_error(operation, e, persistence))
            }
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
        self.current()
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
