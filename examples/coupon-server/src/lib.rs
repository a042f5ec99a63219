//! # coupon-server
//!
//! The reference HTTP server of the coupon workspace: the hot path (`POST
//! /v1/campaigns/{id}/issue`) over an [`coupon_core::Issuer`], campaign
//! administration, redemption, Server-Sent Events, metrics and OpenAPI.
//!
//! Run it with `cargo run --release -p coupon-server -- --dev` (see the README). As
//! a library, [`app::router`] builds the axum router, which tests drive in process:
//!
//! ```
//! use coupon_server::{Backends, Server, ServerConfig};
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let mut config = ServerConfig::defaults();
//! config.dev = true;
//! let server = Server::build(&config, Backends::in_memory()).await?;
//! let response = server
//!     .router()
//!     .oneshot(Request::get("/healthz").body(Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```
//!
//! ## Where things are
//!
//! - [`config`]: flags and `COUPON_*` variables; [`backends`]: which gate, log and store.
//! - [`app`]: the router and the server's lifecycle; [`routes`]: one module per resource.
//! - [`auth`] (JWT), [`limits`] (rate limits), [`metrics`], [`notify`] (SSE fan-out),
//!   [`openapi`], [`error`] (the error body), [`webhook`] (the example post-processing hook,
//!   run by the consumer).

pub mod app;
pub mod auth;
pub mod backends;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod routes;
pub mod webhook;

pub use app::{AppState, Server, router};
pub use auth::{Auth, Claims};
pub use backends::Backends;
pub use config::{Cli, Command, ServerConfig};

// The README's example is compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
