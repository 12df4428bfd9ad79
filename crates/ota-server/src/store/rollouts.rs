//! Rollouts: the row, its state changes, and the counts its decisions and
//! progress are made of.

use chrono::{DateTime, Utc};
use ota_core::rollout::{Arm, Counts, FailureReason, Policy, RolloutState};
use sqlx::{FromRow, QueryBuilder};

use super::Store;
use super::audit::{self, Change};

#[derive(Debug, FromRow)]
struct RolloutRow {
    id: i64,
    name: Option<String>,
    device_type: String,
    firmware_id: i64,
    variant_firmware_id: Option<i64>,
    variant_percent: i64,
    target_groups: String,
    stages: String,
    stage: i64,
    state: String,
    state_reason: Option<String>,
    min_successes: i64,
    soak_seconds: i64,
    max_failure_rate: i64,
    min_finished: i64,
    stage_started_at: DateTime<Utc>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A rollout as stored.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    pub id: i64,
    pub name: Option<String>,
    pub device_type: String,
    pub firmware_id: i64,
    /// The B arm: its firmware and share of the cohort.
    pub variant: Option<(i64, u8)>,
    pub groups: Vec<String>,
    pub stages: Vec<u8>,
    pub stage: usize,
    pub state: RolloutState,
    pub state_reason: Option<String>,
    pub policy: Policy,
    pub stage_started_at: DateTime<Utc>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<RolloutRow> for RolloutRecord {
    type Error = sqlx::Error;
    fn try_from(row: RolloutRow) -> Result<Self, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        let unsigned = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(RolloutRecord {
            id: row.id,
            name: row.name,
            device_type: row.device_type,
            firmware_id: row.firmware_id,
            variant: row
                .variant_firmware_id
                .map(|id| (id, row.variant_percent.clamp(0, 99) as u8)),
            groups: serde_json::from_str(&row.target_groups).map_err(|e| decode(e.to_string()))?,
            stages: serde_json::from_str(&row.stages).map_err(|e| decode(e.to_string()))?,
            stage: usize::try_from(row.stage).unwrap_or_default(),
            state: row
                .state
                .parse()
                .map_err(|e: ota_core::rollout::UnknownRolloutState| decode(e.to_string()))?,
            state_reason: row.state_reason,
            policy: Policy {
                min_successes: unsigned(row.min_successes),
                soak_seconds: unsigned(row.soak_seconds),
                max_failure_rate: row.max_failure_rate.clamp(0, 100) as u8,
                min_finished: unsigned(row.min_finished),
            },
            stage_started_at: row.stage_started_at,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl RolloutRecord {
    /// The firmware of each arm.
    pub fn arms(&self) -> Vec<(Arm, i64, u8)> {
        match self.variant {
            Some((variant, percent)) => vec![(Arm::A, self.firmware_id, 100 - percent), (Arm::B, variant, percent)],
            None => vec![(Arm::A, self.firmware_id, 100)],
        }
    }
}

/// A rollout to create.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub name: Option<String>,
    pub device_type: String,
    pub firmware_id: i64,
    pub variant: Option<(i64, u8)>,
    pub groups: Vec<String>,
    pub stages: Vec<u8>,
    pub policy: Policy,
    pub created_by: String,
}

/// A state change, applied only if the rollout is still where it was seen.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub from: (RolloutState, usize),
    pub to: (RolloutState, usize),
    pub reason: Option<String>,
}

/// Filters of the rollout list.
#[derive(Debug, Clone, Default)]
pub struct RolloutFilter {
    pub state: Option<RolloutState>,
    pub device_type: Option<String>,
    pub firmware_id: Option<i64>,
}

/// How the devices of one stage and arm fared, per latest attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub stage: usize,
    pub arm: Arm,
    pub counts: Counts,
    pub reason: Option<(FailureReason, u64)>,
}

fn encode(e: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(e))
}

