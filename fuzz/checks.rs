//! What the fuzz targets check, in one place: the targets in
//! `fuzz/fuzz_targets/` and ota-core's `tests/fuzz_corpus.rs` (which runs
//! these checks over `fuzz/seeds/` on stable) both include this file with
//! `#[path]`. Each check takes arbitrary bytes and panics when an invariant
//! does not hold.

use ota_core::Version;
use ota_core::esp::rules::ImageRules;
use ota_core::esp::{
    APP_DESC_MAGIC, APP_DESC_OFFSET, CHECKSUM_SEED, Chip, ChipRevision, EspImage, HEADER_LEN, IMAGE_MAGIC, ImageError,
    ImageParser, MAX_SEGMENTS, MIN_IMAGE_LEN, SIG_BLOCK_MAGIC, SIG_SECTOR_LEN,
};
use sha2::{Digest, Sha256};

/// Each segment's data follows its `load_addr` and `len`.
const SEGMENT_HEADER_LEN: u64 = 8;
const HASH_LEN: u64 = 32;

/// The `esp_image` target: the parser gives the same answer however the
/// bytes arrive, and what it accepts is consistent with the bytes.
pub fn esp_image(data: &[u8]) {
    let whole = EspImage::parse(data);
    for (how, chunk_lens) in chunkings(data) {
        let chunked = feed_in_chunks(data, &chunk_lens);
        assert_eq!(chunked, whole, "fed {how}, the parser answers otherwise than fed whole");
    }
    match whole {
        Ok(image) => {
            image_matches_bytes(&image, data);
            rules_hold(&image);
            json_round_trips(&image);
            app_version_reads(&image);
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// The `version` target: version, chip revision and chip names read back
/// what they print. Invalid UTF-8 is read lossily.
pub fn version(data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(text) => version_text(text),
        Err(_) => version_text(&String::from_utf8_lossy(data)),
    }
}

fn version_text(text: &str) {
    if let Ok(version) = Version::parse(text) {
        assert!(
            text.len() <= Version::MAX_LEN,
            "{text:?} is longer than Version::MAX_LEN"
        );
        version_round_trips(&version);
    }
    if let Ok(version) = Version::from_app_descriptor(text) {
        version_round_trips(&version);
    }
    if let Ok(revision) = ChipRevision::parse(text) {
        let printed = revision.to_string();
        assert_eq!(
            ChipRevision::parse(&printed),
            Ok(revision),
            "{text:?} printed as {printed:?}"
        );
    }
    if let Some(chip) = Chip::parse(text) {
        assert_eq!(Chip::parse(&chip.to_string()), Some(chip), "{text:?}");
        assert_eq!(Chip::from_id(chip.id()), chip, "{text:?}");
    }
}

/// Prints, reads back equal (SemVer precedence) and prints the same again,
/// build metadata included; JSON too.
fn version_round_trips(version: &Version) {
    let printed = version.to_string();
    let reread = Version::parse(&printed).unwrap_or_else(|e| panic!("{version:?} printed as {printed:?}: {e}"));
    assert_eq!(&reread, version, "{printed:?}");
    assert_eq!(reread.to_string(), printed);
    let json = serde_json::to_string(version).expect("a version serializes");
    let back: Version = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
    assert_eq!(back.to_string(), printed);
}

/// The ways the input is fed besides whole: a byte at a time, in chunks of
/// one size, of changing sizes, and cut at a few points (with empty feeds).
/// Sizes and points come from a hash of the input, so a run is reproducible.
fn chunkings(data: &[u8]) -> Vec<(String, Vec<usize>)> {
    let mut random = SplitMix(fnv1a(data));
    let len = data.len();
    let fixed = 1 + (random.next() % 64) as usize;
    let mut changing = vec![0];
    let mut fed = 0;
    while fed < len {
        let size = if random.next().is_multiple_of(8) {
            1 + (random.next() % 4096) as usize
        } else {
            1 + (random.next() % 64) as usize
        };
        let size = size.min(len - fed);
        changing.push(size);
        fed += size;
    }
    let mut points: Vec<usize> = (0..3).map(|_| (random.next() % (len as u64 + 1)) as usize).collect();
    points.sort_unstable();
    let mut cut = Vec::new();
    let mut previous = 0;
    for point in points.into_iter().chain([len]) {
        cut.push(point - previous);
        previous = point;
    }
    vec![
        ("a byte at a time".to_owned(), vec![1; len]),
        (format!("in chunks of {fixed}"), chunk_lens(len, fixed)),
        (format!("in chunks of {changing:?}"), changing),
        (format!("cut into {cut:?}"), cut),
    ]
}

fn chunk_lens(len: usize, size: usize) -> Vec<usize> {
    let mut lens = vec![size; len / size];
    if !len.is_multiple_of(size) {
        lens.push(len % size);
    }
    lens
}

fn feed_in_chunks(data: &[u8], chunk_lens: &[usize]) -> Result<EspImage, ImageError> {
    let mut parser = ImageParser::new();
    let mut fed = 0;
    for &chunk_len in chunk_lens {
        parser.feed(&data[fed..fed + chunk_len]);
        fed += chunk_len;
        assert_eq!(parser.len(), fed as u64, "len() after feeding {fed} bytes");
    }
    assert_eq!(fed, data.len(), "the chunks cover the input");
    parser.finish()
}

/// An accepted image is what the bytes say (layout in `shared/ESP.md`):
/// its segments back to back after the header, the checksum at the end of
/// a 16-byte block, the appended hash right, a signature where it must be.
fn image_matches_bytes(image: &EspImage, data: &[u8]) {
    assert_eq!(image.file_len, data.len() as u64, "file_len");
    assert!(
        image.image_len <= image.file_len,
        "image_len {} > file_len {}",
        image.image_len,
        image.file_len
    );
    assert!(data.len() >= APP_DESC_OFFSET + 8, "accepted {} bytes", data.len());
    assert_eq!(data[0], IMAGE_MAGIC);
    assert_eq!(
        image.header.chip_id,
        u16::from_le_bytes([data[0x0C], data[0x0D]]),
        "chip_id"
    );
    assert!(
        image.segments.len() <= MAX_SEGMENTS,
        "{} segments",
        image.segments.len()
    );
    assert_eq!(
        image.segments.len(),
        usize::from(image.header.segment_count),
        "segment_count"
    );

    let mut offset = HEADER_LEN as u64 + SEGMENT_HEADER_LEN;
    let mut checksum = CHECKSUM_SEED;
    for segment in &image.segments {
        assert_eq!(
            segment.file_offset, offset,
            "segment file offsets: {:?}",
            image.segments
        );
        let end = segment.file_offset + u64::from(segment.len);
        assert!(
            end <= image.image_len,
            "segment {segment:?} ends past image_len {}",
            image.image_len
        );
        checksum = data[segment.file_offset as usize..end as usize]
            .iter()
            .fold(checksum, |sum, b| sum ^ b);
        offset = end + SEGMENT_HEADER_LEN;
    }
    let segments_end = offset - SEGMENT_HEADER_LEN;
    let checksum_at = segments_end | 15;
    assert!(
        checksum_at < image.image_len,
        "checksum at {checksum_at}, image_len {}",
        image.image_len
    );
    assert_eq!(image.checksum, checksum, "checksum over the segments' data");
    assert_eq!(data[checksum_at as usize], checksum, "checksum byte at {checksum_at}");

    let hashed_len = checksum_at + 1;
    match &image.validation_hash {
        Some(hash) => {
            assert!(image.header.hash_appended, "a validation hash without hash_appended");
            assert_eq!(image.image_len, hashed_len + HASH_LEN, "image_len with a hash");
            let expected = Sha256::digest(&data[..hashed_len as usize]);
            assert!(
                hash.eq_ignore_ascii_case(&hex::encode(expected)),
                "validation hash {hash}"
            );
            assert_eq!(&data[hashed_len as usize..image.image_len as usize], &expected[..]);
        }
        None => {
            assert!(!image.header.hash_appended, "hash_appended without a validation hash");
            assert_eq!(image.image_len, hashed_len, "image_len without a hash");
        }
    }

    let app_magic = &data[APP_DESC_OFFSET..APP_DESC_OFFSET + 4];
    assert_eq!(app_magic, APP_DESC_MAGIC.to_le_bytes(), "esp_app_desc_t magic");
    assert_eq!(
        image.app.secure_version,
        u32::from_le_bytes([data[0x24], data[0x25], data[0x26], data[0x27]])
    );

    if let Some(signature) = &image.signature {
        let sector = SIG_SECTOR_LEN as u64;
        assert_eq!(
            signature.offset,
            image.image_len.div_ceil(sector) * sector,
            "signature offset"
        );
        assert!(
            signature.offset + sector <= image.file_len,
            "signature sector past the end"
        );
        assert!(
            (1..=3).contains(&signature.blocks),
            "{} signature blocks",
            signature.blocks
        );
        assert_eq!(data[signature.offset as usize], SIG_BLOCK_MAGIC);
    }
}

/// Checking an image against rules never panics, and what passes fits.
fn rules_hold(image: &EspImage) {
    let tab5 = ImageRules {
        chip: Chip::Esp32p4,
        project_name: Some("scales_bridge".to_owned()),
        min_chip_revision: ChipRevision::from_full(100),
        max_chip_revision: Some(ChipRevision::from_full(199)),
    };
    let any_esp32 = ImageRules {
        chip: Chip::Esp32,
        project_name: None,
        min_chip_revision: ChipRevision::from_full(0),
        max_chip_revision: None,
    };
    for rules in [tab5, any_esp32] {
        match rules.check(image) {
            Ok(()) => {
                assert!(image.file_len >= MIN_IMAGE_LEN);
                assert_eq!(image.header.chip(), rules.chip);
            }
            Err(misfit) => assert!(!misfit.to_string().is_empty()),
        }
    }
    // Rules made from the image itself demand exactly what it offers.
    let own = ImageRules {
        chip: image.header.chip(),
        project_name: Some(image.app.project_name.clone()),
        min_chip_revision: image.header.min_chip_revision,
        max_chip_revision: image.header.max_chip_revision,
    };
    assert_eq!(
        own.check(image).is_ok(),
        image.file_len >= MIN_IMAGE_LEN,
        "{:?}",
        own.check(image)
    );
}

/// What the server stores and serves as JSON reads back the same.
fn json_round_trips(image: &EspImage) {
    let json = serde_json::to_string(image).expect("an image serializes");
    let back: EspImage = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
    assert_eq!(&back, image);
}

/// Whatever the descriptor's version says, reading it as a version never
/// panics, and what it reads is a version.
fn app_version_reads(image: &EspImage) {
    if let Ok(version) = Version::from_app_descriptor(&image.app.version) {
        version_round_trips(&version);
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A small deterministic generator (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
