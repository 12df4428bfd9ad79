//! The command line: nouns and verbs in the style of gh and kubectl, the
//! seed's spellings (`upload`, `list`, `register`, `logs`) as aliases, and an
//! example in every command's `--help`.

mod audit;
mod device;
mod device_type;
mod group;
mod rollout;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use audit::AuditArgs;
pub use device::{DeviceCommand, DeviceFilterArgs, DeviceIdArg, DeviceListArgs, PinArgs, SummaryArgs, TokenArgs};
pub use device_type::{CreateArgs, DeviceTypeCommand, NameArg, PageArgs, SetArgs as DeviceTypeSetArgs};
pub use group::{GroupCommand, GroupCreateArgs, GroupMembersArgs, GroupNameArg, GroupSetArgs, MembersChangeArgs};
pub use rollout::{RolloutActionArgs, RolloutCommand, RolloutCreateArgs, RolloutListArgs, RolloutStatusArgs};

/// The OTA server's command line: upload firmware, promote it, roll it out, watch the fleet update.
#[derive(Debug, Parser)]
#[command(
    name = "otactl",
    version,
    after_help = "Examples:
  otactl login --server https://ota.example.com
  otactl device-type create scales_bridge_tab5 --image-format esp-app --chip esp32p4
  otactl image inspect build/app.bin --device-type scales_bridge_tab5
  otactl firmware upload build/app.bin --device-type scales_bridge_tab5 --register
  otactl firmware set 12 --rollout 10 && otactl logs --firmware-id 12 --follow
  otactl rollout create 12 --stages 1,10,50,100 && otactl rollout status 1 --watch
  otactl devices summary && otactl audit --since 24h

Exit codes: 0 done; 1 the server refused, or a result did not check out;
2 usage error; 3 the server cannot be reached.
The server and token come from --server/--admin-token, then OTA_SERVER/OTA_ADMIN_TOKEN,
then the config file written by `otactl login`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The server's base URL [default: http://127.0.0.1:8080, or the config file's]
    #[arg(long, global = true, env = "OTA_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The admin token (prefer OTA_ADMIN_TOKEN or `otactl login`: arguments are visible to other users)
    #[arg(
        long,
        global = true,
        env = "OTA_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        allow_hyphen_values = true,
        value_parser = |text: &str| Ok::<_, String>(TokenArg(text.to_owned()))
    )]
    pub admin_token: Option<TokenArg>,
    /// Whether `admin_token` came from OTA_ADMIN_TOKEN rather than the command line.
    #[arg(skip)]
    pub admin_token_from_env: bool,
    /// The config file [default: $XDG_CONFIG_HOME/otactl/config.toml]
    #[arg(long, global = true, env = "OTACTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for the server to connect and answer (uploads: to connect)
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
    /// A PEM file of CA certificates to trust for https:// servers, beyond the system's
    #[arg(long, global = true, env = "OTA_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// The admin token as given, redacted in `Debug`; checked when used.
