//! OTA log rows: one per update attempt.

use chrono::{DateTime, Utc};
use ota_core::OtaStatus;
use ota_core::rollout::{Arm, FailureReason};
use ota_core::wire::OtaLog;
use sqlx::{FromRow, QueryBuilder};

use super::Store;

#[derive(Debug, FromRow)]
struct LogRow {
    id: i64,
    device_id: String,
    firmware_id: i64,
    from_version: Option<String>,
    to_version: String,
    status: String,
    progress: Option<i64>,
    error_message: Option<String>,
    failure_reason: Option<String>,
    rollout_id: Option<i64>,
    rollout_stage: Option<i64>,
    rollout_arm: Option<String>,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<LogRow> for OtaLog {
    type Error = sqlx::Error;
    fn try_from(row: LogRow) -> Result<Self, sqlx::Error> {
        let status = row
            .status
            .parse::<OtaStatus>()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(OtaLog {
            id: row.id,
            device_id: row.device_id,
            firmware_id: row.firmware_id,
            from_version: row.from_version,
            to_version: row.to_version,
            status,
            progress: row.progress,
            error_message: row.error_message,
            failure_reason: row.failure_reason.and_then(|r| r.parse().ok()),
            rollout_id: row.rollout_id,
            rollout_stage: row.rollout_stage,
            rollout_arm: row.rollout_arm.and_then(|a| a.parse().ok()),
            started_at: row.started_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
        })
    }
}

fn into_log(row: Option<LogRow>) -> Result<Option<OtaLog>, sqlx::Error> {
    row.map(OtaLog::try_from).transpose()
}

/// The attempts retention may delete: finished, not a rollback (it keeps
/// that firmware from the device for good), not of a rollout that is not
/// over (its progress counts it).
const PRUNABLE: &str = "status IN ('success', 'failed') AND COALESCE(failure_reason, '') <> 'rollback' \
     AND (rollout_id IS NULL OR rollout_id NOT IN (SELECT id FROM rollouts WHERE state IN ('running', 'paused', 'halted')))";

/// A new update attempt.
#[derive(Debug, Clone)]
pub struct NewLog<'a> {
    pub device_id: &'a str,
    pub firmware_id: i64,
    pub from_version: Option<&'a str>,
    pub to_version: &'a str,
    pub status: OtaStatus,
    pub progress: Option<i64>,
    pub error_message: Option<&'a str>,
    /// The rollout that offered the firmware to this device.
    pub rollout: Option<RolloutMark>,
}

/// The rollout an attempt belongs to: its id, the stage the device joined
/// in, and its arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutMark {
    pub rollout_id: i64,
    pub stage: usize,
    pub arm: Arm,
}

fn failure_reason(status: OtaStatus, error_message: Option<&str>) -> Option<&'static str> {
    (status == OtaStatus::Failed).then(|| FailureReason::classify(error_message).as_str())
}

/// Filters of the admin log list.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub device_id: Option<String>,
    pub firmware_id: Option<i64>,
    pub status: Option<OtaStatus>,
    pub since: Option<DateTime<Utc>>,
}

impl LogFilter {
    fn push_where<DB>(&self, query: &mut QueryBuilder<DB>)
    where
        DB: sqlx::Database,
        String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        &'static str: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        DateTime<Utc>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query.push(" WHERE TRUE");
        if let Some(device_id) = &self.device_id {
            query.push(" AND device_id = ").push_bind(device_id.clone());
        }
        if let Some(firmware_id) = self.firmware_id {
            query.push(" AND firmware_id = ").push_bind(firmware_id);
        }
        if let Some(status) = self.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(since) = self.since {
            query.push(" AND started_at >= ").push_bind(since);
        }
    }
}

/// The write a status report makes to its attempt.
#[derive(Debug, Clone)]
pub enum LogWrite<'a> {
    /// Open a new attempt (a first report, or a retry after `failed`).
    Open(NewLog<'a>),
    /// Move attempt `id` from `from` to `to`, only if it is still in `from`.
    Advance {
        id: i64,
        from: OtaStatus,
        to: OtaStatus,
        progress: Option<i64>,
        error_message: Option<&'a str>,
    },
}

