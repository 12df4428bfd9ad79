//! esptool's report and our parser's answer, field by field.

use std::fmt::Debug;

use ota_core::esp::{Chip, EspImage, FlashMode};

use super::ImageInfo;

/// Disagreements between esptool and us about one image.
pub struct Diffs(pub Vec<String>, String);

impl Diffs {
    pub fn new(image: &str) -> Self {
        Diffs(Vec::new(), image.to_owned())
    }

    pub fn check<T: PartialEq + Debug>(&mut self, field: &str, esptool: T, ours: T) {
        if esptool != ours {
            self.0
                .push(format!("{}: {field}: esptool {esptool:?}, ours {ours:?}", self.1));
        }
    }

    /// A field against what the spec asked for, rather than against esptool.
    pub fn expect<T: PartialEq + Debug>(&mut self, field: &str, expected: T, ours: T) {
        if expected != ours {
            self.0
                .push(format!("{}: {field}: expected {expected:?}, ours {ours:?}", self.1));
        }
    }
}

/// Every field that both `esptool image-info` and our parser report.
pub fn compare(diffs: &mut Diffs, info: &ImageInfo, image: &EspImage) {
    let header = &image.header;
    diffs.check("esptool finds it valid", true, info.is_valid());
    diffs.check("image size", info.image_size, image.file_len);
    diffs.check("chip id", info.chip_id, header.chip_id);
    diffs.check("chip", Chip::parse(&info.chip_name), Some(header.chip()));
    diffs.check(
        "chip name",
        Chip::parse(&info.chip_name).map(|c| c.to_string()),
        Some(header.chip.clone()),
    );
    diffs.check("entry address", info.entry, header.entry_addr);
    diffs.check("segment count", info.segment_count, usize::from(header.segment_count));
    diffs.check("segments listed", info.segments.len(), image.segments.len());
    for (n, (theirs, ours)) in info.segments.iter().zip(&image.segments).enumerate() {
        diffs.check(&format!("segment {n} load address"), theirs.load_addr, ours.load_addr);
        diffs.check(&format!("segment {n} length"), theirs.len, ours.len);
        diffs.check(
            &format!("segment {n} data offset"),
            theirs.header_offset + 8,
            ours.file_offset,
        );
    }
    let mode = match header.flash_mode {
        FlashMode::Other(_) => None,
        known => Some(format!("{known:?}").to_uppercase()),
    };
    diffs.check("flash mode", info.flash_mode.clone(), mode);
    diffs.check(
        "flash size",
        info.flash_size.as_deref(),
        Some(header.flash_size.as_str()),
    );
    diffs.check(
        "min chip revision",
        info.min_rev.clone(),
        header.min_chip_revision.to_string(),
    );
    diffs.check(
        "legacy min chip revision",
        info.min_rev_legacy,
        header.min_chip_revision_legacy,
    );
    match header.max_chip_revision {
        Some(max) => diffs.check("max chip revision", info.max_rev.clone(), max.to_string()),
        None => diffs.check(
            "max chip revision (unset)",
            ["v0.0", "v655.35"].contains(&info.max_rev.as_str()),
            true,
        ),
    }
    diffs.check("checksum", info.checksum, image.checksum);
    diffs.check("hash appended", info.validation_hash.is_some(), header.hash_appended);
    diffs.check(
        "validation hash",
        info.validation_hash.as_ref().map(|(h, _)| h),
        image.validation_hash.as_ref(),
    );
    let Some(app) = &info.app else {
        diffs.check("esptool finds an app descriptor", false, true);
        return;
    };
    let ours = &image.app;
    diffs.check("project name", app.project_name.as_str(), ours.project_name.as_str());
    diffs.check("version", app.version.as_str(), ours.version.as_str());
    diffs.check("compile date", app.compile_date.as_str(), ours.compile_date.as_str());
    diffs.check("compile time", app.compile_time.as_str(), ours.compile_time.as_str());
    diffs.check("ELF SHA-256", app.elf_sha256.as_str(), ours.elf_sha256.as_str());
    diffs.check("IDF version", app.idf_version.as_str(), ours.idf_version.as_str());
    let blk_rev = |rev: u16| format!("{}.{}", rev / 100, rev % 100);
    diffs.check(
        "min eFuse block revision",
        app.min_efuse_blk_rev.clone(),
        blk_rev(ours.min_efuse_blk_rev),
    );
    diffs.check(
        "max eFuse block revision",
        app.max_efuse_blk_rev.clone(),
        blk_rev(ours.max_efuse_blk_rev),
    );
    diffs.check(
        "MMU page size",
        app.mmu_page_size.clone(),
        ours.mmu_page_size.map(|b| format!("{} KB", b / 1024)),
    );
    diffs.check("secure version", app.secure_version, ours.secure_version);
}
