//! Device types: what each product's firmware files must be.

use chrono::{DateTime, Utc};
use ota_core::esp::ChipRevision;
use ota_core::wire::{DeviceTypeRecord, ImageFormat};
use sqlx::FromRow;

use super::Store;

/// Every column and the number of active firmware of the type, then `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT name, image_format, chip, project_name, min_chip_revision, max_chip_revision, \
             description, created_at, updated_at, \
             (SELECT COUNT(*) FROM firmware \
              WHERE firmware.device_type = device_types.name AND firmware.is_active = TRUE) AS firmware_count \
             FROM device_types ",
            $rest
        )
    };
}

#[derive(Debug, FromRow)]
struct DeviceTypeRow {
    name: String,
    image_format: String,
    chip: Option<String>,
    project_name: Option<String>,
    min_chip_revision: i64,
    max_chip_revision: Option<i64>,
    description: Option<String>,
    firmware_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A revision column; the table's CHECK keeps it in range.
fn revision(full: i64) -> ChipRevision {
    ChipRevision::from_full(u16::try_from(full.max(0)).unwrap_or(u16::MAX))
}

impl From<DeviceTypeRow> for DeviceTypeRecord {
    fn from(row: DeviceTypeRow) -> Self {
        DeviceTypeRecord {
            image_format: ImageFormat::parse(&row.image_format).unwrap_or_else(|| {
                tracing::warn!(device_type = %row.name, image_format = %row.image_format, "unknown image_format, read as raw");
                ImageFormat::Raw
            }),
            name: row.name,
            chip: row.chip,
            project_name: row.project_name,
            min_chip_revision: revision(row.min_chip_revision),
            max_chip_revision: row.max_chip_revision.map(revision),
            description: row.description,
            firmware_count: row.firmware_count,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Everything about a device type but its name; every value already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTypeValues {
    pub image_format: ImageFormat,
    /// esptool's name, `esp32p4`.
    pub chip: Option<String>,
    pub project_name: Option<String>,
    pub min_chip_revision: ChipRevision,
    pub max_chip_revision: Option<ChipRevision>,
    pub description: Option<String>,
}

impl DeviceTypeValues {
    /// A type whose files are stored as they come.
    pub fn raw() -> Self {
        Self {
            image_format: ImageFormat::Raw,
            chip: None,
            project_name: None,
            min_chip_revision: ChipRevision::from_full(0),
            max_chip_revision: None,
            description: None,
        }
    }
}

impl From<&DeviceTypeRecord> for DeviceTypeValues {
    fn from(record: &DeviceTypeRecord) -> Self {
        Self {
            image_format: record.image_format,
            chip: record.chip.clone(),
            project_name: record.project_name.clone(),
            min_chip_revision: record.min_chip_revision,
            max_chip_revision: record.max_chip_revision,
            description: record.description.clone(),
        }
    }
}

impl Store {
    /// Creates a device type; an existing name is a unique violation.
    pub async fn insert_device_type(
        &self,
        name: &str,
        values: &DeviceTypeValues,
    ) -> Result<DeviceTypeRecord, sqlx::Error> {
        let (owned_name, values) = (name.to_owned(), values.clone());
        // Through the firmware writer: the catalogue's snapshot may come to
        // carry device type rules, so every change must move its generation.
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                sqlx::query(
                    "INSERT INTO device_types (name, image_format, chip, project_name, min_chip_revision, \
                     max_chip_revision, description, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(&owned_name)
                .bind(values.image_format.as_str())
                .bind(&values.chip)
                .bind(&values.project_name)
                .bind(i64::from(values.min_chip_revision.full()))
                .bind(values.max_chip_revision.map(|r| i64::from(r.full())))
                .bind(&values.description)
                .bind(Utc::now())
                .execute(pool)
                .await?;
                Ok(())
            })
        })
        .await?;
        self.device_type(name).await?.ok_or_else(|| sqlx::Error::RowNotFound)
    }

    /// A device type by name.
    pub async fn device_type(&self, name: &str) -> Result<Option<DeviceTypeRecord>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, DeviceTypeRow>(select!("WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(DeviceTypeRecord::from))
        })
    }

    /// A page of device types sorted by name, and how many there are.
    pub async fn list_device_types(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DeviceTypeRecord>, i64), sqlx::Error> {
        on_db!(&self.db, pool => {
            let items = sqlx::query_as::<_, DeviceTypeRow>(select!("ORDER BY name LIMIT $1 OFFSET $2"))
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_types")
                .fetch_one(pool)
                .await?;
            Ok((items.into_iter().map(DeviceTypeRecord::from).collect(), total))
        })
    }

