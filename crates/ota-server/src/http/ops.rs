//! Health, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ota_core::wire::Problem;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router(with_metrics: bool) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json));
    if with_metrics {
        router.routes(routes!(metrics))
    } else {
        router
    }
}

/// Health and readiness answer.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `ok` or `ready`.
    status: &'static str,
    /// The server's version.
    #[schema(example = "0.1.0")]
    version: &'static str,
}

impl Health {
    fn new(status: &'static str) -> Self {
        Health {
            status,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health::new("ok"))
}

/// The database and the firmware storage are reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Not ready; says which part", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Health>> {
    // A load balancer wants its answer quickly: a database that takes
    // longer than this is as good as gone.
    match tokio::time::timeout(READY_WITHIN, state.store().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: database");
            return Err(ApiError::Unavailable("the database is not reachable".into()));
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer in time");
            return Err(ApiError::Unavailable(format!(
                "the database did not answer within {} s",
                READY_WITHIN.as_secs()
            )));
        }
    }
    if let Err(e) = state.blobs().check_ready().await {
        tracing::warn!(error = format!("{e:#}"), "not ready: storage");
        return Err(ApiError::Unavailable("the firmware storage is not writable".into()));
    }
    Ok(axum::Json(Health::new("ready")))
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics().render(),
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "ops",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        state.openapi_json().to_owned(),
    )
        .into_response()
}

/// How long readiness waits for the database.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);
