//! `rediss://` (feature `tls-rustls`): the gate over a redis-server of the test's own that
//! speaks only TLS, with a certificate from a throwaway CA the test generates.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::OwnRedis;
use coupon_core::{Admission, Campaign, CampaignState, CouponId, IssueGate, NewCampaign, UserId};
use coupon_redis::{RedisGate, RedisGateConfig};
use coupon_testkit::tls::ThrowawayCa;

fn open_campaign(stock: u64) -> Campaign {
    let now = Utc::now();
    let mut c = Campaign::from_new(
        NewCampaign::new(
            "tls",
            stock,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ),
        now,
    );
    c.state = CampaignState::Open;
    c
}

fn config(port: u16) -> RedisGateConfig {
    RedisGateConfig::from_url(&format!("rediss://127.0.0.1:{port}/"))
        .unwrap()
        .with_connection_timeout(Duration::from_secs(2))
        .with_response_timeout(Duration::from_secs(2))
}

#[tokio::test]
async fn a_gate_over_rediss_admits_when_it_trusts_the_servers_ca() {
    let ca = ThrowawayCa::new("redis");
    let Some(own) = OwnRedis::start_tls(&ca).await else {
        return;
    };
    let gate = RedisGate::connect(config(own.port).with_root_certificate(ca.ca_pem.clone()))
        .await
        .unwrap();
    let campaign = open_campaign(1);
    gate.open(&campaign.gate_spec()).await.unwrap();
    let alice = UserId::new("alice").unwrap();
    assert!(matches!(
        gate.admit(&campaign.id, &alice, &CouponId::new(), Utc::now())
            .await
            .unwrap(),
        Admission::Admitted { .. }
    ));
    let bob = UserId::new("bob").unwrap();
    assert_eq!(
        gate.admit(&campaign.id, &bob, &CouponId::new(), Utc::now())
            .await
            .unwrap(),
        Admission::SoldOut
    );
    assert_eq!(gate.counts(&campaign.id).await.unwrap().unwrap().remaining, 0);
}

#[tokio::test]
async fn a_gate_over_rediss_refuses_a_server_whose_ca_it_does_not_trust() {
    let ca = ThrowawayCa::new("redis-untrusted");
    let Some(own) = OwnRedis::start_tls(&ca).await else {
        return;
    };
    // The system's trust store does not hold the throwaway CA; another CA is no better.
    let other = ThrowawayCa::new("redis-other");
    for config in [
        config(own.port),
        config(own.port).with_root_certificate(other.ca_pem.clone()),
    ] {
        let refused = match RedisGate::connect(config).await {
            Ok(_) => panic!("connected to a server whose certificate no trusted CA signed"),
            Err(e) => e,
        };
        let text = format!("{refused:?}").to_lowercase();
        assert!(text.contains("certificate") || text.contains("issuer"), "{refused:?}");
    }
}

#[tokio::test]
async fn a_plain_connection_to_a_tls_only_server_fails_and_admits_nothing() {
    let ca = ThrowawayCa::new("redis-plain");
    let Some(own) = OwnRedis::start_tls(&ca).await else {
        return;
    };
    let plain = RedisGateConfig::from_url(&format!("redis://127.0.0.1:{}/", own.port))
        .unwrap()
        .with_connection_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_millis(500));
    let campaign = open_campaign(1);
    let served = match RedisGate::connect(plain).await {
        Err(e) => Err(e),
        Ok(gate) => gate.open(&campaign.gate_spec()).await,
    };
    assert!(served.is_err(), "a plain-text client was served by a TLS-only server");
}
