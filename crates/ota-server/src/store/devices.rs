//! The device inventory: what each device last told us.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ota_core::wire::{DeviceRecord, FleetSummary};
use sqlx::{FromRow, QueryBuilder};

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
    last_error: Option<String>,
    pinned_firmware_id: Option<i64>,
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
            last_error: row.last_error,
            pinned_firmware_id: row.pinned_firmware_id,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
        }
    }
}

/// Which devices: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    pub device_type: Option<String>,
    pub version: Option<String>,
    pub channel: Option<String>,
    pub status: Option<String>,
    pub group: Option<String>,
    /// Part of the device id.
    pub search: Option<String>,
    /// Last seen before this.
    pub not_seen_since: Option<DateTime<Utc>>,
    /// Last seen at or after this.
    pub seen_since: Option<DateTime<Utc>>,
    pub pinned: Option<bool>,
}

impl DeviceQuery {
    pub(super) fn push_where<DB>(&self, query: &mut QueryBuilder<DB>)
    where
        DB: sqlx::Database,
        String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        DateTime<Utc>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query.push(" WHERE TRUE");
        if let Some(value) = &self.device_type {
            query.push(" AND device_type = ").push_bind(value.clone());
        }
        if let Some(value) = &self.version {
            query.push(" AND current_version = ").push_bind(value.clone());
        }
        if let Some(value) = &self.channel {
            query.push(" AND channel = ").push_bind(value.clone());
        }
        if let Some(value) = &self.status {
            query.push(" AND last_status = ").push_bind(value.clone());
        }
        if let Some(value) = &self.group {
            query
                .push(" AND device_id IN (SELECT m.device_id FROM device_group_members m JOIN device_groups g ON g.id = m.group_id WHERE g.name = ")
                .push_bind(value.clone())
                .push(")");
        }
        if let Some(value) = &self.search {
            let pattern = format!(
                "%{}%",
                value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
            );
            query
                .push(" AND lower(device_id) LIKE lower(")
                .push_bind(pattern)
                .push(")")
                .push(" ESCAPE '\\'");
        }
        if let Some(value) = self.not_seen_since {
            query.push(" AND last_seen < ").push_bind(value);
        }
        if let Some(value) = self.seen_since {
            query.push(" AND last_seen >= ").push_bind(value);
        }
        match self.pinned {
            Some(true) => {
                query.push(" AND pinned_firmware_id IS NOT NULL");
            }
            Some(false) => {
                query.push(" AND pinned_firmware_id IS NULL");
            }
            None => {}
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
    /// When the device said it. Checks are written in batches, so a status
    /// report can land first: an older sighting still sets what only checks
    /// tell (build, channel) but never overwrites the version a newer report
    /// said the device runs.
    pub seen_at: DateTime<Utc>,
}

impl Store {
    /// Records check-ins in one transaction: creates each device or updates what it runs.
    pub async fn devices_seen(&self, sightings: &[Sighting]) -> Result<(), sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            for seen in sightings {
                sqlx::query(
                    "INSERT INTO devices (device_id, device_type, current_version, build_number, channel, secure_version, first_seen, last_seen) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     ON CONFLICT (device_id) DO UPDATE SET device_type = excluded.device_type, \
                     current_version = CASE WHEN excluded.last_seen >= devices.last_seen OR devices.current_version IS NULL \
                                            THEN excluded.current_version ELSE devices.current_version END, \
                     build_number = excluded.build_number, channel = excluded.channel, \
                     first_seen = CASE WHEN excluded.first_seen < devices.first_seen THEN excluded.first_seen ELSE devices.first_seen END, \
                     last_seen = CASE WHEN excluded.last_seen > devices.last_seen THEN excluded.last_seen ELSE devices.last_seen END",
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
                // A counter only grows, and an older sighting still raises it.
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
            settle_attempts((&mut *tx).into(), sightings).await?;
            tx.commit().await
        })
    }

