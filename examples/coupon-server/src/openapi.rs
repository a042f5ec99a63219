//! The OpenAPI document served at `/openapi.json`: its paths come from the routes
//! themselves (`crate::app::v1_routes`, `ops_routes`), so the two cannot drift apart.

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// The API's title, description and security scheme; the paths are added by [`document`].
#[derive(OpenApi)]
#[openapi(
    info(title = "coupon-server", description = "First-come coupon issuance. Errors are {\"error\": code, \"message\": text}."),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// The whole OpenAPI document: [`ApiDoc`] with every route's path.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        OpenApiRouter::with_openapi(ApiDoc::openapi())
            .merge(crate::app::v1_routes())
            .merge(crate::app::ops_routes())
            .into_openapi()
    });
    &DOCUMENT
}

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
