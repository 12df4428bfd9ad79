//! The rollout driver: applies `ota_core::rollout::decide` to running
//! rollouts — at once when one of their attempts finishes, and every
//! `OTA_ROLLOUT_INTERVAL` seconds for soak times that run out.
//!
//! Every move is a conditional update (only from the state and stage the
//! decision saw), so several drivers — several instances — never advance a
//! rollout twice or undo an operator's pause.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use ota_core::rollout::{Arm, Counts, Decision, Progress, RolloutState, decide};
use ota_core::wire::{ArmProgress, Rollout, StageProgress, VariantRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{Change, RolloutRecord, StateChange, Store, Tally};

/// The actor of the server's own decisions in the audit log.
pub const SYSTEM: &str = "system";

const QUEUE: usize = 4096;

/// Where handlers say that a rollout may have something to decide.
#[derive(Debug, Clone)]
pub struct Rollouts {
    wake: mpsc::Sender<i64>,
}

/// The driver task; [`RolloutDriver::finish`] stops it.
#[derive(Debug)]
pub struct RolloutDriver {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Rollouts {
    pub fn start(store: Store, interval: Duration) -> (Rollouts, RolloutDriver) {
        let (wake, receiver) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let task = tokio::spawn(drive(store, receiver, stop.clone(), interval));
        (Rollouts { wake }, RolloutDriver { stop, task })
    }

    /// An attempt of the rollout ended: look at it soon. Never waits; a
    /// full queue only delays the decision to the next interval.
    pub fn attempt_finished(&self, rollout_id: i64) {
        let _ = self.wake.try_send(rollout_id);
    }
}

impl RolloutDriver {
    pub async fn finish(self, limit: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("the rollout driver did not finish in time");
        }
    }
}

async fn drive(store: Store, mut wake: mpsc::Receiver<i64>, stop: CancellationToken, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due: BTreeSet<i64> = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            Some(first) = wake.recv() => {
                let mut due = BTreeSet::from([first]);
                while let Ok(more) = wake.try_recv() {
                    due.insert(more);
                }
                due
            }
            _ = tick.tick() => match store.running_rollouts().await {
                Ok(ids) => ids.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not list the running rollouts");
                    continue;
                }
            },
        };
        for id in due {
            if let Err(e) = evaluate(&store, id).await {
                tracing::warn!(rollout_id = id, error = %e, "could not evaluate a rollout");
            }
        }
    }
}

/// Decides for one rollout and applies the decision; the rollout after a
/// move, `None` when nothing moved.
pub async fn evaluate(store: &Store, id: i64) -> Result<Option<RolloutRecord>, sqlx::Error> {
    let Some(rollout) = store.rollout(id).await? else {
        return Ok(None);
    };
    if rollout.state != RolloutState::Running {
        return Ok(None);
    }
    let tallies = store.rollout_tallies(id).await?;
    let current = per_arm(&tallies, &rollout, Some(rollout.stage));
    let whole = per_arm(&tallies, &rollout, None);
    let age = (Utc::now() - rollout.stage_started_at).num_seconds().max(0) as u64;
    let decision = decide(
        &rollout.policy,
        &Progress {
            state: rollout.state,
            stage: rollout.stage,
            stages: rollout.stages.len(),
            stage_age_seconds: age,
            current_stage: &current,
            whole_rollout: &whole,
        },
    );
    let (to, action, reason) = match decision {
        Decision::Hold => return Ok(None),
        Decision::Advance { to } => (
            (RolloutState::Running, to),
            "rollout.advance",
            format!(
                "stage {} ({} %) met its policy; now at {} %",
                rollout.stage + 1,
                rollout.stages[rollout.stage],
                rollout.stages.get(to).copied().unwrap_or(100)
            ),
        ),
        Decision::Complete => (
            (RolloutState::Completed, rollout.stage),
            "rollout.complete",
            "the last stage met its policy".to_owned(),
        ),
        Decision::Halt { reason } => ((RolloutState::Halted, rollout.stage), "rollout.halt", reason),
    };
    let audit = Change {
        actor: SYSTEM.to_owned(),
        action,
        target_type: "rollout",
        target_id: Some(id.to_string()),
        before: Some(serde_json::json!({"state": rollout.state, "stage": rollout.stage})),
        after: Some(serde_json::json!({"state": to.0, "stage": to.1, "reason": reason})),
    };
    let moved = store
        .change_rollout(
            id,
            StateChange {
                from: (rollout.state, rollout.stage),
                to,
                reason: Some(reason.clone()),
            },
            audit,
        )
        .await?;
    if moved.is_some() {
        metrics::counter!("ota_rollout_decisions_total", "decision" => action).increment(1);
        tracing::info!(rollout_id = id, state = %to.0, stage = to.1, reason, "rollout moved by itself");
    }
    Ok(moved)
}

