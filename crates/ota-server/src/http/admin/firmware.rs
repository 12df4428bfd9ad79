//! Firmware records: register, list, show, change, deactivate.

use std::cmp::Reverse;

use axum::extract::State;
use axum::http::StatusCode;
use ota_core::esp::EspImage;
use ota_core::wire::{
    Firmware, FirmwareDetail, FirmwarePatch, ImageFormat, Page, Problem, RecallRequest, RegisterFirmware,
};
use ota_core::{DeviceType, FileName, GroupName, Percent, Sha256Hex, Version};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::device_types::{known_device_type, read_stored_images};
use super::image_check::check_file;
use super::page_bounds;
use crate::blobs::Blobs;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Json, Path, Query};
use crate::state::AppState;
use crate::store::{FirmwareChanges, FirmwareFilter, NewFirmware, is_unique_violation};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_firmware, list_firmware))
        .routes(routes!(get_firmware, update_firmware, deactivate_firmware))
        .routes(routes!(recall_firmware))
}

/// The checked, optional parts of a new record.
#[derive(Debug, Default)]
pub struct NewRecord {
    pub build_number: Option<i64>,
    pub release_notes: Option<String>,
    pub min_version: Option<Version>,
    pub is_stable: bool,
    pub is_mandatory: bool,
    pub rollout: Percent,
    pub image_format: ImageFormat,
    pub image: Option<EspImage>,
    pub version_overridden: bool,
}

