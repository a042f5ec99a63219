//! Keys carry the campaign's expiry after open, and are gone after close.

mod common;

use std::time::Duration;

use chrono::Utc;
use coupon_core::{Campaign, CampaignState, IssueGate, NewCampaign, UserId};
use coupon_redis::RedisGate;

#[tokio::test]
async fn keys_expire_after_the_window_plus_grace_and_close_deletes_them() {
    let Some(config) = common::standalone_config().await else {
        return;
    };
    let grace = Duration::from_secs(3_600);
    let gate = RedisGate::connect(config.with_expiry_grace(grace)).await.unwrap();
    let now = Utc::now();
    let mut c = Campaign::from_new(
        NewCampaign::new(
            "ttl",
            5,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(2),
        ),
        now,
    );
    c.state = CampaignState::Open;
    gate.open(&c.gate_spec()).await.unwrap();
    gate.admit(
        &c.id,
        &UserId::new("alice").unwrap(),
        &coupon_core::CouponId::new(),
        Utc::now(),
    )
    .await
    .unwrap();
    let keys = gate.keys(&c.id);
    let expected = c.issue_ends_at.timestamp_millis() + grace.as_millis() as i64;
    let mut conn = gate.connection();
    for key in keys.all() {
        let at: i64 = redis::cmd("PEXPIRETIME").arg(key).query_async(&mut conn).await.unwrap();
        assert_eq!(at, expected, "{key} expires at the end of the window plus grace");
    }
    gate.close(&c.id).await.unwrap();
    // Holders and ledger are freed at close; meta stays, marked closed, until its expiry.
    for key in [&keys.holds, &keys.ledger] {
        let exists: bool = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await.unwrap();
        assert!(!exists, "{key} deleted at close");
    }
    let closed: Option<String> = redis::cmd("HGET")
        .arg(&keys.meta)
        .arg("closed")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(closed.as_deref(), Some("1"));
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&keys.meta)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(at, expected, "meta keeps its expiry");
}
