//! Key names. Every key of a campaign carries the same hash tag, `{<campaign id>}`, so
//! each script touches one slot (Redis Cluster) and campaigns spread over slots.

use coupon_core::{CampaignId, ReservationKey, UserId};

/// The three keys of one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignKeys {
    /// Hash: `stock`, `total`, `limit`, `start`, `end` (ms).
    pub meta: String,
    /// Hash: user id -> coupons held (plus an empty-field sentinel).
    pub users: String,
    /// Sorted set: `"nth:user"` scored by admission time in ms (plus a `+inf` sentinel).
    pub ledger: String,
}

impl CampaignKeys {
    /// The keys of `campaign` under `prefix`.
    pub fn new(prefix: &str, campaign: &CampaignId) -> Self {
        Self {
            meta: format!("{prefix}:{{{campaign}}}:meta"),
            users: format!("{prefix}:{{{campaign}}}:users"),
            ledger: format!("{prefix}:{{{campaign}}}:ledger"),
        }
    }

    /// All three, for scripts and DEL.
    pub fn all(&self) -> [&str; 3] {
        [&self.meta, &self.users, &self.ledger]
    }
}

/// The ledger member of a reservation: `"nth:user"`.
pub fn ledger_member(key: &ReservationKey) -> String {
    format!("{}:{}", key.nth, key.user_id)
}

/// Parses a ledger member back; `None` for the sentinel or anything malformed.
pub fn parse_ledger_member(member: &str) -> Option<ReservationKey> {
    let (nth, user) = member.split_once(':')?;
    Some(ReservationKey {
        nth: nth.parse().ok()?,
        user_id: UserId::new(user).ok()?,
    })
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
            user_id: UserId::new("tenant:42:alice").unwrap(),
            nth: 3,
        };
        assert_eq!(parse_ledger_member(&ledger_member(&key)), Some(key));
        assert_eq!(parse_ledger_member(""), None);
    }
}
