//! Rate limits, checked before any backend is touched: one for the whole server and
//! one per user (keyed by the token's `sub`), both with `governor`.

use std::num::NonZeroU32;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::app::AppState;
use crate::auth::Authenticated;
use crate::error::ApiError;

/// The two limiters; `None` where the limit is off.
#[derive(Debug)]
pub struct Limits {
    global: Option<DefaultDirectRateLimiter>,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl Limits {
    /// `global` requests/s for the server and `per_user` requests/s per user, each
    /// with a burst of one second's worth; 0 turns a limit off.
    pub fn new(global: u32, per_user: u32) -> Self {
        Self {
            global: NonZeroU32::new(global).map(|n| RateLimiter::direct(Quota::per_second(n))),
            per_user: NonZeroU32::new(per_user).map(|n| RateLimiter::keyed(Quota::per_second(n))),
            clock: DefaultClock::default(),
        }
    }

    /// Checks the global limit.
    pub fn check_global(&self) -> Result<(), ApiError> {
        match &self.global {
            Some(limiter) => limiter.check().map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                ApiError::rate_limited("the server is at its request limit; retry shortly", wait.as_secs() + 1)
            }),
            None => Ok(()),
        }
    }

    /// Checks `user`'s limit.
    pub fn check_user(&self, user: &str) -> Result<(), ApiError> {
        match &self.per_user {
            Some(limiter) => limiter.check_key(&user.to_owned()).map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                ApiError::rate_limited("too many requests from this user; retry shortly", wait.as_secs() + 1)
            }),
            None => Ok(()),
        }
    }

    /// Forgets users whose limit has fully refilled (call now and then: the keyed
    /// limiter otherwise grows with every user ever seen).
    pub fn forget_idle_users(&self) {
        if let Some(limiter) = &self.per_user {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Middleware on the API routes: global limit, then the token (checked once, kept in
/// the request's extensions for the handlers), then the user's limit.
pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Err(e) = state.limits().check_global() {
        return e.into_response();
    }
    let auth = state.auth().from_headers(request.headers());
    if let Ok(claims) = &auth
        && let Err(e) = state.limits().check_user(&claims.sub)
    {
        return e.into_response();
    }
    request.extensions_mut().insert(Authenticated(auth));
    next.run(request).await
}