#[derive(Clone)]
pub struct TokenArg(pub String);

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenArg(<redacted>)")
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Firmware builds: upload, register, list, show, promote, set, deactivate, recall
    #[command(subcommand, visible_alias = "fw", after_help = FIRMWARE_EXAMPLES)]
    Firmware(FirmwareCommand),
    /// Update attempts of the fleet, newest first; --follow to watch
    #[command(after_help = LOGS_EXAMPLES)]
    Logs(LogsArgs),
    /// Device types: what each product's firmware must be (chip, project, chip revisions)
    #[command(subcommand, visible_alias = "dt", after_help = DEVICE_TYPE_EXAMPLES)]
    DeviceType(DeviceTypeCommand),
    /// Devices: the inventory of devices that checked in, pins, the fleet summary, device tokens
    #[command(subcommand, visible_alias = "devices", after_help = device::DEVICE_EXAMPLES)]
    Device(DeviceCommand),
    /// Groups: named sets of devices that firmware and rollouts can target
    #[command(subcommand, visible_alias = "group", after_help = group::GROUP_EXAMPLES)]
    Groups(GroupCommand),
    /// Staged rollouts: create, watch, pause, resume, advance, abort
    #[command(subcommand, visible_alias = "rollouts", after_help = rollout::ROLLOUT_EXAMPLES)]
    Rollout(RolloutCommand),
    /// Who changed what, and when: the admin API's audit log, newest first
    #[command(after_help = audit::AUDIT_EXAMPLES)]
    Audit(AuditArgs),
    /// ESP-IDF app images on this machine: check a build before uploading it
    #[command(subcommand, after_help = INSPECT_EXAMPLES)]
    Image(ImageCommand),
    /// The server's health, readiness and version
    #[command(after_help = "Examples:\n  otactl status\n  otactl status --server https://ota.example.com --json")]
    Status,
    /// Save the server URL and admin token in the config file (mode 0600)
    #[command(after_help = LOGIN_EXAMPLES)]
    Login(LoginArgs),
    /// Remove the admin token from the config file
    #[command(after_help = "Example:\n  otactl logout")]
    Logout,
    /// Print a shell completion script
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Alias of `firmware upload`
    #[command(after_help = UPLOAD_EXAMPLES)]
    Upload(UploadArgs),
    /// Alias of `firmware list`
    #[command(after_help = LIST_EXAMPLES)]
    List(ListArgs),
    /// Alias of `firmware register`
    #[command(after_help = REGISTER_EXAMPLES)]
    Register(RegisterArgs),
}

#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Upload a binary (streamed; SHA-256 checked against the server's), and optionally register it
    #[command(after_help = UPLOAD_EXAMPLES)]
    Upload(UploadArgs),
    /// Register a binary already uploaded, so devices can be offered it
    #[command(after_help = REGISTER_EXAMPLES)]
    Register(RegisterArgs),
    /// List firmware, newest version first
    #[command(after_help = LIST_EXAMPLES, visible_alias = "ls")]
    List(ListArgs),
    /// Show one firmware with its update counts per status
    #[command(after_help = "Example:\n  otactl firmware show 12")]
    Show(IdArg),
    /// Mark a firmware stable, so devices on the stable channel are offered it
    #[command(after_help = "Example:\n  otactl firmware promote 12")]
    Promote(IdArg),
    /// Change a firmware's rollout, flags, notes or minimum version
    #[command(after_help = SET_EXAMPLES)]
    Set(SetArgs),
    /// Stop offering a firmware (the binary and its history stay)
    #[command(after_help = "Example:\n  otactl firmware deactivate 12")]
    Deactivate(IdArg),
    /// Offer a deactivated firmware again
    #[command(after_help = "Example:\n  otactl firmware activate 12")]
    Activate(IdArg),
    /// Take a bad release back: never offered again, its devices offered the previous good version
    #[command(after_help = RECALL_EXAMPLES)]
    Recall(RecallArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Read an ESP-IDF app image and print what it holds; with --device-type, whether the server would take it
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image, e.g. build/app.bin (esptool elf2image output, signed or not)
    pub file: PathBuf,
    /// Also check it against this device type's rules, fetched from the server (needs the admin token)
    #[arg(long, short = 't')]
    pub device_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// The firmware id (see `otactl firmware list`)
    pub id: i64,
}

