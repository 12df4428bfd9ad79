//! The device inventory: what each device last told us.

use chrono::{DateTime, Utc};

use super::Store;

/// What a device said about itself when it checked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub device_id: String,
    pub device_type: String,
    pub current_version: String,
    pub build_number: Option<i64>,
    pub channel: String,
    /// When the device said it; an older sighting never overwrites a newer report.
    pub seen_at: DateTime<Utc>,
}

impl Store {
    /// Records check-ins in one transaction: creates each device or updates what it runs.
    pub async fn devices_seen(&self, sightings: &[Sighting]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for seen in sightings {
            sqlx::query(
                "INSERT INTO devices (device_id, device_type, current_version, build_number, channel, first_seen, last_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) \
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
            .bind(seen.seen_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Records a status report in the inventory alone (tests set up states
    /// with it; the server writes reports through `apply_report`).
    #[cfg(test)]
    pub async fn device_reported(&self, report: super::logs::DeviceReport<'_>) -> Result<(), sqlx::Error> {
        reported(&self.pool, report).await
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
