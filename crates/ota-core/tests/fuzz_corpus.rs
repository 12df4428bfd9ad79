//! The fuzz targets' checks over their seed corpus (`fuzz/seeds/`), on
//! stable: every seed keeps passing the invariants the fuzzers check, without
//! nightly or cargo-fuzz. The checks themselves are in `fuzz/checks.rs`.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

#[path = "../../../fuzz/checks.rs"]
mod checks;

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable seed directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{} holds no seeds: run scripts/fuzz.sh seeds",
        dir.display()
    );
    files
}

/// Runs `check` on every seed of `target` and names each seed that fails.
fn every_seed_passes(target: &str, check: fn(&[u8])) {
    let failures: Vec<String> = seeds(target)
        .into_iter()
        .filter_map(|path| {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            panic::catch_unwind(|| check(&data))
                .err()
                .map(|_| path.display().to_string())
        })
        .collect();
    assert!(failures.is_empty(), "seeds failing the {target} checks: {failures:#?}");
}

#[test]
fn every_esp_image_seed_passes_the_parser_checks() {
    every_seed_passes("esp_image", checks::esp_image);
}

#[test]
fn every_version_seed_passes_the_version_checks() {
    every_seed_passes("version", checks::version);
}

#[test]
fn the_esp_image_seeds_include_images_the_parser_accepts_and_refuses() {
    let parsed: Vec<bool> = seeds("esp_image")
        .iter()
        .map(|path| ota_core::esp::EspImage::parse(&fs::read(path).expect("a readable seed")).is_ok())
        .collect();
    assert!(parsed.contains(&true), "no seed is a valid image");
    assert!(parsed.contains(&false), "no seed is an invalid image");
}
