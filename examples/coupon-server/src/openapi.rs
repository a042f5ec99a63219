//! The OpenAPI document served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{campaigns, coupons, events, issue, ops};

/// The API's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(title = "coupon-server", description = "First-come coupon issuance. Errors are {\"error\": code, \"message\": text}."),
    paths(
        campaigns::create, campaigns::get, campaigns::open, campaigns::close, campaigns::sync,
        issue::issue, coupons::mine, coupons::redeem, events::events,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