/// What a status report tells the inventory about its device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceReport<'a> {
    pub device_id: &'a str,
    pub device_type: &'a str,
    pub status: OtaStatus,
    /// The version the device now runs (on `success`).
    pub now_running: Option<&'a str>,
    /// The error message of a `failed` report.
    pub error_message: Option<&'a str>,
}

async fn insert(conn: impl Into<super::Conn<'_>>, new: &NewLog<'_>) -> Result<OtaLog, sqlx::Error> {
    let now = Utc::now();
    let completed_at = new.status.is_final().then_some(now);
    let row = on_conn!(conn.into(), db => sqlx::query_as::<_, LogRow>(
        "INSERT INTO device_ota_log (device_id, firmware_id, from_version, to_version, status, progress, \
             error_message, started_at, updated_at, completed_at, failure_reason, rollout_id, rollout_stage, rollout_arm) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13) RETURNING *",
    )
    .bind(new.device_id)
    .bind(new.firmware_id)
    .bind(new.from_version)
    .bind(new.to_version)
    .bind(new.status.as_str())
    .bind(new.progress)
    .bind(new.error_message)
    .bind(now)
    .bind(completed_at)
    .bind(failure_reason(new.status, new.error_message))
    .bind(new.rollout.map(|r| r.rollout_id))
    .bind(new.rollout.map(|r| r.stage as i64))
    .bind(new.rollout.map(|r| r.arm.as_str()))
    .fetch_one(db)
    .await)?;
    OtaLog::try_from(row)
}

async fn advance(
    conn: impl Into<super::Conn<'_>>,
    id: i64,
    from: OtaStatus,
    to: OtaStatus,
    progress: Option<i64>,
    error_message: Option<&str>,
) -> Result<Option<OtaLog>, sqlx::Error> {
    let now = Utc::now();
    let completed_at = to.is_final().then_some(now);
    let row = on_conn!(conn.into(), db => sqlx::query_as::<_, LogRow>(
        "UPDATE device_ota_log SET status = $1, progress = COALESCE($2, progress), \
         error_message = COALESCE($3, error_message), updated_at = $4, completed_at = $5, \
         failure_reason = $8 \
         WHERE id = $6 AND status = $7 RETURNING *",
    )
    .bind(to.as_str())
    .bind(progress)
    .bind(error_message)
    .bind(now)
    .bind(completed_at)
    .bind(id)
    .bind(from.as_str())
    .bind(failure_reason(to, error_message))
    .fetch_optional(db)
    .await)?;
    into_log(row)
}

