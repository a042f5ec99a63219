//! # coupon-redis
//!
//! The [`coupon_core::IssueGate`] on Redis and Redis Cluster: one atomic Lua call per
//! admission, with the reservation ledger in the same call.
//!
//! ```no_run
//! use coupon_core::{Admission, CouponId, IssueGate, UserId};
//! use coupon_redis::{RedisGate, RedisGateConfig};
//!
//! # async fn demo(campaign: coupon_core::Campaign) -> Result<(), Box<dyn std::error::Error>> {
//! // A comma-separated list of nodes means a cluster.
//! let gate = RedisGate::connect(RedisGateConfig::from_url("redis://127.0.0.1:6379/")?).await?;
//! gate.open(&campaign.gate_spec()).await?;
//! let coupon_id = CouponId::new(); // the admission's identity, chosen before the call
//! let answer = gate.admit(&campaign.id, &UserId::new("alice")?, &coupon_id, chrono::Utc::now()).await?;
//! assert!(matches!(answer, Admission::Admitted { nth: 1, .. }));
//! # Ok(())
//! # }
//! ```
//!
//! Keys of a campaign share one hash tag (`cpn:{<campaign>}:meta`, `:holds`, `:ledger`),
//! so every script touches one slot; the scripts live in `lua/*.lua` and run by SHA,
//! reloaded after `NOSCRIPT` (a restart, a failover, `SCRIPT FLUSH`).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connection;
mod errors;
mod gate;
mod keys;
mod scripts;

pub use config::{RedisGateConfig, Topology};
pub use connection::Connection;
pub use gate::RedisGate;
pub use keys::CampaignKeys;

// The README's example is compiled as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
