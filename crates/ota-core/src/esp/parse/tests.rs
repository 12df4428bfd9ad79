//! The parser's checks; the comparison with esptool is in tests/esptool.rs.

use proptest::prelude::*;

use super::*;
use crate::esp::build::AppImageSpec;
use crate::esp::{Chip, EspImage};

fn p4() -> AppImageSpec {
    AppImageSpec::new(Chip::Esp32p4)
        .chip_revisions(100, 199)
        .version("v1.2.3")
        .project_name("scales_bridge")
        .secure_version(2)
}

fn chunked(bytes: &[u8], size: usize) -> Result<EspImage, ImageError> {
    let mut parser = ImageParser::new();
    for chunk in bytes.chunks(size.max(1)) {
        parser.feed(chunk);
    }
    parser.finish()
}

#[test]
fn a_valid_image_reads_back_what_was_written() {
    let bytes = p4().image();
    let image = EspImage::parse(&bytes).unwrap();
    assert_eq!(image.header.chip, "esp32p4");
    assert_eq!(image.header.chip_id, 18);
    assert_eq!(image.header.min_chip_revision.to_string(), "v1.0");
    assert_eq!(image.header.max_chip_revision.unwrap().to_string(), "v1.99");
    assert_eq!(image.header.flash_mode, FlashMode::Dio);
    assert_eq!(image.header.flash_size, "16MB");
    assert!(image.header.hash_appended);
    assert_eq!(image.app.version, "v1.2.3");
    assert_eq!(image.app.project_name, "scales_bridge");
    assert_eq!(image.app.secure_version, 2);
    assert_eq!(image.app.idf_version, "v5.5.1");
    assert_eq!(image.app.mmu_page_size, Some(65536));
    assert_eq!(image.file_len, bytes.len() as u64);
    assert_eq!(image.image_len, bytes.len() as u64);
    let hashed = &bytes[..bytes.len() - 32];
    assert_eq!(
        image.validation_hash.as_deref(),
        Some(hex::encode(Sha256::digest(hashed)).as_str())
    );
    assert_eq!(image.segments.len(), usize::from(image.header.segment_count));
    assert_eq!(image.segments[0].file_offset, APP_DESC_OFFSET as u64);
    assert!(image.signature.is_none());
}

#[test]
fn every_chip_parses() {
    for chip in [Chip::Esp32, Chip::Esp32s3, Chip::Esp32c3, Chip::Esp32c6, Chip::Esp32p4] {
        let image = EspImage::parse(&AppImageSpec::new(chip).image()).unwrap();
        assert_eq!(image.header.chip(), chip);
    }
}

#[test]
fn no_max_revision_reads_as_none() {
    let image = EspImage::parse(&p4().chip_revisions(0, 0xFFFF).image()).unwrap();
    assert_eq!(image.header.max_chip_revision, None);
    assert_eq!(image.header.min_chip_revision.full(), 0);
}

#[test]
fn an_image_without_an_appended_hash_has_no_validation_hash() {
    let bytes = p4().hash_appended(false).image();
    let image = EspImage::parse(&bytes).unwrap();
    assert!(!image.header.hash_appended);
    assert_eq!(image.validation_hash, None);
    assert_eq!(image.image_len % 16, 0, "the checksum ends a 16-byte block");
}

#[test]
fn signed_images_are_recognised_for_both_schemes() {
    for (scheme, expected) in [
        (SignatureScheme::SecureBootV2Rsa, SignatureScheme::SecureBootV2Rsa),
        (SignatureScheme::SecureBootV2Ecdsa, SignatureScheme::SecureBootV2Ecdsa),
    ] {
        let bytes = p4().signed(scheme).image();
        let image = EspImage::parse(&bytes).unwrap();
        let signature = image.signature.expect("signed");
        assert_eq!(signature.scheme, expected);
        assert_eq!(signature.blocks, 1);
        assert_eq!(signature.offset % SIG_SECTOR_LEN as u64, 0);
        assert_eq!(image.file_len, signature.offset + SIG_SECTOR_LEN as u64);
        assert!(image.image_len <= signature.offset);
        // The validation hash is the image's, not the signed file's.
        let unsigned = EspImage::parse(&bytes[..image.image_len as usize]).unwrap();
        assert_eq!(unsigned.validation_hash, image.validation_hash);
    }
}

