//! Shared by the coupon-sql integration tests: a store per real service.
#![allow(dead_code)]

use std::sync::Arc;

use coupon_core::IssueStore;
use coupon_sql::{MySqlStore, PgStore, SqliteStore, StoreConfig};
use coupon_testkit::{Service, service, unique_name};

pub async fn postgres() -> Option<Arc<dyn IssueStore>> {
    let url = service(Service::Postgres).await?;
    Some(Arc::new(
        PgStore::connect(&StoreConfig::from_url(url).with_stored_notices(true))
            .await
            .unwrap(),
    ))
}

pub async fn mysql() -> Option<Arc<dyn IssueStore>> {
    let url = service(Service::Mysql).await?;
    Some(Arc::new(
        MySqlStore::connect(&StoreConfig::from_url(url).with_stored_notices(true))
            .await
            .unwrap(),
    ))
}

/// MySQL's way of finding new rows (a token column), exercised on the MariaDB server.
pub async fn mysql_token_path() -> Option<Arc<dyn IssueStore>> {
    let url = service(Service::Mysql).await?;
    Some(Arc::new(
        MySqlStore::connect(&StoreConfig::from_url(url).with_stored_notices(true))
            .await
            .unwrap()
            .with_token_path(),
    ))
}

/// A fresh SQLite file in the temp directory.
pub async fn sqlite() -> Option<Arc<dyn IssueStore>> {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("coupon-sql")));
    let url = format!("sqlite://{}", path.display());
    Some(Arc::new(
        SqliteStore::connect(&StoreConfig::from_url(url).with_stored_notices(true))
            .await
            .unwrap(),
    ))
}
