//! Decorators over the backend traits, in the manner of tower or OpenDAL layers: each
//! wraps an `Arc<dyn IssueGate>` (or `EventLog`) and forwards every method, so any
//! backend gains the behaviour. [`crate::BatchingGate`] is one too.
//!
//! Every decorator is checked with `#[deny(clippy::missing_trait_methods)]`: a trait
//! method added later cannot silently fall back to its default instead of reaching the
//! wrapped backend.

#[cfg(feature = "metrics")]
pub mod metrics;