#[derive(Debug, Args)]
pub struct RecallArgs {
    /// The firmware id (see `otactl firmware list`)
    pub id: i64,
    /// Why, for the firmware record and the audit log
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The binary to upload, e.g. build/app.bin
    pub file: PathBuf,
    /// The device type it is for, e.g. scales_bridge_tab5
    #[arg(long, short = 't')]
    pub device_type: String,
    /// Its semantic version, e.g. 1.2.0 (a leading v is accepted) [default: for an esp-app device type, the image's own]
    #[arg(long, short = 'v')]
    pub version: Option<String>,
    /// Keep --version even though the image's app descriptor says another (the server records it)
    #[arg(long, requires = "version")]
    pub override_version: bool,
    /// Its build number; breaks ties between equal versions (with --register)
    #[arg(long = "build", value_name = "N", requires = "register")]
    pub build_number: Option<i64>,
    /// Release notes (with --register)
    #[arg(long, value_name = "TEXT", requires = "register", conflicts_with = "notes_file")]
    pub notes: Option<String>,
    /// Release notes from a file, `-` for stdin (with --register)
    #[arg(long, value_name = "FILE", requires = "register")]
    pub notes_file: Option<PathBuf>,
    /// Only devices at this version or newer are offered it (with --register)
    #[arg(long, value_name = "VERSION", requires = "register")]
    pub min_version: Option<String>,
    /// Register it as well, once its SHA-256 is checked (otherwise run `otactl firmware register` later)
    #[arg(long)]
    pub register: bool,
    /// Register it as stable (with --register)
    #[arg(long, requires = "register")]
    pub stable: bool,
    /// Register it as mandatory (with --register)
    #[arg(long, requires = "register")]
    pub mandatory: bool,
    /// Register it with this rollout percentage, 0-100 (with --register; default 100)
    #[arg(long, value_name = "PERCENT", requires = "register", value_parser = parse_percent)]
    pub rollout: Option<u8>,
    /// Do not draw a progress bar, even on a terminal
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct Notes {
    /// Release notes
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
    /// Release notes from a file (`-` for stdin)
    #[arg(long, value_name = "FILE")]
    pub notes_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The device type, e.g. scales_bridge_tab5
    #[arg(long, short = 't')]
    pub device_type: String,
    /// The version, e.g. 1.2.0 [default: for an esp-app device type, the image's own; then give --filename]
    #[arg(long, short = 'v', required_unless_present = "filename")]
    pub version: Option<String>,
    /// Keep --version even though the image's app descriptor says another (the server records it)
    #[arg(long, requires = "version")]
    pub override_version: bool,
    /// The local copy of the uploaded binary: its SHA-256 and size are sent for the server to check
    #[arg(long, value_name = "FILE", required_unless_present = "hash", conflicts_with = "hash")]
    pub file: Option<PathBuf>,
    /// The binary's SHA-256 (hex), instead of --file
    #[arg(long, value_name = "SHA256")]
    pub hash: Option<String>,
    /// The uploaded file's name in the device type's folder [default: v<VERSION>.bin]
    #[arg(long, value_name = "NAME")]
    pub filename: Option<String>,
    /// Its build number
    #[arg(long = "build", value_name = "N")]
    pub build_number: Option<i64>,
    #[command(flatten)]
    pub notes: Notes,
    /// Only devices at this version or newer are offered it
    #[arg(long, value_name = "VERSION")]
    pub min_version: Option<String>,
    /// Mark it stable
    #[arg(long)]
    pub stable: bool,
    /// Mark it mandatory
    #[arg(long)]
    pub mandatory: bool,
    /// Rollout percentage, 0-100 [default: 100]
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub rollout: Option<u8>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this device type
    #[arg(long, short = 't')]
    pub device_type: Option<String>,
    /// Only active firmware
    #[arg(long, conflicts_with = "inactive")]
    pub active: bool,
    /// Only deactivated firmware
    #[arg(long)]
    pub inactive: bool,
    /// Only stable firmware
    #[arg(long)]
    pub stable: bool,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The firmware id
    pub id: i64,
    /// Rollout percentage, 0-100: the share of devices offered it
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub rollout: Option<u8>,
    /// Devices must install it
    #[arg(long, conflicts_with = "not_mandatory")]
    pub mandatory: bool,
    /// Devices may skip it
    #[arg(long)]
    pub not_mandatory: bool,
    /// Mark it stable
    #[arg(long, conflicts_with = "unstable")]
    pub stable: bool,
    /// Mark it not stable (only channels that admit pre-releases are offered it)
    #[arg(long)]
    pub unstable: bool,
    /// Offer it again after a deactivation
    #[arg(long, conflicts_with = "inactive")]
    pub active: bool,
    /// Stop offering it
    #[arg(long)]
    pub inactive: bool,
    #[command(flatten)]
    pub notes: Notes,
    /// Remove the release notes
    #[arg(long, conflicts_with_all = ["notes", "notes_file"])]
    pub clear_notes: bool,
    /// Only devices at this version or newer are offered it
    #[arg(long, value_name = "VERSION")]
    pub min_version: Option<String>,
    /// Remove the minimum version
    #[arg(long, conflicts_with = "min_version")]
    pub clear_min_version: bool,
    /// Its build number
    #[arg(long = "build", value_name = "N")]
    pub build_number: Option<i64>,
    /// Offer it only to members of these groups (comma-separated); '' offers it to every device of its type
    #[arg(long, visible_alias = "target-groups", value_name = "GROUPS", value_parser = parse_groups)]
    pub groups: Option<TargetGroups>,
}

/// `--groups a,b` of `firmware set`: group names, or none for everyone.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroups(pub Vec<String>);

/// Comma-separated group names; empty parts are dropped, so `''` is no group.
fn parse_groups(text: &str) -> Result<TargetGroups, String> {
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(device::group_name)
        .collect::<Result<Vec<_>, _>>()
        .map(TargetGroups)
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this device
    #[arg(long, short = 'd')]
    pub device_id: Option<String>,
    /// Only this firmware
    #[arg(long)]
    pub firmware_id: Option<i64>,
    /// Only this status: pending, downloading, installing, success or failed
    #[arg(long, short = 's')]
    pub status: Option<String>,
    /// Only attempts started since: a duration back from now (30m, 1h, 7d) or an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// How many rows, 1-500
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
    pub limit: i64,
    /// How many rows to skip
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: i64,
    /// Keep watching: print attempts as they start and change, until interrupted
    #[arg(long, short = 'f', conflicts_with = "offset")]
    pub follow: bool,
    /// How often --follow asks the server (at least 100ms)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval, requires = "follow")]
    pub interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the admin token from this file (e.g. the server's data/secrets/admin_token)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Save without checking the token against the server
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: clap_complete::Shell,
}

/// A duration of at least `min`.
fn duration_at_least(text: &str, min: std::time::Duration, what: &str) -> Result<std::time::Duration, String> {
    let duration = ota_core::units::parse_duration(text)?;
    if duration < min {
        return Err(format!("{what} must be at least {min:?}"));
    }
    Ok(duration)
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    duration_at_least(text, std::time::Duration::from_secs(1), "the timeout")
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    duration_at_least(text, std::time::Duration::from_millis(100), "the interval")
}

/// A device token's lifetime: what the server accepts, 60 s to 3650 days.
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = duration_at_least(text, std::time::Duration::from_secs(60), "the ttl")?;
    if ttl > std::time::Duration::from_secs(3650 * 86_400) {
        return Err("the ttl must be at most 3650d".into());
    }
    Ok(ttl)
}

fn parse_percent(text: &str) -> Result<u8, String> {
    let value: u8 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{text}` is not a whole percentage"))?;
    if value > 100 {
        return Err(format!("{value} is not between 0 and 100"));
    }
    Ok(value)
}

const FIRMWARE_EXAMPLES: &str = "Examples:
  otactl firmware upload build/app.bin -t scales_bridge_tab5 --register
  otactl firmware upload build/app.bin -t legacy_sensor -v 1.2.0 --register
  otactl firmware promote 12
  otactl firmware set 12 --rollout 10
  otactl firmware recall 12 --reason 'boot loop'
  otactl firmware list -t scales_bridge_tab5";

const UPLOAD_EXAMPLES: &str = "Examples:
  otactl firmware upload build/app.bin --device-type scales_bridge_tab5
  otactl firmware upload build/app.bin -t scales_bridge_tab5 --build 42 \\
      --notes-file CHANGES.md --register --stable --rollout 10
  otactl firmware upload build/app.bin -t scales_bridge_tab5 -v 1.2.1 --override-version
  otactl firmware upload legacy.bin -t legacy_sensor -v 1.2.0
For an esp-app device type the version is the image's own (esp_app_desc_t.version)
unless --version is given; a raw device type needs --version.";

const REGISTER_EXAMPLES: &str = "Examples:
  otactl firmware register -t scales_bridge_tab5 -v 1.2.0 --file build/app.bin --stable
  otactl firmware register -t scales_bridge_tab5 -v 1.2.0 --hash 9f86d08…b0f00a08 --rollout 10
  otactl firmware register -t scales_bridge_tab5 --filename v1.2.0.bin --file build/app.bin";

const LIST_EXAMPLES: &str = "Examples:
  otactl firmware list
  otactl firmware list --device-type scales_bridge_tab5 --active --stable
  otactl firmware list --json | jq '.items[].version'";

const SET_EXAMPLES: &str = "Examples:
  otactl firmware set 12 --rollout 25
  otactl firmware set 12 --rollout 100 --mandatory
  otactl firmware set 12 --min-version 1.1.0 --notes 'Fixes the scale drift'
  otactl firmware set 12 --groups beta-testers,lab
  otactl firmware set 12 --groups ''          # every device of its type again";

const RECALL_EXAMPLES: &str = "Examples:
  otactl firmware recall 12 --reason 'boot loop on rev v1.0 units'
A recalled firmware is never offered again, and its unfinished rollouts halt. Devices running
it are offered the previous good version (a downgrade) where their secure_version allows.";

const LOGS_EXAMPLES: &str = "Examples:
  otactl logs --firmware-id 12 --since 1h
  otactl logs --status failed --since 2026-11-27T00:00:00Z
  otactl logs --firmware-id 12 -f";

const DEVICE_TYPE_EXAMPLES: &str = "Examples:
  otactl device-type create scales_bridge_tab5 --image-format esp-app --chip esp32p4 --min-chip-revision v1.0
  otactl device-type list
  otactl device-type show scales_bridge_tab5
  otactl dt set scales_bridge_tab5 --project-name scales_bridge";

const INSPECT_EXAMPLES: &str = "Examples:
  otactl image inspect build/app.bin
  otactl image inspect build/app.bin --device-type scales_bridge_tab5
  otactl image inspect build/app.bin --json | jq .image.app.secure_version
Exit 1 when the file is not a valid app image, or does not fit the device type.";

const LOGIN_EXAMPLES: &str = "Examples:
  otactl login --server https://ota.example.com            # asks for the token
  otactl login --server http://127.0.0.1:8080 --token-file data/secrets/admin_token
  echo \"$TOKEN\" | otactl login --server https://ota.example.com";

const COMPLETION_EXAMPLES: &str = "Examples:
  otactl completions bash > ~/.local/share/bash-completion/completions/otactl
  otactl completions zsh > ~/.zfunc/_otactl
  otactl completions fish > ~/.config/fish/completions/otactl.fish";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example_in_its_help() {
        fn walk(command: &clap::Command, path: String, missing: &mut Vec<String>) {
            let help = command.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            if !help.contains("Example") {
                missing.push(path.clone());
            }
            for sub in command.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "otactl".into(), &mut missing);
        assert!(missing.is_empty(), "commands without an example: {missing:?}");
    }

    #[test]
    fn target_groups_are_checked_names_and_empty_means_everyone() {
        assert_eq!(
            parse_groups("beta-testers, lab"),
            Ok(TargetGroups(vec!["beta-testers".into(), "lab".into()]))
        );
        assert_eq!(parse_groups(""), Ok(TargetGroups(vec![])));
        assert!(parse_groups("Beta Testers").is_err());
    }

    #[test]
    fn percentages_are_whole_and_at_most_100() {
        assert_eq!(parse_percent("25"), Ok(25));
        assert_eq!(parse_percent("100%"), Ok(100));
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("12.5").is_err());
        assert!(parse_percent("-1").is_err());
    }
}
