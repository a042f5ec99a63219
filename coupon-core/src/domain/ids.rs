//! Identifiers: campaigns, users, coupons and events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValidationError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUID v7) identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.as_hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ValidationError::MalformedId {
                    what: $what,
                    value: s.chars().take(64).collect(),
                })
            }
        }
    };
}

uuid_id!(
    /// Identifies a campaign. Its text form is used in storage keys (`cpn:{<id>}:…`).
    CampaignId,
    "campaign id"
);
uuid_id!(
    /// Identifies one issued coupon.
    CouponId,
    "coupon id"
);
uuid_id!(
    /// Identifies one issue event, so consumers can deduplicate.
    EventId,
    "event id"
);

/// A user, as the authentication layer names them (a JWT `sub`, say).
///
/// Non-empty, at most [`UserId::MAX_LEN`] bytes, no control characters: it is
/// used as a Redis hash field and a SQL column, and shows up in logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// The longest user id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Checks and wraps a user id.
    pub fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ValidationError::InvalidUserId { reason: "it is empty" });
        }
        if id.len() > Self::MAX_LEN {
            return Err(ValidationError::InvalidUserId {
                reason: "it is longer than 128 bytes",
            });
        }
        if id.chars().any(char::is_control) {
            return Err(ValidationError::InvalidUserId {
                reason: "it contains control characters",
            });
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

impl FromStr for UserId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_checked() {
        assert!(UserId::new("alice").is_ok());
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a\nb").is_err());
        assert!(UserId::new("x".repeat(129)).is_err());
        assert!(serde_json::from_str::<UserId>("\"\"").is_err());
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id = CampaignId::new();
        assert_eq!(id.to_string().parse::<CampaignId>().unwrap(), id);
        let err = "nope".parse::<CouponId>().unwrap_err();
        assert!(err.to_string().contains("coupon id"), "{err}");
    }
}
