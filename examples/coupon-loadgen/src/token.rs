//! Tokens for the server's `/v1` routes, minted here with the server's secret (HS256,
//! `sub`, `role`, `exp`), so the load generator does not build the server and its backends.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The secret of a server started with `--dev` (the server's `config::DEV_JWT_SECRET`;
/// a test checks the two agree).
pub const DEV_JWT_SECRET: &str = "coupon-dev-secret-do-not-use-in-production";

/// Signs tokens with one secret.
pub struct Minter(EncodingKey);

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    exp: u64,
}

impl Minter {
    /// Tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        Self(EncodingKey::from_secret(secret.as_bytes()))
    }

    /// A token for `sub` (with `role`, e.g. `admin`), valid for `ttl_secs` from now.
    pub fn mint(&self, sub: &str, role: Option<&str>, ttl_secs: u64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub,
            role,
            exp: now + ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0)
            .expect("HS256 signing with an in-memory key cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_accepts_what_is_minted_here_with_its_dev_secret() {
        assert_eq!(DEV_JWT_SECRET, coupon_server::config::DEV_JWT_SECRET);
        let server = coupon_server::Auth::new(DEV_JWT_SECRET);
        let minter = Minter::new(DEV_JWT_SECRET);
        let user = server.verify(&minter.mint("alice", None, 60)).unwrap();
        assert_eq!((user.sub.as_str(), user.role), ("alice", None));
        let admin = server.verify(&minter.mint("ops", Some("admin"), 60)).unwrap();
        assert_eq!(admin.role.as_deref(), Some("admin"));
        assert!(
            server
                .verify(&Minter::new("another secret").mint("eve", None, 60))
                .is_err()
        );
    }
}