    /// Records a status report in the inventory alone (tests set up states
    /// with it; the server writes reports through `apply_report`).
    #[cfg(test)]
    pub async fn device_reported(&self, report: super::logs::DeviceReport<'_>) -> Result<(), sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut conn = pool.acquire().await?;
            reported(&mut *conn, report).await
        })
    }

    /// One device of the inventory.
    pub async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, DeviceRow>("SELECT * FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(DeviceRecord::from))
        })
    }

    /// A page of the inventory, by device id, and how many devices match.
    pub async fn list_devices(
        &self,
        filter: &DeviceQuery,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DeviceRecord>, i64), sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM devices");
            filter.push_where(&mut count);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
            let mut page = QueryBuilder::<DB>::new("SELECT * FROM devices");
            filter.push_where(&mut page);
            page.push(" ORDER BY device_id LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            let rows = page.build_query_as::<DeviceRow>().fetch_all(pool).await?;
            Ok((rows.into_iter().map(DeviceRecord::from).collect(), total))
        })
    }

    /// The fleet of each device type (or of one): devices per version and
    /// per status, how many were not seen since `cutoff`, how many are pinned.
    pub async fn fleet_summaries(
        &self,
        device_type: Option<&str>,
        not_seen_days: i64,
    ) -> Result<Vec<FleetSummary>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let cutoff = Utc::now() - chrono::Duration::days(not_seen_days);
            let types: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                "SELECT device_type, COUNT(*), \
                 SUM(CASE WHEN last_seen < $2 THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN pinned_firmware_id IS NOT NULL THEN 1 ELSE 0 END) \
                 FROM devices WHERE ($1 IS NULL OR device_type = $1) GROUP BY device_type ORDER BY device_type",
            )
            .bind(device_type)
            .bind(cutoff)
            .fetch_all(pool)
            .await?;
            let mut summaries = Vec::with_capacity(types.len());
            for (device_type, devices, not_seen, pinned) in types {
                let per = |column: &'static str| {
                    let sql = format!(
                        "SELECT COALESCE({column}, 'none'), COUNT(*) FROM devices WHERE device_type = $1 GROUP BY 1"
                    );
                    let device_type = device_type.clone();
                    let pool = pool.clone();
                    async move {
                        sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql))
                            .bind(device_type)
                            .fetch_all(&pool)
                            .await
                            .map(|rows| rows.into_iter().collect::<BTreeMap<_, _>>())
                    }
                };
                let by_version = per("current_version").await?;
                let by_status = per("last_status").await?;
                summaries.push(FleetSummary {
                    device_type,
                    devices,
                    by_version,
                    by_status,
                    not_seen_days,
                    not_seen,
                    pinned,
                });
            }
            Ok(summaries)
        })
    }

    /// Pins a device to a firmware (`None`: unpins it). `None` when there
    /// is no such device.
    pub async fn pin_device(
        &self,
        device_id: &str,
        firmware_id: Option<i64>,
    ) -> Result<Option<DeviceRecord>, sqlx::Error> {
        let device_id = device_id.to_owned();
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                sqlx::query_as::<_, DeviceRow>(
                    "UPDATE devices SET pinned_firmware_id = $2 WHERE device_id = $1 RETURNING *",
                )
                .bind(device_id)
                .bind(firmware_id)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(DeviceRecord::from))
            })
        })
        .await
    }

    /// Every pinned device and its firmware.
    pub async fn pins(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as("SELECT device_id, pinned_firmware_id FROM devices WHERE pinned_firmware_id IS NOT NULL")
                .fetch_all(pool)
                .await
        })
    }

    /// The highest anti-rollback counter a device has reported.
    pub async fn device_secure_version(&self, device_id: &str) -> Result<Option<u32>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let stored = sqlx::query_scalar::<_, Option<i64>>("SELECT secure_version FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(pool)
                .await?
                .flatten();
            Ok(stored.and_then(|n| u32::try_from(n).ok()))
        })
    }

    /// The version a device last reported running.
    pub async fn device_version(&self, device_id: &str) -> Result<Option<String>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar::<_, Option<String>>("SELECT current_version FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(pool)
                .await
                .map(Option::flatten)
        })
    }
}

