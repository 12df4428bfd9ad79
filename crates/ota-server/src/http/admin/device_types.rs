//! Device types: create, list, show, change. Firmware can only be uploaded
//! or registered for a device type that exists.

use axum::extract::State;
use axum::http::StatusCode;
use std::collections::HashMap;

use ota_core::esp::{Chip, ChipRevision, EspImage};
use ota_core::wire::{DeviceTypePatch, DeviceTypeRecord, Firmware, ImageFormat, NewDeviceType, Page, Problem};
use ota_core::{DeviceType, FileName, Version};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_bounds;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Json, Path, Query};
use crate::state::AppState;
use crate::store::{DeviceTypeValues, FirmwareFilter, is_unique_violation};

/// ESP-IDF's `esp_app_desc_t.project_name` is 32 bytes with its NUL.
const MAX_PROJECT_NAME: usize = 31;
const MAX_DESCRIPTION: usize = 1024;
/// Fields of the record that the server keeps (the name cannot change either).
const READ_ONLY: &[&str] = &["firmware_count", "created_at", "updated_at"];
/// Fields a PATCH may change but not clear.
/// The fields a PATCH may change, all text.
const TEXT_FIELDS: &[&str] = &[
    "image_format",
    "chip",
    "project_name",
    "min_chip_revision",
    "max_chip_revision",
    "description",
];
const NOT_NULL: &[&str] = &["image_format", "min_chip_revision"];
/// How many misfitting firmware a refusal names before it summarises.
const NAMED_MISFITS: usize = 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_device_type, list_device_types))
        .routes(routes!(get_device_type, update_device_type))
}

/// The record of a device type that firmware is uploaded or registered for;
/// an unknown one is 422 on `device_type`, saying how to create it.
pub async fn known_device_type(state: &AppState, device_type: &DeviceType) -> ApiResult<DeviceTypeRecord> {
    state
        .store()
        .device_type(device_type.as_str())
        .await?
        .ok_or_else(|| ApiError::Invalid {
            field: Some("device_type"),
            detail: format!(
                "unknown device type '{device_type}': create it first with POST /api/ota/admin/device-types \
                 (e.g. {{\"name\":\"{device_type}\",\"image_format\":\"raw\"}}) or \
                 'otactl device-type create {device_type} --image-format raw'"
            ),
        })
}

