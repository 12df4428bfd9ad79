//! `otactl firmware …`: upload, register, list, show, promote, set,
//! deactivate, activate.

use serde_json::{Map, Value, json};

use super::{Ctx, check_device_type, check_version, read_notes};
use crate::cli::{ListArgs, Notes, RegisterArgs, SetArgs, UploadArgs};
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};
use crate::upload;

/// Uploads the file, checks that the server stored exactly what was sent,
/// and only then, with `--register`, registers it with the local hash
/// (which the server checks again).
pub fn upload(ctx: &Ctx, args: UploadArgs) -> Result<()> {
    check_device_type(&args.device_type)?;
    check_version("--version", &args.version)?;
    if let Some(version) = &args.min_version {
        check_version("--min-version", version)?;
    }
    let notes = read_notes(&Notes {
        notes: args.notes.clone(),
        notes_file: args.notes_file.clone(),
    })?;
    upload::check_file(&args.file)?;
    let api = ctx.api()?;
    // A wrong token or path prefix is refused here, before the file is
    // sent: a server refusing in the middle of a large body only shows up
    // as a broken connection.
    api.get("/api/ota/admin/firmware", &[("limit", "1".into())])?;

    let fields = [
        ("device_type", args.device_type.clone()),
        ("version", args.version.clone()),
    ];
    let (mut answer, sent) = upload::upload(&api, &args.file, &fields, !args.no_progress)?;
    if !ctx.json() {
        println!(
            "Uploaded {} ({}, sha256 {}): the server's hash matches.",
            output::text(&answer["binary_path"]),
            output::bytes(sent.size as i64),
            sent.sha256
        );
    }
    if args.register {
        let registration = Registration {
            device_type: &args.device_type,
            version: &args.version,
            filename: answer["filename"].as_str().unwrap_or_default().to_owned(),
            file_hash: sent.sha256.clone(),
            file_size: Some(sent.size),
            build_number: args.build_number,
            notes,
            min_version: args.min_version.clone(),
            stable: args.stable,
            mandatory: args.mandatory,
            rollout: args.rollout,
        };
        let firmware = api.post("/api/ota/admin/firmware", &registration.body()).inspect_err(|_| {
            eprintln!(
                "The file is uploaded but not registered; once fixed, run: otactl firmware register -t {} -v {} --file {}",
                args.device_type,
                args.version,
                args.file.display()
            );
        })?;
        answer["firmware"] = firmware;
    }

    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    match answer.get("firmware") {
        Some(firmware) => {
            println!(
                "Registered firmware {}: stable {}, rollout {} %, mandatory {}.",
                firmware["id"],
                output::text(&firmware["is_stable"]),
                firmware["rollout_percentage"],
                output::text(&firmware["is_mandatory"]),
            );
            if firmware["is_stable"] != true {
                println!("Next: otactl firmware promote {}", firmware["id"]);
            }
        }
        None => println!(
            "Not registered yet. Next: otactl firmware register -t {} -v {} --file {}",
            args.device_type,
            args.version,
            args.file.display()
        ),
    }
    Ok(())
}

/// The body of `POST /api/ota/admin/firmware`.
struct Registration<'a> {
    device_type: &'a str,
    version: &'a str,
    filename: String,
    file_hash: String,
    file_size: Option<u64>,
    build_number: Option<i64>,
    notes: Option<String>,
    min_version: Option<String>,
    stable: bool,
    mandatory: bool,
    rollout: Option<u8>,
}

impl Registration<'_> {
    fn body(&self) -> Value {
        json!({
            "device_type": self.device_type,
            "version": self.version,
            "build_number": self.build_number,
            "filename": self.filename,
            "file_hash": self.file_hash,
            "file_size": self.file_size,
            "release_notes": self.notes,
            "min_version": self.min_version,
            "is_stable": self.stable,
            "is_mandatory": self.mandatory,
            "rollout_percentage": self.rollout.unwrap_or(100),
        })
    }
}

