//! The device inventory (`GET /api/ota/admin/devices`, `.../{device_id}`,
//! the fleet summary), pins, and `POST /api/ota/admin/devices/{device_id}/token`,
//! which mints a device token.

use std::ops::RangeInclusive;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use chrono::TimeDelta;
use ota_core::wire::{
    DeviceDetail, DeviceFilter, DeviceRecord, DeviceToken, DeviceTokenRequest, FleetSummary, Page, PinRequest, Problem,
};
use ota_core::{Channel, DeviceId, DeviceType, GroupName, OtaStatus, Version};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{page_bounds, record as audit};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Json, Path, Query};
use crate::state::AppState;
use crate::store;
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
        .routes(routes!(pin_device, unpin_device))
        .routes(routes!(fleet_summary))
        .routes(routes!(issue_device_token))
}

/// Filter and page of the inventory: every given field must match.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeviceQuery {
    device_type: Option<String>,
    /// The exact current version.
    version: Option<String>,
    channel: Option<String>,
    /// The status of the latest attempt.
    status: Option<String>,
    /// Members of this group.
    group: Option<String>,
    /// Part of the device id.
    search: Option<String>,
    /// Not seen for at least this many days.
    not_seen_days: Option<i64>,
    /// Seen within this many days.
    seen_within_days: Option<i64>,
    /// Only pinned (true) or unpinned (false) devices.
    pinned: Option<bool>,
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Checks an inventory filter, naming the field that is wrong.
pub(super) fn device_query(filter: DeviceFilter) -> ApiResult<store::DeviceQuery> {
    let days = |field: &'static str, value: Option<i64>| {
        value
            .map(|n| {
                if (0..=36_500).contains(&n) {
                    Ok(chrono::Utc::now() - chrono::Duration::days(n))
                } else {
                    Err(ApiError::invalid(
                        field,
                        "must be a whole number of days from 0 to 36500",
                    ))
                }
            })
            .transpose()
    };
    Ok(store::DeviceQuery {
        device_type: filter
            .device_type
            .map(|t| {
                DeviceType::parse(&t)
                    .map(String::from)
                    .map_err(|e| ApiError::invalid("device_type", e))
            })
            .transpose()?,
        version: filter
            .version
            .map(|v| {
                Version::parse(&v)
                    .map(|v| v.to_string())
                    .map_err(|e| ApiError::invalid("version", e))
            })
            .transpose()?,
        channel: filter
            .channel
            .map(|c| {
                Channel::parse(&c)
                    .map(String::from)
                    .map_err(|e| ApiError::invalid("channel", e))
            })
            .transpose()?,
        status: filter
            .status
            .map(|s| {
                s.parse::<OtaStatus>()
                    .map(|s| s.as_str().to_owned())
                    .map_err(|e| ApiError::invalid("status", e))
            })
            .transpose()?,
        group: filter
            .group
            .map(|g| {
                GroupName::parse(&g)
                    .map(String::from)
                    .map_err(|e| ApiError::invalid("group", e))
            })
            .transpose()?,
        search: filter.search.filter(|s| !s.is_empty()),
        not_seen_since: days("not_seen_days", filter.not_seen_days)?,
        seen_since: days("seen_within_days", filter.seen_within_days)?,
        pinned: filter.pinned,
    })
}

/// Lists and searches the devices that have checked in, by device id.
///
/// What each device last reported: version, build, channel, the highest
/// anti-rollback counter (`secure_version`) it has reported, the status and
/// error of its latest update attempt, and its pin. Check-ins are written in
/// batches about once a second, so a device appears shortly after its first
/// check. Filters combine: every given one must match.
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
        (status = 422, description = "An invalid filter value", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_devices(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<DeviceQuery>,
) -> ApiResult<axum::Json<Page<DeviceRecord>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let filter = device_query(DeviceFilter {
        device_type: query.device_type,
        version: query.version,
        channel: query.channel,
        status: query.status,
        group: query.group,
        search: query.search,
        not_seen_days: query.not_seen_days,
        seen_within_days: query.seen_within_days,
        pinned: query.pinned,
    })?;
    let (items, total) = state.store().list_devices(&filter, limit, offset).await?;
    Ok(axum::Json(Page { items, total }))
}

/// What the fleet summary covers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FleetQuery {
    /// One device type (default: each).
    device_type: Option<String>,
    /// Devices whose last check is older than this many days count as not
    /// seen (default 7).
    not_seen_days: Option<i64>,
}

/// The fleet of each device type at a glance.
///
/// Devices per current version and per status of their latest attempt
/// (`none`: never updated), how many have not checked in for
/// `not_seen_days`, and how many are pinned.
#[utoipa::path(
    get,
    path = "/api/ota/admin/fleet",
    tag = "admin",
    params(FleetQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "One summary per device type", body = Page<FleetSummary>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid device_type or not_seen_days", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fleet_summary(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<FleetQuery>,
) -> ApiResult<axum::Json<Page<FleetSummary>>> {
    let device_type = query
        .device_type
        .map(|t| DeviceType::parse(&t).map_err(|e| ApiError::invalid("device_type", e)))
        .transpose()?;
    let days = query.not_seen_days.unwrap_or(7);
    if !(0..=36_500).contains(&days) {
        return Err(ApiError::invalid(
            "not_seen_days",
            "must be a whole number of days from 0 to 36500",
        ));
    }
    let items = state
        .store()
        .fleet_summaries(device_type.as_ref().map(DeviceType::as_str), days)
        .await?;
    Ok(axum::Json(Page {
        total: items.len() as i64,
        items,
    }))
}

