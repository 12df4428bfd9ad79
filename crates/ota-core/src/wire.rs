//! The JSON shapes of the HTTP contract (`shared/API.md`), shared by the
//! server, the CLI and the simulator.
//!
//! Requests keep names and versions as plain strings so that the server can
//! say precisely which field was refused; responses carry checked values.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::OtaStatus;

/// `POST /api/ota/check`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckRequest {
    #[schema(example = "scales_bridge_tab5")]
    pub device_type: String,
    #[schema(example = "1.0.0")]
    pub current_version: String,
    #[serde(default)]
    pub build_number: Option<i64>,
    /// `stable` (the default) or a channel that admits pre-release builds.
    #[serde(default)]
    pub channel: Option<String>,
}

/// An update offered to a device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Offer {
    /// Always `true`.
    pub update_available: bool,
    pub firmware_id: i64,
    pub version: String,
    pub build_number: Option<i64>,
    pub file_size: i64,
    pub file_hash: String,
    /// A signed link that works without a bearer token until it expires.
    pub download_url: String,
    pub release_notes: Option<String>,
    pub is_mandatory: bool,
    /// The pending OTA log row opened for this offer.
    pub log_id: i64,
}

/// The answer when the device is up to date.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoUpdate {
    /// Always `false`.
    pub update_available: bool,
    pub current_version: String,
}

/// `POST /api/ota/check` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CheckResponse {
    Offer(Offer),
    NoUpdate(NoUpdate),
}

/// `POST /api/ota/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusReport {
    pub firmware_id: i64,
    /// One of `pending`, `downloading`, `installing`, `success`, `failed`.
    #[schema(example = "downloading")]
    pub status: String,
    /// 0 to 100.
    #[serde(default)]
    pub progress: Option<i64>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// A firmware record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Firmware {
    pub id: i64,
    pub device_type: String,
    pub version: String,
    pub build_number: Option<i64>,
    pub filename: String,
    /// Where the bytes are, relative to the storage root: `<device_type>/<filename>`.
    pub binary_path: String,
    pub file_size: i64,
    pub file_hash: String,
    pub release_notes: Option<String>,
    pub min_version: Option<String>,
    pub is_stable: bool,
    pub is_active: bool,
    pub is_mandatory: bool,
    pub rollout_percentage: u8,
    pub download_count: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A firmware record with the number of OTA log rows in each status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FirmwareDetail {
    #[serde(flatten)]
    pub firmware: Firmware,
    /// Log rows per status, every status present.
    pub stats: BTreeMap<String, i64>,
}

/// One update attempt of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OtaLog {
    pub id: i64,
    pub device_id: String,
    pub firmware_id: i64,
    pub from_version: Option<String>,
    pub to_version: String,
    pub status: OtaStatus,
    pub progress: Option<i64>,
    pub error_message: Option<String>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// `POST /api/ota/admin/upload` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Uploaded {
    pub filename: String,
    pub binary_path: String,
    pub file_size: i64,
    pub file_hash: String,
    /// Present when the upload asked for `register=true`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub firmware: Option<Firmware>,
}

/// `POST /api/ota/admin/firmware`: registers an uploaded file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterFirmware {
    pub device_type: String,
    pub version: String,
    #[serde(default)]
    pub build_number: Option<i64>,
    /// The file's name inside the device type's folder, e.g. `v1.1.0.bin`.
    pub filename: String,
    pub file_hash: String,
    /// When given, must match the stored file's size.
    #[serde(default)]
    pub file_size: Option<i64>,
    #[serde(default)]
    pub release_notes: Option<String>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub is_stable: Option<bool>,
    #[serde(default)]
    pub is_mandatory: Option<bool>,
    /// 0 to 100, default 100.
    #[serde(default)]
    pub rollout_percentage: Option<i64>,
}

