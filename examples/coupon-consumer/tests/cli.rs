//! The consumer binary's configuration errors are clear and nothing starts on bad
//! input. (It runs end to end in `examples/coupon-server/tests/distributed.rs`;
//! this test also makes `cargo nextest run --workspace` build the binary for it.)

use std::process::Command;

fn consumer(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coupon-consumer"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn help_lists_every_setting() {
    let (ok, text) = consumer(&["--help"], &[]);
    assert!(ok, "{text}");
    for var in [
        "COUPON_KAFKA_BROKERS",
        "COUPON_DATABASE_URL",
        "COUPON_CONSUMER_GROUP",
        "COUPON_REDIS_URL",
        "COUPON_KAFKA_OPTIONS",
    ] {
        assert!(text.contains(var), "--help lacks {var}:\n{text}");
    }
}

#[test]
fn missing_settings_are_named() {
    let (ok, text) = consumer(&[], &[]);
    assert!(!ok);
    assert!(
        text.contains("--kafka-brokers") && text.contains("--database-url"),
        "{text}"
    );
}

#[test]
fn an_unknown_database_scheme_is_refused_before_anything_starts() {
    let (ok, text) = consumer(
        &[],
        &[
            ("COUPON_KAFKA_BROKERS", "127.0.0.1:1"),
            ("COUPON_DATABASE_URL", "oracle://db"),
        ],
    );
    assert!(!ok);
    assert!(text.contains("unsupported database URL scheme"), "{text}");
}
