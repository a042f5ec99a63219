//! The domain: campaigns, users, coupons, events and outcomes.

pub mod campaign;
pub mod coupon;
pub mod ids;

pub use campaign::*;
pub use coupon::*;
pub use ids::*;

/// The current time, truncated to microseconds: the precision every store keeps, so a
/// coupon read back equals the one issued.
pub fn timestamp_now() -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    let now = chrono::Utc::now();
    now.duration_trunc(chrono::TimeDelta::microseconds(1)).unwrap_or(now)
}
