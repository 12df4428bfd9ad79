//! The HTTP surface: the router (routes and OpenAPI from one source) and the
//! layers every request passes through.

mod admin;
mod device;
mod download;
pub mod error;
mod extract;
mod ops;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{OnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::net::Connection;
use crate::state::AppState;
use error::{ApiError, PROBLEM_JSON, problem};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ota-server",
        description = "OTA firmware update server for ESP32 fleets. Devices authenticate with a bearer JWT, \
                       administrators with the admin token. Every error is application/problem+json.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "device", description = "What devices call"),
        (name = "admin", description = "Firmware management and device tokens (admin token)"),
        (name = "ops", description = "Health, readiness, metrics, this document")
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "device_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "admin_token_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Admin-Token"))),
        );
    }
}

/// Every documented route: the one place routes are declared. `/metrics`
/// is left out when it has a listener of its own.
fn api_router(with_metrics: bool) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(device::router())
        .merge(download::router())
        .merge(admin::router())
        .merge(ops::router(with_metrics))
}

/// The OpenAPI 3.1 document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router(true).split_for_parts().1
}

/// The router of the main listener, with all layers.
pub fn router(state: AppState, with_metrics: bool) -> Router {
    let idle_timeout = Duration::from_secs(state.settings().idle_timeout);
    let (routes, _) = api_router(with_metrics).split_for_parts();
    routes
        .fallback(route_not_found)
        .layer(RequestBodyTimeoutLayer::new(idle_timeout))
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(middleware::from_fn(record_metrics))
        .layer(CatchPanicLayer::custom(|_| {
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not complete this request".into(),
                None,
            )
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        uri = %request.uri().path(),
                        request_id,
                        device_id = tracing::field::Empty,
                    )
                })
                .on_response(AccessLine),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(mark_in_flight))
        .with_state(state)
}

/// The access line written when a response starts.
///
/// A `check` answered 200 is the fleet's heartbeat (every device, every
/// poll interval; the inventory's `last_seen` keeps the fact), so it is
/// logged at DEBUG. Every other answer, and any error, is logged at INFO.
#[derive(Clone, Copy)]
struct AccessLine;

impl<B> OnResponse<B> for AccessLine {
    fn on_response(self, response: &axum::http::Response<B>, latency: Duration, span: &tracing::Span) {
        let status = response.status().as_u16();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        if status == 200 && response.extensions().get::<RoutinePoll>().is_some() {
            tracing::debug!(parent: span, status, latency_ms, "finished processing request");
        } else {
            tracing::info!(parent: span, status, latency_ms, "finished processing request");
        }
    }
}

/// Marks a response as a routine device poll, for [`AccessLine`].
#[derive(Clone, Copy)]
pub struct RoutinePoll;

/// A router that serves only `/metrics`, for `OTA_METRICS_LISTEN`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(ops::metrics))
        .fallback(route_not_found)
        .layer(middleware::from_fn(problem_for_bare_errors))
        .with_state(state)
}

/// Tells the connection that a handler is working, so that the time it
/// takes is not counted as the connection being idle.
async fn mark_in_flight(request: Request, next: Next) -> Response {
    let _in_flight = request
        .extensions()
        .get::<ConnectInfo<Connection>>()
        .map(|ConnectInfo(connection)| connection.begin_request());
    next.run(request).await
}

async fn route_not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Turns any error answer that is not already a problem document (405 from
/// the router, a panic, a body-limit refusal) into one.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept that method".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_owned(),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    let mut replacement = problem(status, detail, None);
    if let Some(allow) = parts.headers.remove(header::ALLOW) {
        replacement.headers_mut().insert(header::ALLOW, allow);
    }
    replacement
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Only known methods become label values: any other would let a client
    // create metric series without end.
    let method = match request.method().as_str() {
        known @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => known,
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("ota_http_requests_total", &labels).increment(1);
    metrics::histogram!("ota_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}
