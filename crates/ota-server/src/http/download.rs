//! `GET`/`HEAD /api/ota/download/{id}`: our own firmware file handler.
//!
//! Strong `ETag` = the SHA-256, single byte ranges with an end past the file
//! clamped (resuming ESP32s ask for one byte too many), `If-Range`,
//! `If-None-Match`, `HEAD` with the full `Content-Length`, never compressed.
//! The bytes behind an id never change, so every validator is stable.
//!
//! With `OTA_DOWNLOAD_REDIRECT=presigned` (S3 storage only), a GET that
//! would send bytes is answered `302 Found` with a presigned URL of the
//! object instead, once the link is verified and the download counted.
//! What the store cannot answer as we would stays here: `HEAD` (a URL
//! presigned for GET does not take HEAD), a matching `If-None-Match` (304)
//! and an `If-Range` that no longer matches (the whole file, 200).

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ota_core::DeviceId;
use ota_core::wire::{Firmware, Problem};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{DeviceAuth, Path, Query};
use crate::config::DownloadRedirect;
use crate::hot::HotError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(download))
}

/// A signed link's parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkParams {
    /// The device the link was made for.
    device: Option<String>,
    /// Unix seconds after which the link no longer works.
    expires: Option<i64>,
    /// HMAC-SHA256 of the firmware id, device and expiry, hex.
    sig: Option<String>,
}

/// Who is downloading: a device by token, or the holder of a signed link.
struct Downloader {
    device_id: Option<DeviceId>,
    /// Present when a bearer token was used; it may limit the device type.
    token: Option<DeviceAuth>,
    /// When the signed link used expires (unix seconds).
    link_expires: Option<i64>,
}

/// The longest a presigned URL may live (S3's limit: 7 days).
const MAX_PRESIGNED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Downloads a firmware binary.
///
/// Auth: a device bearer token, or the `expires` + `sig` of a link handed out
/// by `check`. Supports `Range: bytes=a-b | a- | -n` (206; an end past the
/// file is clamped; only a start past the end is 416), `If-Range`,
/// `If-None-Match` (304) and `HEAD` (200 with the full Content-Length).
///
/// With `OTA_DOWNLOAD_REDIRECT=presigned`, a GET is answered 302 with an
/// absolute presigned URL of the object in the bucket, valid as long as the
/// link (or `OTA_DOWNLOAD_URL_TTL` with a device token); the Range is then
/// applied by the store. HEAD, 304 and a failed If-Range are answered here.
#[utoipa::path(
    method(get, head),
    path = "/api/ota/download/{firmware_id}",
    tag = "device",
    params(("firmware_id" = i64, Path, description = "Firmware id"), LinkParams),
    security((), ("device_jwt" = [])),
    responses(
        (status = 200, description = "The whole binary", content_type = "application/octet-stream",
         headers(("ETag" = String, description = "\"<sha256>\""), ("X-Firmware-SHA256" = String), ("Accept-Ranges" = String))),
        (status = 206, description = "The requested byte range", content_type = "application/octet-stream",
         headers(("Content-Range" = String))),
        (status = 302, description = "With OTA_DOWNLOAD_REDIRECT=presigned: GET the object from the store instead",
         headers(("Location" = String, description = "Absolute presigned URL of the object"), ("X-Firmware-SHA256" = String))),
        (status = 304, description = "If-None-Match matched"),
        (status = 401, description = "Neither a device token nor a signed link", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A bad or expired link, or another device type's firmware", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or deactivated firmware", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range starts past the end", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(firmware_id))]
async fn download(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(firmware_id): Path<i64>,
    Query(link): Query<LinkParams>,
) -> ApiResult<Response> {
    let downloader = authorize(&state, &headers, firmware_id, &link)?;
    let catalogue = state.catalogue().snapshot().await?;
    let firmware = &catalogue
        .get(firmware_id)
        .ok_or_else(|| ApiError::NotFound(format!("no active firmware with id {firmware_id}")))?
        .record;
    if firmware.recalled_at.is_some() {
        return Err(ApiError::NotFound(format!("firmware {firmware_id} was recalled")));
    }
    if let Some(token) = &downloader.token {
        token.ensure_device_type(&firmware.device_type)?;
    }

    let size = u64::try_from(firmware.file_size).unwrap_or(0);
    let etag = format!("\"{}\"", firmware.file_hash);
    let last_modified = httpdate::fmt_http_date(firmware.created_at.into());
    let mut response_headers = HeaderMap::new();
    let mut set = |name, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    };
    set(header::ETAG, etag.clone());
    set(header::LAST_MODIFIED, last_modified.clone());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::CACHE_CONTROL, "private, max-age=3600, no-transform".into());
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(
        header::HeaderName::from_static("x-firmware-sha256"),
        firmware.file_hash.clone(),
    );
    set(
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{}\"", download_name(firmware)),
    );

    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| etag_list_matches(v, &etag))
    {
        return Ok(not_modified(&response_headers, size));
    }
    let range_allowed = if_range_allows(&headers, &etag, &last_modified);
    let range = if method == Method::GET && range_allowed {
        headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_range(v, size))
    } else {
        None
    };
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Err(Unsatisfiable)) => return Err(ApiError::RangeNotSatisfiable { size }),
        Some(Ok((start, end))) => {
            response_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).expect("digits are a valid header"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD {
        return Ok((status, response_headers).into_response());
    }

    if start == 0
        && let Some(device_id) = &downloader.device_id
    {
        count_download(&state, firmware.id, device_id).await;
    }
    if state.settings().download_redirect == DownloadRedirect::Presigned && range_allowed {
        return redirect_to_store(&state, firmware, &downloader).await;
    }
    metrics::counter!("ota_download_bytes_total").increment(len);
    let body = match state.hot_images().image(state.blobs(), firmware).await {
        Ok(Some(image)) => Body::from(image.slice(start as usize..(start + len) as usize)),
        Ok(None) => Body::from_stream(state.blobs().read_range(&firmware.binary_path, start, len).await?),
        Err(HotError::Damaged { id }) => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "the stored file of firmware {id} is damaged"
            )));
        }
        Err(HotError::Io(e)) => return Err(ApiError::Internal(e)),
    };
    Ok((status, response_headers, body).into_response())
}

