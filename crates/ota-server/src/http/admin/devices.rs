//! The device inventory (`GET /api/ota/admin/devices`, `.../{device_id}`)
//! and `POST /api/ota/admin/devices/{device_id}/token`, which mints a device token.

use std::ops::RangeInclusive;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use chrono::TimeDelta;
use ota_core::wire::{DeviceRecord, DeviceToken, DeviceTokenRequest, Page, Problem};
use ota_core::{DeviceId, DeviceType};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_bounds;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Json, Path, Query};
use crate::state::AppState;
use crate::tokens::jwt_algorithm_name;

const DAY: u64 = 24 * 3600;
/// 365 days.
const DEFAULT_TTL_SECONDS: u64 = 365 * DAY;
/// One minute to 3650 days.
const TTL_SECONDS: RangeInclusive<u64> = 60..=3650 * DAY;
const FIELDS: &[&str] = &["device_type", "ttl_seconds"];

/// 201 with `Cache-Control: no-store` and the token.
type Created = (
    StatusCode,
    [(header::HeaderName, HeaderValue); 1],
    axum::Json<DeviceToken>,
);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices))
        .routes(routes!(get_device))
        .routes(routes!(issue_device_token))
}

/// Filter and page of the inventory.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeviceQuery {
    device_type: Option<String>,
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Lists the devices that have checked in, by device id.
///
/// What each device last reported: version, channel, the highest
/// anti-rollback counter (`secure_version`) it has reported, and the status
/// of its latest update attempt. Check-ins are written in batches about once
/// a second, so a device appears shortly after its first check.
#[utoipa::path(
    get,
    path = "/api/ota/admin/devices",
    tag = "admin",
    params(DeviceQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of devices", body = Page<DeviceRecord>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_devices(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<DeviceQuery>,
) -> ApiResult<axum::Json<Page<DeviceRecord>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let (items, total) = state
        .store()
        .list_devices(query.device_type.as_deref(), limit, offset)
        .await?;
    Ok(axum::Json(Page { items, total }))
}

/// One device of the inventory.
#[utoipa::path(
    get,
    path = "/api/ota/admin/devices/{device_id}",
    tag = "admin",
    params(("device_id" = String, Path, description = "The device's id")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The device", body = DeviceRecord),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No device with this id has checked in", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_device(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(device_id): Path<String>,
) -> ApiResult<axum::Json<DeviceRecord>> {
    state.store().device(&device_id).await?.map(axum::Json).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no device '{}' has checked in",
            device_id.chars().take(128).collect::<String>()
        ))
    })
}

/// Mints a token for one device.
///
/// A JWT with `sub` = the device id, `device_type`, `iat`, `exp`, a random
/// `jti`, and `iss` / `aud` when the server requires them, signed with the
/// server's device key so that the server accepts it. The token is in this
/// answer only: the server neither keeps nor logs it. A single token cannot
/// be revoked yet; rotating the signing secret or key revokes all of them.
/// A server configured with `OTA_DEVICE_JWT_PUBLIC_KEY` but no
/// `OTA_DEVICE_JWT_PRIVATE_KEY` only verifies tokens and answers 409.
#[utoipa::path(
    post,
    path = "/api/ota/admin/devices/{device_id}/token",
    tag = "admin",
    params(("device_id" = String, Path, description = "The device's id, the token's `sub`: printable ASCII without spaces, at most 128 characters")),
    request_body = DeviceTokenRequest,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (
            status = 201,
            description = "The token, shown once",
            body = DeviceToken,
            headers(("Cache-Control" = String, description = "`no-store`"))
        ),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This server only verifies device tokens: a public key is configured without a private key", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid device_id, a missing, invalid or unknown device_type, a ttl_seconds out of range, or an unknown field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn issue_device_token(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(device_id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Created> {
    let issuer = state.device_token_issuer().ok_or_else(|| {
        ApiError::Conflict(
            "this server only verifies device tokens (OTA_DEVICE_JWT_PUBLIC_KEY is set): mint tokens with \
             your own provisioning and its private key, or set OTA_DEVICE_JWT_PRIVATE_KEY so that this \
             server can sign them"
                .into(),
        )
    })?;
    let device_id = DeviceId::parse(&device_id).map_err(|e| ApiError::invalid("device_id", e))?;
    let (device_type, ttl) = parse_request(&body)?;
    // A token for a type the server does not know would never be offered anything.
    super::device_types::known_device_type(&state, &device_type).await?;

    let issued = issuer.issue(&device_id, &device_type, ttl)?;

    tracing::info!(
        device_id = %device_id,
        device_type = %device_type,
        jti = %issued.jti,
        expires_at = %ota_core::time::format(&issued.expires_at),
        "device token issued"
    );
    metrics::counter!("ota_device_tokens_issued_total", "device_type" => device_type.to_string()).increment(1);
    let minted = DeviceToken {
        token: issued.token,
        device_id: device_id.into(),
        device_type: device_type.into(),
        algorithm: jwt_algorithm_name(issuer.algorithm()).to_owned(),
        issued_at: issued.issued_at,
        expires_at: issued.expires_at,
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(minted),
    ))
}

/// The device type and lifetime of a [`DeviceTokenRequest`], each refusal
/// naming its field. An unknown field is refused too: a misspelt
/// `ttl_seconds` must not silently give the default lifetime.
fn parse_request(body: &Map<String, Value>) -> ApiResult<(DeviceType, TimeDelta)> {
    if let Some(unknown) = body.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(ApiError::Invalid {
            field: None,
            detail: format!(
                "unknown field '{}'; expected device_type and ttl_seconds",
                unknown.chars().take(40).collect::<String>()
            ),
        });
    }
    let device_type = match body.get("device_type") {
        None | Some(Value::Null) => return Err(ApiError::invalid("device_type", "is required")),
        Some(Value::String(name)) => DeviceType::parse(name).map_err(|e| ApiError::invalid("device_type", e))?,
        Some(_) => return Err(ApiError::invalid("device_type", "must be a string")),
    };
    let ttl_seconds = match body.get("ttl_seconds") {
        None | Some(Value::Null) => DEFAULT_TTL_SECONDS,
        Some(value) => value
            .as_u64()
            .filter(|seconds| TTL_SECONDS.contains(seconds))
            .ok_or_else(|| {
                ApiError::invalid(
                    "ttl_seconds",
                    format!(
                        "must be a whole number of seconds from {} (one minute) to {} (3650 days)",
                        TTL_SECONDS.start(),
                        TTL_SECONDS.end()
                    ),
                )
            })?,
    };
    let ttl = TimeDelta::try_seconds(ttl_seconds as i64)
        .ok_or_else(|| ApiError::invalid("ttl_seconds", "is out of range"))?;
    Ok((device_type, ttl))
}
