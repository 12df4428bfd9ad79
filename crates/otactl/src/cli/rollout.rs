//! `otactl rollout …`: the arguments of create, list, status and the
//! operator's actions (pause, resume, abort, advance).

use clap::{Args, Subcommand};
use ota_core::rollout::{RolloutState, Stages};

use super::device::{device_type, group_name};
use super::{PageArgs, parse_interval, parse_percent};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a staged rollout of a firmware: 1 %, 10 %, 50 %, 100 % of its target by default
    #[command(after_help = CREATE_EXAMPLES)]
    Create(RolloutCreateArgs),
    /// List rollouts, newest first
    #[command(after_help = LIST_EXAMPLES, visible_alias = "ls")]
    List(RolloutListArgs),
    /// Show a rollout: its state, stage, policy, progress per stage and, for an A/B test, per arm
    #[command(after_help = STATUS_EXAMPLES, visible_alias = "show")]
    Status(RolloutStatusArgs),
    /// Hold a running rollout: nobody is offered its firmware, nothing advances
    #[command(after_help = "Example:\n  otactl rollout pause 3 --reason 'battery drain reports'")]
    Pause(RolloutActionArgs),
    /// Run a paused or halted rollout again, at its current stage
    #[command(after_help = "Example:\n  otactl rollout resume 3 --reason 'false alarm'")]
    Resume(RolloutActionArgs),
    /// Stop a rollout for good
    #[command(after_help = "Example:\n  otactl rollout abort 3 --reason 'superseded by 1.2.1'")]
    Abort(RolloutActionArgs),
    /// Move a running or paused rollout to its next stage now (or complete it from the last)
    #[command(after_help = "Example:\n  otactl rollout advance 3 --reason 'lab units look fine'")]
    Advance(RolloutActionArgs),
}

#[derive(Debug, Args)]
pub struct RolloutCreateArgs {
    /// The firmware to roll out (see `otactl firmware list`)
    pub firmware_id: i64,
    /// A name for people, e.g. 'spring release'
    #[arg(long)]
    pub name: Option<String>,
    /// Only members of these groups (comma-separated) [default: the whole device type]
    #[arg(long, value_name = "GROUPS", value_delimiter = ',', value_parser = group_name)]
    pub groups: Vec<String>,
    /// Cumulative percentages of the target, rising, ending at 100 [default: 1,10,50,100]
    #[arg(long, value_name = "P,P,…", value_parser = parse_stages)]
    pub stages: Option<Stages>,
    /// Confirmed updates a stage needs before it advances [default: 10]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
    pub min_successes: Option<i64>,
    /// How long a stage runs before it advances, e.g. 30m or 3600s [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_soak)]
    pub soak: Option<std::time::Duration>,
    /// Halt when failures (rollbacks included) pass this percentage of finished attempts [default: 10]
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_failure_rate: Option<u8>,
    /// …once at least this many attempts have finished [default: 10]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
    pub min_finished: Option<i64>,
    /// A second firmware for an A/B test (arm b), of the same device type
    #[arg(long, value_name = "FIRMWARE_ID", requires = "variant_percent")]
    pub variant: Option<i64>,
    /// The share of each stage that gets the variant, 1-99
    #[arg(long, value_name = "PERCENT", requires = "variant", value_parser = parse_variant_percent)]
    pub variant_percent: Option<u8>,
}

