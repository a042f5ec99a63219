//! Key names. Every key of a campaign carries the same hash tag, `{<campaign id>}`, so
//! each script touches one slot (Redis Cluster) and campaigns spread over slots.

use coupon_core::{CampaignId, ReservationKey, UserId};

/// The three keys of one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignKeys {
    /// Hash: `stock`, `total`, `limit`, `start`, `end` (ms).
    pub meta: String,
    /// Hash: user id -> the `nth`s held, one character per `nth` (`'1'` held, `'0'`
    /// free), plus an empty-field sentinel.
    pub holds: String,
    /// Sorted set: `"coupon_id:nth:user"` scored by admission time on Redis's clock in
    /// microseconds (plus a `+inf` sentinel).
    pub ledger: String,
}

impl CampaignKeys {
    /// The keys of `campaign` under `prefix`.
    pub fn new(prefix: &str, campaign: &CampaignId) -> Self {
        Self {
            meta: format!("{prefix}:{{{campaign}}}:meta"),
            holds: format!("{prefix}:{{{campaign}}}:holds"),
            ledger: format!("{prefix}:{{{campaign}}}:ledger"),
        }
    }

    /// All three, for scripts and DEL.
    pub fn all(&self) -> [&str; 3] {
        [&self.meta, &self.holds, &self.ledger]
    }
}

/// The ledger member of a reservation: `"coupon_id:nth:user"`. The coupon id makes it
/// the admission's own identity: another admission of the same user and `nth` has
/// another member.
pub fn ledger_member(key: &ReservationKey) -> String {
    format!("{}:{}:{}", key.coupon_id, key.nth, key.user_id)
}

/// Parses a ledger member back; `None` for the sentinel or anything malformed.
pub fn parse_ledger_member(member: &str) -> Option<ReservationKey> {
    let (coupon_id, rest) = member.split_once(':')?;
    let (nth, user) = rest.split_once(':')?;
    Some(ReservationKey {
        coupon_id: coupon_id.parse().ok()?,
        nth: nth.parse().ok()?,
        user_id: UserId::new(user).ok()?,
    })
}

/// The `nth`s a holding string says are held (`'1'` at position `nth - 1`).
pub fn parse_holding(held: &str) -> Vec<u32> {
    held.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'1')
        .map(|(i, _)| i as u32 + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let id = CampaignId::new();
        let k = CampaignKeys::new("cpn", &id);
        let tag = format!("{{{id}}}");
        assert!(k.all().iter().all(|key| key.contains(&tag)), "{k:?}");
        assert_eq!(k.meta, format!("cpn:{{{id}}}:meta"));
    }

    #[test]
    fn ledger_members_round_trip_even_with_colons_in_user_ids() {
        let key = ReservationKey {
            coupon_id: coupon_core::CouponId::new(),
            user_id: UserId::new("tenant:42:alice").unwrap(),
            nth: 3,
        };
        assert_eq!(parse_ledger_member(&ledger_member(&key)), Some(key));
        assert_eq!(parse_ledger_member(""), None);
        assert_eq!(parse_holding("1011"), vec![1, 3, 4]);
        assert!(parse_holding("").is_empty());
    }
}