/// Creates a device type.
///
/// `esp-app` types need a known `chip` (esptool's name, `esp32p4`); their
/// uploads must be ESP-IDF app images for that chip that boot on every
/// revision from `min_chip_revision` (default `v0.0`) to `max_chip_revision`
/// (default: no bound), with `project_name` when it is set. `raw` types
/// take any file; a `chip` is kept as documentation, but `project_name` and
/// the revisions only apply to `esp-app` (422). A name that exists is 409;
/// an unknown field is 422.
#[utoipa::path(
    post,
    path = "/api/ota/admin/device-types",
    tag = "admin",
    request_body = NewDeviceType,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 201, description = "The new device type", body = DeviceTypeRecord),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A device type of this name exists", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid name, image_format, chip or revision, a minimum above the maximum, a field that does not apply to raw, or an unknown field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_device_type(
    State(state): State<AppState>,
    admin: AdminAuth,
    Json(request): Json<NewDeviceType>,
) -> ApiResult<(StatusCode, axum::Json<DeviceTypeRecord>)> {
    let name = DeviceType::parse(&request.name).map_err(|e| ApiError::invalid("name", e))?;
    let image_format = parse_image_format(&request.image_format)?;
    if image_format == ImageFormat::Raw {
        let esp_only = [
            ("project_name", request.project_name.is_some()),
            ("min_chip_revision", request.min_chip_revision.is_some()),
            ("max_chip_revision", request.max_chip_revision.is_some()),
        ];
        if let Some((field, _)) = esp_only.into_iter().find(|(_, given)| *given) {
            return Err(only_for_esp_app(field));
        }
    }
    let values = DeviceTypeValues {
        image_format,
        chip: request.chip.as_deref().map(parse_chip).transpose()?,
        project_name: request.project_name.as_deref().map(check_project_name).transpose()?,
        min_chip_revision: request
            .min_chip_revision
            .as_deref()
            .map(|r| parse_revision("min_chip_revision", r))
            .transpose()?
            .unwrap_or(ChipRevision::from_full(0)),
        max_chip_revision: request
            .max_chip_revision
            .as_deref()
            .map(|r| parse_revision("max_chip_revision", r))
            .transpose()?,
        description: request.description.as_deref().map(check_description).transpose()?,
    };
    check_consistent(&values)?;

    let record = match state.store().insert_device_type(name.as_str(), &values).await {
        Ok(record) => record,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::Conflict(format!(
                "a device type named '{name}' exists; change it with PATCH /api/ota/admin/device-types/{name}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(device_type = %name, image_format = %image_format, "created a device type");
    super::record(
        &state,
        &admin,
        "device_type.create",
        "device_type",
        Some(name.to_string()),
        None::<&()>,
        Some(&record),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(record)))
}

/// The page of the device type list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Lists device types, sorted by name.
#[utoipa::path(
    get,
    path = "/api/ota/admin/device-types",
    tag = "admin",
    params(ListQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of device types", body = Page<DeviceTypeRecord>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_device_types(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<DeviceTypeRecord>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let (items, total) = state.store().list_device_types(limit, offset).await?;
    Ok(axum::Json(Page { items, total }))
}

/// Shows a device type.
#[utoipa::path(
    get,
    path = "/api/ota/admin/device-types/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The device type's name")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The device type", body = DeviceTypeRecord),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such device type", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_device_type(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<DeviceTypeRecord>> {
    let record = state
        .store()
        .device_type(&name)
        .await?
        .ok_or_else(|| no_device_type(&name))?;
    Ok(axum::Json(record))
}

/// Changes a device type.
///
/// Any of `image_format`, `chip`, `project_name`, `min_chip_revision`,
/// `max_chip_revision`, `description`; `null` clears `project_name`,
/// `max_chip_revision`, `description` and (for `raw`) `chip`. The name
/// cannot change (422). Switching to `raw` clears `project_name` and the
/// revisions. When the change makes (or keeps) the type `esp-app` with new
/// rules, every active firmware of the type must still fit them: one that
/// does not, or one stored as `raw` without image metadata, makes the
/// change 409, naming them; deactivate them first.
#[utoipa::path(
    patch,
    path = "/api/ota/admin/device-types/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The device type's name")),
    request_body = DeviceTypePatch,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The changed device type", body = DeviceTypeRecord),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such device type", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Active firmware of this type would not fit the new rules", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The name or another read-only field, an unknown field, or an invalid value", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(device_type = %name))]
