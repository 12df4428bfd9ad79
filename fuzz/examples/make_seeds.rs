//! Writes the fuzz targets' seed corpus: `fuzz/seeds/esp_image/` (images from
//! `ota_core::esp::build`, valid and broken) and `fuzz/seeds/version/`.
//! Replaces what those folders hold; the output is the same on every run.
//!
//! `scripts/fuzz.sh seeds`, or
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- [DIR]`.

use std::fs;
use std::path::{Path, PathBuf};

use ota_core::Version;
use ota_core::esp::build::{AppImageSpec, app_image};
use ota_core::esp::{Chip, EspImage, HEADER_LEN, SignatureScheme};

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"), PathBuf::from);
    write_all(&dir.join("esp_image"), &image_seeds(), true)?;
    let versions: Vec<(String, Vec<u8>)> = version_seeds()
        .into_iter()
        .map(|(name, text)| (format!("{name}.txt"), text))
        .collect();
    write_all(&dir.join("version"), &versions, false)
}

/// Replaces the files in `dir` with `seeds`, and lists them.
fn write_all(dir: &Path, seeds: &[(String, Vec<u8>)], parse: bool) -> std::io::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes)?;
        let what = if parse {
            match EspImage::parse(bytes) {
                Ok(image) => format!("ok, {} segments", image.segments.len()),
                Err(error) => format!("error: {error}"),
            }
        } else {
            format!("{:?}", String::from_utf8_lossy(bytes))
        };
        println!(
            "{:>6} {}  {}",
            bytes.len(),
            dir.join(name).display(),
            truncate(&what, 100)
        );
    }
    Ok(())
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// A small valid image: the descriptor in one flash segment and two small RAM
/// segments, grown to about `len` bytes.
fn small(chip: Chip, len: usize) -> AppImageSpec {
    let mut spec = AppImageSpec::new(chip).target_len(len);
    (spec.rodata_len, spec.text_len, spec.iram_len, spec.dram_len) = (0, 0, 0x100, 0x100);
    spec
}

fn image_seeds() -> Vec<(String, Vec<u8>)> {
    let tab5 = small(Chip::Esp32p4, 2048)
        .chip_revisions(100, 199)
        .project_name("scales_bridge")
        .version("v1.2.3-4-gabc1234-dirty")
        .secure_version(2);
    let tab5_image = tab5.image();

    let mut seeds = vec![
        ("p4_tab5.bin", tab5_image.clone()),
        (
            "c6_version_1.bin",
            small(Chip::Esp32c6, 1536).version("1").seed(1).image(),
        ),
        (
            "esp32_classic.bin",
            small(Chip::Esp32, 2048).flash(0, 2, 0xF).seed(2).image(),
        ),
        (
            "s3_extra_segment.bin",
            small(Chip::Esp32s3, 3072)
                .extra_segment(0x5000_0000, vec![0xA5; 64])
                .version("v5.5.1")
                .seed(3)
                .image(),
        ),
        (
            "c3_no_hash.bin",
            small(Chip::Esp32c3, 1536).hash_appended(false).seed(4).image(),
        ),
        ("p4_under_1k.bin", app_image(Chip::Esp32p4, "0.1.0", "tiny", 0, 900)),
        (
            "p4_signed_rsa.bin",
            small(Chip::Esp32p4, 1536)
                .chip_revisions(0, 199)
                .signed(SignatureScheme::SecureBootV2Rsa)
                .image(),
        ),
        (
            "c6_signed_ecdsa.bin",
            small(Chip::Esp32c6, 1536)
                .signed(SignatureScheme::SecureBootV2Ecdsa)
                .seed(5)
                .image(),
        ),
        ("p4_elf.elf", small(Chip::Esp32p4, 1024).elf()),
    ];

    let mut padded = tab5_image.clone();
    padded.resize(4096, 0xFF);
    seeds.push(("p4_ff_padded.bin", padded));
    seeds.push(("p4_truncated.bin", tab5_image[..tab5_image.len() / 2].to_vec()));
    seeds.push(("p4_header_only.bin", tab5_image[..HEADER_LEN].to_vec()));
    let mut bad_magic = tab5_image.clone();
    bad_magic[0] = 0xE8;
    seeds.push(("bad_magic.bin", bad_magic));
    let mut bad_checksum = tab5_image.clone();
    bad_checksum[0x40] ^= 0x01;
    seeds.push(("p4_bad_checksum.bin", bad_checksum));
    let mut bad_hash = tab5_image.clone();
    let last = bad_hash.len() - 1;
    bad_hash[last] ^= 0x80;
    seeds.push(("p4_bad_hash.bin", bad_hash));
    // One `nvs` entry (AA 50, type, subtype, offset, size, label, flags), then erased flash.
    let mut partition_table = vec![0xAA, 0x50, 0x01, 0x02];
    partition_table.extend_from_slice(&0x9000u32.to_le_bytes());
    partition_table.extend_from_slice(&0x6000u32.to_le_bytes());
    partition_table.extend_from_slice(b"nvs\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    partition_table.resize(0xC00, 0xFF);
    seeds.push(("partition_table.bin", partition_table));

    seeds
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes))
        .collect()
}

fn version_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let texts: &[(&str, &str)] = &[
        ("semver", "1.2.3"),
        ("v_prefix", "v5.5.1"),
        ("idf_default", "1"),
        ("major_minor", "1.0"),
        ("prerelease_build", "1.2.3-rc.1+build.5"),
        ("git_describe", "v1.2.3-4-gabc1234"),
        ("git_describe_dirty", "v1.2.3-4-gabc1234-dirty"),
        (
            "git_describe_rc",
            "v2.0.0-rc.1-3-g0123456789abcdef0123456789abcdef01234567",
        ),
        ("git_describe_short", "v1.2-4-gabc1234"),
        ("dirty", "v1.2.3-dirty"),
        ("descriptor_padded", " v1.2.0 \n"),
        ("empty", ""),
        (
            "huge_numbers",
            "18446744073709551615.18446744073709551615.18446744073709551615",
        ),
        ("leading_zero", "01.2.3"),
        ("chip_revision", "v1.99"),
        ("chip_revision_major", "v3"),
        ("chip_revision_max", "v654.99"),
        ("chip_name", "ESP32-P4"),
        ("chip_name_underscore", "esp32_c6"),
    ];
    let mut seeds: Vec<(&str, Vec<u8>)> = texts
        .iter()
        .map(|(name, text)| (*name, text.as_bytes().to_vec()))
        .collect();
    seeds.push((
        "max_len",
        format!("1.2.3-{}", "a".repeat(Version::MAX_LEN - 6)).into_bytes(),
    ));
    seeds.push(("not_utf8", b"v1.\xFF2.3-\xC3\x28".to_vec()));
    seeds.push(("garbage", (0..200u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect()));
    seeds
}
