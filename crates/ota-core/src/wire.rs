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

use crate::esp::rules::ImageRules;
use crate::esp::{Chip, ChipRevision, EspImage};
use crate::rollout::{Arm, Counts, FailureReason, Policy, RolloutState};
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
    /// The device's anti-rollback counter (`esp_efuse_read_secure_version()`),
    /// for devices built with `CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK`. An image
    /// with a lower `secure_version` is never offered to it; the highest value
    /// a device has reported is kept in the inventory and applies when it
    /// does not report one.
    #[serde(default)]
    #[schema(example = 2)]
    pub secure_version: Option<i64>,
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
    /// A signed link that works without a bearer token until it expires; or,
    /// when the server has a CDN base URL, the firmware's unsigned CDN URL.
    pub download_url: String,
    pub release_notes: Option<String>,
    pub is_mandatory: bool,
    /// The pending OTA log row opened for this offer.
    pub log_id: i64,
    /// `true` when `version` is below the one the device runs: a deliberate
    /// downgrade (the device is pinned to it, or its version was recalled).
    /// Absent or `false` otherwise.
    #[serde(default)]
    pub is_downgrade: bool,
}

/// The answer when the device is up to date.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoUpdate {
    /// Always `false`.
    pub update_available: bool,
    pub current_version: String,
}

/// A device in the inventory: what it last told the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRecord {
    pub device_id: String,
    pub device_type: String,
    pub current_version: Option<String>,
    pub build_number: Option<i64>,
    pub channel: String,
    /// The highest anti-rollback counter the device has reported.
    pub secure_version: Option<i64>,
    /// The status of its latest update attempt.
    pub last_status: Option<OtaStatus>,
    /// The error message of its latest failed attempt (cleared by a success).
    #[serde(default)]
    pub last_error: Option<String>,
    /// The firmware the device is pinned to, if any.
    #[serde(default)]
    pub pinned_firmware_id: Option<i64>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub first_seen: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub last_seen: DateTime<Utc>,
}

/// `GET /api/ota/admin/devices/{device_id}`: the inventory row, its
/// groups and its latest update attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// The groups the device is in, by name.
    pub groups: Vec<String>,
    /// Its update attempts, newest first (at most 50).
    pub history: Vec<OtaLog>,
}

/// `PUT /api/ota/admin/devices/{device_id}/pin`: one of the two.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    #[serde(default)]
    pub firmware_id: Option<i64>,
    /// A version of the device's type.
    #[serde(default)]
    pub version: Option<String>,
}

/// `GET /api/ota/admin/fleet`: one device type's fleet at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FleetSummary {
    pub device_type: String,
    pub devices: i64,
    /// Devices per current version.
    pub by_version: BTreeMap<String, i64>,
    /// Devices per status of their latest attempt (`none`: never updated).
    pub by_status: BTreeMap<String, i64>,
    /// The `not_seen_days` asked for.
    pub not_seen_days: i64,
    /// Devices whose last check is older than that.
    pub not_seen: i64,
    pub pinned: i64,
}

/// A named static group of devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub members: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// `POST /api/ota/admin/groups`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    #[schema(example = "beta-testers")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PATCH /api/ota/admin/groups/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    /// A new description; `null` clears it, absent leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

/// A filter on inventory fields: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// The exact current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The status of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Members of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Part of the device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Not seen for at least this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_seen_days: Option<i64>,
    /// Seen within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_within_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
}

/// `POST /api/ota/admin/groups/{name}/members` (and `…/members/remove`):
/// devices by id, or every device a filter matches (exactly one of the two).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersChange {
    #[serde(default)]
    pub device_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filter: Option<DeviceFilter>,
}

/// How many devices a membership change added or removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembersChanged {
    pub group: String,
    /// Devices added (or removed) by this request.
    pub changed: i64,
    /// Members after it.
    pub members: i64,
}

/// `POST /api/ota/admin/firmware/{id}/recall`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// Why, for the record and the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// When a rollout advances and when it halts; every field optional on
/// creation (defaults: 10 successes, 3600 s soak, 10 %, 10 finished).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    #[serde(default)]
    pub min_successes: Option<i64>,
    #[serde(default)]
    pub soak_seconds: Option<i64>,
    /// Percent, 0–100.
    #[serde(default)]
    pub max_failure_rate: Option<i64>,
    #[serde(default)]
    pub min_finished: Option<i64>,
}

