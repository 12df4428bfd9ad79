//! `otactl device …`: the inventory of devices that have checked in, and
//! device tokens minted through the server.

use serde_json::{Value, json};

use super::{Ctx, check_device_type};
use crate::cli::{DeviceListArgs, TokenArgs};
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};

const DEVICES: &str = "/api/ota/admin/devices";

pub fn list(ctx: &Ctx, args: DeviceListArgs) -> Result<()> {
    let mut query = vec![
        ("limit", args.page.limit.to_string()),
        ("offset", args.page.offset.to_string()),
    ];
    if let Some(device_type) = &args.device_type {
        check_device_type(device_type)?;
        query.push(("device_type", device_type.clone()));
    }
    let page = ctx.api()?.get(DEVICES, &query)?;
    output::print_page(
        &page,
        ctx.json(),
        args.page.offset,
        &[
            "DEVICE",
            "DEVICE TYPE",
            "VERSION",
            "BUILD",
            "CHANNEL",
            "SECURE",
            "LAST STATUS",
            "LAST SEEN (UTC)",
        ],
        |d| {
            vec![
                output::text(&d["device_id"]),
                output::text(&d["device_type"]),
                output::text(&d["current_version"]),
                output::text(&d["build_number"]),
                output::text(&d["channel"]),
                output::text(&d["secure_version"]),
                output::text(&d["last_status"]),
                output::time(&d["last_seen"]),
            ]
        },
    )
}

pub fn show(ctx: &Ctx, device_id: &str) -> Result<()> {
    check_device_id(device_id)?;
    let device = ctx.api()?.get(&ota_core::wire::device_path(device_id), &[])?;
    if ctx.json() {
        print_json(&device);
    } else {
        print!("{}", describe(&device));
    }
    Ok(())
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

fn describe(d: &Value) -> String {
    output::fields(&[
        ("device", output::text(&d["device_id"])),
        ("device type", output::text(&d["device_type"])),
        ("version", output::text(&d["current_version"])),
        ("build", output::text(&d["build_number"])),
        ("channel", output::text(&d["channel"])),
        ("secure_version", output::text(&d["secure_version"])),
        ("last status", output::text(&d["last_status"])),
        ("first seen", output::time(&d["first_seen"])),
        ("last seen", output::time(&d["last_seen"])),
    ])
}