impl Store {
    /// Inserts an attempt. Fails with a unique violation when the device
    /// already has an open attempt at this firmware.
    pub async fn insert_log(&self, new: &NewLog<'_>) -> Result<OtaLog, sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut conn = pool.acquire().await?;
            insert(&mut *conn, new).await
        })
    }

    /// Applies a status report: the attempt's write and the device's
    /// inventory row, in one transaction (one commit, and never one without
    /// the other). `None` when an `Advance` found the attempt moved on.
    pub async fn apply_report(
        &self,
        write: &LogWrite<'_>,
        device: DeviceReport<'_>,
    ) -> Result<Option<OtaLog>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // The device's row first, then its attempt: the order in which
            // the inventory writer (devices, then the attempts a check
            // settles) takes them too, so the two never deadlock. Without
            // a write to the attempt, both are rolled back.
            super::devices::reported(&mut *tx, device).await?;
            let log = match write {
                LogWrite::Open(new) => Some(insert(&mut *tx, new).await?),
                LogWrite::Advance {
                    id,
                    from,
                    to,
                    progress,
                    error_message,
                } => advance(&mut *tx, *id, *from, *to, *progress, *error_message).await?,
            };
            if log.is_some() {
                tx.commit().await?;
            }
            Ok(log)
        })
    }

    /// The open (not final) attempt of a device at a firmware.
    pub async fn open_log(&self, device_id: &str, firmware_id: i64) -> Result<Option<OtaLog>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let row = sqlx::query_as::<_, LogRow>(
                "SELECT * FROM device_ota_log WHERE device_id = $1 AND firmware_id = $2 \
                 AND status IN ('pending', 'downloading', 'installing')",
            )
            .bind(device_id)
            .bind(firmware_id)
            .fetch_optional(pool)
            .await?;
            into_log(row)
        })
    }

    /// The latest attempt of a device at a firmware, open or not.
    pub async fn latest_log(&self, device_id: &str, firmware_id: i64) -> Result<Option<OtaLog>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let row = sqlx::query_as::<_, LogRow>(
                "SELECT * FROM device_ota_log WHERE device_id = $1 AND firmware_id = $2 ORDER BY id DESC LIMIT 1",
            )
            .bind(device_id)
            .bind(firmware_id)
            .fetch_optional(pool)
            .await?;
            into_log(row)
        })
    }

    /// The firmware a device rolled back from: never offered to it again.
    /// A rollback for want of the server (the new app could not reach it to
    /// confirm itself, as the ESP-IDF client reports it) is not the
    /// firmware's verdict: that firmware is offered again.
    pub async fn rolled_back_firmware(&self, device_id: &str) -> Result<Vec<i64>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT firmware_id FROM device_ota_log WHERE device_id = $1 AND failure_reason = 'rollback' \
                 AND lower(COALESCE(error_message, '')) NOT LIKE '%could not reach the server%'",
            )
            .bind(device_id)
            .fetch_all(pool)
            .await
        })
    }

    /// Up to `limit` finished attempts that retention lets go, oldest
    /// first: completed before `older_than`, or beyond the newest
    /// `keep_per_device` such attempts of their device. A read: the window
    /// over the table runs once per sweep, not once per deleting batch, and
    /// holds no write lock.
    pub async fn prunable_logs(
        &self,
        older_than: Option<DateTime<Utc>>,
        keep_per_device: Option<i64>,
        limit: i64,
    ) -> Result<Vec<i64>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut ids: Vec<i64> = Vec::new();
            if let Some(cutoff) = older_than {
                // started_at <= completed_at: the first test lets the index on
                // started_at narrow the scan.
                let sql = format!(
                    "SELECT id FROM device_ota_log WHERE started_at < $1 AND completed_at < $1 AND {PRUNABLE} \
                     ORDER BY id LIMIT $2"
                );
                ids.extend(
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                        .bind(cutoff)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?,
                );
            }
            if let Some(keep) = keep_per_device {
                let sql = format!(
                    "SELECT id FROM ( \
                       SELECT id, ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY id DESC) AS newer_or_this \
                       FROM device_ota_log WHERE {PRUNABLE} \
                     ) AS ranked WHERE newer_or_this > $1 ORDER BY id LIMIT $2"
                );
                ids.extend(
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                        .bind(keep)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?,
                );
            }
            ids.sort_unstable();
            ids.dedup();
            ids.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(ids)
        })
    }

    /// Deletes these attempts, each only if it may still go (a rollout
    /// that was resumed since the read keeps its attempts). Returns how
    /// many rows went.
    pub async fn delete_logs(&self, ids: &[i64]) -> Result<u64, sqlx::Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        on_db!(&self.db, pool => {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM device_ota_log WHERE id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(format!(") AND {PRUNABLE}"));
            query.build().execute(pool).await.map(|done| done.rows_affected())
        })
    }

    /// A device's latest attempts, newest first.
    pub async fn device_history(&self, device_id: &str, limit: i64) -> Result<Vec<OtaLog>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let rows =
                sqlx::query_as::<_, LogRow>("SELECT * FROM device_ota_log WHERE device_id = $1 ORDER BY id DESC LIMIT $2")
                    .bind(device_id)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
            rows.into_iter().map(OtaLog::try_from).collect()
        })
    }

    /// A page of attempts, newest first, and how many match in all.
    pub async fn list_logs(
        &self,
        filter: &LogFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<OtaLog>, i64), sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM device_ota_log");
            filter.push_where(&mut count);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

            let mut page = QueryBuilder::<DB>::new("SELECT * FROM device_ota_log");
            filter.push_where(&mut page);
            page.push(" ORDER BY started_at DESC, id DESC LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            let rows = page.build_query_as::<LogRow>().fetch_all(pool).await?;
            let items = rows.into_iter().map(OtaLog::try_from).collect::<Result<_, _>>()?;
            Ok((items, total))
        })
    }
}