/// The second arm of an A/B rollout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantRequest {
    pub firmware_id: i64,
    /// The share of the cohort that gets the variant, 1–99.
    pub percent: i64,
}

/// `POST /api/ota/admin/rollouts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    pub firmware_id: i64,
    #[serde(default)]
    pub name: Option<String>,
    /// Group names; a device must be in one. Empty: the whole device type.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Cumulative percentages, strictly rising, ending at 100 (default 1, 10, 50, 100).
    #[serde(default)]
    pub stages: Option<Vec<i64>>,
    #[serde(default)]
    pub policy: Option<PolicyRequest>,
    #[serde(default)]
    pub variant: Option<VariantRequest>,
}

/// `POST /api/ota/admin/rollouts/{id}/{pause|resume|abort|advance}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutActionRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// One arm of a rollout: its firmware and how its devices fared.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArmProgress {
    pub arm: Arm,
    pub firmware_id: i64,
    pub version: String,
    /// The share of the cohort in this arm.
    pub percent: u8,
    #[serde(flatten)]
    pub counts: Counts,
    /// Succeeded of finished, in percent; null before anything finished.
    pub success_rate: Option<f64>,
    /// Failed and rolled-back devices per reason.
    pub failure_reasons: BTreeMap<String, u64>,
}

/// One stage of a rollout: the devices that joined in it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StageProgress {
    pub stage: usize,
    pub percent: u8,
    /// `done`, `current` or `waiting`.
    pub state: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The same, per arm.
    pub arms: Vec<ArmProgress>,
}

/// A rollout with its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    pub id: i64,
    pub name: Option<String>,
    pub device_type: String,
    pub firmware_id: i64,
    pub version: String,
    pub variant: Option<VariantRequest>,
    pub groups: Vec<String>,
    pub stages: Vec<u8>,
    /// The index of the current stage in `stages`.
    pub stage: usize,
    /// The percentage of the target the current stage reaches.
    pub percent: u8,
    pub state: RolloutState,
    /// Why it is in its state (a halt's failure rate, an operator's reason).
    pub state_reason: Option<String>,
    pub policy: Policy,
    #[serde(serialize_with = "crate::time::serialize")]
    pub stage_started_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: DateTime<Utc>,
    /// Every device of the rollout so far.
    pub totals: Counts,
    /// Per stage.
    pub progress: Vec<StageProgress>,
    /// Per arm over all stages: the A/B comparison (one arm without a variant).
    pub arms: Vec<ArmProgress>,
}

/// One admin change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    pub at: DateTime<Utc>,
    /// The admin token's name, or `system` for the server's own decisions.
    pub actor: String,
    /// e.g. `firmware.update`, `rollout.halt`, `group.add_members`.
    pub action: String,
    /// `firmware`, `file` (an upload), `device_type`, `device` (pins, device
    /// tokens), `group` or `rollout`.
    pub target_type: String,
    pub target_id: Option<String>,
    /// The record before the change (null for a creation).
    pub before: Option<serde_json::Value>,
    /// The record after it, or what was asked.
    pub after: Option<serde_json::Value>,
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
    /// How the file was checked: `esp-app` when it was checked as an
    /// ESP-IDF app image against its device type's rules, `raw` when it was
    /// taken as it came (`raw` in records older than device types).
    #[serde(default)]
    pub image_format: ImageFormat,
    /// What the file says about itself when it is a valid ESP-IDF app image
    /// (header, segments, app descriptor, signature), even for a `raw`
    /// device type; null otherwise.
    #[serde(default)]
    pub image: Option<EspImage>,
    /// The image's anti-rollback counter (`image.app.secure_version`), when
    /// the file is an ESP-IDF app image: it is never offered to a device
    /// whose counter is higher.
    #[serde(default)]
    pub secure_version: Option<u32>,
    /// Whether `version` was given by the uploader instead of taken from
    /// the image's app descriptor.
    #[serde(default)]
    pub version_overridden: bool,
    /// Groups the firmware is for (a device must be in one); empty: all.
    #[serde(default)]
    pub target_groups: Vec<String>,
    /// When it was recalled: never offered again, and the devices running
    /// it are offered the previous good version.
    #[serde(default, serialize_with = "crate::time::serialize_opt")]
    pub recalled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub recall_reason: Option<String>,
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
    /// For a failed attempt: `rollback`, `hash_mismatch`, `download`, `image`,
    /// `flash`, `activate`, `anti_rollback` or `other`.
    #[serde(default)]
    pub failure_reason: Option<FailureReason>,
    /// The rollout that offered it, its stage and arm.
    #[serde(default)]
    pub rollout_id: Option<i64>,
    #[serde(default)]
    pub rollout_stage: Option<i64>,
    #[serde(default)]
    pub rollout_arm: Option<Arm>,
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
    /// The version the file is stored under: the form's `version`, or the
    /// image's own when the form named none.
    #[serde(default)]
    pub version: Option<String>,
    /// `esp-app` when the file was checked as an ESP-IDF app image.
    #[serde(default)]
    pub image_format: ImageFormat,
    /// What the image says about itself; null for a raw device type.
    #[serde(default)]
    pub image: Option<EspImage>,
    /// Whether `version` was kept although the image carries another.
    #[serde(default)]
    pub version_overridden: bool,
    /// Present when the upload asked for `register=true`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub firmware: Option<Firmware>,
}

