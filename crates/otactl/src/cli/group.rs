//! `otactl groups …`: the arguments of create, list, show, set, delete,
//! members, add and remove. Groups are static, named sets of devices that
//! firmware and rollouts can target.

use clap::{Args, Subcommand};

use super::device::group_name;
use super::{DeviceFilterArgs, PageArgs};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create an empty group
    #[command(after_help = CREATE_EXAMPLES)]
    Create(GroupCreateArgs),
    /// List the groups, by name, with their member counts
    #[command(
        after_help = "Examples:\n  otactl groups list\n  otactl groups ls --json | jq -r '.items[].name'",
        visible_alias = "ls"
    )]
    List(PageArgs),
    /// Show one group
    #[command(after_help = "Example:\n  otactl groups show beta-testers")]
    Show(GroupNameArg),
    /// Change a group's description (a name never changes)
    #[command(after_help = SET_EXAMPLES)]
    Set(GroupSetArgs),
    /// Delete a group and its memberships (refused while a firmware or an unfinished rollout targets it)
    #[command(after_help = "Example:\n  otactl groups delete beta-testers", visible_alias = "rm")]
    Delete(GroupNameArg),
    /// List a group's members that have checked in, by device id
    #[command(after_help = MEMBERS_EXAMPLES)]
    Members(GroupMembersArgs),
    /// Add devices to a group: by id, or every device a filter matches now
    #[command(after_help = ADD_EXAMPLES)]
    Add(MembersChangeArgs),
    /// Remove devices from a group: by id, or every device a filter matches now
    #[command(after_help = REMOVE_EXAMPLES)]
    Remove(MembersChangeArgs),
}

#[derive(Debug, Args)]
pub struct GroupNameArg {
    /// The group's name, e.g. beta-testers
    #[arg(value_parser = group_name)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct GroupCreateArgs {
    /// Lower-case letters, digits, `_` and `-`, at most 64, e.g. beta-testers
    #[arg(value_parser = group_name)]
    pub name: String,
    /// What the group is, for people
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

#[derive(Debug, Args)]
pub struct GroupSetArgs {
    /// The group's name
    #[arg(value_parser = group_name)]
    pub name: String,
    /// The new description
    #[arg(
        long,
        value_name = "TEXT",
        required_unless_present = "no_description",
        conflicts_with = "no_description"
    )]
    pub description: Option<String>,
    /// Remove the description
    #[arg(long)]
    pub no_description: bool,
}

#[derive(Debug, Args)]
pub struct GroupMembersArgs {
    /// The group's name
    #[arg(value_parser = group_name)]
    pub name: String,
    #[command(flatten)]
    pub page: PageArgs,
}

/// Devices by id or by filter: exactly one of the two (checked when run).
#[derive(Debug, Args)]
pub struct MembersChangeArgs {
    /// The group's name
    #[arg(value_parser = group_name)]
    pub name: String,
    /// Device ids (they need not have checked in yet); or give filter options instead
    #[arg(value_name = "DEVICE_ID")]
    pub device_ids: Vec<String>,
    #[command(flatten)]
    pub filter: DeviceFilterArgs,
}

pub(super) const GROUP_EXAMPLES: &str = "Examples:
  otactl groups create beta-testers --description 'Staff units'
  otactl groups add beta-testers tab5-000042 tab5-000043
  otactl groups add beta-testers --device-type scales_bridge_tab5 --search lab-
  otactl groups members beta-testers
  otactl rollout create 12 --groups beta-testers";

const CREATE_EXAMPLES: &str = "Examples:
  otactl groups create beta-testers
  otactl groups create lab --description 'Units on the test bench'";

const SET_EXAMPLES: &str = "Examples:
  otactl groups set beta-testers --description 'Staff units, opted in'
  otactl groups set beta-testers --no-description";

const MEMBERS_EXAMPLES: &str = "Examples:
  otactl groups members beta-testers
  otactl groups members beta-testers --json | jq -r '.items[].device_id'";

const ADD_EXAMPLES: &str = "Examples:
  otactl groups add beta-testers tab5-000042 tab5-000043
  otactl groups add beta-testers --device-type scales_bridge_tab5 --version 1.1.0
  otactl groups add lab --search lab- --seen-within-days 7
Give device ids or filter options, not both. A filter is applied once, now: devices that
match later are not added.";

const REMOVE_EXAMPLES: &str = "Examples:
  otactl groups remove beta-testers tab5-000042
  otactl groups remove beta-testers --not-seen-days 30
Give device ids or filter options, not both.";
