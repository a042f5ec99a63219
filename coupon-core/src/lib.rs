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
//! use coupon_core::{
//!     CampaignCache, CampaignService, IssueOutcome, Issuer, IssuerConfig, NewCampaign, Reconciler,
//!     Recorder, RecorderConfig, UserId, EventLog,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), coupon_core::Error> {
//! let (gate, log, store) = (Arc::new(MemoryGate::new()), Arc::new(MemoryLog::new()), Arc::new(MemoryStore::new()));
//! let cache = CampaignCache::new(store.clone());
//! let campaigns = CampaignService::new(store.clone(), gate.clone(), Reconciler::new(gate.clone(), store.clone()))
//!     .with_cache(cache.clone());
//! let issuer = Issuer::new(gate.clone(), Some(log.clone()), store.clone(), cache, IssuerConfig::default())?;
//!
//! // A campaign of 2 coupons, open for the next hour.
//! let now = chrono::Utc::now();
//! let campaign = campaigns.create(NewCampaign::new("Launch", 2, now, now + chrono::Duration::hours(1))).await?;
//! campaigns.open(&campaign.id).await?;
//!
//! let alice = UserId::new("alice")?;
//! assert!(matches!(issuer.issue(&campaign.id, &alice).await?, IssueOutcome::Issued(_)));
//! assert_eq!(issuer.issue(&campaign.id, &alice).await?, IssueOutcome::AlreadyIssued);
//!
//! // The cold path stores what the hot path published.
//! let mut recorder = Recorder::new(log.subscribe("recorder").await?, store.clone(), RecorderConfig::default())
//!     .with_gate(gate.clone());
//! recorder.drain().await;
//! assert_eq!(campaigns.counts(&campaign.id).await?.stored, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## Where things are
//!
//! - [`domain`]: campaigns, users, coupons, events, outcomes.
//! - [`IssueGate`], [`EventLog`] / [`EventSource`], [`IssueStore`]: the backend traits.
//! - [`Issuer`] (hot path), [`Recorder`] (cold path), [`Reconciler`] (repair and sync),
//!   [`CampaignService`] (lifecycle).
//! - [`memory`]: in-memory backends.
//! - `conformance` (feature `conformance`): the suite every backend passes.
//! - Mocks of the traits with feature `mock` (`MockIssueGate`, ...).

pub mod batching;
pub mod cache;
pub mod domain;
pub mod error;
mod fence;
pub mod gate;
pub mod issuer;
pub mod lifecycle;
pub mod log;
pub mod memory;
pub mod reconciler;
pub mod recorder;
pub mod store;
#[cfg(test)]
mod test_support;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use batching::{BatchConfig, BatchingGate};
pub use cache::CampaignCache;
pub use domain::*;
pub use error::{BackendError, Component, Error, ErrorKind, ValidationError};
pub use gate::{AdmitRequest, GateCounts, IssueGate, RestoreReport};
pub use issuer::{AckMode, Issuer, IssuerConfig};
pub use lifecycle::CampaignService;
pub use log::{Batch, CommitHandle, DeadLetter, EventLog, EventSource, LogRecord};
pub use reconciler::{ReconcileReport, Reconciler, SyncReport};
pub use recorder::{BatchReport, RecordObserver, Recorder, RecorderConfig};
pub use store::IssueStore;

#[cfg(any(test, feature = "mock"))]
pub use gate::MockIssueGate;
#[cfg(any(test, feature = "mock"))]
pub use log::{MockEventLog, MockEventSource};
#[cfg(any(test, feature = "mock"))]
pub use store::MockIssueStore;

// The README's example is compiled and run as a doc test.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
