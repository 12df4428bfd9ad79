//! The life of one update attempt and the moves it may make.
//!
//! `pending → downloading → installing → success`, any state that is not
//! final may move to `failed`, and repeating the current state is a progress
//! update. `success` and `failed` are final; after `failed` a device may try
//! again, which opens a new attempt.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtaStatus {
    Pending,
    Downloading,
    Installing,
    Success,
    Failed,
}

impl OtaStatus {
    pub const ALL: [OtaStatus; 5] = [
        OtaStatus::Pending,
        OtaStatus::Downloading,
        OtaStatus::Installing,
        OtaStatus::Success,
        OtaStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OtaStatus::Pending => "pending",
            OtaStatus::Downloading => "downloading",
            OtaStatus::Installing => "installing",
            OtaStatus::Success => "success",
            OtaStatus::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, OtaStatus::Success | OtaStatus::Failed)
    }

    fn rank(self) -> u8 {
        match self {
            OtaStatus::Pending => 0,
            OtaStatus::Downloading => 1,
            OtaStatus::Installing => 2,
            OtaStatus::Success => 3,
            OtaStatus::Failed => 4,
        }
    }
}

impl fmt::Display for OtaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status '{0}': expected one of pending, downloading, installing, success, failed")]
pub struct UnknownStatus(pub String);

impl FromStr for OtaStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        OtaStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.chars().take(40).collect()))
    }
}

/// What a device's report does to its latest attempt at a firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Update the open attempt to the reported status.
    Advance,
    /// Leave the status as it is, record the progress.
    Repeat,
    /// The attempt is over (or there never was one): open a new one, starting
    /// in the reported status.
    OpenNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the update attempt already ended in '{from}'; '{to}' cannot follow it")]
    AfterFinal { from: OtaStatus, to: OtaStatus },
    #[error("'{to}' cannot follow '{from}'")]
    Illegal { from: OtaStatus, to: OtaStatus },
    #[error("a new update attempt cannot start in '{to}'")]
    CannotStartIn { to: OtaStatus },
}

/// Decides what a report of `to` does, given the status of the latest attempt
/// for the same device and firmware (`None` when there is none).
pub fn transition(latest: Option<OtaStatus>, to: OtaStatus) -> Result<Transition, TransitionError> {
    use OtaStatus::*;
    let can_start_in = |to: OtaStatus| matches!(to, Pending | Downloading | Failed);
    match latest {
        None if can_start_in(to) => Ok(Transition::OpenNew),
        None => Err(TransitionError::CannotStartIn { to }),
        Some(Failed) if matches!(to, Pending | Downloading) => Ok(Transition::OpenNew),
        Some(from) if from.is_final() => Err(TransitionError::AfterFinal { from, to }),
        Some(from) if from == to => Ok(Transition::Repeat),
        Some(_) if to == Failed => Ok(Transition::Advance),
        Some(from) if to != Success || from == Installing => {
            if to.rank() == from.rank() + 1 {
                Ok(Transition::Advance)
            } else {
                Err(TransitionError::Illegal { from, to })
            }
        }
        Some(from) => Err(TransitionError::Illegal { from, to }),
    }
}

#[cfg(test)]
mod tests {
    use super::OtaStatus::*;
    use super::*;

    #[test]
    fn the_happy_path_advances_one_step_at_a_time() {
        assert_eq!(transition(Some(Pending), Downloading), Ok(Transition::Advance));
        assert_eq!(transition(Some(Downloading), Installing), Ok(Transition::Advance));
        assert_eq!(transition(Some(Installing), Success), Ok(Transition::Advance));
    }

    #[test]
    fn steps_cannot_be_skipped_or_reversed() {
        for (from, to) in [
            (Pending, Installing),
            (Pending, Success),
            (Downloading, Success),
            (Downloading, Pending),
            (Installing, Downloading),
            (Installing, Pending),
        ] {
            assert_eq!(
                transition(Some(from), to),
                Err(TransitionError::Illegal { from, to }),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn any_open_state_may_fail() {
        for from in [Pending, Downloading, Installing] {
            assert_eq!(transition(Some(from), Failed), Ok(Transition::Advance));
        }
    }

    #[test]
    fn repeating_the_current_state_is_a_progress_update() {
        for state in [Pending, Downloading, Installing] {
            assert_eq!(transition(Some(state), state), Ok(Transition::Repeat));
        }
    }

    #[test]
    fn success_is_final() {
        for to in OtaStatus::ALL {
            assert_eq!(
                transition(Some(Success), to),
                Err(TransitionError::AfterFinal { from: Success, to })
            );
        }
    }

    #[test]
    fn a_retry_after_failure_opens_a_new_attempt() {
        assert_eq!(transition(Some(Failed), Pending), Ok(Transition::OpenNew));
        assert_eq!(transition(Some(Failed), Downloading), Ok(Transition::OpenNew));
        for to in [Installing, Success, Failed] {
            assert_eq!(
                transition(Some(Failed), to),
                Err(TransitionError::AfterFinal { from: Failed, to })
            );
        }
    }

    #[test]
    fn a_first_report_opens_an_attempt_only_where_one_can_start() {
        for to in [Pending, Downloading, Failed] {
            assert_eq!(transition(None, to), Ok(Transition::OpenNew));
        }
        for to in [Installing, Success] {
            assert_eq!(transition(None, to), Err(TransitionError::CannotStartIn { to }));
        }
    }

    #[test]
    fn statuses_parse_from_their_wire_names() {
        for status in OtaStatus::ALL {
            assert_eq!(status.as_str().parse::<OtaStatus>(), Ok(status));
        }
        assert!("done".parse::<OtaStatus>().is_err());
    }
}
