//! Staged rollouts as pure rules: which devices a stage reaches, which arm
//! of an A/B test a device is in, why an attempt failed, and whether a
//! stage advances, completes or halts.
//!
//! The server gathers the counts and applies the [`Decision`]; everything
//! that decides is here, so that it is unit-tested without a database.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::{DeviceId, Percent};
use crate::offer::rollout_bucket;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Offering to the current stage; advances and halts by itself.
    Running,
    /// Held by an operator: nobody is offered, nothing advances.
    Paused,
    /// Stopped by its failure rate (or by a recall): nobody is offered
    /// until an operator resumes it.
    Halted,
    /// Stopped for good by an operator.
    Aborted,
    /// The last stage soaked: the firmware stays offered to the whole target.
    Completed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
            RolloutState::Completed => "completed",
        }
    }

    /// Whether devices are offered the firmware in this state.
    pub fn offers(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Completed)
    }

    /// Whether the rollout is over (no action moves it any more).
    pub fn is_final(self) -> bool {
        matches!(self, RolloutState::Aborted | RolloutState::Completed)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rollout state '{0}' (running, paused, halted, aborted, completed)")]
pub struct UnknownRolloutState(String);

impl FromStr for RolloutState {
    type Err = UnknownRolloutState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => RolloutState::Running,
            "paused" => RolloutState::Paused,
            "halted" => RolloutState::Halted,
            "aborted" => RolloutState::Aborted,
            "completed" => RolloutState::Completed,
            other => return Err(UnknownRolloutState(other.to_owned())),
        })
    }
}

/// What an operator asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
    /// Move to the next stage now (or complete, from the last).
    Advance,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
            Action::Advance => "advance",
        }
    }
}

/// Why an operator's action does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} rollout cannot {action}", action = action.as_str())]
pub struct ActionError {
    pub state: RolloutState,
    pub action: Action,
}

/// The state an action leads to, and whether it moves to the next stage.
///
/// Pause: running → paused. Resume: paused or halted → running. Abort: any
/// state that is not final → aborted. Advance: running or paused → the
/// next stage (running), or completed from the last stage.
pub fn apply_action(
    state: RolloutState,
    action: Action,
    stage: usize,
    stages: usize,
) -> Result<(RolloutState, usize), ActionError> {
    let refused = Err(ActionError { state, action });
    match (action, state) {
        (_, RolloutState::Aborted | RolloutState::Completed) => refused,
        (Action::Pause, RolloutState::Running) => Ok((RolloutState::Paused, stage)),
        (Action::Resume, RolloutState::Paused | RolloutState::Halted) => Ok((RolloutState::Running, stage)),
        (Action::Abort, _) => Ok((RolloutState::Aborted, stage)),
        (Action::Advance, RolloutState::Running | RolloutState::Paused) => Ok(if stage + 1 >= stages {
            (RolloutState::Completed, stage)
        } else {
            (RolloutState::Running, stage + 1)
        }),
        _ => refused,
    }
}

/// The stages a rollout walks: cumulative percentages of its target,
/// strictly rising, the last one 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(Vec<Percent>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StagesError {
    #[error("must list between 1 and 20 stages")]
    Count,
    #[error("each stage must be a percentage from 1 to 100")]
    Range,
    #[error("must rise strictly from one stage to the next")]
    NotRising,
    #[error("the last stage must be 100")]
    NotEndingAt100,
}

impl Stages {
    pub const MAX: usize = 20;

    pub fn parse(percentages: &[i64]) -> Result<Self, StagesError> {
        if percentages.is_empty() || percentages.len() > Self::MAX {
            return Err(StagesError::Count);
        }
        if percentages.iter().any(|p| !(1..=100).contains(p)) {
            return Err(StagesError::Range);
        }
        if percentages.windows(2).any(|w| w[0] >= w[1]) {
            return Err(StagesError::NotRising);
        }
        if percentages.last() != Some(&100) {
            return Err(StagesError::NotEndingAt100);
        }
        Ok(Stages(
            percentages
                .iter()
                .map(|p| Percent::parse(*p).expect("checked above"))
                .collect(),
        ))
    }

    /// 1 %, 10 %, 50 %, 100 %.
    pub fn default_stages() -> Self {
        Self::parse(&[1, 10, 50, 100]).expect("the default stages are valid")
    }

