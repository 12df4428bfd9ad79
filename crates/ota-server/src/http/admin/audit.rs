//! `GET /api/ota/admin/audit`: who changed what, and when.

use axum::extract::State;
use chrono::{DateTime, Utc};
use ota_core::wire::{AuditEntry, Page, Problem};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_bounds;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Query};
use crate::state::AppState;
use crate::store::AuditFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Filters and page of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// The admin token's name, or `system`.
    actor: Option<String>,
    /// e.g. `firmware.update`, `rollout.halt`.
    action: Option<String>,
    /// `firmware`, `device_type`, `device`, `group`, `rollout`.
    target_type: Option<String>,
    target_id: Option<String>,
    /// RFC 3339; entries at or after it.
    since: Option<String>,
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Lists admin changes, newest first.
///
/// Every change made through the admin API is recorded with the name of
/// the token that made it, the action, its target, and the record before
/// and after (a creation has no before, a deletion no after). The
/// server's own rollout decisions (advance, complete, halt) are recorded
/// with the actor `system`. Device tokens are recorded by id (`jti`), never
/// the token.
#[utoipa::path(
    get,
    path = "/api/ota/admin/audit",
    tag = "admin",
    params(AuditQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of audit entries", body = Page<AuditEntry>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_audit(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<AuditQuery>,
) -> ApiResult<axum::Json<Page<AuditEntry>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let since = query
        .since
        .as_deref()
        .map(|s| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|_| ApiError::BadRequest("since must be an RFC 3339 time, e.g. 2026-11-27T15:04:05Z".into()))?;
    let filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        target_type: query.target_type,
        target_id: query.target_id,
        since,
    };
    let (items, total) = state.store().list_audit(&filter, limit, offset).await?;
    Ok(axum::Json(Page { items, total }))
}
