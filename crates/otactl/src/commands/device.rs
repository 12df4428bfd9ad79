//! `otactl device …` (or `devices …`): the inventory of devices that have
//! checked in, pins, the fleet summary, and device tokens minted through
//! the server.

use ota_core::wire::{DeviceDetail, DeviceFilter, FleetSummary, OtaLog, Page, PinRequest};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Ctx, body_of, check_device_type, decode};
use crate::cli::{DeviceListArgs, PinArgs, SummaryArgs, TokenArgs};
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};

const DEVICES: &str = "/api/ota/admin/devices";

/// The columns of a list of inventory rows (`devices list`, `groups members`).
pub const DEVICE_HEADERS: [&str; 9] = [
    "DEVICE",
    "DEVICE TYPE",
    "VERSION",
    "BUILD",
    "CHANNEL",
    "SECURE",
    "LAST STATUS",
    "PINNED",
    "LAST SEEN (UTC)",
];

/// One inventory row as table cells.
pub fn device_row(d: &Value) -> Vec<String> {
    vec![
        output::text(&d["device_id"]),
        output::text(&d["device_type"]),
        output::text(&d["current_version"]),
        output::text(&d["build_number"]),
        output::text(&d["channel"]),
        output::text(&d["secure_version"]),
        output::text(&d["last_status"]),
        output::text(&d["pinned_firmware_id"]),
        output::time(&d["last_seen"]),
    ]
}

/// The query of `GET /api/ota/admin/devices`: the filter's fields and a page.
#[derive(Serialize)]
struct DeviceQuery<'a> {
    #[serde(flatten)]
    filter: &'a DeviceFilter,
    limit: i64,
    offset: i64,
}

pub fn list(ctx: &Ctx, args: DeviceListArgs) -> Result<()> {
    let filter = args.filter.to_filter();
    let query = DeviceQuery {
        filter: &filter,
        limit: args.page.limit,
        offset: args.page.offset,
    };
    let page = ctx.api()?.get_with(DEVICES, &query)?;
    output::print_page(&page, ctx.json(), args.page.offset, &DEVICE_HEADERS, device_row)
}

pub fn show(ctx: &Ctx, device_id: &str) -> Result<()> {
    check_device_id(device_id)?;
    let answer = ctx.api()?.get(&ota_core::wire::device_path(device_id), &[])?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let detail: DeviceDetail = decode(&answer, "a device")?;
    let mut pairs = describe_pairs(&answer);
    pairs.push((
        "groups",
        if detail.groups.is_empty() {
            "-".to_owned()
        } else {
            detail.groups.join(", ")
        },
    ));
    print!("{}", output::fields(&pairs));
    if detail.history.is_empty() {
        println!("\nNo update attempts yet.");
    } else {
        println!("\nUpdate history, newest first:");
        let rows: Vec<Vec<String>> = detail.history.iter().map(history_row).collect();
        print!(
            "{}",
            output::table(
                &[
                    "ID",
                    "FIRMWARE",
                    "FROM → TO",
                    "STATUS",
                    "ROLLOUT",
                    "UPDATED (UTC)",
                    "ERROR"
                ],
                &rows
            )
        );
    }
    Ok(())
}

fn history_row(log: &OtaLog) -> Vec<String> {
    let rollout = match (log.rollout_id, log.rollout_stage, log.rollout_arm) {
        (Some(id), Some(stage), arm) => format!(
            "{id} stage {}{}",
            stage + 1,
            arm.map(|a| format!(" arm {}", a.as_str())).unwrap_or_default()
        ),
        (Some(id), None, _) => id.to_string(),
        (None, ..) => "-".into(),
    };
    let error = match (&log.failure_reason, &log.error_message) {
        (Some(reason), Some(message)) if message.starts_with(reason.as_str()) => output::short(&json!(message), 60),
        (Some(reason), Some(message)) => format!("{}: {}", reason.as_str(), output::short(&json!(message), 50)),
        (Some(reason), None) => reason.as_str().to_owned(),
        (None, Some(message)) => output::short(&json!(message), 60),
        (None, None) => String::new(),
    };
    vec![
        log.id.to_string(),
        log.firmware_id.to_string(),
        format!(
            "{} → {}",
            output::text(&json!(log.from_version)),
            output::text(&json!(log.to_version))
        ),
        log.status.as_str().to_owned(),
        rollout,
        log.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        error,
    ]
}

pub fn pin(ctx: &Ctx, args: PinArgs) -> Result<()> {
    check_device_id(&args.device_id)?;
    let request = PinRequest {
        firmware_id: args.firmware_id,
        version: args.version,
    };
    let path = format!("{}/pin", ota_core::wire::device_path(&args.device_id));
    let device = ctx.api()?.put(&path, &body_of(&request)?)?;
    if ctx.json() {
        print_json(&device);
    } else {
        println!(
            "Pinned {} to firmware {}: it is offered exactly that build until unpinned.",
            output::text(&device["device_id"]),
            output::text(&device["pinned_firmware_id"])
        );
        print!("{}", describe(&device));
    }
    Ok(())
}

