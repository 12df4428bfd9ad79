//! Our ESP image parser and writer, held against esptool 5: the images
//! esptool makes from our ELF files, the images we write byte by byte, and
//! broken ones, must read the same (or be refused) on both sides.
//!
//! esptool comes from `scripts/test.sh` (a venv in `target/tools-venv`);
//! without it these tests fail, they never skip.

mod common;

use std::path::{Path, PathBuf};

use common::{Diffs, Esptool, ImageInfo, assert_no_mismatch, compare, first_difference, in_parallel, write};
use ota_core::esp::build::AppImageSpec;
use ota_core::esp::rules::{ImageRules, Misfit};
use ota_core::esp::{Chip, ChipRevision, EspImage, SIG_SECTOR_LEN, Signature, SignatureScheme};
use sha2::{Digest, Sha256};

/// A chip and the header options its images get. `flash_freq` is esptool's
/// name, `freq_code` what esptool writes for it (`FLASH_FREQUENCY` in
/// `esptool/targets/<chip>.py`).
struct Case {
    chip: Chip,
    flash_freq: &'static str,
    freq_code: u8,
    revs: (u16, u16),
}

const CASES: [Case; 12] = [
    Case::new(Chip::Esp32, "40m", 0x0, (300, 399)),
    Case::new(Chip::Esp32s3, "80m", 0xF, (0, 99)),
    Case::new(Chip::Esp32c3, "80m", 0xF, (3, 199)),
    // esptool writes 80m as 0 on the C6 (its ROM's divider is wrong).
    Case::new(Chip::Esp32c6, "80m", 0x0, (0, 99)),
    Case::new(Chip::Esp32p4, "80m", 0xF, (100, 199)),
    Case::new(Chip::Esp32s2, "80m", 0xF, (0, 199)),
    Case::new(Chip::Esp32c2, "60m", 0xF, (100, 299)),
    Case::new(Chip::Esp32h2, "48m", 0xF, (0, 199)),
    Case::new(Chip::Esp32c61, "80m", 0xF, (0, 199)),
    Case::new(Chip::Esp32c5, "80m", 0xF, (100, 199)),
    Case::new(Chip::Esp32h21, "48m", 0xF, (0, 99)),
    Case::new(Chip::Esp32h4, "24m", 0x0, (0, 99)),
];

/// The chips every comparison runs on; the other known chips get the
/// byte-for-byte and parser comparisons of esptool's own images.
const MAIN_CHIPS: [Chip; 5] = [Chip::Esp32, Chip::Esp32s3, Chip::Esp32c3, Chip::Esp32c6, Chip::Esp32p4];

fn case(chip: Chip) -> &'static Case {
    CASES
        .iter()
        .find(|case| case.chip == chip)
        .expect("a case for every chip")
}

impl Case {
    const fn new(chip: Chip, flash_freq: &'static str, freq_code: u8, revs: (u16, u16)) -> Self {
        Case {
            chip,
            flash_freq,
            freq_code,
            revs,
        }
    }

    fn name(&self) -> String {
        self.chip.to_string()
    }

    /// Every descriptor field differs from chip to chip; the C6 uses 32 KiB
    /// MMU pages.
    fn spec(&self) -> AppImageSpec {
        let id = self.chip.id();
        let mut spec = AppImageSpec::new(self.chip)
            .chip_revisions(self.revs.0, self.revs.1)
            .flash(2, 4, self.freq_code)
            .version(&format!("v1.{id}.0-3-gabc1234"))
            .project_name(&format!("bridge_{}", self.chip))
            .secure_version(u32::from(id) + 1)
            .idf_version(&format!("v5.{id}.1-dirty"))
            .compiled(&format!("09:41:{id:02}"), "Nov 28 2025")
            .seed(u64::from(id));
        spec.app.min_efuse_blk_rev = id;
        spec.app.max_efuse_blk_rev = 100 + id;
        if self.chip == Chip::Esp32c6 {
            spec.app.mmu_page_size_log2 = 15;
        }
        spec
    }
}

#[test]
fn esptool_makes_the_image_we_write_from_the_elf_we_write() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");

    let mismatches = in_parallel(&CASES, |case| {
        let (spec, elf) = (case.spec(), dir.path().join(format!("{}.elf", case.name())));
        let made = elf2image(&esptool, case, &spec, &elf);
        first_difference(&made, &spec.image()).map(|at| format!("{}: bytes differ from offset {at:#x}", case.name()))
    });

    assert_no_mismatch(mismatches.into_iter().flatten().collect());
}

