//! Bearer tokens: HS256 JWTs with `sub` (the user id), `exp`, and `role = "admin"`
//! for the admin routes.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use coupon_core::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The claims the server reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// `admin` for the admin routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
}

impl Claims {
    /// Claims for `sub`, valid for `ttl_secs` from now.
    pub fn new(sub: impl Into<String>, role: Option<String>, ttl_secs: u64) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Self {
            sub: sub.into(),
            role,
            exp: now + ttl_secs,
        }
    }

    /// Whether these claims carry the admin role.
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some("admin")
    }
}

/// Signs and checks tokens with one HS256 secret.
#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// Tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A signed token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))
    }

    /// The claims of the request's `Authorization: Bearer` token.
    pub fn from_headers(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        self.verify(token.trim())
    }
}

/// The outcome of authenticating a request, put into its extensions by the
/// admission middleware ([`crate::limits::admit`]) so tokens are checked once.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub Result<Claims, ApiError>);

fn claims(parts: &Parts) -> Result<Claims, ApiError> {
    match parts.extensions.get::<Authenticated>() {
        Some(Authenticated(result)) => result.clone(),
        None => Err(ApiError::unauthorized("missing Authorization: Bearer token")),
    }
}

/// A signed-in user (any role).
#[derive(Debug, Clone)]
pub struct User(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let claims = claims(parts)?;
        let user = UserId::new(claims.sub).map_err(|e| ApiError::unauthorized(format!("the token's sub: {e}")))?;
        Ok(User(user))
    }
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let claims = claims(parts)?;
        if !claims.is_admin() {
            return Err(ApiError::forbidden("this route needs a token with role \"admin\""));
        }
        Ok(Admin(claims))
    }
}
