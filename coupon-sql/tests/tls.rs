//! TLS to PostgreSQL (feature `tls-rustls`), on a PostgreSQL of the test's own that
//! accepts only TLS connections, with a certificate from a throwaway CA the test generates.

use chrono::Utc;
use coupon_core::{Campaign, CampaignState, IssueEvent, IssueStore, NewCampaign, RecordOutcome, UserId};
use coupon_sql::{PgStore, StoreConfig};
use coupon_testkit::postgres::OwnPostgres;
use coupon_testkit::tls::ThrowawayCa;

fn verify_full(ca: &ThrowawayCa) -> String {
    format!("?sslmode=verify-full&sslrootcert={}", ca.ca_file().display())
}

#[tokio::test]
async fn a_store_over_tls_records_when_it_trusts_the_servers_ca() {
    let ca = ThrowawayCa::new("postgres");
    let server = OwnPostgres::start(Some(&ca));
    let store = PgStore::connect(&StoreConfig::from_url(server.url(&verify_full(&ca))))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let now = Utc::now();
    let mut campaign = Campaign::from_new(
        NewCampaign::new(
            "tls",
            10,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(1),
        ),
        now,
    );
    campaign.state = CampaignState::Open;
    store.create_campaign(&campaign).await.unwrap();
    let event = IssueEvent::new(&campaign, UserId::new("alice").unwrap(), 1, now);
    let outcomes = store.record(std::slice::from_ref(&event)).await.unwrap();
    assert_eq!(outcomes, vec![RecordOutcome::Stored]);
    assert_eq!(store.issued_count(&campaign.id).await.unwrap(), 1);
}

#[tokio::test]
async fn a_store_refuses_a_server_whose_ca_it_does_not_trust() {
    let ca = ThrowawayCa::new("postgres-untrusted");
    let server = OwnPostgres::start(Some(&ca));
    let other = ThrowawayCa::new("postgres-other");
    let refused = match PgStore::connect(&StoreConfig::from_url(server.url(&verify_full(&other)))).await {
        Ok(_) => panic!("connected to a server whose certificate no trusted CA signed"),
        Err(e) => e,
    };
    let text = format!("{refused:?}").to_lowercase();
    assert!(text.contains("certificate") || text.contains("issuer"), "{refused:?}");
}

#[tokio::test]
async fn the_server_refuses_a_plain_connection_so_the_tls_tests_are_not_vacuous() {
    let ca = ThrowawayCa::new("postgres-plain");
    let server = OwnPostgres::start(Some(&ca));
    let refused = match PgStore::connect(&StoreConfig::from_url(server.url("?sslmode=disable"))).await {
        Ok(_) => panic!("a plain connection was accepted by a TLS-only server"),
        Err(e) => e,
    };
    assert!(format!("{refused:?}").contains("pg_hba.conf"), "{refused:?}");
}