#[derive(Debug, Args)]
pub struct RolloutListArgs {
    /// Only rollouts in this state: running, paused, halted, aborted or completed
    #[arg(long, value_parser = parse_state)]
    pub state: Option<RolloutState>,
    /// Only this device type
    #[arg(long, short = 't', value_parser = device_type)]
    pub device_type: Option<String>,
    /// Only rollouts of this firmware (either arm)
    #[arg(long, value_name = "ID")]
    pub firmware_id: Option<i64>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// The rollout's id (see `otactl rollout list`)
    pub id: i64,
    /// Keep watching: print it again each time it changes, until it is completed or aborted
    #[arg(long, short = 'w', visible_alias = "follow")]
    pub watch: bool,
    /// How often --watch asks the server (at least 100ms)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval, requires = "watch")]
    pub interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RolloutActionArgs {
    /// The rollout's id (see `otactl rollout list`)
    pub id: i64,
    /// Why, for the rollout's state reason and the audit log [default: '<action> by <token name>']
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// `1,10,50,100`, checked by the server's own rules.
fn parse_stages(text: &str) -> Result<Stages, String> {
    let percentages = text
        .split(',')
        .map(|part| {
            let part = part.trim().trim_end_matches('%');
            part.parse::<i64>()
                .map_err(|_| format!("`{part}` is not a whole percentage"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Stages::parse(&percentages).map_err(|e| format!("the stages {e}"))
}

/// A soak time in whole seconds, at most 366 days (the server's bound).
fn parse_soak(text: &str) -> Result<std::time::Duration, String> {
    let soak = ota_core::units::parse_duration(text)?;
    if soak > std::time::Duration::from_secs(366 * 86_400) {
        return Err("the soak time must be at most 366d".into());
    }
    Ok(std::time::Duration::from_secs(soak.as_secs()))
}

fn parse_variant_percent(text: &str) -> Result<u8, String> {
    match parse_percent(text)? {
        percent @ 1..=99 => Ok(percent),
        other => Err(format!("{other} is not between 1 and 99")),
    }
}

fn parse_state(text: &str) -> Result<RolloutState, String> {
    text.parse()
        .map_err(|e: ota_core::rollout::UnknownRolloutState| e.to_string())
}

pub(super) const ROLLOUT_EXAMPLES: &str = "Examples:
  otactl rollout create 12 --stages 5,25,100 --soak 30m
  otactl rollout status 3 --watch
  otactl rollout pause 3 --reason 'battery drain reports'
  otactl rollout list --state running";

const CREATE_EXAMPLES: &str = "Examples:
  otactl rollout create 12
  otactl rollout create 12 --name 'spring release' --groups beta-testers,lab \\
      --stages 5,25,100 --soak 30m --min-successes 20 --max-failure-rate 5 --min-finished 20
  otactl rollout create 12 --variant 13 --variant-percent 50
A stage advances by itself once it has soaked and enough of its devices confirmed the
update; the rollout halts by itself when failures pass --max-failure-rate.";

const LIST_EXAMPLES: &str = "Examples:
  otactl rollout list
  otactl rollout list --state running --device-type scales_bridge_tab5
  otactl rollout list --firmware-id 12 --json | jq '.items[] | {id, state, percent}'";

const STATUS_EXAMPLES: &str = "Examples:
  otactl rollout status 3
  otactl rollout status 3 --watch
  otactl rollout show 3 --json | jq .totals";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_rise_and_end_at_100() {
        let stages = parse_stages("1, 10,50%,100").unwrap();
        let percents: Vec<u8> = stages.as_slice().iter().map(|p| p.get()).collect();
        assert_eq!(percents, [1, 10, 50, 100]);
        assert!(parse_stages("10,5,100").is_err());
        assert!(parse_stages("10,50").is_err());
        assert!(parse_stages("ten,100").is_err());
    }

    #[test]
    fn a_soak_is_whole_seconds() {
        assert_eq!(parse_soak("30m"), Ok(std::time::Duration::from_secs(1800)));
        assert_eq!(parse_soak("1.5s"), Ok(std::time::Duration::from_secs(1)));
        assert!(parse_soak("400d").is_err());
    }

    #[test]
    fn a_variant_gets_1_to_99_percent() {
        assert_eq!(parse_variant_percent("50"), Ok(50));
        assert!(parse_variant_percent("0").is_err());
        assert!(parse_variant_percent("100").is_err());
    }
}
