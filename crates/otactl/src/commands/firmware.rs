//! `otactl firmware …`: list, show, promote, set, deactivate, activate
//! (upload and register are in `publish`).

use serde_json::{Map, Value, json};

use ota_core::wire::RecallRequest;

use super::{Ctx, body_of, check_version, read_notes};
use crate::cli::{ListArgs, RecallArgs, SetArgs};
use crate::esp;
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};

pub fn list(ctx: &Ctx, args: ListArgs) -> Result<()> {
    let mut query = vec![
        ("limit", args.page.limit.to_string()),
        ("offset", args.page.offset.to_string()),
    ];
    if let Some(device_type) = &args.device_type {
        query.push(("device_type", device_type.clone()));
    }
    if args.active || args.inactive {
        query.push(("is_active", args.active.to_string()));
    }
    if args.stable {
        query.push(("is_stable", "true".into()));
    }
    let page = ctx.api()?.get("/api/ota/admin/firmware", &query)?;
    output::print_page(
        &page,
        ctx.json(),
        args.page.offset,
        &[
            "ID",
            "DEVICE TYPE",
            "VERSION",
            "BUILD",
            "SECURE",
            "SIZE",
            "STABLE",
            "ACTIVE",
            "ROLLOUT",
            "MANDATORY",
            "DOWNLOADS",
            "CREATED (UTC)",
        ],
        |f| {
            vec![
                output::text(&f["id"]),
                output::text(&f["device_type"]),
                output::text(&f["version"]),
                output::text(&f["build_number"]),
                output::text(&f["image"]["app"]["secure_version"]),
                output::bytes(f["file_size"].as_i64().unwrap_or(0)),
                output::text(&f["is_stable"]),
                if f["recalled_at"].is_null() {
                    output::text(&f["is_active"])
                } else {
                    "recalled".into()
                },
                format!("{} %", f["rollout_percentage"]),
                output::text(&f["is_mandatory"]),
                output::text(&f["download_count"]),
                output::time(&f["created_at"]),
            ]
        },
    )
}

pub fn show(ctx: &Ctx, id: i64) -> Result<()> {
    let firmware = ctx.api()?.get(&firmware_path(id), &[])?;
    if ctx.json() {
        print_json(&firmware);
    } else {
        print!("{}", describe(&firmware));
    }
    Ok(())
}

pub fn promote(ctx: &Ctx, id: i64) -> Result<()> {
    change(ctx, id, json!({"is_stable": true}), "is now stable")
}

pub fn deactivate(ctx: &Ctx, id: i64) -> Result<()> {
    let firmware = ctx.api()?.delete(&firmware_path(id))?;
    report(ctx, &firmware, "is deactivated: no device is offered it")
}

pub fn activate(ctx: &Ctx, id: i64) -> Result<()> {
    change(ctx, id, json!({"is_active": true}), "is active again")
}

pub fn recall(ctx: &Ctx, args: RecallArgs) -> Result<()> {
    let request = RecallRequest { reason: args.reason };
    let path = format!("{}/recall", firmware_path(args.id));
    let firmware = ctx.api()?.post(&path, &body_of(&request)?)?;
    report(
        ctx,
        &firmware,
        "is recalled: it is offered to no device, and devices running it are offered the previous good version",
    )
}

pub fn set(ctx: &Ctx, args: SetArgs) -> Result<()> {
    let mut patch = Map::new();
    if let Some(rollout) = args.rollout {
        patch.insert("rollout_percentage".into(), json!(rollout));
    }
    for (on, off, key) in [
        (args.mandatory, args.not_mandatory, "is_mandatory"),
        (args.stable, args.unstable, "is_stable"),
        (args.active, args.inactive, "is_active"),
    ] {
        if on || off {
            patch.insert(key.into(), json!(on));
        }
    }
    if let Some(notes) = read_notes(&args.notes)? {
        patch.insert("release_notes".into(), json!(notes));
    } else if args.clear_notes {
        patch.insert("release_notes".into(), Value::Null);
    }
    if let Some(version) = &args.min_version {
        check_version("--min-version", version)?;
        patch.insert("min_version".into(), json!(version));
    } else if args.clear_min_version {
        patch.insert("min_version".into(), Value::Null);
    }
    if let Some(build) = args.build_number {
        patch.insert("build_number".into(), json!(build));
    }
    if let Some(groups) = args.groups {
        patch.insert("target_groups".into(), json!(groups.0));
    }
    if patch.is_empty() {
        return Err(Failure::usage(
            "nothing to change: give --rollout, --mandatory, --stable, --notes, --min-version, --groups or another option (see --help)",
        ));
    }
    change(ctx, args.id, Value::Object(patch), "is updated")
}