/// One device of the inventory, its groups and its update history.
#[utoipa::path(
    get,
    path = "/api/ota/admin/devices/{device_id}",
    tag = "admin",
    params(("device_id" = String, Path, description = "The device's id")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The device, its groups and its latest 50 attempts", body = DeviceDetail),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No device with this id has checked in", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_device(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(device_id): Path<String>,
) -> ApiResult<axum::Json<DeviceDetail>> {
    let store = state.store();
    let device = store.device(&device_id).await?.ok_or_else(|| no_device(&device_id))?;
    Ok(axum::Json(DeviceDetail {
        device,
        groups: store.groups_of(&device_id).await?,
        history: store.device_history(&device_id, 50).await?,
    }))
}

fn no_device(device_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no device '{}' has checked in",
        device_id.chars().take(128).collect::<String>()
    ))
}

/// Pins a device to one firmware of its type, by id or version.
///
/// A pinned device is offered exactly that firmware while it runs anything
/// else — an older one is a downgrade (`is_downgrade: true` in the check
/// answer) — and nothing else: no rollout, group or recall moves it. The
/// firmware must be active and not recalled, and its `secure_version` must
/// not be below the device's anti-rollback counter (it could not boot).
#[utoipa::path(
    put,
    path = "/api/ota/admin/devices/{device_id}/pin",
    tag = "admin",
    params(("device_id" = String, Path, description = "The device's id")),
    request_body = PinRequest,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The device, pinned", body = DeviceRecord),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such device or firmware", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The firmware is for another type, inactive, recalled, or below the device's anti-rollback counter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither or both of firmware_id and version, or an invalid version", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn pin_device(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(device_id): Path<String>,
    Json(request): Json<PinRequest>,
) -> ApiResult<axum::Json<DeviceRecord>> {
    let store = state.store();
    let device = store.device(&device_id).await?.ok_or_else(|| no_device(&device_id))?;
    let firmware = match (request.firmware_id, request.version.as_deref()) {
        (Some(id), None) => store
            .firmware(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no firmware with id {id}")))?,
        (None, Some(version)) => {
            let version = Version::parse(version).map_err(|e| ApiError::invalid("version", e))?;
            store
                .firmware_by_version(&device.device_type, &version.to_string())
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no firmware {version} of device type {}", device.device_type))
                })?
        }
        _ => {
            return Err(ApiError::Invalid {
                field: None,
                detail: "give either firmware_id or version".into(),
            });
        }
    };
    if firmware.device_type != device.device_type {
        return Err(ApiError::Conflict(format!(
            "firmware {} is for {}, the device is a {}",
            firmware.id, firmware.device_type, device.device_type
        )));
    }
    if !firmware.is_active || firmware.recalled_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "firmware {} ({}) is {}: a device cannot be pinned to it",
            firmware.id,
            firmware.version,
            if firmware.is_active { "recalled" } else { "deactivated" }
        )));
    }
    let counter = state.inventory().secure_version(store, &device_id).await?;
    if let (Some(image), Some(counter)) = (firmware.secure_version, counter)
        && image < counter
    {
        return Err(ApiError::Conflict(format!(
            "firmware {} ({}) has secure_version {image}, below the device's anti-rollback counter {counter}: \
             its bootloader would refuse it",
            firmware.id, firmware.version
        )));
    }
    let pinned = store
        .pin_device(&device_id, Some(firmware.id))
        .await?
        .ok_or_else(|| no_device(&device_id))?;
    audit(
        &state,
        &admin,
        "device.pin",
        "device",
        Some(device_id.clone()),
        Some(&device),
        Some(&pinned),
    )
    .await?;
    tracing::info!(device_id, firmware_id = firmware.id, "pinned a device");
    Ok(axum::Json(pinned))
}

/// Unpins a device: it follows its rollouts, groups and channel again.
#[utoipa::path(
    delete,
    path = "/api/ota/admin/devices/{device_id}/pin",
    tag = "admin",
    params(("device_id" = String, Path, description = "The device's id")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The device, unpinned", body = DeviceRecord),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn unpin_device(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(device_id): Path<String>,
) -> ApiResult<axum::Json<DeviceRecord>> {
    let store = state.store();
    let before = store.device(&device_id).await?.ok_or_else(|| no_device(&device_id))?;
    let unpinned = store
        .pin_device(&device_id, None)
        .await?
        .ok_or_else(|| no_device(&device_id))?;
    audit(
        &state,
        &admin,
        "device.unpin",
        "device",
        Some(device_id),
        Some(&before),
        Some(&unpinned),
    )
    .await?;
    Ok(axum::Json(unpinned))
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
    admin: AdminAuth,
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
    // The token itself is never recorded: its id, type and expiry are.
    let record = serde_json::json!({
        "device_type": device_type.as_str(),
        "jti": issued.jti.to_string(),
        "expires_at": ota_core::time::format(&issued.expires_at),
    });
    audit(
        &state,
        &admin,
        "device_token.issue",
        "device",
        Some(device_id.to_string()),
        None::<&()>,
        Some(&record),
    )
    .await?;
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
