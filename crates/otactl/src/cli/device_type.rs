//! `otactl device-type …`: the arguments of create, list, show and set.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DeviceTypeCommand {
    /// Create a device type, so firmware can be uploaded for it
    #[command(after_help = CREATE_EXAMPLES)]
    Create(CreateArgs),
    /// List device types, by name
    #[command(after_help = LIST_EXAMPLES, visible_alias = "ls")]
    List(PageArgs),
    /// Show one device type: what its uploads must be
    #[command(after_help = "Example:\n  otactl device-type show scales_bridge_tab5")]
    Show(NameArg),
    /// Change a device type's chip, project name, chip revisions, image format or description
    #[command(after_help = SET_EXAMPLES)]
    Set(SetArgs),
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The device type's name, e.g. scales_bridge_tab5
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Lower-case letters, digits, `_` and `-`, e.g. scales_bridge_tab5
    pub name: String,
    /// esp-app: uploads must be ESP-IDF app images that fit; raw: any file goes
    #[arg(long, value_name = "FORMAT", value_parser = ["esp-app", "raw"])]
    pub image_format: String,
    /// esptool's chip name, e.g. esp32p4 (required for esp-app)
    #[arg(long)]
    pub chip: Option<String>,
    /// Every image's project_name must be exactly this (esp-app)
    #[arg(long, value_name = "NAME")]
    pub project_name: Option<String>,
    /// The oldest chip revision among the units, e.g. v1.0 (esp-app) [default: v0.0]
    #[arg(long, value_name = "REVISION", value_parser = parse_revision)]
    pub min_chip_revision: Option<String>,
    /// The newest chip revision among the units, e.g. v1.99 (esp-app) [default: no bound]
    #[arg(long, value_name = "REVISION", value_parser = parse_revision)]
    pub max_chip_revision: Option<String>,
    /// What the device type is, for people
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// How many, 1-500
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
    pub limit: i64,
    /// How many to skip
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: i64,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The device type's name (it cannot change)
    pub name: String,
    /// esp-app or raw (switching to raw clears the project name and the revisions)
    #[arg(long, value_name = "FORMAT", value_parser = ["esp-app", "raw"])]
    pub image_format: Option<String>,
    /// esptool's chip name, e.g. esp32p4
    #[arg(long, conflicts_with = "no_chip")]
    pub chip: Option<String>,
    /// Remove the chip (raw device types only)
    #[arg(long)]
    pub no_chip: bool,
    /// Every image's project_name must be exactly this
    #[arg(long, value_name = "NAME", conflicts_with = "no_project_name")]
    pub project_name: Option<String>,
    /// Take images of any project name
    #[arg(long)]
    pub no_project_name: bool,
    /// The oldest chip revision among the units, e.g. v1.0
    #[arg(long, value_name = "REVISION", value_parser = parse_revision)]
    pub min_chip_revision: Option<String>,
    /// The newest chip revision among the units, e.g. v1.99
    #[arg(long, value_name = "REVISION", value_parser = parse_revision, conflicts_with = "no_max_chip_revision")]
    pub max_chip_revision: Option<String>,
    /// No upper bound on the units' chip revision
    #[arg(long)]
    pub no_max_chip_revision: bool,
    /// What the device type is, for people
    #[arg(long, value_name = "TEXT", conflicts_with = "no_description")]
    pub description: Option<String>,
    /// Remove the description
    #[arg(long)]
    pub no_description: bool,
}

/// A chip revision as esptool writes it (`v1.0`, `v1.99`), checked here so
/// that a typo is a usage error; sent as given.
fn parse_revision(text: &str) -> Result<String, String> {
    ota_core::esp::ChipRevision::parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

const CREATE_EXAMPLES: &str = "Examples:
  otactl device-type create scales_bridge_tab5 --image-format esp-app --chip esp32p4 \\
      --project-name scales_bridge --min-chip-revision v1.0 --max-chip-revision v1.99 \\
      --description 'M5Stack Tab5 bridge'
  otactl device-type create legacy_sensor --image-format raw
Revisions are checked here; the chip is checked by the server, which may know newer chips.";

const LIST_EXAMPLES: &str = "Examples:
  otactl device-type list
  otactl dt ls --json | jq -r '.items[].name'";

const SET_EXAMPLES: &str = "Examples:
  otactl device-type set scales_bridge_tab5 --max-chip-revision v1.99
  otactl device-type set scales_bridge_tab5 --no-project-name --description 'Tab5, all projects'
  otactl dt set legacy_sensor --image-format esp-app --chip esp32s3
Only what is given changes. A change that active firmware would not fit is refused (409).";