#[test]
fn a_signature_over_other_bytes_is_refused() {
    let mut bytes = p4().signed(SignatureScheme::SecureBootV2Rsa).image();
    let sector = bytes.len() - SIG_SECTOR_LEN;
    bytes[sector + 4] ^= 1;
    let crc = crc32(&bytes[sector..sector + SIG_CRC_OFFSET]);
    bytes[sector + SIG_CRC_OFFSET..sector + SIG_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    let error = EspImage::parse(&bytes).unwrap_err();
    assert!(matches!(error, ImageError::Signature { .. }), "{error}");
    assert!(error.to_string().contains("changed after signing"), "{error}");
}

#[test]
fn a_signature_block_with_a_bad_crc_is_refused() {
    let mut bytes = p4().signed(SignatureScheme::SecureBootV2Ecdsa).image();
    let sector = bytes.len() - SIG_SECTOR_LEN;
    bytes[sector + 100] ^= 0x80;
    let error = EspImage::parse(&bytes).unwrap_err();
    assert!(error.to_string().contains("CRC32"), "{error}");
}

#[test]
fn a_cut_off_signature_sector_is_truncation() {
    let bytes = p4().signed(SignatureScheme::SecureBootV2Rsa).image();
    let error = EspImage::parse(&bytes[..bytes.len() - 10]).unwrap_err();
    assert!(matches!(error, ImageError::Truncated { .. }), "{error}");
}

#[test]
fn erased_flash_padding_after_the_image_is_accepted_and_anything_else_refused() {
    let mut bytes = p4().image();
    let image_len = bytes.len() as u64;
    bytes.extend(std::iter::repeat_n(0xFF, 10_000));
    let image = EspImage::parse(&bytes).unwrap();
    assert_eq!((image.image_len, image.file_len), (image_len, image_len + 10_000));
    bytes[image_len as usize + 5000] = 0;
    let error = EspImage::parse(&bytes).unwrap_err();
    assert_eq!(
        error,
        ImageError::TrailingData {
            offset: image_len,
            len: 10_000,
            first_odd: image_len + 5000
        }
    );
}

#[test]
fn corrupted_segment_data_fails_the_checksum_or_the_hash() {
    let bytes = p4().hash_appended(false).image();
    let mut flipped = bytes.clone();
    flipped[APP_DESC_OFFSET + 300] ^= 0x04;
    assert!(matches!(EspImage::parse(&flipped), Err(ImageError::Checksum { .. })));

    let bytes = p4().image();
    let mut flipped = bytes.clone();
    flipped[2] ^= 0x01; // the flash mode: not in the checksum, but in the hash
    assert!(matches!(EspImage::parse(&flipped), Err(ImageError::Hash { .. })));
}

#[test]
fn wrong_files_are_named() {
    let cases: [(&[u8], &str); 4] = [
        (b"\x7fELF\x01\x01\x01", "ELF file"),
        (b"\xaa\x50\x01\x02", "partition table"),
        (&[0xFF; 64], "erased flash"),
        (b"PK\x03\x04", "ZIP"),
    ];
    for (start, hint) in cases {
        let mut bytes = start.to_vec();
        bytes.resize(2048, 0);
        let error = EspImage::parse(&bytes).unwrap_err();
        assert!(error.to_string().contains(hint), "{error}");
    }
}

#[test]
fn a_bootloader_is_not_an_app() {
    let mut bytes = p4().hash_appended(false).image();
    bytes[APP_DESC_OFFSET..APP_DESC_OFFSET + 4].copy_from_slice(&[0x50, 0x01, 0x00, 0x00]);
    let error = EspImage::parse(&bytes).unwrap_err();
    assert!(error.to_string().contains("bootloader"), "{error}");
}

#[test]
fn header_fields_out_of_range_are_refused() {
    let bytes = p4().image();
    let mut none = bytes.clone();
    none[1] = 0;
    assert_eq!(EspImage::parse(&none), Err(ImageError::SegmentCount { count: 0 }));
    let mut many = bytes.clone();
    many[1] = 17;
    assert_eq!(EspImage::parse(&many), Err(ImageError::SegmentCount { count: 17 }));
    let mut flag = bytes.clone();
    flag[23] = 2;
    assert_eq!(EspImage::parse(&flag), Err(ImageError::HashAppendedFlag { found: 2 }));
    let mut odd = bytes;
    odd[HEADER_LEN + 4] |= 0x01;
    assert!(matches!(
        EspImage::parse(&odd),
        Err(ImageError::SegmentLength { index: 0, .. })
    ));
}

#[test]
fn every_shorter_prefix_is_refused_and_names_where_it_ends() {
    let bytes = p4().target_len(2048).image();
    for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        let error = EspImage::parse(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(error, ImageError::Truncated { len, .. } if len == cut as u64),
            "cut at {cut}: {error}"
        );
    }
    let error = EspImage::parse(&bytes[..100]).unwrap_err();
    assert!(error.to_string().contains("segment 0"), "{error}");
}

