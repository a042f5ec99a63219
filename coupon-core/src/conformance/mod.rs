//! The backend-agnostic conformance suite (feature `conformance`).
//!
//! Every backend crate runs it against its real service, so all backends behave
//! the same. Each check is a plain `async fn` taking the backend; the
//! [`gate_conformance!`](crate::gate_conformance), [`log_conformance!`](crate::log_conformance)
//! and [`store_conformance!`](crate::store_conformance) macros turn them into one
//! `#[tokio::test]` each. [`protocol_conformance!`](crate::protocol_conformance) runs the
//! reservation protocol's scenarios (one per finding of the v1 review) over a gate and a
//! store together.

pub mod gate;
pub mod log;
pub mod model;
pub mod protocol;
pub mod store;
mod support;

pub use support::*;