async fn update_device_type(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(name): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<DeviceTypeRecord>> {
    if body.contains_key("name") {
        return Err(ApiError::invalid(
            "name",
            "cannot be changed: it names the type's firmware folder; create a device type of the new name instead",
        ));
    }
    if let Some(field) = READ_ONLY.iter().find(|field| body.contains_key(**field)) {
        return Err(ApiError::invalid(field, "is read-only"));
    }
    if let Some(field) = NOT_NULL.iter().find(|field| body.get(**field) == Some(&Value::Null)) {
        return Err(ApiError::invalid(field, "cannot be null"));
    }
    // Every changeable field is text: name the one that is not.
    if let Some(field) = TEXT_FIELDS
        .iter()
        .find(|field| body.get(**field).is_some_and(|v| !(v.is_string() || v.is_null())))
    {
        return Err(ApiError::invalid(field, "must be a string"));
    }
    let fields: Vec<String> = body.keys().cloned().collect();
    let patch: DeviceTypePatch = serde_json::from_value(Value::Object(body)).map_err(|e| ApiError::Invalid {
        field: None,
        detail: e.to_string(),
    })?;

    // Uploads and registrations hold this lock while they write a record:
    // none can slip in between the check of the firmware and the change.
    let _publishing = state.lock_publication().await?;
    let store = state.store();
    let current = store.device_type(&name).await?.ok_or_else(|| no_device_type(&name))?;
    let values = apply(&current, &patch)?;
    if values == DeviceTypeValues::from(&current) {
        return Ok(axum::Json(current));
    }
    let changed = DeviceTypeRecord {
        image_format: values.image_format,
        chip: values.chip.clone(),
        project_name: values.project_name.clone(),
        min_chip_revision: values.min_chip_revision,
        max_chip_revision: values.max_chip_revision,
        description: values.description.clone(),
        ..current.clone()
    };
    if let Some(rules) = changed.image_rules()
        && current.image_rules().as_ref() != Some(&rules)
    {
        let mut active = store
            .list_firmware(&FirmwareFilter {
                device_type: Some(name.clone()),
                is_active: Some(true),
                is_stable: None,
            })
            .await?;
        let (adopted, unreadable) = read_stored_images(&state, &mut active).await?;
        let misfits = misfits(&active, &unreadable, |image| {
            rules.check(image).err().map(|m| m.to_string())
        });
        if !misfits.is_empty() {
            return Err(refusal(&name, &misfits));
        }
        for (id, image, version_overridden) in adopted {
            store.adopt_image(id, &image, version_overridden).await?;
            tracing::info!(firmware_id = id, "adopted a stored file's ESP image metadata");
        }
    }
    let record = store
        .update_device_type(&name, &values)
        .await?
        .ok_or_else(|| no_device_type(&name))?;
    tracing::info!(?fields, image_format = %record.image_format, "changed a device type");
    super::record(
        &state,
        &admin,
        "device_type.update",
        "device_type",
        Some(record.name.clone()),
        Some(&current),
        Some(&record),
    )
    .await?;
    Ok(axum::Json(record))
}

/// The values after a patch, checked as a whole.
fn apply(current: &DeviceTypeRecord, patch: &DeviceTypePatch) -> ApiResult<DeviceTypeValues> {
    let mut values = DeviceTypeValues::from(current);
    if let Some(format) = &patch.image_format {
        values.image_format = parse_image_format(format)?;
    }
    if let Some(chip) = &patch.chip {
        values.chip = chip.as_deref().map(parse_chip).transpose()?;
    }
    if let Some(project_name) = &patch.project_name {
        values.project_name = project_name.as_deref().map(check_project_name).transpose()?;
    }
    if let Some(min) = &patch.min_chip_revision {
        values.min_chip_revision = parse_revision("min_chip_revision", min)?;
    }
    if let Some(max) = &patch.max_chip_revision {
        values.max_chip_revision = max
            .as_deref()
            .map(|r| parse_revision("max_chip_revision", r))
            .transpose()?;
    }
    if let Some(description) = &patch.description {
        values.description = description.as_deref().map(check_description).transpose()?;
    }
    if values.image_format == ImageFormat::Raw {
        let esp_only = [
            ("project_name", matches!(patch.project_name, Some(Some(_)))),
            ("min_chip_revision", patch.min_chip_revision.is_some()),
            ("max_chip_revision", matches!(patch.max_chip_revision, Some(Some(_)))),
        ];
        if let Some((field, _)) = esp_only.into_iter().find(|(_, given)| *given) {
            return Err(only_for_esp_app(field));
        }
        values.project_name = None;
        values.min_chip_revision = ChipRevision::from_full(0);
        values.max_chip_revision = None;
    }
    check_consistent(&values)?;
    Ok(values)
}

/// What `esp-app` needs and what no type may have.
fn check_consistent(values: &DeviceTypeValues) -> ApiResult<()> {
    if values.image_format == ImageFormat::EspApp && values.chip.is_none() {
        return Err(ApiError::invalid(
            "chip",
            format!("is required for esp-app device types; one of {}", Chip::known_names()),
        ));
    }
    if let Some(max) = values.max_chip_revision
        && max < values.min_chip_revision
    {
        return Err(ApiError::invalid(
            "max_chip_revision",
            format!("{max} is below min_chip_revision {}", values.min_chip_revision),
        ));
    }
    Ok(())
}

/// The active firmware a device type's new rules would refuse, with why:
/// `check` says why an image does not fit; a record without image
/// metadata never fits.
/// Reads the stored file of each firmware that was stored as raw (before
/// its device type checked images), unless its metadata is already known, as an ESP app image, so that a
/// fleet's firmware can move to `esp-app` without being uploaded again.
/// Fills in `image` where the file is one, and answers what to adopt
/// (firmware id, image, whether its version differs from the image's) and
/// why the other files are not images.
pub(super) async fn read_stored_images(
    state: &AppState,
    active: &mut [Firmware],
) -> ApiResult<(Vec<(i64, EspImage, bool)>, HashMap<i64, String>)> {
    let (mut adopted, mut unreadable) = (Vec::new(), HashMap::new());
    for firmware in active.iter_mut().filter(|f| f.image_format != ImageFormat::EspApp) {
        let parsed = match (
            &firmware.image,
            DeviceType::parse(&firmware.device_type),
            FileName::parse(&firmware.filename),
        ) {
            (Some(image), _, _) => Ok(image.clone()),
            (None, Ok(device_type), Ok(file)) => state.blobs().inspect(&device_type, &file).await?.image,
            _ => {
                unreadable.insert(firmware.id, "its stored file cannot be named".to_owned());
                continue;
            }
        };
        match parsed {
            Ok(image) => {
                let overridden = Version::from_app_descriptor(&image.app.version)
                    .map_or(true, |described| described.to_string() != firmware.version);
                adopted.push((firmware.id, image.clone(), overridden));
                firmware.image = Some(image);
            }
            Err(e) => {
                unreadable.insert(firmware.id, format!("its stored file is not an ESP app image ({e})"));
            }
        }
    }
    Ok((adopted, unreadable))
}

fn misfits(
    active: &[Firmware],
    unreadable: &HashMap<i64, String>,
    check: impl Fn(&EspImage) -> Option<String>,
) -> Vec<(i64, String, String)> {
    let mut found: Vec<(i64, String, String)> = active
        .iter()
        .filter_map(|firmware| {
            let why = match &firmware.image {
                None => Some(
                    unreadable
                        .get(&firmware.id)
                        .cloned()
                        .unwrap_or_else(|| "it was stored as raw, without ESP image metadata".to_owned()),
                ),
                Some(image) => check(image),
            };
            why.map(|why| (firmware.id, firmware.version.clone(), why))
        })
        .collect();
    found.sort();
    found
}

fn refusal(name: &str, misfits: &[(i64, String, String)]) -> ApiError {
    let mut named: Vec<String> = misfits
        .iter()
        .take(NAMED_MISFITS)
        .map(|(id, version, why)| format!("firmware {id} ({version}): {why}"))
        .collect();
    if misfits.len() > NAMED_MISFITS {
        named.push(format!("and {} more", misfits.len() - NAMED_MISFITS));
    }
    let ids: Vec<String> = misfits.iter().map(|(id, _, _)| id.to_string()).collect();
    ApiError::Conflict(format!(
        "device type '{name}' has active firmware that the new rules would refuse: {}. Deactivate \
         {} first (DELETE /api/ota/admin/firmware/{{id}} for firmware {}), then change the device type",
        named.join("; "),
        if misfits.len() == 1 { "it" } else { "them" },
        ids.join(", ")
    ))
}

fn parse_image_format(value: &str) -> ApiResult<ImageFormat> {
    ImageFormat::parse(value).ok_or_else(|| {
        ApiError::invalid(
            "image_format",
            format!(
                "'{}' is not an image format; use esp-app or raw",
                value.chars().take(40).collect::<String>()
            ),
        )
    })
}

/// esptool's name of a known chip.
fn parse_chip(value: &str) -> ApiResult<String> {
    Chip::parse(value).map(|chip| chip.to_string()).ok_or_else(|| {
        ApiError::invalid(
            "chip",
            format!(
                "'{}' is not a chip this server knows; one of {}",
                value.chars().take(40).collect::<String>(),
                Chip::known_names()
            ),
        )
    })
}

fn parse_revision(field: &'static str, value: &str) -> ApiResult<ChipRevision> {
    ChipRevision::parse(value).map_err(|e| ApiError::invalid(field, e))
}

fn check_project_name(value: &str) -> ApiResult<String> {
    if value.is_empty() || value.len() > MAX_PROJECT_NAME || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "project_name",
            format!("must be 1 to {MAX_PROJECT_NAME} bytes without control characters, as ESP-IDF stores it"),
        ));
    }
    Ok(value.to_owned())
}

fn check_description(value: &str) -> ApiResult<String> {
    if value.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn only_for_esp_app(field: &'static str) -> ApiError {
    ApiError::invalid(
        field,
        "only applies to esp-app device types; a raw device type's files are not checked",
    )
}

fn no_device_type(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no device type '{}'",
        name.chars().take(64).collect::<String>()
    ))
}
