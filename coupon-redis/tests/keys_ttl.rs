//! Keys carry the campaign's expiry after open; close frees holders and ledger and
//! marks `meta` closed until its expiry; a sync after the expiry writes nothing.

mod common;

use std::time::Duration;

use chrono::Utc;
use coupon_core::{Campaign, CampaignState, IssueGate, NewCampaign, UserId};
use coupon_redis::RedisGate;

#[tokio::test]
async fn keys_expire_after_the_window_plus_grace_and_close_frees_holders_and_ledger() {
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

/// F17: a sync of a campaign still open in the store after its keys expired (window
/// plus grace over). On 2f412b2 `restore.lua` re-created the keys, they expired at once,
/// and a Lua error left a holders key without any TTL. Now it is refused (`Rejected`,
/// retrying cannot help) and writes nothing.
#[tokio::test]
async fn a_sync_after_the_keys_expired_is_refused_and_writes_nothing() {
    let Some(config) = common::standalone_config().await else {
        return;
    };
    let gate = RedisGate::connect(config.with_expiry_grace(Duration::from_secs(1)))
        .await
        .unwrap();
    let now = Utc::now();
    let mut c = Campaign::from_new(
        NewCampaign::new(
            "expired",
            5,
            now - chrono::Duration::hours(2),
            now - chrono::Duration::hours(1),
        ),
        now - chrono::Duration::hours(2),
    );
    c.state = CampaignState::Open;
    let holders = vec![(UserId::new("alice").unwrap(), 1)];
    let e = gate.restore(&c.gate_spec(), &holders, 1).await.unwrap_err();
    assert_eq!(e.kind, coupon_core::ErrorKind::Rejected, "{e}");
    assert!(e.to_string().contains("past its window"), "{e}");
    let mut conn = gate.connection();
    for key in gate.keys(&c.id).all() {
        let exists: bool = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await.unwrap();
        assert!(!exists, "{key} was written");
    }
}