#[test]
fn our_parser_reads_esptools_images_as_esptool_does() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");

    let mismatches = in_parallel(&CASES, |case| {
        let (spec, elf) = (case.spec(), dir.path().join(format!("{}.elf", case.name())));
        let made = elf2image(&esptool, case, &spec, &elf);
        let image = dir.path().join(format!("{}.bin", case.name()));
        std::fs::write(&image, &made).expect("write image");
        let info = esptool
            .image_info(None, &image)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name()));
        let parsed = parse(&made, &case.name());

        let mut diffs = Diffs::new(&case.name());
        compare(&mut diffs, &info, &parsed);
        diffs.expect(
            "flash freq esptool reports",
            Some(case.flash_freq),
            info.flash_freq.as_deref(),
        );
        diffs.expect("flash freq code", case.freq_code, parsed.header.flash_freq_code);
        let elf_sha256 = hex::encode(Sha256::digest(std::fs::read(&elf).expect("read ELF")));
        diffs.expect(
            "ELF SHA-256 (of the ELF file)",
            elf_sha256.as_str(),
            parsed.app.elf_sha256.as_str(),
        );
        diffs.expect(
            "project name",
            spec.app.project_name.as_str(),
            parsed.app.project_name.as_str(),
        );
        diffs.expect("secure version", spec.app.secure_version, parsed.app.secure_version);
        diffs.0
    });

    assert_no_mismatch(mismatches.into_iter().flatten().collect());
}

#[test]
fn our_parser_reads_the_images_we_write_as_esptool_does() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");
    let p4 = case(Chip::Esp32p4).spec();
    let mut many_segments = p4.clone();
    for n in 0..11 {
        many_segments = many_segments.extra_segment(0x4FF2_0000 + n * 0x1000, vec![n as u8; 0x100]);
    }
    let named = |name: &str, spec: AppImageSpec| (name.to_owned(), spec);
    let mut images: Vec<(String, AppImageSpec)> = MAIN_CHIPS
        .map(|chip| named(&chip.to_string(), case(chip).spec()))
        .to_vec();
    images.extend([
        named(
            "esp32p4 RSA-signed",
            p4.clone().signed(SignatureScheme::SecureBootV2Rsa),
        ),
        named(
            "esp32c6 ECDSA-signed",
            case(Chip::Esp32c6).spec().signed(SignatureScheme::SecureBootV2Ecdsa),
        ),
        named("esp32c3 without hash", case(Chip::Esp32c3).spec().hash_appended(false)),
        named("esp32s3 of 1 MiB", case(Chip::Esp32s3).spec().target_len(1 << 20)),
        named("esp32 with no revision bounds", AppImageSpec::new(Chip::Esp32)),
        named("esp32p4 with 16 segments", many_segments),
    ]);

    let mismatches = in_parallel(&images, |(name, spec)| {
        let bytes = spec.image();
        let info = image_info(&esptool, dir.path(), name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = parse(&bytes, name);

        let mut diffs = Diffs::new(name);
        compare(&mut diffs, &info, &parsed);
        let mut unsigned = spec.clone();
        unsigned.signature = None;
        let image_len = unsigned.image().len() as u64;
        diffs.expect("image length", image_len, parsed.image_len);
        let signature = spec.signature.map(|scheme| Signature {
            scheme,
            blocks: 1,
            offset: image_len.div_ceil(SIG_SECTOR_LEN as u64) * SIG_SECTOR_LEN as u64,
        });
        diffs.expect("signature", signature, parsed.signature);
        diffs.0
    });

    assert_no_mismatch(mismatches.into_iter().flatten().collect());
    let (name, many_segments) = images.last().expect("images");
    assert_eq!(parse(&many_segments.image(), name).segments.len(), 16, "{name}");
}

