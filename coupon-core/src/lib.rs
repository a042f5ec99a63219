//! # coupon-core
//!
//! First-come-first-served coupon issuance at flash-sale scale: the first N people
//! get a coupon, nobody gets more than their limit, and nobody who was told
//! "you got it" loses it.
//!
//! This crate holds the domain types, the three backend traits, the orchestration
//! that ties them together, in-memory backends (the embedded default) and a
//! conformance suite every backend runs.
//!
//! ```
//! use std::sync::Arc;
//! use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
//! use coupon_core::{Coupons, IssueOutcome, NewCampaign, RecorderConfig, UserId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), coupon_core::Error> {
//! // Gate, log and store; the builder wires issuer, campaigns and reconciler over them.
//! let coupons = Coupons::builder(Arc::new(MemoryGate::new()), Arc::new(MemoryStore::new()))
//!     .log(Arc::new(MemoryLog::new()), "recorder")
//!     .build()
//!     .await?;
//!
//! // A campaign of 2 coupons, open for the next hour.
//! let now = chrono::Utc::now();
//! let campaign = coupons.campaigns().create(NewCampaign::new("Launch", 2, now, now + chrono::Duration::hours(1))).await?;
//! coupons.campaigns().open(&campaign.id).await?;
//!
//! let alice = UserId::new("alice")?;
//! assert!(matches!(coupons.issuer().issue(&campaign.id, &alice).await?, IssueOutcome::Issued(_)));
//! assert_eq!(coupons.issuer().issue(&campaign.id, &alice).await?, IssueOutcome::AlreadyIssued);
//!
//! // The cold path stores what the hot path published.
//! coupons.recorder(RecorderConfig::default()).await?.drain().await;
//! assert_eq!(coupons.campaigns().counts(&campaign.id).await?.stored, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## Where things are
//!
//! - [`domain`]: campaigns, users, coupons, events, outcomes.
//! - [`IssueGate`], [`EventLog`] / [`EventSource`], [`IssueStore`]: the backend traits.
//! - [`Coupons`]: the system wired once ([`Coupons::builder`]).
//! - [`Issuer`] (hot path), [`Recorder`] (cold path), [`Reconciler`] (repair and sync),
//!   [`CampaignService`] (lifecycle).
//! - [`layers`]: decorators over the backend traits (metrics with feature `metrics`).
//! - [`memory`]: in-memory backends.
//! - `conformance` (feature `conformance`): the suite every backend passes.
//! - Mocks of the traits with feature `mock` (`MockIssueGate`, ...).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod batching;
pub mod cache;
pub mod coupons;
pub mod domain;
pub mod error;
mod fence;
pub mod gate;
pub mod hooks;
pub mod issuer;
pub mod layers;
pub mod lifecycle;
pub mod log;
pub mod memory;
mod periodic;
pub mod reconciler;
pub mod recorder;
pub mod store;
#[cfg(test)]
mod test_support;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use batching::{BatchConfig, BatchingGate};
pub use cache::CampaignCache;
pub use coupons::{Coupons, CouponsBuilder};
pub use domain::*;
pub use error::{BackendError, Component, Error, ErrorKind, ValidationError};
pub use gate::{AdmitRequest, GateCounts, IssueGate, RestoreReport};
pub use hooks::{CouponHook, HookConfig, HookRunner, Notice, PendingNotices};
pub use issuer::{AckMode, Issuer, IssuerConfig};
pub use lifecycle::CampaignService;
pub use log::{Batch, CommitHandle, DeadLetter, EventLog, EventSource, LogRecord};
pub use reconciler::{ReconcileReport, Reconciler, SyncReport};
pub use recorder::{BatchReport, Observers, RecordObserver, Recorder, RecorderConfig};
pub use store::IssueStore;

#[cfg(any(test, feature = "mock"))]
pub use gate::MockIssueGate;
#[cfg(any(test, feature = "mock"))]
pub use log::{MockEventLog, MockEventSource};
#[cfg(any(test, feature = "mock"))]
pub use store::MockIssueStore;