/// A signed link, when the request carries one, decides alone: it names the
/// firmware and the device it was made for. Otherwise a device token must.
fn authorize(state: &AppState, headers: &HeaderMap, firmware_id: i64, link: &LinkParams) -> ApiResult<Downloader> {
    if link.expires.is_none() && link.sig.is_none() {
        return match DeviceAuth::from_headers(headers, state)? {
            Some(device) => Ok(Downloader {
                device_id: Some(device.device_id.clone()),
                token: Some(device),
                link_expires: None,
            }),
            None => Err(ApiError::MissingCredentials(
                "a device bearer token or a signed link (expires, sig) is required".into(),
            )),
        };
    }
    let bad_link = || ApiError::Forbidden("the download link's signature does not match".into());
    let (Some(expires), Some(sig)) = (link.expires, link.sig.as_deref()) else {
        return Err(bad_link());
    };
    let device_id = link
        .device
        .as_deref()
        .map(DeviceId::parse)
        .transpose()
        .map_err(|_| bad_link())?;
    let now = chrono::Utc::now().timestamp();
    state
        .links()
        .verify(firmware_id, device_id.as_ref(), expires, sig, now)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    Ok(Downloader {
        device_id,
        token: None,
        link_expires: Some(expires),
    })
}

/// `302 Found` to a presigned URL of the firmware's object, valid for what
/// is left of the link's lifetime (or `OTA_DOWNLOAD_URL_TTL`), at most 7 days.
async fn redirect_to_store(state: &AppState, firmware: &Firmware, downloader: &Downloader) -> ApiResult<Response> {
    let ttl = match downloader.link_expires {
        Some(expires) => Duration::from_secs(
            u64::try_from(expires - chrono::Utc::now().timestamp())
                .unwrap_or(0)
                .max(1),
        ),
        None => Duration::from_secs(state.settings().download_url_ttl),
    }
    .min(MAX_PRESIGNED_TTL);
    let location = state
        .blobs()
        .presigned_get(&firmware.binary_path, ttl)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("presigned downloads need S3 storage")))?;
    let location = HeaderValue::from_str(location.as_str())
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("a presigned URL is not a header value")))?;
    metrics::counter!("ota_download_redirects_total").increment(1);
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, location);
    // A presigned URL is this requester's, and expires: nobody keeps it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if let Ok(sha256) = HeaderValue::from_str(&firmware.file_hash) {
        headers.insert(header::HeaderName::from_static("x-firmware-sha256"), sha256);
    }
    Ok((StatusCode::FOUND, headers).into_response())
}

