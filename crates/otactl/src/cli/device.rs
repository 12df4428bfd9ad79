//! `otactl device …` (or `devices …`): the arguments of list, show, pin,
//! unpin, summary and token, and the inventory filters that `groups add`
//! and `groups remove` share with `list`.

use clap::{Args, Subcommand};
use ota_core::wire::DeviceFilter;

use super::{PageArgs, parse_ttl};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List and search the devices that have checked in, by device id
    #[command(after_help = LIST_EXAMPLES, visible_alias = "ls")]
    List(DeviceListArgs),
    /// Show what one device last reported, its groups and its update history
    #[command(
        after_help = "Examples:\n  otactl device show tab5-000042\n  otactl devices show tab5-000042 --json | jq .history[0]"
    )]
    Show(DeviceIdArg),
    /// Pin a device to one firmware of its type (a downgrade if it runs a newer one)
    #[command(after_help = PIN_EXAMPLES)]
    Pin(PinArgs),
    /// Unpin a device: it follows its rollouts, groups and channel again
    #[command(after_help = "Example:\n  otactl devices unpin tab5-000042")]
    Unpin(DeviceIdArg),
    /// The fleet of each device type at a glance: versions, statuses, devices not seen, pins
    #[command(after_help = SUMMARY_EXAMPLES)]
    Summary(SummaryArgs),
    /// Mint a JWT for one device, to put in its NVS or provisioning data
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct DeviceListArgs {
    #[command(flatten)]
    pub filter: DeviceFilterArgs,
    #[command(flatten)]
    pub page: PageArgs,
}

/// Filters on the inventory; every one given must match. Checked here, so
/// a typo is a usage error before anything is sent.
#[derive(Debug, Default, Args)]
pub struct DeviceFilterArgs {
    /// Only this device type
    #[arg(long, short = 't', value_parser = device_type)]
    pub device_type: Option<String>,
    /// Only devices running exactly this version
    #[arg(long, value_name = "VERSION", value_parser = version)]
    pub version: Option<String>,
    /// Only devices on this channel, e.g. stable or beta
    #[arg(long, value_parser = channel)]
    pub channel: Option<String>,
    /// Only devices whose latest attempt is in this status: pending, downloading, installing, success or failed
    #[arg(long, short = 's', value_parser = status)]
    pub status: Option<String>,
    /// Only members of this group
    #[arg(long, value_parser = group_name)]
    pub group: Option<String>,
    /// Only devices whose id contains this text
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only devices that have not checked in for at least N days
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=36_500))]
    pub not_seen_days: Option<i64>,
    /// Only devices that checked in within the last N days
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=36_500))]
    pub seen_within_days: Option<i64>,
    /// Only pinned devices
    #[arg(long, conflicts_with = "not_pinned")]
    pub pinned: bool,
    /// Only devices that are not pinned
    #[arg(long)]
    pub not_pinned: bool,
}

impl DeviceFilterArgs {
    /// The filter as the API takes it.
    pub fn to_filter(&self) -> DeviceFilter {
        DeviceFilter {
            device_type: self.device_type.clone(),
            version: self.version.clone(),
            channel: self.channel.clone(),
            status: self.status.clone(),
            group: self.group.clone(),
            search: self.search.clone().filter(|text| !text.is_empty()),
            not_seen_days: self.not_seen_days,
            seen_within_days: self.seen_within_days,
            pinned: (self.pinned || self.not_pinned).then_some(self.pinned),
        }
    }
}

#[derive(Debug, Args)]
pub struct DeviceIdArg {
    /// The device's id, as it sends it
    pub device_id: String,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The device's id, as it sends it
    pub device_id: String,
    /// The firmware to pin it to (see `otactl firmware list`)
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "version",
        conflicts_with = "version"
    )]
    pub firmware_id: Option<i64>,
    /// The version of its device type to pin it to, e.g. 1.1.0
    #[arg(long, short = 'v', value_parser = version)]
    pub version: Option<String>,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Only this device type
    #[arg(long, short = 't', value_parser = device_type)]
    pub device_type: Option<String>,
    /// Count devices that have not checked in for this many days as not seen [default: 7]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=36_500))]
    pub not_seen_days: Option<i64>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The device's id, as it will send it (the token's `sub`)
    pub device_id: String,
    /// The device type the token is limited to
    #[arg(long, short = 't')]
    pub device_type: String,
    /// How long the token is valid: 60s to 3650d
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,
}

pub(super) fn device_type(text: &str) -> Result<String, String> {
    ota_core::DeviceType::parse(text)
        .map(String::from)
        .map_err(|e| e.to_string())
}

/// A version, sent as the server writes it (`v1.2.0` is `1.2.0`).
pub(super) fn version(text: &str) -> Result<String, String> {
    ota_core::Version::parse(text)
        .map(|v| v.to_string())
        .map_err(|e| e.to_string())
}

fn channel(text: &str) -> Result<String, String> {
    ota_core::Channel::parse(text)
        .map(String::from)
        .map_err(|e| e.to_string())
}

fn status(text: &str) -> Result<String, String> {
    text.parse::<ota_core::OtaStatus>()
        .map(|s| s.as_str().to_owned())
        .map_err(|e| e.to_string())
}

pub(super) fn group_name(text: &str) -> Result<String, String> {
    ota_core::GroupName::parse(text)
        .map(String::from)
        .map_err(|e| e.to_string())
}

pub(super) const DEVICE_EXAMPLES: &str = "Examples:
  otactl devices list --device-type scales_bridge_tab5 --version 1.1.0
  otactl devices show tab5-000042
  otactl devices pin tab5-000042 --version 1.1.0
  otactl devices summary
  otactl device token tab5-000042 --device-type scales_bridge_tab5";

const LIST_EXAMPLES: &str = "Examples:
  otactl devices list
  otactl devices list -t scales_bridge_tab5 --status failed --seen-within-days 1
  otactl devices list --group beta-testers --not-pinned
  otactl devices list --not-seen-days 30 --search tab5-00
  otactl device list -t scales_bridge_tab5 --json | jq -r '.items[] | [.device_id, .current_version] | @tsv'";

const PIN_EXAMPLES: &str = "Examples:
  otactl devices pin tab5-000042 --version 1.1.0
  otactl devices pin tab5-000042 --firmware-id 12
A pinned device is offered exactly that firmware and nothing else, until `otactl devices unpin`.";

const SUMMARY_EXAMPLES: &str = "Examples:
  otactl devices summary
  otactl devices summary --device-type scales_bridge_tab5 --not-seen-days 30
  otactl devices summary --json | jq '.items[] | {device_type, by_version}'";

const TOKEN_EXAMPLES: &str = "Examples:
  otactl device token tab5-000042 --device-type scales_bridge_tab5
  TOKEN=$(otactl device token tab5-000042 -t scales_bridge_tab5 --ttl 30d)
The token is printed once, on stdout; the server keeps no copy.";
