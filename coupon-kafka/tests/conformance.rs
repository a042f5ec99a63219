//! The coupon-core event-log conformance suite on the Kafka-protocol broker.

mod common;

mod kafka {
    coupon_core::log_conformance!(super::common::fresh_log().await);
}