    pub fn as_slice(&self) -> &[Percent] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The rollout bucket of a device, in `0..10_000`: the same one the
/// firmware's own `rollout_percentage` uses, so a rollout that takes over
/// from a percentage keeps the devices that already had it.
pub fn cohort_bucket(device_id: &DeviceId, firmware_id: i64) -> u16 {
    rollout_bucket(device_id, firmware_id)
}

/// The first stage whose percentage reaches this bucket: the stage the
/// device joins the rollout in. Raising the stage never drops a device.
pub fn stage_of(bucket: u16, stages: &[Percent]) -> Option<usize> {
    stages
        .iter()
        .position(|percent| u32::from(bucket) < u32::from(percent.get()) * 100)
}

/// An arm of an A/B rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The rollout's firmware.
    A,
    /// The variant firmware.
    B,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::A => "a",
            Arm::B => "b",
        }
    }
}

impl FromStr for Arm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" => Ok(Arm::A),
            "b" => Ok(Arm::B),
            other => Err(format!("unknown arm '{other}'")),
        }
    }
}

/// Which arm of rollout `rollout_id` a device is in, when `variant` percent
/// of the cohort gets the variant. Independent of the cohort bucket (its
/// own hash), so each stage splits in the same proportion.
pub fn arm_of(device_id: &DeviceId, rollout_id: i64, variant: Percent) -> Arm {
    // A negative key never collides with a firmware id's bucket.
    let bucket = rollout_bucket(device_id, -rollout_id.saturating_abs() - 1);
    if u32::from(bucket) < u32::from(variant.get()) * 100 {
        Arm::B
    } else {
        Arm::A
    }
}

/// Why an attempt failed, from the prefix of the device's `error_message`
/// (`rollback: …`, `hash_mismatch: …`), as the ESP-IDF client writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The new image did not confirm itself and the bootloader went back.
    Rollback,
    /// The image fetched did not have the offered SHA-256.
    HashMismatch,
    /// The download failed.
    Download,
    /// The image did not fit the device (chip, project, version).
    Image,
    /// Writing to flash failed.
    Flash,
    /// Switching the boot partition failed.
    Activate,
    /// The image's secure_version is below the device's counter.
    AntiRollback,
    /// Anything else, or no message.
    Other,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Rollback => "rollback",
            FailureReason::HashMismatch => "hash_mismatch",
            FailureReason::Download => "download",
            FailureReason::Image => "image",
            FailureReason::Flash => "flash",
            FailureReason::Activate => "activate",
            FailureReason::AntiRollback => "anti_rollback",
            FailureReason::Other => "other",
        }
    }

    /// Reads the reason off an error message: the word before the first
    /// `:` (or the whole message), compared without case, `-` read as `_`.
    pub fn classify(error_message: Option<&str>) -> Self {
        let Some(message) = error_message else {
            return FailureReason::Other;
        };
        let head = message.split(':').next().unwrap_or_default().trim();
        match head.to_ascii_lowercase().replace('-', "_").as_str() {
            "rollback" | "rolled_back" => FailureReason::Rollback,
            "hash_mismatch" | "sha_256 mismatch" | "sha256 mismatch" => FailureReason::HashMismatch,
            "download" => FailureReason::Download,
            "image" => FailureReason::Image,
            "flash" => FailureReason::Flash,
            "activate" => FailureReason::Activate,
            "anti_rollback" => FailureReason::AntiRollback,
            _ => FailureReason::Other,
        }
    }
}

impl FromStr for FailureReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let reason = FailureReason::classify(Some(s));
        if reason.as_str() == s {
            Ok(reason)
        } else {
            Err(format!("unknown failure reason '{s}'"))
        }
    }
}

/// How devices of one stage (and one arm) fared: each device counted once,
/// by its latest attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    /// Devices offered the firmware (every device below is one of them).
    pub offered: u64,
    /// Attempts still open: pending, downloading or installing.
    pub in_progress: u64,
    /// Booted the new image and confirmed it.
    pub succeeded: u64,
    /// Failed for any reason other than a rollback.
    pub failed: u64,
    /// Installed, then went back to the old image.
    pub rolled_back: u64,
}

