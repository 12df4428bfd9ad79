//! The firmware catalogue.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ota_core::OtaStatus;
use ota_core::esp::EspImage;
use ota_core::wire::{Firmware, ImageFormat};
use sqlx::{FromRow, QueryBuilder};

use super::Store;

#[derive(Debug, FromRow)]
struct FirmwareRow {
    id: i64,
    device_type: String,
    version: String,
    build_number: Option<i64>,
    filename: String,
    binary_path: String,
    file_size: i64,
    file_hash: String,
    release_notes: Option<String>,
    min_version: Option<String>,
    is_stable: bool,
    is_active: bool,
    is_mandatory: bool,
    rollout_percentage: i64,
    download_count: i64,
    image_format: String,
    image_info: Option<String>,
    secure_version: Option<i64>,
    version_overridden: bool,
    target_groups: String,
    recalled_at: Option<DateTime<Utc>>,
    recall_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl FirmwareRow {
    /// The stored image metadata; one that no longer reads (written by a
    /// newer server, or edited by hand) is left out rather than failing
    /// every query that touches its row.
    fn image(&self) -> Option<EspImage> {
        let json = self.image_info.as_deref()?;
        serde_json::from_str(json)
            .inspect_err(|e| tracing::warn!(firmware_id = self.id, error = %e, "unreadable image_info"))
            .ok()
    }
}

impl From<FirmwareRow> for Firmware {
    fn from(row: FirmwareRow) -> Self {
        let image = row.image();
        Firmware {
            image_format: ImageFormat::parse(&row.image_format).unwrap_or_default(),
            image,
            // From its own column, so that anti-rollback holds even when
            // the rest of the metadata no longer reads.
            secure_version: row.secure_version.and_then(|n| u32::try_from(n).ok()),
            version_overridden: row.version_overridden,
            target_groups: serde_json::from_str(&row.target_groups).unwrap_or_else(|e| {
                tracing::warn!(firmware_id = row.id, error = %e, "unreadable target_groups");
                Vec::new()
            }),
            recalled_at: row.recalled_at,
            recall_reason: row.recall_reason,
            id: row.id,
            device_type: row.device_type,
            version: row.version,
            build_number: row.build_number,
            filename: row.filename,
            binary_path: row.binary_path,
            file_size: row.file_size,
            file_hash: row.file_hash,
            release_notes: row.release_notes,
            min_version: row.min_version,
            is_stable: row.is_stable,
            is_active: row.is_active,
            is_mandatory: row.is_mandatory,
            rollout_percentage: row.rollout_percentage.clamp(0, 100) as u8,
            download_count: row.download_count,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A firmware record to create; every value already checked.
#[derive(Debug, Clone)]
pub struct NewFirmware {
    pub device_type: String,
    pub version: String,
    pub build_number: Option<i64>,
    pub filename: String,
    pub binary_path: String,
    pub file_size: i64,
    pub file_hash: String,
    pub release_notes: Option<String>,
    pub min_version: Option<String>,
    pub is_stable: bool,
    pub is_mandatory: bool,
    pub rollout_percentage: u8,
    pub image_format: ImageFormat,
    /// The parsed ESP-IDF app image, for `esp-app`: kept whole as JSON and
    /// in columns of its own for the parts that are queried.
    pub image: Option<EspImage>,
    /// Whether `version` was given rather than read from the image.
    pub version_overridden: bool,
}

/// The columns a parsed image fills, `None` for a raw file.
#[derive(Debug, Default)]
struct ImageColumns {
    chip: Option<String>,
    project_name: Option<String>,
    idf_version: Option<String>,
    secure_version: Option<i64>,
    validation_hash: Option<String>,
    app_version: Option<String>,
    image_info: Option<String>,
}

impl ImageColumns {
    fn of(image: Option<&EspImage>) -> Result<Self, sqlx::Error> {
        let Some(image) = image else {
            return Ok(Self::default());
        };
        Ok(Self {
            chip: Some(image.header.chip.clone()),
            project_name: Some(image.app.project_name.clone()),
            idf_version: Some(image.app.idf_version.clone()),
            secure_version: Some(i64::from(image.app.secure_version)),
            validation_hash: image.validation_hash.clone(),
            app_version: Some(image.app.version.clone()),
            image_info: Some(serde_json::to_string(image).map_err(|e| sqlx::Error::Encode(Box::new(e)))?),
        })
    }
}

/// Filters of the admin list.
#[derive(Debug, Clone, Default)]
pub struct FirmwareFilter {
    pub device_type: Option<String>,
    pub is_active: Option<bool>,
    pub is_stable: Option<bool>,
}

/// Checked changes to a firmware record: `None` leaves a field alone,
/// `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct FirmwareChanges {
    pub release_notes: Option<Option<String>>,
    pub is_stable: Option<bool>,
    pub is_active: Option<bool>,
    pub is_mandatory: Option<bool>,
    pub min_version: Option<Option<String>>,
    pub rollout_percentage: Option<u8>,
    pub build_number: Option<Option<i64>>,
    /// Group names, checked to exist.
    pub target_groups: Option<Vec<String>>,
}

impl Store {
    pub async fn insert_firmware(&self, new: &NewFirmware) -> Result<Firmware, sqlx::Error> {
        let new = new.clone();
        let image = ImageColumns::of(new.image.as_ref())?;
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                let now = Utc::now();
                sqlx::query_as::<_, FirmwareRow>(
                    "INSERT INTO firmware (device_type, version, build_number, filename, binary_path, file_size, \
                 file_hash, release_notes, min_version, is_stable, is_active, is_mandatory, rollout_percentage, \
                 download_count, created_at, updated_at, image_format, chip, project_name, idf_version, \
                 secure_version, validation_hash, image_info, version_overridden, app_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, TRUE, $11, $12, 0, $13, $13, \
                 $14, $15, $16, $17, $18, $19, $20, $21, $22) RETURNING *",
                )
                .bind(&new.device_type)
                .bind(&new.version)
                .bind(new.build_number)
                .bind(&new.filename)
                .bind(&new.binary_path)
                .bind(new.file_size)
                .bind(&new.file_hash)
                .bind(&new.release_notes)
                .bind(&new.min_version)
                .bind(new.is_stable)
                .bind(new.is_mandatory)
                .bind(i64::from(new.rollout_percentage))
                .bind(now)
                .bind(new.image_format.as_str())
                .bind(image.chip)
                .bind(image.project_name)
                .bind(image.idf_version)
                .bind(image.secure_version)
                .bind(image.validation_hash)
                .bind(image.image_info)
                .bind(new.version_overridden)
                .bind(image.app_version)
                .fetch_one(pool)
                .await
                .map(Firmware::from)
            })
        })
        .await
    }

    /// Records what a stored file turned out to be when its device type
    /// started checking images: the firmware becomes `esp-app` with the
    /// image's metadata. Everything else about the record stays.
    pub async fn adopt_image(&self, id: i64, image: &EspImage, version_overridden: bool) -> Result<(), sqlx::Error> {
        let columns = ImageColumns::of(Some(image))?;
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                sqlx::query(
                    "UPDATE firmware SET image_format = 'esp-app', chip = $2, project_name = $3, idf_version = $4, \
                     secure_version = $5, validation_hash = $6, image_info = $7, app_version = $8, \
                     version_overridden = $9, updated_at = $10 WHERE id = $1",
                )
                .bind(id)
                .bind(columns.chip)
                .bind(columns.project_name)
                .bind(columns.idf_version)
                .bind(columns.secure_version)
                .bind(columns.validation_hash)
                .bind(columns.image_info)
                .bind(columns.app_version)
                .bind(version_overridden)
                .bind(Utc::now())
                .execute(pool)
                .await
                .map(|_| ())
            })
        })
        .await
    }

    pub async fn firmware(&self, id: i64) -> Result<Option<Firmware>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, FirmwareRow>("SELECT * FROM firmware WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(Firmware::from))
        })
    }

    /// The record of a (device_type, version), active or not.
    pub async fn firmware_by_version(&self, device_type: &str, version: &str) -> Result<Option<Firmware>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, FirmwareRow>("SELECT * FROM firmware WHERE device_type = $1 AND version = $2")
                .bind(device_type)
                .bind(version)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(Firmware::from))
        })
    }

    /// Whether any record, active or not, owns the file at `binary_path`.
    pub async fn binary_path_in_use(&self, binary_path: &str) -> Result<bool, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM firmware WHERE binary_path = $1")
                .bind(binary_path)
                .fetch_one(pool)
                .await
                .map(|n| n > 0)
        })
    }

    /// Every active firmware: what devices may be offered and may download.
    pub async fn all_active_firmware(&self) -> Result<Vec<Firmware>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, FirmwareRow>("SELECT * FROM firmware WHERE is_active = TRUE")
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(Firmware::from).collect())
        })
    }

    /// Every record matching the filter, in no particular order.
    pub async fn list_firmware(&self, filter: &FirmwareFilter) -> Result<Vec<Firmware>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut query = QueryBuilder::<DB>::new("SELECT * FROM firmware WHERE TRUE");
            if let Some(device_type) = &filter.device_type {
                query.push(" AND device_type = ").push_bind(device_type.clone());
            }
            if let Some(is_active) = filter.is_active {
                query.push(" AND is_active = ").push_bind(is_active);
            }
            if let Some(is_stable) = filter.is_stable {
                query.push(" AND is_stable = ").push_bind(is_stable);
            }
            query
                .build_query_as::<FirmwareRow>()
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(Firmware::from).collect())
        })
    }

    /// Applies checked changes; `None` when there is no such firmware.
    pub async fn update_firmware(&self, id: i64, changes: &FirmwareChanges) -> Result<Option<Firmware>, sqlx::Error> {
        let changes = changes.clone();
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                let mut query = QueryBuilder::<DB>::new("UPDATE firmware SET updated_at = ");
                query.push_bind(Utc::now());
                if let Some(value) = &changes.release_notes {
                    query.push(", release_notes = ").push_bind(value.clone());
                }
                if let Some(value) = changes.is_stable {
                    query.push(", is_stable = ").push_bind(value);
                }
                if let Some(value) = changes.is_active {
                    query.push(", is_active = ").push_bind(value);
                }
                if let Some(value) = changes.is_mandatory {
                    query.push(", is_mandatory = ").push_bind(value);
                }
                if let Some(value) = &changes.min_version {
                    query.push(", min_version = ").push_bind(value.clone());
                }
                if let Some(value) = changes.rollout_percentage {
                    query.push(", rollout_percentage = ").push_bind(i64::from(value));
                }
                if let Some(value) = changes.build_number {
                    query.push(", build_number = ").push_bind(value);
                }
                if let Some(groups) = &changes.target_groups {
                    let json = serde_json::to_string(groups).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                    query.push(", target_groups = ").push_bind(json);
                }
                query.push(" WHERE id = ").push_bind(id).push(" RETURNING *");
                query
                    .build_query_as::<FirmwareRow>()
                    .fetch_optional(pool)
                    .await
                    .map(|row| row.map(Firmware::from))
            })
        })
        .await
    }

    /// Marks a firmware recalled and halts its rollouts that are not over,
    /// in one transaction. `None` when there is no such firmware or it was
    /// recalled already.
    pub async fn recall_firmware(
        &self,
        id: i64,
        reason: Option<String>,
        actor: String,
    ) -> Result<Option<Firmware>, sqlx::Error> {
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                let mut tx = pool.begin().await?;
                let now = Utc::now();
                let row = sqlx::query_as::<_, FirmwareRow>(
                    "UPDATE firmware SET recalled_at = $1, recall_reason = $2, updated_at = $1 \
                     WHERE id = $3 AND recalled_at IS NULL RETURNING *",
                )
                .bind(now)
                .bind(&reason)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if row.is_some() {
                    // The rollouts that carry it halt, each recorded as the
                    // recaller's doing: the trail of a rollout says why it stopped.
                    let halt_reason = format!("firmware {id} was recalled");
                    let halted: Vec<(i64, String, i64)> = sqlx::query_as(
                        "SELECT id, state, stage FROM rollouts WHERE state IN ('running', 'paused') \
                         AND id IN (SELECT rollout_id FROM rollout_firmware WHERE firmware_id = $1)",
                    )
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (rollout_id, state, stage) in halted {
                        let moved = sqlx::query(
                            "UPDATE rollouts SET state = 'halted', state_reason = $1, updated_at = $2 \
                             WHERE id = $3 AND state = $4",
                        )
                        .bind(&halt_reason)
                        .bind(now)
                        .bind(rollout_id)
                        .bind(&state)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        // Moved on since the read (another instance's driver
                        // completed it, say): it is not this recall's to halt.
                        if moved == 0 {
                            continue;
                        }
                        let change = super::audit::Change {
                            actor: actor.clone(),
                            action: "rollout.halt",
                            target_type: "rollout",
                            target_id: Some(rollout_id.to_string()),
                            before: Some(serde_json::json!({"state": state, "stage": stage})),
                            after: Some(serde_json::json!({"state": "halted", "stage": stage, "reason": halt_reason})),
                        };
                        super::audit::record(&mut *tx, &change).await?;
                    }
                }
                tx.commit().await?;
                Ok(row.map(Firmware::from))
            })
        })
        .await
    }

    /// Number of OTA log rows of a firmware in each status (every status present).
    pub async fn status_counts(&self, firmware_id: i64) -> Result<BTreeMap<String, i64>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM device_ota_log WHERE firmware_id = $1 GROUP BY status")
                    .bind(firmware_id)
                    .fetch_all(pool)
                    .await?;
            let mut counts: BTreeMap<String, i64> = OtaStatus::ALL
                .iter()
                .map(|status| (status.as_str().to_owned(), 0))
                .collect();
            counts.extend(rows);
            Ok(counts)
        })
    }

    /// Counts a download of a firmware by a device, once per device. Returns
    /// whether this was the device's first.
    pub async fn count_download(&self, firmware_id: i64, device_id: &str) -> Result<bool, sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO firmware_download (firmware_id, device_id, first_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(firmware_id)
            .bind(device_id)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if inserted {
                sqlx::query("UPDATE firmware SET download_count = download_count + 1 WHERE id = $1")
                    .bind(firmware_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(inserted)
        })
    }
}