/// Inserts a record for a stored file; a duplicate (device_type, version) is 409.
pub async fn create_record(
    state: &AppState,
    device_type: &DeviceType,
    version: &Version,
    filename: &FileName,
    file_size: i64,
    file_hash: &Sha256Hex,
    record: NewRecord,
) -> ApiResult<Firmware> {
    let new = NewFirmware {
        device_type: device_type.to_string(),
        version: version.to_string(),
        build_number: record.build_number,
        filename: filename.to_string(),
        binary_path: Blobs::relative_path(device_type, filename),
        file_size,
        file_hash: file_hash.to_string(),
        release_notes: record.release_notes,
        min_version: record.min_version.map(|v| v.to_string()),
        is_stable: record.is_stable,
        is_mandatory: record.is_mandatory,
        rollout_percentage: record.rollout.get(),
        image_format: record.image_format,
        image: record.image,
        version_overridden: record.version_overridden,
    };
    match state.store().insert_firmware(&new).await {
        Ok(firmware) => {
            tracing::info!(firmware_id = firmware.id, device_type = %device_type, version = %version, "registered firmware");
            Ok(firmware)
        }
        Err(e) if is_unique_violation(&e) => Err(ApiError::Conflict(format!(
            "{device_type} {version} (or its file {}) is already registered",
            new.binary_path
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Registers an uploaded binary as a firmware.
///
/// The file `<device_type>/<filename>` must exist, and its SHA-256 (and size,
/// when given) must match (422 otherwise). A duplicate (device_type, version)
/// is 409.
#[utoipa::path(
    post,
    path = "/api/ota/admin/firmware",
    tag = "admin",
    request_body = RegisterFirmware,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 201, description = "The new record", body = Firmware),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values, a missing file, or a hash or size mismatch", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn register_firmware(
    State(state): State<AppState>,
    admin: AdminAuth,
    Json(request): Json<RegisterFirmware>,
) -> ApiResult<(StatusCode, axum::Json<Firmware>)> {
    let device_type = DeviceType::parse(&request.device_type).map_err(|e| ApiError::invalid("device_type", e))?;
    let version = request
        .version
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| Version::parse(v).map_err(|e| ApiError::invalid("version", e)))
        .transpose()?;
    let filename = FileName::parse(&request.filename).map_err(|e| ApiError::invalid("filename", e))?;
    let claimed_hash = Sha256Hex::parse(&request.file_hash).map_err(|e| ApiError::invalid("file_hash", e))?;
    let mut record = NewRecord {
        build_number: check_build_number(request.build_number)?,
        release_notes: request.release_notes,
        min_version: request
            .min_version
            .as_deref()
            .map(|v| Version::parse(v).map_err(|e| ApiError::invalid("min_version", e)))
            .transpose()?,
        is_stable: request.is_stable.unwrap_or(false),
        is_mandatory: request.is_mandatory.unwrap_or(false),
        rollout: Percent::parse(request.rollout_percentage.unwrap_or(100))
            .map_err(|e| ApiError::invalid("rollout_percentage", e))?,
        ..NewRecord::default()
    };

    let _publishing = state.lock_publication().await?;
    let known = known_device_type(&state, &device_type).await?;
    let blobs = state.blobs();
    let binary_path = Blobs::relative_path(&device_type, &filename);
    if blobs.size_of(&device_type, &filename).await?.is_none() {
        return Err(ApiError::invalid(
            "filename",
            format!("no uploaded file at {binary_path}"),
        ));
    }
    let inspected = blobs.inspect(&device_type, &filename).await?;
    let (actual_hash, actual_size) = (inspected.sha256, inspected.size);
    if actual_hash != claimed_hash {
        return Err(ApiError::invalid(
            "file_hash",
            format!("does not match the stored file (its SHA-256 is {actual_hash})"),
        ));
    }
    if let Some(claimed_size) = request.file_size
        && claimed_size != actual_size as i64
    {
        return Err(ApiError::invalid(
            "file_size",
            format!("does not match the stored file ({actual_size} bytes)"),
        ));
    }
    if actual_size == 0 {
        return Err(ApiError::invalid("filename", "the stored file is empty"));
    }
    let override_version = request.override_version.unwrap_or(false);
    let checked = check_file(&known, inspected.image, actual_size, version, override_version)?;
    let version = checked.version;
    record.image_format = checked.image_format;
    record.image = checked.image;
    record.version_overridden = checked.version_overridden;
    let firmware = create_record(
        &state,
        &device_type,
        &version,
        &filename,
        actual_size as i64,
        &actual_hash,
        record,
    )
    .await?;
    super::record(
        &state,
        &admin,
        "firmware.create",
        "firmware",
        Some(firmware.id.to_string()),
        None::<&()>,
        Some(&firmware),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(firmware)))
}

/// A build being reactivated must fit its device type's rules as they are
/// now: they may have changed since it was deactivated (409 otherwise).
async fn ensure_still_fits(state: &AppState, id: i64) -> ApiResult<()> {
    let store = state.store();
    let firmware = store.firmware(id).await?.ok_or_else(|| no_firmware(id))?;
    let Some(device_type) = store.device_type(&firmware.device_type).await? else {
        return Ok(());
    };
    let Some(rules) = device_type.image_rules() else {
        return Ok(());
    };
    // A build stored as raw is read now, and keeps its metadata if it fits.
    let mut firmware = [firmware];
    let (adopted, unreadable) = read_stored_images(state, &mut firmware).await?;
    let [firmware] = firmware;
    let why = match &firmware.image {
        None => unreadable
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "it has no ESP image metadata".to_owned()),
        Some(image) => match rules.check(image) {
            Ok(()) => {
                for (id, image, version_overridden) in adopted {
                    store.adopt_image(id, &image, version_overridden).await?;
                }
                return Ok(());
            }
            Err(misfit) => misfit.to_string(),
        },
    };
    Err(ApiError::Conflict(format!(
        "firmware {id} cannot be reactivated: {} now checks images, and {why}",
        firmware.device_type
    )))
}

/// Filters and page of the firmware list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    device_type: Option<String>,
    is_active: Option<bool>,
    is_stable: Option<bool>,
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Lists firmware, newest version first.
#[utoipa::path(
    get,
    path = "/api/ota/admin/firmware",
    tag = "admin",
    params(ListQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of records", body = Page<Firmware>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_firmware(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Firmware>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let filter = FirmwareFilter {
        device_type: query.device_type,
        is_active: query.is_active,
        is_stable: query.is_stable,
    };
    let mut items = state.store().list_firmware(&filter).await?;
    // SemVer precedence cannot be expressed in SQL; the catalogue is small.
    items.sort_by_cached_key(|f| Reverse((Version::parse(&f.version).ok(), f.build_number, f.id)));
    let total = items.len() as i64;
    let items = items.into_iter().skip(offset as usize).take(limit as usize).collect();
    Ok(axum::Json(Page { items, total }))
}

