//! `otactl device-type …`: create, list, show, set. A device type says what
//! its firmware must be; the server checks every upload against it.

use ota_core::wire::{DeviceTypePatch, DeviceTypeRecord, NewDeviceType};
use serde_json::Value;

use super::{Ctx, body_of};
use crate::api::Api;
use crate::cli::{CreateArgs, DeviceTypeSetArgs, PageArgs};
use crate::esp;
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};

const DEVICE_TYPES: &str = "/api/ota/admin/device-types";

pub fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    check_name(&args.name)?;
    let request = NewDeviceType {
        name: args.name,
        image_format: args.image_format,
        chip: args.chip,
        project_name: args.project_name,
        min_chip_revision: args.min_chip_revision,
        max_chip_revision: args.max_chip_revision,
        description: args.description,
    };
    let record = ctx.api()?.post(DEVICE_TYPES, &body_of(&request)?)?;
    report(ctx, &record, "Created device type")
}

pub fn list(ctx: &Ctx, args: PageArgs) -> Result<()> {
    let query = [("limit", args.limit.to_string()), ("offset", args.offset.to_string())];
    let page = ctx.api()?.get(DEVICE_TYPES, &query)?;
    output::print_page(
        &page,
        ctx.json(),
        args.offset,
        &[
            "NAME",
            "FORMAT",
            "CHIP",
            "PROJECT",
            "CHIP REVISIONS",
            "FIRMWARE",
            "DESCRIPTION",
        ],
        |t| {
            let esp_app = t["image_format"] == "esp-app";
            vec![
                output::text(&t["name"]),
                output::text(&t["image_format"]),
                output::text(&t["chip"]),
                if esp_app {
                    project(&t["project_name"])
                } else {
                    "-".into()
                },
                if esp_app {
                    esp::revisions(&t["min_chip_revision"], &t["max_chip_revision"])
                } else {
                    "-".into()
                },
                output::text(&t["firmware_count"]),
                output::short(&t["description"], 40),
            ]
        },
    )
}

pub fn show(ctx: &Ctx, name: &str) -> Result<()> {
    check_name(name)?;
    let record = ctx.api()?.get(&path_of(name), &[])?;
    if ctx.json() {
        print_json(&record);
    } else {
        print!("{}", describe(&record));
    }
    Ok(())
}

/// PATCHes only what was given; nothing given is a usage error.
pub fn set(ctx: &Ctx, args: DeviceTypeSetArgs) -> Result<()> {
    check_name(&args.name)?;
    let patch = DeviceTypePatch {
        image_format: args.image_format,
        chip: either(args.chip, args.no_chip),
        project_name: either(args.project_name, args.no_project_name),
        min_chip_revision: args.min_chip_revision,
        max_chip_revision: either(args.max_chip_revision, args.no_max_chip_revision),
        description: either(args.description, args.no_description),
    };
    let body = body_of(&patch)?;
    if body.as_object().is_none_or(|fields| fields.is_empty()) {
        return Err(Failure::usage(
            "nothing to change: give --chip, --project-name, --min-chip-revision, --max-chip-revision, \
             --image-format, --description or a --no-… option (see --help)",
        ));
    }
    let record = ctx.api()?.patch(&path_of(&args.name), &body)?;
    report(ctx, &record, "Updated device type")
}

/// `GET /api/ota/admin/device-types/{name}`: the record, and the answer as it came.
pub fn fetch_record(api: &Api, name: &str) -> Result<(DeviceTypeRecord, Value)> {
    let answer = api.get(&path_of(name), &[])?;
    let record = serde_json::from_value(answer.clone()).map_err(|e| {
        Failure::failed(format!(
            "the server's answer is not a device type record ({e}): is otactl as new as the server?"
        ))
    })?;
    Ok((record, answer))
}

/// `Some(Some(value))` to set, `Some(None)` to clear, `None` to leave as is.
fn either(value: Option<String>, clear: bool) -> Option<Option<String>> {
    match (value, clear) {
        (Some(value), _) => Some(Some(value)),
        (None, true) => Some(None),
        (None, false) => None,
    }
}

/// The path of one device type; a checked name needs no escaping.
fn path_of(name: &str) -> String {
    format!("{DEVICE_TYPES}/{name}")
}

fn check_name(name: &str) -> Result<()> {
    ota_core::DeviceType::parse(name)
        .map(|_| ())
        .map_err(|e| Failure::usage(format!("NAME `{name}`: {e}")))
}

fn report(ctx: &Ctx, record: &Value, what: &str) -> Result<()> {
    if ctx.json() {
        print_json(record);
    } else {
        println!("{what} {}.", output::text(&record["name"]));
        print!("{}", describe(record));
    }
    Ok(())
}

fn project(value: &Value) -> String {
    match value {
        Value::Null => "any".into(),
        name => output::text(name),
    }
}

/// A device type record as `key  value` lines, with what its uploads must be.
fn describe(t: &Value) -> String {
    let esp_app = t["image_format"] == "esp-app";
    let mut pairs = vec![
        ("name", output::text(&t["name"])),
        ("image format", output::text(&t["image_format"])),
        ("chip", output::text(&t["chip"])),
    ];
    if esp_app {
        pairs.push(("project name", project(&t["project_name"])));
        pairs.push((
            "chip revisions",
            esp::revisions(&t["min_chip_revision"], &t["max_chip_revision"]),
        ));
    }
    pairs.extend([
        (
            "uploads",
            if esp_app {
                format!(
                    "ESP-IDF app images for {} that boot on every unit's revision",
                    output::text(&t["chip"])
                )
            } else {
                "any file, stored as it is (--version required)".into()
            },
        ),
        ("description", output::text(&t["description"])),
        ("active firmware", output::text(&t["firmware_count"])),
        ("created", output::time(&t["created_at"])),
        ("updated", output::time(&t["updated_at"])),
    ]);
    output::fields(&pairs)
}