#[test]
fn our_parser_finds_espsecures_signatures_where_we_put_ours() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");
    let spec = case(Chip::Esp32p4).spec();
    let unsigned = dir.path().join("unsigned.bin");
    std::fs::write(&unsigned, spec.image()).expect("write image");
    let unsigned_hash = parse(&spec.image(), "unsigned").validation_hash;

    for (scheme, key_scheme) in [
        (SignatureScheme::SecureBootV2Rsa, "rsa3072"),
        (SignatureScheme::SecureBootV2Ecdsa, "ecdsa256"),
    ] {
        let (key, signed) = (
            dir.path().join(format!("{key_scheme}.pem")),
            dir.path().join(format!("{key_scheme}.bin")),
        );
        esptool.espsecure(
            &["generate-signing-key", "--version", "2", "--scheme", key_scheme],
            &[&key],
        );
        esptool.espsecure(
            &["sign-data", "--version", "2", "--keyfile"],
            &[&key, Path::new("--output"), &signed, &unsigned],
        );
        let theirs = std::fs::read(&signed).expect("read signed image");
        let ours = spec.clone().signed(scheme).image();

        let parsed = parse(&theirs, key_scheme);
        let sector = ours.len() - SIG_SECTOR_LEN;
        assert_eq!(
            parsed.signature,
            Some(Signature {
                scheme,
                blocks: 1,
                offset: sector as u64
            }),
            "{key_scheme}"
        );
        assert_eq!(parsed.validation_hash, unsigned_hash, "{key_scheme}");
        assert_eq!(theirs.len(), ours.len(), "{key_scheme}");
        // Equal but for the key and the signature (bytes 36..1196 of the
        // block) and the CRC over them.
        let key_and_signature = sector + 36..sector + 1200;
        assert_eq!(
            theirs[..key_and_signature.start],
            ours[..key_and_signature.start],
            "{key_scheme}"
        );
        assert_eq!(
            theirs[key_and_signature.end..],
            ours[key_and_signature.end..],
            "{key_scheme}"
        );
    }
}

#[test]
fn espsecure_accepts_our_signature_blocks() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");
    let spec = case(Chip::Esp32p4).spec();

    let ours = [SignatureScheme::SecureBootV2Rsa, SignatureScheme::SecureBootV2Ecdsa].map(|scheme| {
        write(
            dir.path(),
            &format!("{scheme:?}.bin"),
            &spec.clone().signed(scheme).image(),
        )
    });
    let checked = esptool.python(
        "import sys, espsecure\n\
         for path in sys.argv[1:]:\n\
         \x20   print(espsecure.validate_signature_block(open(path, 'rb').read(), 0) is not None)",
        &ours,
    );
    let verdicts = String::from_utf8_lossy(&checked.stdout)
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(
        verdicts,
        [
            "Signature block 0 is valid (RSA).",
            "True",
            "Signature block 0 is valid (ECDSA).",
            "True"
        ],
        "espsecure's check of our signature blocks:\n{}",
        common::text(&checked)
    );
}

/// How esptool 5.6 says an image is broken.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `image-info` exits non-zero with this in its message.
    Exits(&'static str),
    /// `image-info` exits 0 but marks the checksum or the hash invalid.
    MarksInvalid,
}

#[test]
fn corrupted_images_are_refused_by_both() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");
    let good = case(Chip::Esp32p4).spec().image();
    let parsed = parse(&good, "esp32p4");
    let segment = parsed.segments[1];
    let flipped = |at: usize, bit: u8| {
        let mut bytes = good.clone();
        bytes[at] ^= bit;
        bytes
    };
    let checksum_at = good.len() - 33;
    let middle_of_segment = segment.file_offset as usize + segment.len as usize / 2;
    let variants: Vec<(&str, Vec<u8>, Refusal)> = vec![
        (
            "a bit flipped in the app descriptor's segment",
            flipped(0x200, 0x10),
            Refusal::MarksInvalid,
        ),
        (
            "a bit flipped in the last segment",
            flipped(checksum_at - 40, 0x01),
            Refusal::MarksInvalid,
        ),
        (
            "a bit flipped in the checksum",
            flipped(checksum_at, 0x80),
            Refusal::MarksInvalid,
        ),
        (
            "a bit flipped in the appended hash",
            flipped(good.len() - 1, 0x01),
            Refusal::MarksInvalid,
        ),
        (
            "the last byte dropped",
            good[..good.len() - 1].to_vec(),
            Refusal::MarksInvalid,
        ),
        (
            "the last 100 bytes dropped",
            good[..good.len() - 100].to_vec(),
            Refusal::Exits("End of file reading segment"),
        ),
        (
            "cut in the middle of a segment",
            good[..middle_of_segment].to_vec(),
            Refusal::Exits("End of file reading segment"),
        ),
        (
            "a bad magic byte",
            flipped(0, 0x01),
            Refusal::Exits("invalid magic number"),
        ),
    ];

    let mismatches = in_parallel(&variants, |(name, bytes, refusal)| {
        let mut problems = Vec::new();
        if let Ok(image) = EspImage::parse(bytes) {
            problems.push(format!("{name}: our parser accepts it: {image:?}"));
        }
        match (image_info(&esptool, dir.path(), name, bytes), refusal) {
            (Err(message), Refusal::Exits(expected)) if message.contains(expected) => {}
            (Ok(info), Refusal::MarksInvalid) if !info.is_valid() => {}
            (answer, _) => problems.push(format!("{name}: esptool did not {refusal:?}: {answer:#?}")),
        }
        problems
    });

    assert_no_mismatch(mismatches.into_iter().flatten().collect());
}