/// Shows a firmware record with the number of OTA log rows in each status.
#[utoipa::path(
    get,
    path = "/api/ota/admin/firmware/{id}",
    tag = "admin",
    params(("id" = i64, Path, description = "Firmware id")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The record and its statistics", body = FirmwareDetail),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such firmware", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_firmware(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<FirmwareDetail>> {
    let firmware = state.store().firmware(id).await?.ok_or_else(|| no_firmware(id))?;
    let stats = state.store().status_counts(id).await?;
    Ok(axum::Json(FirmwareDetail { firmware, stats }))
}

const PATCHABLE: &[&str] = &[
    "release_notes",
    "is_stable",
    "is_active",
    "is_mandatory",
    "min_version",
    "rollout_percentage",
    "build_number",
    "target_groups",
];
const IMMUTABLE: &[&str] = &[
    "id",
    "version",
    "device_type",
    "filename",
    "binary_path",
    "file_hash",
    "file_size",
];

/// Changes a firmware record.
///
/// Any of `release_notes`, `is_stable`, `is_active`, `is_mandatory`,
/// `min_version`, `rollout_percentage`, `build_number`, `target_groups`
/// (`null` clears `release_notes`, `min_version` and `build_number`; `[]`
/// clears `target_groups`, whose groups must exist). The version, device
/// type, file and hash cannot change (422).
#[utoipa::path(
    patch,
    path = "/api/ota/admin/firmware/{id}",
    tag = "admin",
    params(("id" = i64, Path, description = "Firmware id")),
    request_body = FirmwarePatch,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The updated record", body = Firmware),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such firmware, or no such target group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Reactivating a build that its device type's image rules now refuse", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An immutable or unknown field, or an invalid value", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(firmware_id = id))]
async fn update_firmware(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<i64>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Firmware>> {
    let changes = parse_changes(&body)?;
    if let Some(groups) = &changes.target_groups {
        for name in groups {
            if state.store().group(name).await?.is_none() {
                return Err(ApiError::NotFound(format!("no group '{name}'")));
            }
        }
    }
    let before = state.store().firmware(id).await?.ok_or_else(|| no_firmware(id))?;
    // Under the publication lock: a device type's rules cannot change
    // between the check of a reactivated build and its reactivation.
    let _publishing = state.lock_publication().await?;
    if changes.is_active == Some(true) {
        ensure_still_fits(&state, id).await?;
    }
    let updated = state
        .store()
        .update_firmware(id, &changes)
        .await?
        .ok_or_else(|| no_firmware(id))?;
    tracing::info!(fields = ?body.keys().collect::<Vec<_>>(), "changed firmware");
    super::record(
        &state,
        &admin,
        "firmware.update",
        "firmware",
        Some(id.to_string()),
        Some(&before),
        Some(&updated),
    )
    .await?;
    Ok(axum::Json(updated))
}

fn parse_changes(body: &Map<String, Value>) -> ApiResult<FirmwareChanges> {
    let mut changes = FirmwareChanges::default();
    for (key, value) in body {
        let key = key.as_str();
        if let Some(field) = IMMUTABLE.iter().find(|f| **f == key) {
            return Err(ApiError::invalid(
                field,
                "cannot be changed; upload a new version instead",
            ));
        }
        let Some(field) = PATCHABLE.iter().find(|f| **f == key).copied() else {
            return Err(ApiError::Invalid {
                field: None,
                detail: format!("unknown field '{}'", key.chars().take(40).collect::<String>()),
            });
        };
        let wrong_type = |expected: &str| ApiError::invalid(field, format!("must be {expected}"));
        match field {
            "release_notes" => {
                changes.release_notes = Some(match value {
                    Value::Null => None,
                    Value::String(notes) => Some(notes.clone()),
                    _ => return Err(wrong_type("a string or null")),
                })
            }
            "min_version" => {
                changes.min_version = Some(match value {
                    Value::Null => None,
                    Value::String(v) => Some(Version::parse(v).map_err(|e| ApiError::invalid(field, e))?.to_string()),
                    _ => return Err(wrong_type("a version string or null")),
                })
            }
            "build_number" => {
                changes.build_number = Some(match value {
                    Value::Null => None,
                    Value::Number(n) => {
                        check_build_number(Some(n.as_i64().ok_or_else(|| wrong_type("a whole number"))?))?
                    }
                    _ => return Err(wrong_type("a whole number or null")),
                })
            }
            "target_groups" => {
                let names = value
                    .as_array()
                    .ok_or_else(|| wrong_type("an array of group names"))?
                    .iter()
                    .map(|name| {
                        let name = name.as_str().ok_or_else(|| wrong_type("an array of group names"))?;
                        GroupName::parse(name)
                            .map(String::from)
                            .map_err(|e| ApiError::invalid(field, format!("'{name}': {e}")))
                    })
                    .collect::<ApiResult<Vec<String>>>()?;
                let mut unique = Vec::with_capacity(names.len());
                for name in names {
                    if !unique.contains(&name) {
                        unique.push(name);
                    }
                }
                changes.target_groups = Some(unique);
            }
            "rollout_percentage" => {
                let n = value
                    .as_i64()
                    .ok_or_else(|| wrong_type("a whole number from 0 to 100"))?;
                changes.rollout_percentage = Some(Percent::parse(n).map_err(|e| ApiError::invalid(field, e))?.get());
            }
            flag => {
                let flag_value = value.as_bool().ok_or_else(|| wrong_type("true or false"))?;
                match flag {
                    "is_stable" => changes.is_stable = Some(flag_value),
                    "is_active" => changes.is_active = Some(flag_value),
                    _ => changes.is_mandatory = Some(flag_value),
                }
            }
        }
    }
    Ok(changes)
}

/// Deactivates a firmware: it is no longer offered or served to devices.
/// The binary and its log history stay; `PATCH is_active=true` restores it.
#[utoipa::path(
    delete,
    path = "/api/ota/admin/firmware/{id}",
    tag = "admin",
    params(("id" = i64, Path, description = "Firmware id")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The deactivated record", body = Firmware),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such firmware", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(firmware_id = id))]
async fn deactivate_firmware(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Firmware>> {
    let before = state.store().firmware(id).await?.ok_or_else(|| no_firmware(id))?;
    let changes = FirmwareChanges {
        is_active: Some(false),
        ..Default::default()
    };
    let firmware = state
        .store()
        .update_firmware(id, &changes)
        .await?
        .ok_or_else(|| no_firmware(id))?;
    tracing::info!("deactivated firmware");
    super::record(
        &state,
        &admin,
        "firmware.deactivate",
        "firmware",
        Some(id.to_string()),
        Some(&before),
        Some(&firmware),
    )
    .await?;
    Ok(axum::Json(firmware))
}

/// Recalls a firmware: a bad release, taken back.
///
/// A recalled firmware is never offered again (to new devices or to those
/// that had not finished installing it), its signed links stop working,
/// and its rollouts that are not over are halted. Every device that checks
/// in running its version is offered the previous good version of its
/// type — the highest older build that is active, not recalled, and in the
/// device's channel, groups and rollouts — as a downgrade
/// (`is_downgrade: true`), but never one below the device's anti-rollback
/// counter: such a device stays where it is until a fixed build is
/// uploaded (a fix forward is always preferred over going back).
#[utoipa::path(
    post,
    path = "/api/ota/admin/firmware/{id}/recall",
    tag = "admin",
    params(("id" = i64, Path, description = "Firmware id")),
    request_body = RecallRequest,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The recalled record", body = Firmware),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such firmware", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is recalled already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(firmware_id = id))]
async fn recall_firmware(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<i64>,
    Json(request): Json<RecallRequest>,
) -> ApiResult<axum::Json<Firmware>> {
    let store = state.store();
    let before = store.firmware(id).await?.ok_or_else(|| no_firmware(id))?;
    let reason = request.reason.filter(|r| !r.trim().is_empty());
    let recalled = store
        .recall_firmware(id, reason, admin.name.clone())
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("firmware {id} is recalled already")))?;
    tracing::warn!(version = %recalled.version, reason = ?recalled.recall_reason, "recalled firmware");
    super::record(
        &state,
        &admin,
        "firmware.recall",
        "firmware",
        Some(id.to_string()),
        Some(&before),
        Some(&recalled),
    )
    .await?;
    Ok(axum::Json(recalled))
}

fn check_build_number(value: Option<i64>) -> ApiResult<Option<i64>> {
    match value {
        Some(n) if n < 0 => Err(ApiError::invalid("build_number", "must not be negative")),
        other => Ok(other),
    }
}

fn no_firmware(id: i64) -> ApiError {
    ApiError::NotFound(format!("no firmware with id {id}"))
}
