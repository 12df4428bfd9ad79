//! The device inventory: what each device last told us.

use chrono::{DateTime, Utc};
use ota_core::wire::DeviceRecord;
use sqlx::FromRow;

use super::Store;

#[derive(Debug, FromRow)]
struct DeviceRow {
    device_id: String,
    device_type: String,
    current_version: Option<String>,
    build_number: Option<i64>,
    channel: String,
    secure_version: Option<i64>,
    last_status: Option<String>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
}

impl From<DeviceRow> for DeviceRecord {
    fn from(row: DeviceRow) -> Self {
        DeviceRecord {
            device_id: row.device_id,
            device_type: row.device_type,
            current_version: row.current_version,
            build_number: row.build_number,
            channel: row.channel,
            secure_version: row.secure_version,
            last_status: row.last_status.and_then(|s| s.parse().ok()),
            first_seen: row.first_seen,
            last_seen: row.last_seen,
        }
    }
}

/// What a device said about itself when it checked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub device_id: String,
    pub device_type: String,
    pub current_version: String,
    pub build_number: Option<i64>,
    pub channel: String,
    /// The anti-rollback counter it reported, if any.
    pub secure_version: Option<u32>,
    /// When the device said it; an older sighting never overwrites a newer report.
    pub seen_at: DateTime<Utc>,
}

impl Store {
    /// Records check-ins in one transaction: creates each device or updates what it runs.
    pub async fn devices_seen(&self, sightings: &[Sighting]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for seen in sightings {
            sqlx::query(
                "INSERT INTO devices (device_id, device_type, current_version, build_number, channel, secure_version, first_seen, last_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (device_id) DO UPDATE SET device_type = excluded.device_type, \
                 current_version = excluded.current_version, build_number = excluded.build_number, \
                 channel = excluded.channel, last_seen = excluded.last_seen \
                 WHERE excluded.last_seen >= devices.last_seen",
            )
            .bind(&seen.device_id)
            .bind(&seen.device_type)
            .bind(&seen.current_version)
            .bind(seen.build_number)
            .bind(&seen.channel)
            .bind(seen.secure_version.map(i64::from))
            .bind(seen.seen_at)
            .execute(&mut *tx)
            .await?;
            // A counter only grows, and an older sighting still raises it:
            // apart from the `last_seen` order that guards the rest.
            if let Some(counter) = seen.secure_version {
                sqlx::query(
                    "UPDATE devices SET secure_version = $2 \
                     WHERE device_id = $1 AND (secure_version IS NULL OR secure_version < $2)",
                )
                .bind(&seen.device_id)
                .bind(i64::from(counter))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await
    }

    /// Records a status report in the inventory alone (tests set up states
    /// with it; the server writes reports through `apply_report`).
    #[cfg(test)]
    pub async fn device_reported(&self, report: super::logs::DeviceReport<'_>) -> Result<(), sqlx::Error> {
        reported(&self.pool, report).await
    }

    /// One device of the inventory.
    pub async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, sqlx::Error> {
        sqlx::query_as::<_, DeviceRow>("SELECT * FROM devices WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await
            .map(|row| row.map(DeviceRecord::from))
    }

    /// A page of the inventory, by device id, and how many devices match.
    pub async fn list_devices(
        &self,
        device_type: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DeviceRecord>, i64), sqlx::Error> {
        let total = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM devices WHERE ($1 IS NULL OR device_type = $1)")
            .bind(device_type)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query_as::<_, DeviceRow>(
            "SELECT * FROM devices WHERE ($1 IS NULL OR device_type = $1) ORDER BY device_id LIMIT $2 OFFSET $3",
        )
        .bind(device_type)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.into_iter().map(DeviceRecord::from).collect(), total))
    }

    /// The highest anti-rollback counter a device has reported.
    pub async fn device_secure_version(&self, device_id: &str) -> Result<Option<u32>, sqlx::Error> {
        let stored = sqlx::query_scalar::<_, Option<i64>>("SELECT secure_version FROM devices WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        Ok(stored.and_then(|n| u32::try_from(n).ok()))
    }

    /// The version a device last reported running.
    pub async fn device_version(&self, device_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar::<_, Option<String>>("SELECT current_version FROM devices WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await
            .map(Option::flatten)
    }
}

/// Records a device's status report in the inventory; on `success` it now
/// runs the firmware's version.
pub(super) async fn reported<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    report: super::logs::DeviceReport<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO devices (device_id, device_type, current_version, last_status, first_seen, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (device_id) DO UPDATE SET last_status = excluded.last_status, \
         current_version = COALESCE(excluded.current_version, devices.current_version), \
         last_seen = excluded.last_seen",
    )
    .bind(report.device_id)
    .bind(report.device_type)
    .bind(report.now_running)
    .bind(report.status.as_str())
    .bind(Utc::now())
    .execute(db)
    .await
    .map(|_| ())
}