impl Counts {
    /// Attempts that ended, well or not.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.rolled_back
    }

    /// Failures of either kind.
    pub fn failures(&self) -> u64 {
        self.failed + self.rolled_back
    }

    /// Succeeded / finished, in percent; `None` before anything finished.
    pub fn success_rate(&self) -> Option<f64> {
        let finished = self.finished();
        (finished > 0).then(|| self.succeeded as f64 * 100.0 / finished as f64)
    }

    pub fn add(&mut self, other: &Counts) {
        self.offered += other.offered;
        self.in_progress += other.in_progress;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.rolled_back += other.rolled_back;
    }
}

/// When a rollout moves on and when it stops itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// Confirmed successes the current stage needs before it advances.
    pub min_successes: u64,
    /// Seconds the current stage must run before it advances.
    pub soak_seconds: u64,
    /// Halt when failures (rollbacks included) exceed this percentage of
    /// the finished attempts of the current stage, or of the whole rollout…
    pub max_failure_rate: u8,
    /// …once at least this many attempts have finished there.
    pub min_finished: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_successes: 10,
            soak_seconds: 3600,
            max_failure_rate: 10,
            min_finished: 10,
        }
    }
}

/// What a running rollout should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing yet.
    Hold,
    /// Move to the next stage.
    Advance { to: usize },
    /// The last stage is done.
    Complete,
    /// Stop offering: the failure rate passed the threshold.
    Halt { reason: String },
}

/// What [`decide`] looks at.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub state: RolloutState,
    pub stage: usize,
    pub stages: usize,
    /// Seconds since the current stage began.
    pub stage_age_seconds: u64,
    /// Per arm, the devices that joined in the current stage.
    pub current_stage: &'a [(Arm, Counts)],
    /// Per arm, every device of the rollout so far.
    pub whole_rollout: &'a [(Arm, Counts)],
}

/// Whether a rollout advances, completes, halts or holds.
///
/// Only a running rollout moves. Halting comes first: any arm whose
/// failures pass `max_failure_rate` percent of its finished attempts —
/// in the current stage, or over the whole rollout (late rollbacks of an
/// earlier stage count) — once `min_finished` attempts have finished
/// there, halts the rollout. Otherwise the stage advances (or, the last
/// one, completes) once it has run `soak_seconds` and its devices have
/// confirmed `min_successes` updates in all.
pub fn decide(policy: &Policy, progress: &Progress<'_>) -> Decision {
    if progress.state != RolloutState::Running {
        return Decision::Hold;
    }
    for (scope, arms) in [
        ("this stage", progress.current_stage),
        ("the whole rollout", progress.whole_rollout),
    ] {
        for (arm, counts) in arms {
            if let Some(reason) = failing(policy, *arm, arms.len() > 1, counts, scope) {
                return Decision::Halt { reason };
            }
        }
    }
    let succeeded: u64 = progress.current_stage.iter().map(|(_, c)| c.succeeded).sum();
    if progress.stage_age_seconds < policy.soak_seconds || succeeded < policy.min_successes {
        return Decision::Hold;
    }
    if progress.stage + 1 >= progress.stages {
        Decision::Complete
    } else {
        Decision::Advance { to: progress.stage + 1 }
    }
}

