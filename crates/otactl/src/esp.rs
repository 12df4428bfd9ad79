//! ESP-IDF app images as otactl shows them: parsed from a local file in
//! pieces, and described for humans from the API's `image` object (the
//! JSON of `ota_core::esp::EspImage`), the same way for both.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use ota_core::esp::{EspImage, ImageError, ImageParser};
use serde_json::Value;

use crate::failure::{Failure, Result};
use crate::output;

/// How much of the file is read at a time: the parser keeps a few hundred
/// bytes of state, never the image.
const CHUNK: usize = 64 * 1024;

/// Parses the image in `path`, read in pieces. The outer error is a file
/// that cannot be read (a usage error when it cannot be opened); the inner
/// one says why a readable file is not a valid app image.
pub fn parse_file(path: &Path) -> Result<std::result::Result<EspImage, ImageError>> {
    let unreadable = |e: std::io::Error| Failure::usage(format!("cannot read {}: {e}", path.display()));
    let mut file = File::open(path).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(Failure::usage(format!("{} is not a file", path.display())));
    }
    let mut parser = ImageParser::new();
    let mut buffer = vec![0u8; CHUNK];
    // Once the parser has found an error, the rest of the file cannot change the answer.
    while parser.error().is_none() {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::failed(format!("cannot read {}: {e}", path.display()))),
        };
        parser.feed(&buffer[..n]);
    }
    Ok(parser.finish())
}

/// Every field an operator may want: `firmware show` and `image inspect`.
pub fn fields(image: &Value) -> Vec<(&'static str, String)> {
    let header = &image["header"];
    let app = &image["app"];
    vec![
        ("chip", chip(header)),
        (
            "chip revisions",
            revisions(&header["min_chip_revision"], &header["max_chip_revision"]),
        ),
        (
            "flash",
            format!(
                "{}, {}",
                output::text(&header["flash_mode"]),
                output::text(&header["flash_size"])
            ),
        ),
        ("project", output::text(&app["project_name"])),
        ("app version", output::text(&app["version"])),
        ("IDF version", output::text(&app["idf_version"])),
        ("secure_version", output::text(&app["secure_version"])),
        (
            "compiled",
            format!(
                "{} {}",
                output::text(&app["compile_date"]),
                output::text(&app["compile_time"])
            ),
        ),
        ("ELF SHA-256", output::text(&app["elf_sha256"])),
        ("validation hash", validation_hash(image)),
        ("signature", signature(&image["signature"])),
        (
            "segments",
            image["segments"]
                .as_array()
                .map_or_else(|| output::text(&header["segment_count"]), |s| s.len().to_string()),
        ),
        (
            "length",
            format!(
                "{} bytes of image, {} in the file",
                output::text(&image["image_len"]),
                output::text(&image["file_len"])
            ),
        ),
    ]
}

/// What an upload's answer says about the image: the short version.
pub fn summary(image: &Value) -> Vec<(&'static str, String)> {
    let app = &image["app"];
    vec![
        ("chip", chip(&image["header"])),
        ("project", output::text(&app["project_name"])),
        ("app version", output::text(&app["version"])),
        ("secure_version", output::text(&app["secure_version"])),
        ("validation hash", validation_hash(image)),
    ]
}

/// `key  value` lines, indented under a heading.
pub fn section(heading: &str, pairs: &[(&str, String)]) -> String {
    let mut text = format!("{heading}\n");
    for line in output::fields(pairs).lines() {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

/// `v1.0 to v1.99`, or `v1.0 and later` without an upper bound.
pub fn revisions(min: &Value, max: &Value) -> String {
    match max {
        Value::Null => format!("{} and later", output::text(min)),
        max => format!("{} to {}", output::text(min), output::text(max)),
    }
}

fn chip(header: &Value) -> String {
    format!(
        "{} (chip id {})",
        output::text(&header["chip"]),
        output::text(&header["chip_id"])
    )
}

fn validation_hash(image: &Value) -> String {
    match &image["validation_hash"] {
        Value::Null => "none: no SHA-256 is appended".into(),
        hash => output::text(hash),
    }
}

fn signature(signature: &Value) -> String {
    if signature.is_null() {
        return "unsigned".into();
    }
    let blocks = signature["blocks"].as_u64().unwrap_or(0);
    format!(
        "{}, {blocks} block{} at offset {}",
        output::text(&signature["scheme"]),
        if blocks == 1 { "" } else { "s" },
        output::text(&signature["offset"])
    )
}

#[cfg(test)]
mod tests {
    use ota_core::esp::Chip;
    use ota_core::esp::build::{AppImageSpec, app_image};

    use super::*;

    fn write(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join("app.bin");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_file_parses_in_pieces_as_it_would_whole() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = app_image(Chip::Esp32p4, "1.2.0", "scales_bridge", 1, 200 * 1024);

        let parsed = parse_file(&write(dir.path(), &bytes)).unwrap().unwrap();

        assert_eq!(parsed, EspImage::parse(&bytes).unwrap());
    }

    #[test]
    fn a_corrupted_file_is_an_image_error_and_a_missing_one_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = app_image(Chip::Esp32p4, "1.2.0", "scales_bridge", 1, 64 * 1024);
        bytes[100] ^= 0xFF;

        assert!(parse_file(&write(dir.path(), &bytes)).unwrap().is_err());
        assert_eq!(parse_file(&dir.path().join("nope.bin")).unwrap_err().exit_code(), 2);
        assert_eq!(parse_file(dir.path()).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn the_fields_name_what_an_operator_checks() {
        let bytes = AppImageSpec::new(Chip::Esp32p4)
            .chip_revisions(100, 199)
            .project_name("scales_bridge")
            .secure_version(3)
            .image();
        let image = serde_json::to_value(EspImage::parse(&bytes).unwrap()).unwrap();

        let text = output::fields(&fields(&image));

        assert!(text.contains("esp32p4 (chip id 18)"), "{text}");
        assert!(text.contains("v1.0 to v1.99"), "{text}");
        assert!(text.contains("secure_version   3"), "{text}");
        assert!(text.contains("unsigned"), "{text}");
        assert_eq!(revisions(&"v0.0".into(), &Value::Null), "v0.0 and later");
    }
}
