//! `POST /api/ota/admin/upload`: a firmware binary, streamed to storage.

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use ota_core::wire::{Problem, Uploaded};
use ota_core::{DeviceType, FileName, Percent, Version};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::device_types::known_device_type;
use super::firmware::{NewRecord, create_record};
use super::image_check::check_file;
use crate::blobs::{Blobs, FinishedUpload};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::AdminAuth;
use crate::state::AppState;

/// How much of an oversized body is read and discarded so that the client
/// gets its 413 instead of a reset connection.
const DRAIN_LIMIT: u64 = 32 * 1024 * 1024;
/// The largest text field (release notes).
const MAX_TEXT_FIELD: usize = 64 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::disable())
}

/// The multipart form of an upload.
#[allow(dead_code)]
#[derive(ToSchema)]
struct UploadForm {
    /// The binary.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    device_type: String,
    /// Required for a raw device type. For an `esp-app` one, leave it out to
    /// use the image's own (`esp_app_desc_t.version`, read as docs/esp-images.md
    /// says); when given, it must agree with the image's.
    version: Option<String>,
    /// Keep `version` even though the image says another (default false);
    /// recorded on the firmware as `version_overridden`.
    override_version: Option<bool>,
    build_number: Option<i64>,
    release_notes: Option<String>,
    min_version: Option<String>,
    is_stable: Option<bool>,
    /// With `register`: devices must install it (default false).
    is_mandatory: Option<bool>,
    /// With `register`: 0 to 100 (default 100). Give it here rather than
    /// patching it afterwards, so a new build is never briefly offered to all.
    rollout_percentage: Option<i64>,
    /// Also create the firmware record (default false).
    register: Option<bool>,
}

#[derive(Default)]
struct TextFields {
    device_type: Option<String>,
    version: Option<String>,
    override_version: Option<String>,
    build_number: Option<String>,
    release_notes: Option<String>,
    min_version: Option<String>,
    is_stable: Option<String>,
    is_mandatory: Option<String>,
    rollout_percentage: Option<String>,
    register: Option<String>,
}