impl Store {
    /// Creates a rollout and claims its firmware; a unique violation when
    /// one of them is in another rollout that is not over.
    pub async fn insert_rollout(&self, new: NewRollout, change: Change) -> Result<RolloutRecord, sqlx::Error> {
        self.write_firmware(move |db| async move { on_db!(&db, pool => {
            let mut tx = pool.begin().await?;
            let now = Utc::now();
            let row = sqlx::query_as::<_, RolloutRow>(
                "INSERT INTO rollouts (name, device_type, firmware_id, variant_firmware_id, variant_percent, \
                 target_groups, stages, stage, state, min_successes, soak_seconds, max_failure_rate, min_finished, \
                 stage_started_at, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 'running', $8, $9, $10, $11, $12, $13, $12, $12) RETURNING *",
            )
            .bind(&new.name)
            .bind(&new.device_type)
            .bind(new.firmware_id)
            .bind(new.variant.map(|(id, _)| id))
            .bind(new.variant.map(|(_, p)| i64::from(p)).unwrap_or(0))
            .bind(serde_json::to_string(&new.groups).map_err(encode)?)
            .bind(serde_json::to_string(&new.stages).map_err(encode)?)
            .bind(new.policy.min_successes as i64)
            .bind(new.policy.soak_seconds as i64)
            .bind(i64::from(new.policy.max_failure_rate))
            .bind(new.policy.min_finished as i64)
            .bind(now)
            .bind(&new.created_by)
            .fetch_one(&mut *tx)
            .await?;
            let record = RolloutRecord::try_from(row)?;
            for (_, firmware_id, _) in record.arms() {
                sqlx::query("INSERT INTO rollout_firmware (firmware_id, rollout_id) VALUES ($1, $2)")
                    .bind(firmware_id)
                    .bind(record.id)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut change = change;
            change.target_id = Some(record.id.to_string());
            audit::record(&mut *tx, &change).await?;
            tx.commit().await?;
            Ok(record)
        }) })
        .await
    }

    /// The rollout that is not over holding a firmware, if any.
    pub async fn rollout_holding(&self, firmware_id: i64) -> Result<Option<i64>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT rollout_id FROM rollout_firmware WHERE firmware_id = $1")
                .bind(firmware_id)
                .fetch_optional(pool)
                .await
        })
    }

    pub async fn rollout(&self, id: i64) -> Result<Option<RolloutRecord>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, RolloutRow>("SELECT * FROM rollouts WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
                .map(RolloutRecord::try_from)
                .transpose()
        })
    }

    /// A page of rollouts, newest first, and how many match.
    pub async fn list_rollouts(
        &self,
        filter: &RolloutFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<RolloutRecord>, i64), sqlx::Error> {
        on_db!(&self.db, pool => {
            let push_where = |query: &mut QueryBuilder<DB>| {
                query.push(" WHERE TRUE");
                if let Some(state) = filter.state {
                    query.push(" AND state = ").push_bind(state.as_str());
                }
                if let Some(device_type) = &filter.device_type {
                    query.push(" AND device_type = ").push_bind(device_type.clone());
                }
                if let Some(firmware_id) = filter.firmware_id {
                    query
                        .push(" AND (firmware_id = ")
                        .push_bind(firmware_id)
                        .push(" OR variant_firmware_id = ")
                        .push_bind(firmware_id)
                        .push(")");
                }
            };
            let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM rollouts");
            push_where(&mut count);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
            let mut page = QueryBuilder::<DB>::new("SELECT * FROM rollouts");
            push_where(&mut page);
            page.push(" ORDER BY id DESC LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            let rows = page.build_query_as::<RolloutRow>().fetch_all(pool).await?;
            let items = rows
                .into_iter()
                .map(RolloutRecord::try_from)
                .collect::<Result<_, _>>()?;
            Ok((items, total))
        })
    }

    /// Every rollout, oldest first (for the catalogue: the latest rollout
    /// of a firmware decides who is offered it).
    pub async fn all_rollouts(&self) -> Result<Vec<RolloutRecord>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, RolloutRow>("SELECT * FROM rollouts ORDER BY id")
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(RolloutRecord::try_from)
                .collect()
        })
    }

    /// The ids of the running rollouts.
    pub async fn running_rollouts(&self) -> Result<Vec<i64>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT id FROM rollouts WHERE state = 'running' ORDER BY id")
                .fetch_all(pool)
                .await
        })
    }

    /// Moves a rollout, if it is still in `change.from`, and records who
    /// did it in the same transaction. `None` when it had moved on.
    pub async fn change_rollout(
        &self,
        id: i64,
        change: StateChange,
        audit: Change,
    ) -> Result<Option<RolloutRecord>, sqlx::Error> {
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                let mut tx = pool.begin().await?;
                let now = Utc::now();
                let ((from_state, from_stage), (to_state, to_stage)) = (change.from, change.to);
                let row = sqlx::query_as::<_, RolloutRow>(
                    "UPDATE rollouts SET state = $1, stage = $2, state_reason = $3, updated_at = $4, \
                     stage_started_at = CASE WHEN stage = $2 THEN stage_started_at ELSE $4 END \
                     WHERE id = $5 AND state = $6 AND stage = $7 RETURNING *",
                )
                .bind(to_state.as_str())
                .bind(to_stage as i64)
                .bind(&change.reason)
                .bind(now)
                .bind(id)
                .bind(from_state.as_str())
                .bind(from_stage as i64)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                if to_state.is_final() {
                    sqlx::query("DELETE FROM rollout_firmware WHERE rollout_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                audit::record(&mut *tx, &audit).await?;
                tx.commit().await?;
                RolloutRecord::try_from(row).map(Some)
            })
        })
        .await
    }

    /// How the devices of a rollout fared, per stage and arm, each device
    /// counted once by its latest attempt; failures also per reason.
    pub async fn rollout_tallies(&self, id: i64) -> Result<Vec<Tally>, sqlx::Error> {
        on_db!(&self.db, pool => {
            /// Stage, arm, status, failure reason, devices.
            type Row = (Option<i64>, Option<String>, String, Option<String>, i64);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT l.rollout_stage, l.rollout_arm, l.status, l.failure_reason, COUNT(*) FROM device_ota_log l \
                 JOIN (SELECT MAX(id) AS id FROM device_ota_log WHERE rollout_id = $1 GROUP BY device_id) latest \
                 ON latest.id = l.id GROUP BY 1, 2, 3, 4",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(stage, arm, status, reason, n)| {
                    let n = u64::try_from(n).unwrap_or_default();
                    let reason = reason.and_then(|r| r.parse::<FailureReason>().ok());
                    let mut counts = Counts {
                        offered: n,
                        ..Counts::default()
                    };
                    match status.as_str() {
                        "success" => counts.succeeded = n,
                        "failed" if reason == Some(FailureReason::Rollback) => counts.rolled_back = n,
                        "failed" => counts.failed = n,
                        _ => counts.in_progress = n,
                    }
                    Tally {
                        stage: stage.and_then(|s| usize::try_from(s).ok()).unwrap_or_default(),
                        arm: arm.and_then(|a| a.parse().ok()).unwrap_or(Arm::A),
                        counts,
                        reason: (status == "failed").then(|| (reason.unwrap_or(FailureReason::Other), n)),
                    }
                })
                .collect())
        })
    }
}