pub fn register(ctx: &Ctx, args: RegisterArgs) -> Result<()> {
    check_device_type(&args.device_type)?;
    check_version("--version", &args.version)?;
    if let Some(version) = &args.min_version {
        check_version("--min-version", version)?;
    }
    let (file_hash, file_size) = match (&args.file, &args.hash) {
        (Some(path), _) => {
            let local = upload::hash_file(path)?;
            (local.sha256, Some(local.size))
        }
        (None, Some(hash)) => {
            ota_core::Sha256Hex::parse(hash).map_err(|e| Failure::usage(format!("--hash: {e}")))?;
            (hash.clone(), None)
        }
        (None, None) => return Err(Failure::usage("give --file or --hash")),
    };
    let version = ota_core::Version::parse(&args.version).map_err(|e| Failure::usage(format!("--version: {e}")))?;
    let registration = Registration {
        device_type: &args.device_type,
        version: &args.version,
        filename: args.filename.clone().unwrap_or_else(|| version.file_name()),
        file_hash,
        file_size,
        build_number: args.build_number,
        notes: read_notes(&args.notes)?,
        min_version: args.min_version.clone(),
        stable: args.stable,
        mandatory: args.mandatory,
        rollout: args.rollout,
    };
    let firmware = ctx.api()?.post("/api/ota/admin/firmware", &registration.body())?;
    if ctx.json() {
        print_json(&firmware);
    } else {
        println!("Registered firmware {}.", firmware["id"]);
        print!("{}", describe(&firmware));
    }
    Ok(())
}

pub fn list(ctx: &Ctx, args: ListArgs) -> Result<()> {
    let mut query = vec![("limit", args.limit.to_string()), ("offset", args.offset.to_string())];
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
    if ctx.json() {
        print_json(&page);
        return Ok(());
    }
    let items = output::items(&page)?;
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|f| {
            vec![
                output::text(&f["id"]),
                output::text(&f["device_type"]),
                output::text(&f["version"]),
                output::text(&f["build_number"]),
                output::bytes(f["file_size"].as_i64().unwrap_or(0)),
                output::text(&f["is_stable"]),
                output::text(&f["is_active"]),
                format!("{} %", f["rollout_percentage"]),
                output::text(&f["is_mandatory"]),
                output::text(&f["download_count"]),
                output::time(&f["created_at"]),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "ID",
                "DEVICE TYPE",
                "VERSION",
                "BUILD",
                "SIZE",
                "STABLE",
                "ACTIVE",
                "ROLLOUT",
                "MANDATORY",
                "DOWNLOADS",
                "CREATED (UTC)",
            ],
            &rows,
        )
    );
    page_note(&page, args.offset, items.len());
    Ok(())
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
    if patch.is_empty() {
        return Err(Failure::usage(
            "nothing to change: give --rollout, --mandatory, --stable, --notes, --min-version or another option (see --help)",
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
fn describe(f: &Value) -> String {
    let mut pairs = vec![
        ("id", output::text(&f["id"])),
        ("device type", output::text(&f["device_type"])),
        ("version", output::text(&f["version"])),
        ("build", output::text(&f["build_number"])),
        ("file", output::text(&f["binary_path"])),
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
    let notes = output::text(&f["release_notes"]);
    let mut text = output::fields(&pairs);
    if notes != "-" {
        text.push_str("release notes:\n");
        for line in notes.lines() {
            text.push_str(&format!("  {line}\n").replace("  \n", "\n"));
        }
    }
    text
}

/// Tells a human that the list goes on, and how to see more.
pub fn page_note(page: &Value, offset: i64, shown: usize) {
    let total = page["total"].as_i64().unwrap_or(0);
    if shown == 0 && total == 0 {
        eprintln!("Nothing matches.");
    } else if shown == 0 {
        eprintln!("Nothing at offset {offset}: {total} match.");
    } else if offset + (shown as i64) < total {
        eprintln!(
            "Showing {}-{} of {total}; see more with --offset {}.",
            offset + 1,
            offset + shown as i64,
            offset + shown as i64
        );
    }
}