fn failing(policy: &Policy, arm: Arm, split: bool, counts: &Counts, scope: &str) -> Option<String> {
    let finished = counts.finished();
    if finished == 0 || finished < policy.min_finished {
        return None;
    }
    let failures = counts.failures();
    if failures * 100 <= u64::from(policy.max_failure_rate) * finished {
        return None;
    }
    let arm = if split {
        format!(" (arm {})", arm.as_str())
    } else {
        String::new()
    };
    Some(format!(
        "{failures} of {finished} finished attempts failed in {scope}{arm} ({} rolled back): \
         {:.1} % is over the {} % threshold",
        counts.rolled_back,
        failures as f64 * 100.0 / finished as f64,
        policy.max_failure_rate
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(succeeded: u64, failed: u64, rolled_back: u64) -> Counts {
        Counts {
            offered: succeeded + failed + rolled_back,
            in_progress: 0,
            succeeded,
            failed,
            rolled_back,
        }
    }

    fn policy() -> Policy {
        Policy {
            min_successes: 5,
            soak_seconds: 60,
            max_failure_rate: 10,
            min_finished: 10,
        }
    }

    fn running(stage: usize, age: u64, current: &[(Arm, Counts)], whole: &[(Arm, Counts)]) -> Decision {
        let progress = Progress {
            state: RolloutState::Running,
            stage,
            stages: 4,
            stage_age_seconds: age,
            current_stage: current,
            whole_rollout: whole,
        };
        decide(&policy(), &progress)
    }

    #[test]
    fn a_stage_advances_after_its_soak_time_and_enough_successes() {
        let good = [(Arm::A, counts(5, 0, 0))];
        assert_eq!(running(0, 60, &good, &good), Decision::Advance { to: 1 });
        assert_eq!(running(0, 59, &good, &good), Decision::Hold, "still soaking");
        let few = [(Arm::A, counts(4, 0, 0))];
        assert_eq!(running(0, 600, &few, &few), Decision::Hold, "too few successes");
        assert_eq!(
            running(3, 60, &good, &good),
            Decision::Complete,
            "the last stage completes"
        );
    }

    #[test]
    fn a_stage_halts_when_its_failure_rate_passes_the_threshold() {
        let bad = [(Arm::A, counts(7, 1, 2))];
        match running(0, 0, &bad, &bad) {
            Decision::Halt { reason } => {
                assert!(reason.contains("3 of 10"), "{reason}");
                assert!(reason.contains("2 rolled back"), "{reason}");
            }
            other => panic!("expected a halt, got {other:?}"),
        }
        let at_threshold = [(Arm::A, counts(9, 1, 0))];
        assert_eq!(
            running(0, 0, &at_threshold, &at_threshold),
            Decision::Hold,
            "10 % is not over 10 %"
        );
    }

    #[test]
    fn a_few_early_failures_do_not_halt_before_enough_attempts_finished() {
        let early = [(Arm::A, counts(1, 0, 3))];
        assert_eq!(running(0, 0, &early, &early), Decision::Hold);
    }

    #[test]
    fn halting_wins_over_advancing() {
        let bad = [(Arm::A, counts(20, 5, 0))];
        assert!(matches!(running(0, 3600, &bad, &bad), Decision::Halt { .. }));
    }

    #[test]
    fn late_rollbacks_of_an_earlier_stage_halt_a_later_one() {
        let current = [(Arm::A, counts(3, 0, 0))];
        let whole = [(Arm::A, counts(15, 0, 5))];
        match running(1, 0, &current, &whole) {
            Decision::Halt { reason } => assert!(reason.contains("the whole rollout"), "{reason}"),
            other => panic!("expected a halt, got {other:?}"),
        }
    }

    #[test]
    fn one_failing_arm_halts_an_ab_rollout_and_is_named() {
        let arms = [(Arm::A, counts(10, 0, 0)), (Arm::B, counts(8, 0, 4))];
        match running(0, 0, &arms, &arms) {
            Decision::Halt { reason } => assert!(reason.contains("arm b"), "{reason}"),
            other => panic!("expected a halt, got {other:?}"),
        }
        let both_good = [(Arm::A, counts(3, 0, 0)), (Arm::B, counts(2, 0, 0))];
        assert_eq!(
            running(0, 60, &both_good, &both_good),
            Decision::Advance { to: 1 },
            "successes of both arms count"
        );
    }

    #[test]
    fn only_a_running_rollout_moves() {
        let bad = [(Arm::A, counts(0, 0, 20))];
        for state in [
            RolloutState::Paused,
            RolloutState::Halted,
            RolloutState::Aborted,
            RolloutState::Completed,
        ] {
            let progress = Progress {
                state,
                stage: 0,
                stages: 4,
                stage_age_seconds: 9999,
                current_stage: &bad,
                whole_rollout: &bad,
            };
            assert_eq!(decide(&policy(), &progress), Decision::Hold, "{state}");
        }
    }

    #[test]
    fn operator_actions_follow_the_state_machine() {
        use RolloutState::*;
        assert_eq!(apply_action(Running, Action::Pause, 1, 4), Ok((Paused, 1)));
        assert_eq!(apply_action(Paused, Action::Resume, 1, 4), Ok((Running, 1)));
        assert_eq!(apply_action(Halted, Action::Resume, 0, 4), Ok((Running, 0)));
        assert_eq!(apply_action(Halted, Action::Abort, 0, 4), Ok((Aborted, 0)));
        assert_eq!(apply_action(Running, Action::Advance, 1, 4), Ok((Running, 2)));
        assert_eq!(apply_action(Paused, Action::Advance, 1, 4), Ok((Running, 2)));
        assert_eq!(apply_action(Running, Action::Advance, 3, 4), Ok((Completed, 3)));
        for (state, action) in [
            (Paused, Action::Pause),
            (Running, Action::Resume),
            (Halted, Action::Advance),
            (Halted, Action::Pause),
            (Aborted, Action::Resume),
            (Aborted, Action::Abort),
            (Completed, Action::Pause),
        ] {
            assert!(apply_action(state, action, 0, 4).is_err(), "{state} {action:?}");
        }
    }

    #[test]
    fn stages_must_rise_to_100() {
        assert!(Stages::parse(&[1, 10, 50, 100]).is_ok());
        assert!(Stages::parse(&[100]).is_ok());
        assert_eq!(Stages::parse(&[]), Err(StagesError::Count));
        assert_eq!(Stages::parse(&[0, 100]), Err(StagesError::Range));
        assert_eq!(Stages::parse(&[10, 10, 100]), Err(StagesError::NotRising));
        assert_eq!(Stages::parse(&[10, 50]), Err(StagesError::NotEndingAt100));
        assert_eq!(Stages::parse(&[10, 101]), Err(StagesError::Range));
    }

    #[test]
    fn a_device_joins_in_the_first_stage_that_reaches_its_bucket() {
        let stages = Stages::parse(&[1, 10, 50, 100]).unwrap();
        assert_eq!(stage_of(0, stages.as_slice()), Some(0));
        assert_eq!(stage_of(99, stages.as_slice()), Some(0));
        assert_eq!(stage_of(100, stages.as_slice()), Some(1));
        assert_eq!(stage_of(4999, stages.as_slice()), Some(2));
        assert_eq!(stage_of(9999, stages.as_slice()), Some(3));
    }

    #[test]
    fn stages_reach_about_their_share_of_a_fleet() {
        let stages = Stages::default_stages();
        let mut per_stage = [0usize; 4];
        for n in 0..20_000 {
            let id = DeviceId::parse(&format!("sim-{n:05}")).unwrap();
            per_stage[stage_of(cohort_bucket(&id, 3), stages.as_slice()).unwrap()] += 1;
        }
        for (stage, (count, expected)) in per_stage.iter().zip([200, 1800, 8000, 10_000]).enumerate() {
            let off = count.abs_diff(expected) as f64 / expected as f64;
            assert!(off < 0.2, "stage {stage}: {count} devices, expected about {expected}");
        }
    }

    #[test]
    fn an_ab_split_gives_the_variant_its_share_and_is_stable() {
        let thirty = Percent::parse(30).unwrap();
        let ids: Vec<DeviceId> = (0..10_000)
            .map(|n| DeviceId::parse(&format!("dev-{n}")).unwrap())
            .collect();
        let variant = ids.iter().filter(|id| arm_of(id, 7, thirty) == Arm::B).count();
        assert!((2700..=3300).contains(&variant), "{variant} of 10000 in arm b");
        assert!(ids.iter().all(|id| arm_of(id, 7, thirty) == arm_of(id, 7, thirty)));
        assert!(ids.iter().all(|id| arm_of(id, 7, Percent::parse(0).unwrap()) == Arm::A));
        assert!(ids.iter().all(|id| arm_of(id, 7, Percent::FULL) == Arm::B));
    }

    #[test]
    fn failure_reasons_are_read_from_the_message_prefix() {
        for (message, reason) in [
            (
                Some("rollback: 1.0.0 runs again; 1.1.0 did not confirm itself"),
                FailureReason::Rollback,
            ),
            (Some("rollback"), FailureReason::Rollback),
            (Some("hash_mismatch: expected ab, got cd"), FailureReason::HashMismatch),
            (Some("SHA-256 mismatch"), FailureReason::HashMismatch),
            (Some("download: connection reset"), FailureReason::Download),
            (Some("image: project is other"), FailureReason::Image),
            (Some("anti-rollback: below the counter"), FailureReason::AntiRollback),
            (Some("install failed (simulated)"), FailureReason::Other),
            (None, FailureReason::Other),
        ] {
            assert_eq!(FailureReason::classify(message), reason, "{message:?}");
        }
        assert_eq!("rollback".parse::<FailureReason>(), Ok(FailureReason::Rollback));
        assert!("rollback: x".parse::<FailureReason>().is_err());
    }
}
