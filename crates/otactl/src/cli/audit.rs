//! `otactl audit`: who changed what, and when.

use clap::Args;

use super::PageArgs;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only changes made with this admin token's name, or `system` for the server's own rollout decisions
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action, e.g. firmware.update, rollout.halt, group.add_members
    #[arg(long)]
    pub action: Option<String>,
    /// Only changes to this kind of record: firmware, file, device_type, device, group or rollout
    #[arg(long, value_name = "TYPE")]
    pub target_type: Option<String>,
    /// Only changes to this record, e.g. a firmware id, a group name or a device id
    #[arg(long, value_name = "ID")]
    pub target_id: Option<String>,
    /// Only changes since: a duration back from now (30m, 1h, 7d) or an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

pub(super) const AUDIT_EXAMPLES: &str = "Examples:
  otactl audit
  otactl audit --actor alice --since 24h
  otactl audit --target-type rollout --target-id 3
  otactl audit --action firmware.recall --since 2026-11-27T00:00:00Z --json | jq '.items[].after'
The actor is the name of the admin token used (OTA_ADMIN_TOKEN is `admin`); the server's own
rollout decisions (advance, complete, halt) are `system`.";