pub fn unpin(ctx: &Ctx, device_id: &str) -> Result<()> {
    check_device_id(device_id)?;
    let path = format!("{}/pin", ota_core::wire::device_path(device_id));
    let device = ctx.api()?.delete(&path)?;
    if ctx.json() {
        print_json(&device);
    } else {
        println!(
            "Unpinned {}: it follows its rollouts, groups and channel again.",
            output::text(&device["device_id"])
        );
        print!("{}", describe(&device));
    }
    Ok(())
}

pub fn summary(ctx: &Ctx, args: SummaryArgs) -> Result<()> {
    let mut query = Vec::new();
    if let Some(device_type) = &args.device_type {
        query.push(("device_type", device_type.clone()));
    }
    if let Some(days) = args.not_seen_days {
        query.push(("not_seen_days", days.to_string()));
    }
    let answer = ctx.api()?.get("/api/ota/admin/fleet", &query)?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let page: Page<FleetSummary> = decode(&answer, "a fleet summary")?;
    if page.items.is_empty() {
        eprintln!(
            "No device has checked in{}.",
            match &args.device_type {
                Some(device_type) => format!(" as a {device_type}"),
                None => String::new(),
            }
        );
    }
    let blocks: Vec<String> = page.items.iter().map(summary_block).collect();
    print!("{}", blocks.join("\n"));
    Ok(())
}

/// One device type's fleet: a line of totals, then its devices per
/// version (newest first) and per status.
fn summary_block(fleet: &FleetSummary) -> String {
    let mut text = format!(
        "{}: {} devices, {} not seen for {} days, {} pinned\n",
        fleet.device_type, fleet.devices, fleet.not_seen, fleet.not_seen_days, fleet.pinned
    );
    let share = |n: i64| {
        if fleet.devices > 0 {
            format!("{:.0} %", n as f64 * 100.0 / fleet.devices as f64)
        } else {
            "-".into()
        }
    };
    let mut versions: Vec<(&String, &i64)> = fleet.by_version.iter().collect();
    versions.sort_by(
        |(a, _), (b, _)| match (ota_core::Version::parse(a), ota_core::Version::parse(b)) {
            (Ok(a), Ok(b)) => b.cmp(&a),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        },
    );
    let rows: Vec<Vec<String>> = versions
        .into_iter()
        .map(|(version, n)| vec![version.clone(), n.to_string(), share(*n)])
        .collect();
    text.push_str(&indent(&output::table(&["VERSION", "DEVICES", "SHARE"], &rows)));
    let order = ["none", "pending", "downloading", "installing", "success", "failed"];
    let mut statuses: Vec<(&String, &i64)> = fleet.by_status.iter().collect();
    statuses.sort_by_key(|(status, _)| order.iter().position(|o| o == status).unwrap_or(order.len()));
    let rows: Vec<Vec<String>> = statuses
        .into_iter()
        .map(|(status, n)| vec![status.clone(), n.to_string(), share(*n)])
        .collect();
    text.push_str(&indent(&output::table(&["LAST STATUS", "DEVICES", "SHARE"], &rows)));
    text
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

/// Prints the token alone on stdout (so `TOKEN=$(otactl device token …)`
/// works) and what it is for on stderr; `--json` prints the API's answer.
pub fn token(ctx: &Ctx, args: TokenArgs) -> Result<()> {
    check_device_id(&args.device_id)?;
    check_device_type(&args.device_type)?;
    let path = ota_core::wire::device_token_path(&args.device_id);
    let body = json!({"device_type": args.device_type, "ttl_seconds": args.ttl.as_secs()});
    let answer = ctx.api()?.post(&path, &body)?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| Failure::failed("the server's answer has no token"))?;
    println!("{token}");
    eprintln!(
        "Token for device {} ({}), {}, valid until {}. It is shown once: store it in the device's provisioning data.",
        args.device_id,
        args.device_type,
        answer["algorithm"].as_str().unwrap_or("JWT"),
        answer["expires_at"].as_str().unwrap_or("?"),
    );
    Ok(())
}

fn check_device_id(device_id: &str) -> Result<()> {
    ota_core::DeviceId::parse(device_id).map_err(|e| Failure::usage(format!("DEVICE_ID: {e}")))?;
    if matches!(device_id, "." | "..") {
        // URL parsers (WHATWG) resolve `.`/`..` segments, even percent-encoded.
        return Err(Failure::usage(format!(
            "DEVICE_ID `{device_id}` cannot be named in a URL path"
        )));
    }
    Ok(())
}

/// An inventory row as `key  value` lines.
fn describe(d: &Value) -> String {
    output::fields(&describe_pairs(d))
}

fn describe_pairs(d: &Value) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("device", output::text(&d["device_id"])),
        ("device type", output::text(&d["device_type"])),
        ("version", output::text(&d["current_version"])),
        ("build", output::text(&d["build_number"])),
        ("channel", output::text(&d["channel"])),
        ("secure_version", output::text(&d["secure_version"])),
        ("last status", output::text(&d["last_status"])),
    ];
    if !d["last_error"].is_null() {
        pairs.push(("last error", output::short(&d["last_error"], 100)));
    }
    pairs.extend([
        (
            "pinned to",
            match &d["pinned_firmware_id"] {
                Value::Null => "-".to_owned(),
                id => format!("firmware {id}"),
            },
        ),
        ("first seen", output::time(&d["first_seen"])),
        ("last seen", output::time(&d["last_seen"])),
    ]);
    pairs
}