    /// Replaces everything but the name; `None` when there is no such type.
    pub async fn update_device_type(
        &self,
        name: &str,
        values: &DeviceTypeValues,
    ) -> Result<Option<DeviceTypeRecord>, sqlx::Error> {
        let (owned_name, values) = (name.to_owned(), values.clone());
        let updated = self
            .write_firmware(move |db| async move {
                on_db!(&db, pool => sqlx::query(
                    "UPDATE device_types SET image_format = $1, chip = $2, project_name = $3, \
                     min_chip_revision = $4, max_chip_revision = $5, description = $6, updated_at = $7 \
                     WHERE name = $8",
                )
                .bind(values.image_format.as_str())
                .bind(&values.chip)
                .bind(&values.project_name)
                .bind(i64::from(values.min_chip_revision.full()))
                .bind(values.max_chip_revision.map(|r| i64::from(r.full())))
                .bind(&values.description)
                .bind(Utc::now())
                .bind(&owned_name)
                .execute(pool)
                .await
                .map(|done| done.rows_affected() > 0))
            })
            .await?;
        if !updated {
            return Ok(None);
        }
        self.device_type(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewFirmware;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_file(&dir.path().join("ota.db")).await.unwrap();
        (dir, store)
    }

    fn tab5() -> DeviceTypeValues {
        DeviceTypeValues {
            image_format: ImageFormat::EspApp,
            chip: Some("esp32p4".into()),
            project_name: None,
            min_chip_revision: ChipRevision::from_full(100),
            max_chip_revision: Some(ChipRevision::from_full(199)),
            description: Some("M5Stack Tab5".into()),
        }
    }

    fn firmware(device_type: &str, version: &str) -> NewFirmware {
        NewFirmware {
            device_type: device_type.into(),
            version: version.into(),
            build_number: None,
            filename: format!("v{version}.bin"),
            binary_path: format!("{device_type}/v{version}.bin"),
            file_size: 4,
            file_hash: "0".repeat(64),
            release_notes: None,
            min_version: None,
            is_stable: true,
            is_mandatory: false,
            rollout_percentage: 100,
            image_format: ImageFormat::Raw,
            image: None,
            version_overridden: false,
        }
    }

    #[tokio::test]
    async fn a_device_type_reads_back_as_written() {
        let (_dir, store) = store().await;

        let created = store.insert_device_type("scales_bridge_tab5", &tab5()).await.unwrap();

        assert_eq!(DeviceTypeValues::from(&created), tab5());
        assert_eq!(created.firmware_count, 0);
        assert_eq!(store.device_type("scales_bridge_tab5").await.unwrap(), Some(created));
        assert_eq!(store.device_type("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_second_device_type_of_one_name_is_a_unique_violation() {
        let (_dir, store) = store().await;
        store
            .insert_device_type("tab5", &DeviceTypeValues::raw())
            .await
            .unwrap();

        let again = store.insert_device_type("tab5", &tab5()).await.unwrap_err();

        assert!(crate::store::is_unique_violation(&again), "{again}");
    }

    #[tokio::test]
    async fn the_list_is_by_name_and_counts_active_firmware_only() {
        let (_dir, store) = store().await;
        for name in ["zeta", "alpha", "mid"] {
            store.insert_device_type(name, &DeviceTypeValues::raw()).await.unwrap();
        }
        store.insert_firmware(&firmware("mid", "1.0.0")).await.unwrap();
        let retired = store.insert_firmware(&firmware("mid", "1.1.0")).await.unwrap();
        let changes = crate::store::FirmwareChanges {
            is_active: Some(false),
            ..Default::default()
        };
        store.update_firmware(retired.id, &changes).await.unwrap();

        let (page, total) = store.list_device_types(2, 0).await.unwrap();
        let (rest, _) = store.list_device_types(2, 2).await.unwrap();

        assert_eq!(total, 3);
        let names: Vec<&str> = page.iter().chain(&rest).map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["alpha", "mid", "zeta"]);
        assert_eq!(page[1].firmware_count, 1);
    }

    #[tokio::test]
    async fn an_update_replaces_the_values_and_moves_the_generation() {
        let (_dir, store) = store().await;
        let created = store
            .insert_device_type("tab5", &DeviceTypeValues::raw())
            .await
            .unwrap();
        let generation = store.firmware_generation();

        let updated = store.update_device_type("tab5", &tab5()).await.unwrap().unwrap();

        assert_eq!(DeviceTypeValues::from(&updated), tab5());
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at >= created.updated_at);
        assert!(store.firmware_generation() > generation, "caches must reload");
        assert_eq!(store.update_device_type("nope", &tab5()).await.unwrap(), None);
    }
}
