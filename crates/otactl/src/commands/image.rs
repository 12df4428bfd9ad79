//! `otactl image inspect`: what a local ESP-IDF app image holds, and
//! whether a device type's rules on the server would take it, before it is
//! uploaded.

use ota_core::Version;
use ota_core::esp::{EspImage, ImageError};
use ota_core::wire::{DeviceTypeRecord, ImageFormat};
use serde_json::json;

use super::device_type::fetch_record;
use super::{Ctx, check_device_type};
use crate::cli::InspectArgs;
use crate::esp;
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};

/// Prints the image, then the verdict: a misfit is exit 1, after the image
/// is shown (with `--json`, only the problem is printed).
pub fn inspect(ctx: &Ctx, args: InspectArgs) -> Result<()> {
    if let Some(name) = &args.device_type {
        check_device_type(name)?;
    }
    let parsed = esp::parse_file(&args.file)?;
    let device_type = match &args.device_type {
        Some(name) => Some(fetch_record(&ctx.api()?, name)?),
        None => None,
    };
    let record = device_type.as_ref().map(|(record, _)| record);
    let image = parsed.map_err(|error| not_an_image(&args, record, &error))?;
    let verdict = record.map(|record| judge(record, &image));

    if ctx.json() {
        verdict.transpose()?;
        let mut answer = json!({
            "file": args.file.display().to_string(),
            "image": image,
            "version": Version::from_app_descriptor(&image.app.version).ok().map(|v| v.to_string()),
        });
        if let Some((_, answered)) = &device_type {
            answer["device_type"] = answered.clone();
            answer["accepted"] = json!(true);
        }
        print_json(&answer);
        return Ok(());
    }
    let mut pairs = vec![
        (
            "file",
            format!("{} ({})", args.file.display(), output::bytes(image.file_len as i64)),
        ),
        ("format", "ESP-IDF app image".to_owned()),
    ];
    pairs.extend(esp::fields(&json!(image)));
    if record.is_none_or(|record| record.image_format == ImageFormat::EspApp) {
        pairs.push(("uploads as", upload_version(&image)));
    }
    print!("{}", output::fields(&pairs));
    if let Some(verdict) = verdict.transpose()? {
        println!("{verdict}");
    }
    Ok(())
}

/// The version an upload without `--version` is stored under, or why there is none.
fn upload_version(image: &EspImage) -> String {
    match Version::from_app_descriptor(&image.app.version) {
        Ok(version) => format!("version {version} (when --version is left out)"),
        Err(e) => format!(
            "no version: '{}' is not one ({e}); upload with --version V --override-version",
            output::text(&json!(image.app.version))
        ),
    }
}

/// Whether the device type takes the image: a sentence, or the misfit as exit 1.
fn judge(record: &DeviceTypeRecord, image: &EspImage) -> Result<String> {
    if record.image_format == ImageFormat::Raw {
        return Ok(format!(
            "{} is a raw device type: the server takes any file for it, as it is (give --version when uploading).",
            record.name
        ));
    }
    let rules = record.image_rules().ok_or_else(|| {
        Failure::failed(format!(
            "device type {} is for chip '{}', which this otactl does not know: upgrade otactl, or upload and let the server check",
            record.name,
            record.chip.as_deref().unwrap_or("none")
        ))
    })?;
    rules
        .check(image)
        .map_err(|misfit| Failure::failed(format!("this image cannot run on {} devices: {misfit}", record.name)))?;
    Ok(format!(
        "It fits device type {}: {}, chip revisions {}, {}.",
        record.name,
        rules.chip,
        esp::revisions(&json!(record.min_chip_revision), &json!(record.max_chip_revision)),
        match &record.project_name {
            Some(project) => format!("project {project}"),
            None => "any project".to_owned(),
        }
    ))
}

fn not_an_image(args: &InspectArgs, device_type: Option<&DeviceTypeRecord>, error: &ImageError) -> Failure {
    let raw = device_type
        .filter(|record| record.image_format == ImageFormat::Raw)
        .map(|record| {
            format!(
                " ({} is a raw device type: the server would store it anyway)",
                record.name
            )
        })
        .unwrap_or_default();
    Failure::failed(format!(
        "{} is not a valid ESP-IDF app image: {error}{raw}",
        args.file.display()
    ))
}