fn change(ctx: &Ctx, id: i64, patch: Value, what: &str) -> Result<()> {
    let firmware = ctx.api()?.patch(&firmware_path(id), &patch)?;
    report(ctx, &firmware, what)
}

fn report(ctx: &Ctx, firmware: &Value, what: &str) -> Result<()> {
    if ctx.json() {
        print_json(firmware);
    } else {
        println!(
            "Firmware {} ({} {}) {what}.",
            firmware["id"],
            output::text(&firmware["device_type"]),
            output::text(&firmware["version"])
        );
        print!("{}", describe(firmware));
    }
    Ok(())
}

fn firmware_path(id: i64) -> String {
    format!("/api/ota/admin/firmware/{id}")
}

/// A firmware record as `key  value` lines, with its counts per status
/// when the answer has them.
pub fn describe(f: &Value) -> String {
    let mut pairs = vec![
        ("id", output::text(&f["id"])),
        ("device type", output::text(&f["device_type"])),
        ("version", output::text(&f["version"])),
        ("build", output::text(&f["build_number"])),
        ("file", output::text(&f["binary_path"])),
        ("image format", output::text(&f["image_format"])),
        (
            "size",
            format!(
                "{} ({} bytes)",
                output::bytes(f["file_size"].as_i64().unwrap_or(0)),
                f["file_size"]
            ),
        ),
        ("sha256", output::text(&f["file_hash"])),
        ("stable", output::text(&f["is_stable"])),
        ("active", output::text(&f["is_active"])),
        ("mandatory", output::text(&f["is_mandatory"])),
        ("rollout", format!("{} %", f["rollout_percentage"])),
        ("groups", target_groups(&f["target_groups"])),
        ("min version", output::text(&f["min_version"])),
        ("downloads", output::text(&f["download_count"])),
        ("created", output::time(&f["created_at"])),
        ("updated", output::time(&f["updated_at"])),
    ];
    if let Some(stats) = f["stats"].as_object() {
        let order = ["pending", "downloading", "installing", "success", "failed"];
        let counts: Vec<String> = order
            .iter()
            .filter_map(|status| stats.get(*status).map(|n| format!("{status} {n}")))
            .collect();
        pairs.push(("attempts", counts.join(", ")));
    }
    if !f["recalled_at"].is_null() {
        pairs.push((
            "recalled",
            match &f["recall_reason"] {
                Value::Null => output::time(&f["recalled_at"]),
                reason => format!("{}: {}", output::time(&f["recalled_at"]), output::short(reason, 100)),
            },
        ));
    }
    if f["version_overridden"] == true {
        pairs.push((
            "version overridden",
            format!(
                "yes: the image's app descriptor says '{}'",
                output::text(&f["image"]["app"]["version"])
            ),
        ));
    }
    let notes = output::text(&f["release_notes"]);
    let mut text = output::fields(&pairs);
    if !f["image"].is_null() {
        text.push_str(&esp::section("image:", &esp::fields(&f["image"])));
    }
    if notes != "-" {
        text.push_str("release notes:\n");
        for line in notes.lines() {
            text.push_str(&format!("  {line}\n").replace("  \n", "\n"));
        }
    }
    text
}

/// A firmware's target groups; none means every device of its type.
fn target_groups(groups: &Value) -> String {
    match groups.as_array() {
        Some(names) if !names.is_empty() => names.iter().map(output::text).collect::<Vec<_>>().join(", "),
        _ => "all devices of its type".into(),
    }
}