/// What a check says about the device's open attempts, when it came after
/// their last report:
/// * it runs the version an attempt was installing (or downloading, its
///   reports lost): the attempt succeeded — the new image booted and
///   checked in;
/// * it runs the version an `installing` attempt started from: the new
///   image did not stay, the attempt failed with reason `rollback`.
///
/// One read of the open attempts per batch (through the partial index of
/// open rows, which stays small), and a write only for those that settle.
async fn settle_attempts(conn: super::Conn<'_>, sightings: &[Sighting]) -> Result<(), sqlx::Error> {
    on_conn!(conn, tx => {
    type Open = (i64, String, Option<String>, String, String, DateTime<Utc>);
    let open: Vec<Open> = sqlx::query_as(
        "SELECT id, device_id, from_version, to_version, status, updated_at FROM device_ota_log \
         WHERE status IN ('pending', 'downloading', 'installing')",
    )
    .fetch_all(&mut *tx)
    .await?;
    if open.is_empty() {
        return Ok(());
    }
    let seen: std::collections::HashMap<&str, &Sighting> =
        sightings.iter().map(|s| (s.device_id.as_str(), s)).collect();
    let now = Utc::now();
    for (id, device_id, from_version, to_version, status, updated_at) in open {
        let Some(sighting) = seen.get(device_id.as_str()) else {
            continue;
        };
        let running = sighting.current_version.as_str();
        let settled = if running == to_version
            && matches!(status.as_str(), "downloading" | "installing")
            && updated_at <= sighting.seen_at
        {
            ("success", None)
        } else if status == "installing" && from_version.as_deref() == Some(running) && updated_at < sighting.seen_at {
            (
                "failed",
                Some(format!(
                    "rollback: the device checked in running {running} again after installing {to_version}"
                )),
            )
        } else {
            continue;
        };
        let (new_status, message) = settled;
        let moved = sqlx::query(
            "UPDATE device_ota_log SET status = $2, progress = CASE WHEN $2 = 'success' THEN 100 ELSE progress END, \
             failure_reason = CASE WHEN $2 = 'failed' THEN 'rollback' END, \
             error_message = COALESCE($3, error_message), updated_at = $4, completed_at = $4 \
             WHERE id = $1 AND status = $5",
        )
        .bind(id)
        .bind(new_status)
        .bind(&message)
        .bind(now)
        .bind(&status)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved > 0 {
            sqlx::query("UPDATE devices SET last_status = $2, last_error = $3 WHERE device_id = $1")
                .bind(&device_id)
                .bind(new_status)
                .bind(&message)
                .execute(&mut *tx)
                .await?;
            metrics::counter!("ota_attempts_settled_by_check_total", "status" => new_status).increment(1);
        }
    }
    Ok(())
    })
}

/// Records a device's status report in the inventory; on `success` it now
/// runs the firmware's version.
pub(super) async fn reported(
    conn: impl Into<super::Conn<'_>>,
    report: super::logs::DeviceReport<'_>,
) -> Result<(), sqlx::Error> {
    // A failure's message stays until a success clears it.
    on_conn!(conn.into(), db =>     sqlx::query(
        "INSERT INTO devices (device_id, device_type, current_version, last_status, last_error, first_seen, last_seen) \
         VALUES ($1, $2, $3, $4, $6, $5, $5) \
         ON CONFLICT (device_id) DO UPDATE SET last_status = excluded.last_status, \
         current_version = COALESCE(excluded.current_version, devices.current_version), \
         last_error = CASE WHEN excluded.last_status = 'failed' THEN excluded.last_error \
                           WHEN excluded.last_status = 'success' THEN NULL ELSE devices.last_error END, \
         last_seen = excluded.last_seen",
    )
    .bind(report.device_id)
    .bind(report.device_type)
    .bind(report.now_running)
    .bind(report.status.as_str())
    .bind(Utc::now())
    .bind(report.error_message)
    .execute(db)
    .await
    .map(|_| ()))
}