/// Uploads a firmware binary.
///
/// The file is streamed to storage (the firmware folder, or the bucket as a
/// multipart upload) while its SHA-256 is computed, under a temporary name,
/// and moved to `<device_type>/v<version>.bin` only when complete: a
/// cut-off upload leaves nothing behind. With `register=true`
/// the firmware record is created as well (as `POST /api/ota/admin/firmware`
/// would; `is_mandatory` and `rollout_percentage` are form fields too, so a
/// new build can start at a small rollout). A file of a version that is already registered
/// is never replaced (409).
#[utoipa::path(
    post,
    path = "/api/ota/admin/upload",
    tag = "admin",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 201, description = "Stored (and registered, when asked)", body = Uploaded),
        (status = 400, description = "Malformed multipart", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This version is already registered", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than OTA_MAX_UPLOAD_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty file, or an invalid device_type, version or field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn upload(
    State(state): State<AppState>,
    admin: AdminAuth,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, axum::Json<Uploaded>)> {
    let mut multipart = multipart.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let max = state.settings().max_upload_bytes;
    let mut text = TextFields::default();
    let mut file: Option<FinishedUpload> = None;

    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let slot = match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(ApiError::invalid("file", "only one file may be uploaded at a time"));
                }
                match receive_file(state.blobs(), field, max).await {
                    Err(too_large @ ApiError::PayloadTooLarge(_)) => {
                        drain_rest(&mut multipart).await;
                        return Err(too_large);
                    }
                    received => file = Some(received?),
                }
                continue;
            }
            "device_type" => &mut text.device_type,
            "version" => &mut text.version,
            "override_version" => &mut text.override_version,
            "build_number" => &mut text.build_number,
            "release_notes" => &mut text.release_notes,
            "min_version" => &mut text.min_version,
            "is_stable" => &mut text.is_stable,
            "is_mandatory" => &mut text.is_mandatory,
            "rollout_percentage" => &mut text.rollout_percentage,
            "register" => &mut text.register,
            _ => {
                return Err(ApiError::Invalid {
                    field: None,
                    detail: format!("unknown form field '{}'", name.chars().take(40).collect::<String>()),
                });
            }
        };
        *slot = Some(read_text(field, &name).await?);
    }

    let device_type = required(&text.device_type, "device_type")?;
    let device_type = DeviceType::parse(device_type).map_err(|e| ApiError::invalid("device_type", e))?;
    let version = text
        .version
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| Version::parse(v).map_err(|e| ApiError::invalid("version", e)))
        .transpose()?;
    let override_version = parse_bool(text.override_version.as_deref(), "override_version")?.unwrap_or(false);
    let register = parse_bool(text.register.as_deref(), "register")?.unwrap_or(false);
    let mut record = NewRecord {
        build_number: parse_build_number(text.build_number.as_deref())?,
        release_notes: text.release_notes.filter(|notes| !notes.is_empty()),
        min_version: text
            .min_version
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| Version::parse(v).map_err(|e| ApiError::invalid("min_version", e)))
            .transpose()?,
        is_stable: parse_bool(text.is_stable.as_deref(), "is_stable")?.unwrap_or(false),
        is_mandatory: parse_bool(text.is_mandatory.as_deref(), "is_mandatory")?.unwrap_or(false),
        rollout: parse_rollout(text.rollout_percentage.as_deref())?,
        ..NewRecord::default()
    };
    let file = file.ok_or_else(|| ApiError::invalid("file", "a file is required"))?;
    if file.size == 0 {
        return Err(ApiError::invalid("file", "the file is empty"));
    }

    // The whole file is in: from here on the publication runs in a task of
    // its own, to its end even if the client goes away, so a file moved
    // into place gets its record, and the lock is held until the storage is
    // done with the object. Under the lock, so that a device type's rules
    // cannot change between the check and the publication.
    tokio::spawn(async move {
        let _publishing = state.lock_publication().await?;
        let known = known_device_type(&state, &device_type).await?;
        let checked = check_file(&known, file.image.clone(), file.size, version, override_version)?;
        let version = checked.version;
        record.image_format = checked.image_format;
        record.image = checked.image;
        record.version_overridden = checked.version_overridden;
        let filename = FileName::parse(&version.file_name()).map_err(|e| ApiError::invalid("version", e))?;
        let binary_path = Blobs::relative_path(&device_type, &filename);
        let (file_size, file_hash) = (file.size as i64, file.sha256.clone());
        let store = state.store();
        if let Some(existing) = store
            .firmware_by_version(device_type.as_str(), &version.to_string())
            .await?
        {
            return Err(ApiError::Conflict(format!(
                "{device_type} {version} is already registered as firmware {}; its file cannot be replaced",
                existing.id
            )));
        }
        if store.binary_path_in_use(&binary_path).await? {
            return Err(ApiError::Conflict(format!(
                "{binary_path} belongs to a registered firmware"
            )));
        }
        state.blobs().publish(file, &device_type, &filename).await?;
        tracing::info!(%binary_path, file_size, file_hash = %file_hash, "stored an upload");
        let stored =
            serde_json::json!({"binary_path": binary_path, "file_size": file_size, "file_hash": file_hash.to_string()});
        super::record(
            &state,
            &admin,
            "firmware.upload",
            "file",
            Some(binary_path.clone()),
            None::<&()>,
            Some(&stored),
        )
        .await?;

        let (image_format, image, version_overridden) =
            (record.image_format, record.image.clone(), record.version_overridden);
        let firmware = if register {
            let firmware =
                create_record(&state, &device_type, &version, &filename, file_size, &file_hash, record).await?;
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
            Some(firmware)
        } else {
            None
        };
        Ok((
            StatusCode::CREATED,
            axum::Json(Uploaded {
                filename: filename.to_string(),
                binary_path,
                file_size,
                file_hash: file_hash.to_string(),
                version: Some(version.to_string()),
                image_format,
                image,
                version_overridden,
                firmware,
            }),
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("the publication task failed: {e}")))?
}

/// Streams the `file` field to a temporary name; over `max` bytes is 413.
async fn receive_file(blobs: &Blobs, mut field: Field<'_>, max: u64) -> ApiResult<FinishedUpload> {
    let mut upload = blobs.begin_upload().await?;
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if upload.size() + chunk.len() as u64 > max {
            drop(upload);
            let mut drained = 0u64;
            while let Ok(Some(chunk)) = field.chunk().await {
                drained += chunk.len() as u64;
                if drained > DRAIN_LIMIT {
                    break;
                }
            }
            return Err(ApiError::PayloadTooLarge(format!(
                "the file is larger than the maximum of {max} bytes"
            )));
        }
        upload.write(&chunk).await?;
    }
    Ok(upload.finish().await?)
}

/// Reads and discards the fields after a refused file, up to a limit, so
/// that the client reads its 413 instead of a reset connection.
async fn drain_rest(multipart: &mut Multipart) {
    let mut drained = 0u64;
    while let Ok(Some(mut next)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = next.chunk().await {
            drained += chunk.len() as u64;
            if drained > DRAIN_LIMIT {
                return;
            }
        }
    }
}

async fn read_text(mut field: Field<'_>, name: &str) -> ApiResult<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ApiError::PayloadTooLarge(format!(
                "the form field '{name}' is larger than 64 KiB"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::BadRequest(format!("the form field '{name}' is not UTF-8")))
}

fn malformed(error: MultipartError) -> ApiError {
    ApiError::BadRequest(format!("malformed multipart body: {}", error.body_text()))
}

fn required<'a>(value: &'a Option<String>, field: &'static str) -> ApiResult<&'a str> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::invalid(field, "is required"))
}

fn parse_bool(value: Option<&str>, field: &'static str) -> ApiResult<Option<bool>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
        Some("false" | "0" | "no" | "off") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid(field, "must be true or false")),
    }
}

fn parse_rollout(value: Option<&str>) -> ApiResult<Percent> {
    match value.map(str::trim) {
        None | Some("") => Ok(Percent::FULL),
        Some(digits) => {
            let n = digits
                .parse::<i64>()
                .map_err(|_| ApiError::invalid("rollout_percentage", "must be a whole number from 0 to 100"))?;
            Percent::parse(n).map_err(|e| ApiError::invalid("rollout_percentage", e))
        }
    }
}

fn parse_build_number(value: Option<&str>) -> ApiResult<Option<i64>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(digits) => digits
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::invalid("build_number", "must be a whole number, 0 or more")),
    }
}
