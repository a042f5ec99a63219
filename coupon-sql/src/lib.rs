//! # coupon-sql
//!
//! The [`coupon_core::IssueStore`] on PostgreSQL, MySQL/MariaDB and SQLite with `sqlx`:
//! the durable source of truth. Features `postgres`, `mysql`, `sqlite` (default) map to
//! sqlx's features of the same name.
//!
//! ```no_run
//! use coupon_core::IssueStore;
//! use coupon_sql::{connect, StoreConfig};
//!
//! # async fn demo() -> Result<(), coupon_core::BackendError> {
//! // Runs the migrations of the dialect the URL names, then serves the store.
//! let store = connect(&StoreConfig::from_url("sqlite://coupons.db?mode=rwc")).await?;
//! assert_eq!(store.backend(), "sqlite");
//! # Ok(())
//! # }
//! ```
//!
//! - Migrations per dialect in `migrations/<dialect>/`, embedded in the binary and run by
//!   `connect` (or `PgStore::migrate` and friends). Tables: `coupon_campaigns` (with
//!   `issued_count`, checked against `total_quantity`), `coupon_coupons` with
//!   `UNIQUE (campaign_id, user_id, nth)`, `coupon_voids`.
//! - `record` is one transaction per batch: it locks the batch's campaigns, refuses
//!   voided coupon ids, writes the batch in one statement (PostgreSQL: a binary `COPY` when
//!   the batch is fresh events, which the unique indexes confirm, else and elsewhere an insert
//!   with conflict-ignore), keeps the campaign's stored count within its stock, and reports per event stored, duplicate
//!   (same coupon id), rejected or fenced; replays change nothing.
//! - `void` takes the same lock, so a coupon id ends up stored or voided, never both.
//! - `redeem` is one conditional `UPDATE` (state, validity window and minimum order in the
//!   `WHERE`), so of concurrent redemptions exactly one wins.
//! - Queries are checked at run time (`sqlx::query`), so building needs no database.

#![cfg_attr(docsrs, feature(doc_cfg))]

// Shared by the backends: with none of `postgres`, `mysql`, `sqlite` enabled, unused.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
mod common;
mod config;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_copy;
#[cfg(feature = "sqlite")]
mod sqlite;
// The `IN (...)` statements serve MySQL and SQLite; PostgreSQL alone leaves them unused.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
#[cfg_attr(not(any(feature = "mysql", feature = "sqlite")), allow(dead_code))]
mod statements;

pub use config::{StoreConfig, connect};
#[cfg(feature = "mysql")]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The embedded migrations of each dialect.
pub mod migrations {
    #[cfg(feature = "mysql")]
    pub use crate::mysql::MIGRATOR as MYSQL;
    #[cfg(feature = "postgres")]
    pub use crate::postgres::MIGRATOR as POSTGRES;
    #[cfg(feature = "sqlite")]
    pub use crate::sqlite::MIGRATOR as SQLITE;
}

// The README's example is compiled as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