/// `POST /api/ota/admin/firmware`: registers an uploaded file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterFirmware {
    pub device_type: String,
    /// Required for a raw device type; for an `esp-app` one, the image's own
    /// version is used when this is left out.
    #[serde(default)]
    pub version: Option<String>,
    /// Keep `version` even though the image's app descriptor says another
    /// (default false). Recorded as `version_overridden`.
    #[serde(default)]
    pub override_version: Option<bool>,
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
    /// Group names the firmware is for; `[]`: every device of its type.
    pub target_groups: Option<Vec<String>>,
}

/// What a device type's firmware files are, and so how an upload is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    /// An ESP-IDF app image: parsed on upload and refused unless it fits
    /// the device type's chip, chip revisions and project name.
    EspApp,
    /// Any bytes, stored as they come.
    #[default]
    Raw,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 2] = [ImageFormat::EspApp, ImageFormat::Raw];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::EspApp => "esp-app",
            ImageFormat::Raw => "raw",
        }
    }

    /// `esp-app` or `raw`.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|format| format.as_str() == value)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device type: one product, whose units all run the same firmware line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceTypeRecord {
    #[schema(example = "scales_bridge_tab5")]
    pub name: String,
    pub image_format: ImageFormat,
    /// esptool's chip name (`esp32p4`): what every image must be built
    /// for when `image_format` is `esp-app`; documentation only for `raw`.
    #[schema(example = "esp32p4")]
    pub chip: Option<String>,
    /// When set, an image's `project_name` must be exactly this.
    pub project_name: Option<String>,
    /// The oldest chip revision among the units (`v0.0` when unknown): an
    /// image must boot on it.
    #[schema(value_type = String, example = "v1.0")]
    pub min_chip_revision: ChipRevision,
    /// The newest chip revision among the units, or null for no bound: an
    /// image must boot on it too.
    #[schema(value_type = Option<String>, example = "v1.99")]
    pub max_chip_revision: Option<ChipRevision>,
    pub description: Option<String>,
    /// How many active firmware records this device type has.
    pub firmware_count: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl DeviceTypeRecord {
    /// What an image must satisfy to be this device type's firmware; `None`
    /// when any file goes (`raw`).
    pub fn image_rules(&self) -> Option<ImageRules> {
        if self.image_format != ImageFormat::EspApp {
            return None;
        }
        Some(ImageRules {
            chip: Chip::parse(self.chip.as_deref()?)?,
            project_name: self.project_name.clone(),
            min_chip_revision: self.min_chip_revision,
            max_chip_revision: self.max_chip_revision,
        })
    }
}

/// `POST /api/ota/admin/device-types`: a new device type. Unknown fields
/// are refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeviceType {
    /// Lower-case letters, digits, `_` and `-`, at most 64 characters.
    #[schema(example = "scales_bridge_tab5")]
    pub name: String,
    /// `esp-app` or `raw`.
    #[schema(value_type = ImageFormat)]
    pub image_format: String,
    /// esptool's chip name (`esp32p4`; `ESP32-P4` is accepted too).
    /// Required for `esp-app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "esp32p4")]
    pub chip: Option<String>,
    /// `esp-app` only: the `project_name` every image must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// `esp-app` only: the oldest chip revision among the units, `v1.0`
    /// (default `v0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "v1.0")]
    pub min_chip_revision: Option<String>,
    /// `esp-app` only: the newest chip revision among the units, `v1.99`
    /// (default: no bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "v1.99")]
    pub max_chip_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `PATCH /api/ota/admin/device-types/{name}`: every field optional; an
