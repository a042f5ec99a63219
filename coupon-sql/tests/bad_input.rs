//! Bad input gets a clear error and writes nothing; migrations run twice harmlessly;
//! a wrong URL is refused clearly.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use coupon_core::{Campaign, CampaignState, ErrorKind, IssueStore, NewCampaign, Validity};
use coupon_sql::StoreConfig;

fn campaign() -> Campaign {
    let now = Utc::now();
    let mut c = Campaign::from_new(NewCampaign::new("bad", 10, now, now + Duration::hours(1)), now);
    c.state = CampaignState::Open;
    c
}

async fn refuses_out_of_range_campaigns(store: Arc<dyn IssueStore>) {
    let mut cases = Vec::new();
    let mut c = campaign();
    c.total_quantity = 0;
    cases.push((c, "total_quantity"));
    let mut c = campaign();
    c.total_quantity = u64::MAX;
    cases.push((c, "total_quantity"));
    let mut c = campaign();
    c.per_user_limit = 0;
    cases.push((c, "per_user_limit"));
    let mut c = campaign();
    c.issue_ends_at = c.issue_starts_at;
    cases.push((c, "issue_ends_at"));
    let mut c = campaign();
    c.validity = Validity::DaysAfterIssue(0);
    cases.push((c, "valid_days"));
    let mut c = campaign();
    c.name = "x".repeat(300);
    cases.push((c, "name"));
    for (c, field) in cases {
        let e = store.create_campaign(&c).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
        assert!(e.to_string().contains(field), "{e} should name {field}");
        assert_eq!(store.campaign(&c.id).await.unwrap(), None, "nothing written");
    }
}

macro_rules! on_each_database {
    ($($name:ident => $make:expr),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(store) = $make else { return };
                refuses_out_of_range_campaigns(store).await;
            }
        )*
    };
}

on_each_database! {
    postgres_refuses_out_of_range_campaigns => common::postgres().await,
    mysql_refuses_out_of_range_campaigns => common::mysql().await,
    sqlite_refuses_out_of_range_campaigns => common::sqlite().await,
}

#[tokio::test]
async fn migrations_run_twice_harmlessly() {
    if let Some(url) = coupon_testkit::service(coupon_testkit::Service::Postgres).await {
        let store = coupon_sql::PgStore::connect(&StoreConfig::from_url(url)).await.unwrap();
        store.migrate().await.unwrap();
    }
    if let Some(url) = coupon_testkit::service(coupon_testkit::Service::Mysql).await {
        let store = coupon_sql::MySqlStore::connect(&StoreConfig::from_url(url))
            .await
            .unwrap();
        store.migrate().await.unwrap();
    }
    let path = std::env::temp_dir().join(format!("{}.db", coupon_testkit::unique_name("migrate")));
    let store = coupon_sql::SqliteStore::connect(&StoreConfig::from_url(format!("sqlite://{}", path.display())))
        .await
        .unwrap();
    store.migrate().await.unwrap();
}

#[tokio::test]
async fn unknown_schemes_and_unreachable_servers_are_clear_errors() {
    let e = coupon_sql::connect(&StoreConfig::from_url("oracle://x"))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert!(e.to_string().contains("unsupported database URL scheme"), "{e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = StoreConfig::from_url(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .with_acquire_timeout(std::time::Duration::from_millis(500));
    let e = coupon_sql::connect(&config).await.err().unwrap();
    assert!(e.is_retryable(), "{e}");
    assert!(
        e.to_string().contains("store backend `postgres` failed to connect"),
        "{e}"
    );
}