/// Counts per arm, of one stage or of all.
fn per_arm(tallies: &[Tally], rollout: &RolloutRecord, stage: Option<usize>) -> Vec<(Arm, Counts)> {
    rollout
        .arms()
        .into_iter()
        .map(|(arm, _, _)| {
            let mut counts = Counts::default();
            for tally in tallies
                .iter()
                .filter(|t| t.arm == arm && stage.is_none_or(|s| t.stage == s))
            {
                counts.add(&tally.counts);
            }
            (arm, counts)
        })
        .collect()
}

/// A rollout as the API shows it, with its progress.
pub fn view(rollout: RolloutRecord, tallies: &[Tally], version_of: impl Fn(i64) -> String) -> Rollout {
    let arm_progress = |arm: Arm, firmware_id: i64, percent: u8, stage: Option<usize>| {
        let matching = || {
            tallies
                .iter()
                .filter(move |t| t.arm == arm && stage.is_none_or(|s| t.stage == s))
        };
        let mut counts = Counts::default();
        let mut failure_reasons = BTreeMap::new();
        for tally in matching() {
            counts.add(&tally.counts);
            if let Some((reason, n)) = tally.reason {
                *failure_reasons.entry(reason.as_str().to_owned()).or_insert(0) += n;
            }
        }
        ArmProgress {
            arm,
            firmware_id,
            version: version_of(firmware_id),
            percent,
            success_rate: counts.success_rate(),
            counts,
            failure_reasons,
        }
    };
    let arms_of = |stage: Option<usize>| -> Vec<ArmProgress> {
        rollout
            .arms()
            .into_iter()
            .map(|(arm, firmware_id, percent)| arm_progress(arm, firmware_id, percent, stage))
            .collect()
    };
    let sum = |arms: &[ArmProgress]| {
        let mut counts = Counts::default();
        for arm in arms {
            counts.add(&arm.counts);
        }
        counts
    };
    let progress = rollout
        .stages
        .iter()
        .enumerate()
        .map(|(index, percent)| {
            let arms = arms_of(Some(index));
            let state = if index < rollout.stage || rollout.state == RolloutState::Completed {
                "done"
            } else if index == rollout.stage {
                "current"
            } else {
                "waiting"
            };
            StageProgress {
                stage: index,
                percent: *percent,
                state: state.to_owned(),
                counts: sum(&arms),
                arms,
            }
        })
        .collect();
    let arms = arms_of(None);
    Rollout {
        id: rollout.id,
        name: rollout.name,
        device_type: rollout.device_type,
        firmware_id: rollout.firmware_id,
        version: version_of(rollout.firmware_id),
        variant: rollout.variant.map(|(firmware_id, percent)| VariantRequest {
            firmware_id,
            percent: i64::from(percent),
        }),
        groups: rollout.groups,
        percent: rollout.stages.get(rollout.stage).copied().unwrap_or(100),
        stages: rollout.stages,
        stage: rollout.stage,
        state: rollout.state,
        state_reason: rollout.state_reason,
        policy: rollout.policy,
        stage_started_at: rollout.stage_started_at,
        created_by: rollout.created_by,
        created_at: rollout.created_at,
        updated_at: rollout.updated_at,
        totals: sum(&arms),
        progress,
        arms,
    }
}