/// absent field stays as it is, `null` clears `chip` (for `raw`),
/// `project_name`, `max_chip_revision` and `description`. The name cannot
/// change. Switching to `raw` clears `project_name` and the revisions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTypePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ImageFormat)]
    pub image_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, example = "esp32p4")]
    pub chip: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub project_name: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "v1.0")]
    pub min_chip_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, example = "v1.99")]
    pub max_chip_revision: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

/// A present field as `Some`, even when it is `null`: tells "clear it"
/// apart from "leave it".
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The path of `GET /api/ota/admin/devices/{device_id}`, with the device id
/// percent-encoded as one segment: an id may hold `/`, `?`, `#` or `%`.
pub fn device_path(device_id: &str) -> String {
    let segment: String = device_id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("/api/ota/admin/devices/{segment}")
}

/// The path of `POST /api/ota/admin/devices/{device_id}/token`.
pub fn device_token_path(device_id: &str) -> String {
    format!("{}/token", device_path(device_id))
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
    use super::*;

    #[test]
    fn a_device_id_is_one_path_segment() {
        assert_eq!(device_path("a/b"), "/api/ota/admin/devices/a%2Fb");
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

    #[test]
    fn image_formats_are_kebab_case() {
        assert_eq!(serde_json::to_value(ImageFormat::EspApp).unwrap(), "esp-app");
        assert_eq!(serde_json::to_value(ImageFormat::Raw).unwrap(), "raw");
        for format in ImageFormat::ALL {
            assert_eq!(ImageFormat::parse(format.as_str()), Some(format));
            assert_eq!(serde_json::to_value(format).unwrap(), format.as_str());
        }
        assert_eq!(ImageFormat::parse("esp_app"), None);
    }

    #[test]
    fn a_firmware_record_from_before_device_types_still_reads() {
        let older = serde_json::json!({
            "id": 1, "device_type": "scales_bridge_tab5", "version": "1.0.0", "build_number": null,
            "filename": "v1.0.0.bin", "binary_path": "scales_bridge_tab5/v1.0.0.bin", "file_size": 4,
            "file_hash": "00", "release_notes": null, "min_version": null, "is_stable": true,
            "is_active": true, "is_mandatory": false, "rollout_percentage": 100, "download_count": 0,
            "created_at": "2026-11-27T15:04:05Z", "updated_at": "2026-11-27T15:04:05Z"
        });

        let firmware: Firmware = serde_json::from_value(older).unwrap();

        assert_eq!(firmware.image_format, ImageFormat::Raw);
        assert_eq!(firmware.image, None);
        assert!(!firmware.version_overridden);
        assert_eq!(firmware.secure_version, None);
    }

    #[test]
    fn a_device_type_patch_tells_null_from_absent() {
        let patch: DeviceTypePatch =
            serde_json::from_str(r#"{"project_name": null, "min_chip_revision": "v1.0"}"#).unwrap();

        assert_eq!(patch.project_name, Some(None));
        assert_eq!(patch.description, None);
        assert_eq!(patch.min_chip_revision.as_deref(), Some("v1.0"));
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"project_name": null, "min_chip_revision": "v1.0"})
        );
    }

    #[test]
    fn a_new_device_type_refuses_unknown_fields() {
        let misspelt = r#"{"name": "x", "image_format": "raw", "chips": "esp32"}"#;

        assert!(serde_json::from_str::<NewDeviceType>(misspelt).is_err());
    }

    #[test]
    fn an_esp_app_device_type_has_image_rules_and_a_raw_one_none() {
        let at = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let mut record = DeviceTypeRecord {
            name: "scales_bridge_tab5".into(),
            image_format: ImageFormat::EspApp,
            chip: Some("esp32p4".into()),
            project_name: None,
            min_chip_revision: ChipRevision::from_full(100),
            max_chip_revision: Some(ChipRevision::from_full(199)),
            description: None,
            firmware_count: 0,
            created_at: at,
            updated_at: at,
        };

        let rules = record.image_rules().unwrap();
        assert_eq!(rules.chip, Chip::Esp32p4);
        assert_eq!(rules.max_chip_revision, Some(ChipRevision::from_full(199)));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["min_chip_revision"], "v1.0");
        assert_eq!(json["max_chip_revision"], "v1.99");
        assert_eq!(json["image_format"], "esp-app");

        record.image_format = ImageFormat::Raw;
        assert_eq!(record.image_rules(), None);
    }
}
