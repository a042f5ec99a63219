//! Feature `ssl`: librdkafka is built with OpenSSL, so a log configured for
//! `security.protocol=SSL` (or `SASL_SSL`) is created and loads the CA it is given.
//!
//! No handshake with a broker is tested: the local broker (tansu 0.6) has a `--cert`
//! flag but never uses its TLS acceptor (`tansu-broker` `src/broker.rs`: `_acceptor`).

use coupon_kafka::{KafkaConfig, KafkaLog};
use coupon_testkit::tls::ThrowawayCa;

#[test]
fn a_log_configured_for_ssl_is_created_with_the_ca_it_is_given() {
    let ca = ThrowawayCa::new("kafka");
    for protocol in ["SSL", "SASL_SSL"] {
        let mut config = KafkaConfig::new("127.0.0.1:9093", "coupon-issued")
            .with("security.protocol", protocol)
            .with("ssl.ca.location", ca.ca_file().display().to_string());
        if protocol == "SASL_SSL" {
            config = config
                .with("sasl.mechanism", "SCRAM-SHA-512")
                .with("sasl.username", "coupon")
                .with("sasl.password", "secret");
        }
        if let Err(e) = KafkaLog::new(config) {
            panic!("{protocol}: {e}");
        }
    }
}

#[test]
fn a_missing_ca_file_is_refused_when_the_log_is_created() {
    let config = KafkaConfig::new("127.0.0.1:9093", "coupon-issued")
        .with("security.protocol", "SSL")
        .with("ssl.ca.location", "/nonexistent/ca.pem");
    let refused = match KafkaLog::new(config) {
        Ok(_) => panic!("a log was created with a CA file that does not exist"),
        Err(e) => e,
    };
    assert!(refused.to_string().contains("ssl.ca.location"), "{refused}");
}