#[test]
fn one_byte_at_a_time_gives_the_same_answer() {
    let bytes = p4().signed(SignatureScheme::SecureBootV2Rsa).image();
    assert_eq!(chunked(&bytes, 1), EspImage::parse(&bytes));
    assert!(chunked(&bytes, 1).is_ok());
}

#[test]
fn memory_stays_small_whatever_the_image_size() {
    let big = p4().target_len(4 * 1024 * 1024).image();
    let mut parser = ImageParser::new();
    for chunk in big.chunks(64 * 1024) {
        parser.feed(chunk);
    }
    assert!(parser.desc.capacity() <= APP_DESC_LEN && parser.sector.capacity() == 0);
    assert!(size_of::<ImageParser>() < 1024);
    assert_eq!(parser.finish().unwrap().file_len, big.len() as u64);
}

proptest! {
    #[test]
    fn how_the_bytes_arrive_never_changes_the_answer(
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        flip in proptest::option::of((any::<prop::sample::Index>(), 0u8..8)),
        signed in any::<bool>(),
    ) {
        let spec = if signed { p4().signed(SignatureScheme::SecureBootV2Ecdsa) } else { p4() };
        let mut bytes = spec.target_len(3000).image();
        if let Some((at, bit)) = flip {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut parser = ImageParser::new();
        let mut from = 0;
        for point in points.into_iter().chain([bytes.len()]) {
            parser.feed(&bytes[from..point]);
            from = point;
        }
        prop_assert_eq!(parser.finish(), EspImage::parse(&bytes));
    }

    #[test]
    fn the_file_hash_comes_with_the_parse(
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        signed in any::<bool>(),
    ) {
        let spec = if signed { p4().signed(SignatureScheme::SecureBootV2Rsa) } else { p4() };
        let mut bytes = spec.target_len(3000).image();
        let i = flip.index(bytes.len());
        bytes[i] ^= 0x40;
        let mut parser = ImageParser::new();
        let (head, tail) = bytes.split_at(cut.index(bytes.len() + 1));
        parser.feed(head);
        parser.feed(tail);
        let (image, sha256) = parser.finish_with_sha256();
        prop_assert_eq!(sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        prop_assert_eq!(image, EspImage::parse(&bytes));
    }

    #[test]
    fn any_flipped_bit_in_a_hashed_image_is_caught(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = p4().target_len(3000).image();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(EspImage::parse(&bytes).is_err(), "flip at {} bit {} went unnoticed", i, bit);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), e9 in any::<bool>()) {
        let mut bytes = bytes;
        if e9 && !bytes.is_empty() {
            bytes[0] = IMAGE_MAGIC;
        }
        let _ = chunked(&bytes, 13);
        let _ = EspImage::parse(&bytes);
    }
}
