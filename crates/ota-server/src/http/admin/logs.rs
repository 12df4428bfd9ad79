//! `GET /api/ota/admin/logs`: the update attempts of the fleet.

use axum::extract::State;
use chrono::{DateTime, Utc};
use ota_core::OtaStatus;
use ota_core::wire::{OtaLog, Page, Problem};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_bounds;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Query};
use crate::state::AppState;
use crate::store::LogFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_logs))
}

/// Filters and page of the log list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    device_id: Option<String>,
    firmware_id: Option<i64>,
    /// pending, downloading, installing, success or failed.
    status: Option<String>,
    /// RFC 3339; attempts started at or after it.
    since: Option<String>,
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Lists OTA log rows, newest first.
#[utoipa::path(
    get,
    path = "/api/ota/admin/logs",
    tag = "admin",
    params(LogQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of log rows", body = Page<OtaLog>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_logs(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<LogQuery>,
) -> ApiResult<axum::Json<Page<OtaLog>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<OtaStatus>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let since = query
        .since
        .as_deref()
        .map(|s| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|_| ApiError::BadRequest("since must be an RFC 3339 time, e.g. 2026-11-27T15:04:05Z".into()))?;
    let filter = LogFilter {
        device_id: query.device_id,
        firmware_id: query.firmware_id,
        status,
        since,
    };
    let (items, total) = state.store().list_logs(&filter, limit, offset).await?;
    Ok(axum::Json(Page { items, total }))
}
