//! `GET /v1/coupons/{id}/events`: Server-Sent Events for one coupon, `stored` once it
//! is in the store and `redeemed` once it is used; the stream ends after `redeemed`.
//!
//! Changes made by this process arrive at once through the [`crate::notify::Notifier`];
//! those made by other processes (a separate consumer, another server) are picked up
//! by re-reading the store every [`POLL`].

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use coupon_core::{Coupon, CouponId, CouponState, UserId};
use futures::Stream;
use tokio::sync::broadcast;

use super::coupons::{CouponView, coupon_id};
use crate::app::AppState;
use crate::auth::User;
use crate::error::{ApiError, ErrorBody};
use crate::notify::Notice;

/// How often a waiting stream re-reads the store.
pub const POLL: Duration = Duration::from_millis(250);

struct Watch {
    state: AppState,
    user: UserId,
    coupon_id: CouponId,
    notices: broadcast::Receiver<Notice>,
    current: Option<Coupon>,
    sent_stored: bool,
    done: bool,
}

impl Watch {
    /// The next event to send, waiting for a change when there is none yet.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(coupon) = self.current.clone() {
                if coupon.user_id != self.user {
                    return None;
                }
                if !self.sent_stored {
                    self.sent_stored = true;
                    return Some((Ok(event("stored", &coupon)), self));
                }
                if coupon.state == CouponState::Redeemed {
                    self.done = true;
                    return Some((Ok(event("redeemed", &coupon)), self));
                }
            }
            self.wait().await;
            match self.state.store().coupon(&self.coupon_id).await {
                Ok(found) => self.current = found,
                Err(e) => tracing::debug!(error = %e, "SSE re-read failed; retrying"),
            }
        }
    }

    /// Until a notice about this coupon, a lag (something may have been missed) or the poll tick.
    async fn wait(&mut self) {
        let tick = tokio::time::sleep(POLL);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = &mut tick => return,
                notice = self.notices.recv() => match notice {
                    Ok(n) if n.coupon_id == self.coupon_id => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut tick).await;
                        return;
                    }
                },
            }
        }
    }
}

fn event(name: &'static str, coupon: &Coupon) -> Event {
    Event::default()
        .event(name)
        .json_data(CouponView::from(coupon))
        .expect("a coupon view serializes")
}

/// Follows one of the caller's coupons: `stored`, then `redeemed`.
#[utoipa::path(get, path = "/v1/coupons/{id}/events", tag = "coupons", security(("bearer" = [])),
    params(("id" = String, Path, description = "Coupon id")),
    responses(
        (status = 200, description = "text/event-stream: `stored` then `redeemed`, each with the coupon", content_type = "text/event-stream", body = String),
        (status = 404, description = "`coupon_not_found`: someone else's coupon", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let coupon_id = coupon_id(&id)?;
    // Subscribe before the first read, so a change between the two is not missed.
    let notices = state.notifier().subscribe();
    let current = state.store().coupon(&coupon_id).await?;
    if current.as_ref().is_some_and(|c| c.user_id != user) {
        return Err(ApiError::coupon_not_found());
    }
    let watch = Watch {
        state,
        user,
        coupon_id,
        notices,
        current,
        sent_stored: false,
        done: false,
    };
    let stream = futures::stream::unfold(watch, Watch::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