#[test]
fn an_image_for_another_chip_is_refused_by_both() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");
    let bytes = case(Chip::Esp32p4).spec().image();
    let path = write(dir.path(), "p4.bin", &bytes);

    // esptool 5.6's image-info does not check the chip it is told: it prints
    // the header's chip (P4) under an ESP32-S3 title and exits 0. The check
    // it makes before flashing refuses the image.
    match esptool.image_info(Some("esp32s3"), &path) {
        Ok(info) => assert_eq!(
            (info.chip_id, info.chip_name.as_str()),
            (18, "ESP32-P4"),
            "{}",
            info.report
        ),
        Err(message) => assert!(message.contains("ESP32-S3"), "{message}"),
    }
    let verdicts = esptool.flash_check(&[("esp32s3".to_owned(), 0, &path)]);
    assert_eq!(verdicts, ["Input does not contain an ESP32-S3 image"]);

    let rules = ImageRules {
        chip: Chip::Esp32s3,
        project_name: None,
        min_chip_revision: ChipRevision::from_full(0),
        max_chip_revision: Some(ChipRevision::from_full(99)),
    };
    let misfit = rules.check(&parse(&bytes, "esp32p4"));
    assert!(
        matches!(
            misfit,
            Err(Misfit::WrongChip {
                expected: Chip::Esp32s3,
                found: Chip::Esp32p4,
                ..
            })
        ),
        "{misfit:?}"
    );
}

#[test]
fn chip_revision_ranges_agree_with_esptools_check_before_flashing() {
    let esptool = Esptool::find();
    let dir = tempfile::tempdir().expect("temporary directory");
    let images: Vec<(Chip, PathBuf, EspImage)> = [
        case(Chip::Esp32p4).spec(),
        case(Chip::Esp32c3).spec(),
        AppImageSpec::new(Chip::Esp32),
    ]
    .iter()
    .map(|spec| {
        let bytes = spec.image();
        let path = write(dir.path(), &format!("{}.bin", spec.chip), &bytes);
        (spec.chip, path, parse(&bytes, &spec.chip.to_string()))
    })
    .collect();
    let revisions = [0, 1, 3, 99, 100, 101, 199, 200, 300, 301, 399, 400];
    let checks: Vec<(String, u16, &Path)> = images
        .iter()
        .flat_map(|(chip, path, _)| revisions.map(|rev| (chip.to_string(), rev, path.as_path())))
        .collect();

    let mut verdicts = esptool.flash_check(&checks).into_iter();

    let mut disagreements = Vec::new();
    for (chip, _, image) in &images {
        for rev in revisions {
            let verdict = verdicts.next().expect("a verdict per check");
            let rules = ImageRules {
                chip: *chip,
                project_name: None,
                min_chip_revision: ChipRevision::from_full(rev),
                max_chip_revision: Some(ChipRevision::from_full(rev)),
            };
            let ours = rules.check(image);
            if ours.is_ok() != (verdict == "compatible") {
                disagreements.push(format!("{chip} rev {rev}: esptool '{verdict}', our rules {ours:?}"));
            }
        }
    }
    assert_no_mismatch(disagreements);
}

// ---- helpers ----

fn elf2image(esptool: &Esptool, case: &Case, spec: &AppImageSpec, elf: &Path) -> Vec<u8> {
    std::fs::write(elf, spec.elf()).expect("write ELF");
    let out = elf.with_extension("elf2image.bin");
    esptool.elf2image(&case.name(), case.flash_freq, case.revs, elf, &out);
    std::fs::read(&out).expect("read elf2image's output")
}

fn image_info(esptool: &Esptool, dir: &Path, name: &str, bytes: &[u8]) -> Result<ImageInfo, String> {
    let path = write(dir, &format!("{}.bin", name.replace(' ', "_")), bytes);
    esptool.image_info(None, &path)
}

fn parse(bytes: &[u8], name: &str) -> EspImage {
    EspImage::parse(bytes).unwrap_or_else(|e| panic!("{name}: our parser refuses it: {e}"))
}
