//! The HTTP surface: the router of every resource module, and the layers around it.

mod health;
mod metrics;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

pub use self::metrics::install_recorder;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "drydock",
        description = "Run coding agents in isolated, hardened sandboxes (Docker containers or Kubernetes pods)."
    ),
    components(schemas(ErrorBody)),
    modifiers(&Authentication),
    security(("api_token" = []), ("session" = []))
)]
struct ApiDoc;

/// The two ways to call the API (OpenAPI 3.1 §4.8.27 Security Scheme Object): a personal API
/// token (`Authorization: Bearer ddt_…`, RFC 6750) for scripts and the CLI, or the browser's
/// session cookie. Routes that need neither say `security(())`.
struct Authentication;

impl utoipa::Modify for Authentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A personal API token (`ddt_…`) from Settings → API tokens; read-scoped \
                         tokens may only GET.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::cookies::SESSION_COOKIE,
                "The session cookie set by signing in with GitHub; state-changing requests also \
                 another site are refused.",
            ))),
        );
    }
}

/// Every route with its OpenAPI description, before layers are applied.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(crate::auth::routes())
        .merge(crate::repos::routes())
        .merge(crate::keys::routes())
        .merge(crate::agents_api::routes())
        .merge(crate::tasks::routes())
        .merge(crate::connectors::routes())
        .merge(crate::tokens::routes())
        .merge(crate::environments::api::routes())
}

/// The OpenAPI document of the whole API, generated from the handlers themselves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The complete application.
pub fn router(state: AppState) -> Router {
    let (routes, api) = api_routes().split_for_parts();
    let api_json = serde_json::to_string(&api).unwrap_or_else(|_| "{}".to_owned());
    routes
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let body = api_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        )
        .route("/metrics", axum::routing::get(metrics::render_metrics))
        .merge(crate::web::routes())
        .merge(crate::tasks::preview::routes())
        .merge(crate::triggers::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::refuse_cross_site,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::tasks::preview::dispatch,
        ))
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // The path only: query strings can carry OAuth codes and state.
                let route = request.extensions().get::<MatchedPath>().map_or_else(
                    || request.uri().path().to_owned(),
                    |p| p.as_str().to_owned(),
                );
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                tracing::info_span!("request", method = %request.method(), route, request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetResponseHeaderLayer::if_not_present(
            axum::http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            axum::http::header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound("page")
}