/// `PATCH /api/ota/admin/firmware/{id}`: every field optional; `null`
/// clears `release_notes`, `min_version` and `build_number`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct FirmwarePatch {
    pub release_notes: Option<String>,
    pub is_stable: Option<bool>,
    pub is_active: Option<bool>,
    pub is_mandatory: Option<bool>,
    pub min_version: Option<String>,
    pub rollout_percentage: Option<i64>,
    pub build_number: Option<i64>,
}

/// The path of `POST /api/ota/admin/devices/{device_id}/token`, with the
/// device id percent-encoded as one segment: an id may hold `/`, `?`, `#`
/// or `%`.
pub fn device_token_path(device_id: &str) -> String {
    let segment: String = device_id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("/api/ota/admin/devices/{segment}/token")
}

/// `POST /api/ota/admin/devices/{device_id}/token`: what the token is for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceTokenRequest {
    /// The `device_type` claim: the token may only act on this type's firmware.
    #[schema(example = "scales_bridge_tab5")]
    pub device_type: String,
    /// Lifetime in seconds, from 60 to 315360000 (3650 days); default
    /// 31536000 (365 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 31536000, minimum = 60, maximum = 315360000)]
    pub ttl_seconds: Option<u64>,
}

/// A newly minted device token. It is shown once: the server keeps no copy.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceToken {
    /// The JWT, for the device's `Authorization: Bearer` header.
    pub token: String,
    pub device_id: String,
    pub device_type: String,
    /// The JWT's `alg`, e.g. `HS256`.
    #[schema(example = "HS256")]
    pub algorithm: String,
    #[serde(serialize_with = "crate::time::serialize")]
    pub issued_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub expires_at: DateTime<Utc>,
}

/// Shows everything but the token, so that a logged value leaks nothing.
impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceToken")
            .field("token", &"<redacted>")
            .field("device_id", &self.device_id)
            .field("device_type", &self.device_type)
            .field("algorithm", &self.algorithm)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items match the filter, over all pages.
    pub total: i64,
}

/// An RFC 9457 problem document: every 4xx and 5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field that was refused, when one was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_device_id_is_one_path_segment() {
        assert_eq!(device_token_path("tab5-0001"), "/api/ota/admin/devices/tab5-0001/token");
        assert_eq!(
            device_token_path("aa:bb.cc"),
            "/api/ota/admin/devices/aa%3Abb%2Ecc/token"
        );
        assert_eq!(
            device_token_path("a/b?c#d%e"),
            "/api/ota/admin/devices/a%2Fb%3Fc%23d%25e/token"
        );
    }
    use super::*;

    fn minted() -> DeviceToken {
        let issued_at = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        DeviceToken {
            token: "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl".into(),
            device_id: "tab5-0001".into(),
            device_type: "scales_bridge_tab5".into(),
            algorithm: "HS256".into(),
            issued_at,
            expires_at: issued_at + chrono::Duration::days(365),
        }
    }

    #[test]
    fn a_device_token_never_shows_the_token_in_debug_output() {
        let shown = format!("{:?}", minted());

        assert!(!shown.contains("eyJhbGciOiJIUzI1NiJ9"), "{shown}");
        assert!(shown.contains("tab5-0001"), "{shown}");
    }

    #[test]
    fn a_device_token_round_trips_with_rfc3339_times() {
        let json = serde_json::to_value(minted()).unwrap();

        assert_eq!(json["issued_at"], "2026-11-18T11:06:40Z");
        let back: DeviceToken = serde_json::from_value(json).unwrap();
        assert_eq!(back.expires_at, minted().expires_at);
    }

    #[test]
    fn a_token_request_without_a_ttl_leaves_it_to_the_server() {
        let request: DeviceTokenRequest = serde_json::from_str(r#"{"device_type": "scales_bridge_tab5"}"#).unwrap();

        assert_eq!(request.ttl_seconds, None);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({"device_type": "scales_bridge_tab5"})
        );
    }
}