async fn count_download(state: &AppState, firmware_id: i64, device_id: &DeviceId) {
    let counted = state.counted_downloads();
    if counted.contains(firmware_id, device_id.as_str()) {
        return;
    }
    // Counting must never cost the device its download.
    match state.store().count_download(firmware_id, device_id.as_str()).await {
        Ok(_) => counted.remember(firmware_id, device_id.as_str()),
        Err(e) => tracing::warn!(error = %e, "could not count a download"),
    }
}

fn download_name(firmware: &Firmware) -> String {
    format!("{}-v{}.bin", firmware.device_type, firmware.version)
}

#[derive(Debug, PartialEq, Eq)]
struct Unsatisfiable;

/// A single `bytes=` range as inclusive `(start, end)`, clamped to the file.
/// `None` for anything else (other units, several ranges, bad syntax): the
/// whole file is sent then, as RFC 9110 allows.
fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), Unsatisfiable>> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number =
        |s: &str| -> Option<u64> { (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())? };
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || size == 0 {
            return Some(Err(Unsatisfiable));
        }
        return Some(Ok((size.saturating_sub(suffix), size - 1)));
    }
    let start = number(first)?;
    let end = if last.is_empty() { u64::MAX } else { number(last)? };
    if end < start {
        return None;
    }
    if start >= size {
        return Some(Err(Unsatisfiable));
    }
    Some(Ok((start, end.min(size - 1))))
}

/// Whether an `If-None-Match` list names this representation (weak comparison).
fn etag_list_matches(value: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = value.to_str() else {
        return false;
    };
    list.split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// A 304 carries the validators and caching headers of the 200 it stands for
/// (RFC 9110 15.4.5), and, for HEAD, the length the 200 would have.
fn not_modified(full: &HeaderMap, size: u64) -> Response {
    let mut headers = HeaderMap::new();
    for name in [header::ETAG, header::LAST_MODIFIED, header::CACHE_CONTROL] {
        if let Some(value) = full.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    (StatusCode::NOT_MODIFIED, headers).into_response()
}

/// Whether a `Range` may be honoured: no `If-Range`, or one that names this
/// representation (the strong ETag, or exactly its Last-Modified date).
fn if_range_allows(headers: &HeaderMap, etag: &str, last_modified: &str) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(value) if value.starts_with('"') => value == etag,
        Some(value) if value.starts_with("W/") => false,
        Some(value) => value == last_modified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_and_clamped() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok((0, 99))));
        assert_eq!(
            parse_range("bytes=50-100", 100),
            Some(Ok((50, 99))),
            "one past the end is clamped"
        );
        assert_eq!(parse_range("bytes=50-100000", 100), Some(Ok((50, 99))));
    }

    #[test]
    fn a_start_past_the_end_is_unsatisfiable() {
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(Unsatisfiable)));
        assert_eq!(parse_range("bytes=100-200", 100), Some(Err(Unsatisfiable)));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(Unsatisfiable)));
    }

    #[test]
    fn ranges_we_do_not_serve_are_ignored() {
        for ignored in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "bytes=--1",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(ignored, 100), None, "{ignored}");
        }
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let etag = "\"abc\"";
        assert!(etag_list_matches(&HeaderValue::from_static("\"abc\""), etag));
        assert!(etag_list_matches(&HeaderValue::from_static("W/\"abc\""), etag));
        assert!(etag_list_matches(&HeaderValue::from_static("\"x\", \"abc\""), etag));
        assert!(etag_list_matches(&HeaderValue::from_static("*"), etag));
        assert!(!etag_list_matches(&HeaderValue::from_static("\"x\""), etag));
    }
}
