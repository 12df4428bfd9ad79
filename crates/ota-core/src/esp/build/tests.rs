//! The builder's own checks; the comparison with esptool is in tests/esptool.rs.

use super::placement::{EM_RISCV, EM_XTENSA};
use super::*;

/// (load address, data offset, data length) of each segment, and the
/// offset just past the last one.
fn segments(image: &[u8]) -> (Vec<(u32, usize, usize)>, usize) {
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
    let mut at = HEADER_LEN;
    let mut found = Vec::new();
    for _ in 0..image[1] {
        let len = u32_at(at + 4) as usize;
        found.push((u32_at(at), at + 8, len));
        at += 8 + len;
    }
    (found, at)
}

fn image_len(image: &[u8]) -> usize {
    align_up(segments(image).1 + 1, 16) + SHA256_LEN
}

#[test]
fn crc32_is_zlibs() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn the_header_says_what_the_spec_says() {
    let image = AppImageSpec::new(Chip::Esp32p4)
        .chip_revisions(100, 199)
        .flash(2, 4, 0xF)
        .image();

    assert_eq!(&image[..4], &[IMAGE_MAGIC, image[1], 2, 0x4F]);
    assert_eq!(u32::from_le_bytes(image[4..8].try_into().unwrap()), 0x4FF0_0000);
    assert_eq!(image[8], 0xEE);
    assert_eq!(u16::from_le_bytes([image[12], image[13]]), 18);
    assert_eq!(u16::from_le_bytes([image[15], image[16]]), 100);
    assert_eq!(u16::from_le_bytes([image[17], image[18]]), 199);
    assert_eq!(image[23], 1);
}

#[test]
fn the_app_descriptor_is_the_first_segments_data() {
    let image = AppImageSpec::new(Chip::Esp32s3)
        .version("v1.2.3-4-gabc1234")
        .project_name("bridge")
        .image();

    let (segments, _) = segments(&image);
    assert_eq!(segments[0], (0x3C00_0020, 0x20, APP_DESC_LEN + 0x600));
    assert_eq!(&image[0x20..0x24], &APP_DESC_MAGIC.to_le_bytes());
    assert_eq!(&image[0x30..0x42], b"v1.2.3-4-gabc1234\0");
    assert_eq!(&image[0x50..0x57], b"bridge\0");
    assert_eq!(image[0xD4], 16);
}

#[test]
fn the_checksum_ends_a_16_byte_block_and_xors_the_segment_data() {
    for chip in [Chip::Esp32, Chip::Esp32c6, Chip::Esp32p4] {
        let image = AppImageSpec::new(chip).image();

        let (segments, end) = segments(&image);
        let checksum_at = image.len() - SHA256_LEN - 1;
        assert_eq!(checksum_at % 16, 15, "{chip}");
        assert!(image[end..checksum_at].iter().all(|&b| b == 0), "{chip}");
        let xor = segments
            .iter()
            .flat_map(|&(_, at, len)| &image[at..at + len])
            .fold(CHECKSUM_SEED, |x, b| x ^ b);
        assert_eq!(image[checksum_at], xor, "{chip}");
    }
}

#[test]
fn the_appended_hash_is_the_sha256_of_everything_before_it() {
    let image = AppImageSpec::new(Chip::Esp32c3).image();

    let (body, hash) = image.split_at(image.len() - SHA256_LEN);
    assert_eq!(hash, &Sha256::digest(body)[..]);
}

#[test]
fn without_an_appended_hash_the_image_ends_with_its_checksum() {
    let image = AppImageSpec::new(Chip::Esp32c3).hash_appended(false).image();

    assert_eq!(image[23], 0);
    assert_eq!(image.len(), align_up(segments(&image).1 + 1, 16));
}

#[test]
fn flash_segments_sit_at_their_address_modulo_the_mmu_page() {
    for chip in [Chip::Esp32, Chip::Esp32s3, Chip::Esp32c3, Chip::Esp32c6, Chip::Esp32p4] {
        let spec = AppImageSpec::new(chip).target_len(300_000);
        let map = memory_map(chip);

        let (segments, _) = segments(&spec.image());
        let flash: Vec<_> = segments.iter().filter(|(addr, _, _)| map.is_flash(*addr)).collect();
        assert_eq!(flash.len(), 2, "{chip}");
        for (addr, at, _) in flash {
            assert_eq!(*addr as usize % 0x1_0000, at % 0x1_0000, "{chip} {addr:#x}");
        }
    }
}

#[test]
fn a_target_length_is_met_within_16_bytes() {
    for chip in [Chip::Esp32, Chip::Esp32c6, Chip::Esp32p4] {
        for target in [1024, 8192, 69_000, 80_000, 1 << 20, 3_000_001] {
            let image = AppImageSpec::new(chip).target_len(target).image();
            assert!(image.len().abs_diff(target) <= 16, "{chip} {target}: {}", image.len());
        }
    }
    for target in [900, 5000, 50_000, 200_000] {
        let image = app_image(Chip::Esp32c6, "1.0.0", "app", 0, target);
        assert!(image.len().abs_diff(target) <= 16, "{target}: {}", image.len());
    }
}

#[test]
fn a_signature_sector_follows_the_image_on_a_4_kib_boundary() {
    for (scheme, version) in [
        (SignatureScheme::SecureBootV2Rsa, 2),
        (SignatureScheme::SecureBootV2Ecdsa, 3),
    ] {
        let image = AppImageSpec::new(Chip::Esp32p4).signed(scheme).image();

        let at = align_up(image_len(&image), SIG_SECTOR_LEN);
        assert_eq!(image.len(), at + SIG_SECTOR_LEN);
        let block = &image[at..at + SIG_BLOCK_LEN];
        assert_eq!(&block[..2], &[SIG_BLOCK_MAGIC, version]);
        assert_eq!(&block[4..36], &Sha256::digest(&image[..at])[..]);
        assert_eq!(
            &block[SIG_CRC_OFFSET..SIG_CRC_OFFSET + 4],
            &crc32(&block[..SIG_CRC_OFFSET]).to_le_bytes()
        );
        assert!(image[image_len(&image)..at].iter().all(|&b| b == 0xFF));
        assert!(image[at + SIG_BLOCK_LEN..].iter().all(|&b| b == 0xFF));
    }
}

#[test]
fn the_same_spec_gives_the_same_bytes_and_the_seed_changes_them() {
    let spec = AppImageSpec::new(Chip::Esp32p4);

    assert_eq!(spec.image(), spec.image());
    assert_ne!(spec.image(), spec.clone().seed(1).image());
}

#[test]
fn the_image_records_the_sha256_of_the_elf() {
    let spec = AppImageSpec::new(Chip::Esp32);

    let elf = spec.elf();
    assert_eq!(&spec.image()[0xB0..0xD0], &Sha256::digest(&elf)[..]);
    assert_eq!(&spec.clone().elf_sha256([7; 32]).image()[0xB0..0xD0], &[7; 32]);
}

#[test]
fn the_elf_is_an_executable_for_the_chips_architecture() {
    for (chip, machine) in [
        (Chip::Esp32s3, EM_XTENSA),
        (Chip::Esp32c6, EM_RISCV),
        (Chip::Esp32p4, EM_RISCV),
    ] {
        let elf = AppImageSpec::new(chip).entry(0x4080_0100).elf();

        assert_eq!(&elf[..6], &[0x7F, b'E', b'L', b'F', 1, 1]);
        assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), 2);
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), machine);
        assert_eq!(u32::from_le_bytes(elf[24..28].try_into().unwrap()), 0x4080_0100);
        let names = b"\0.flash.appdesc\0.flash.rodata\0.flash.text\0.iram0.text\0.dram0.data\0.shstrtab\0";
        assert!(elf.windows(names.len()).any(|w| w == names), "{chip}");
    }
}

#[test]
fn extra_segments_are_written_padded_to_4_bytes() {
    let image = AppImageSpec::new(Chip::Esp32c3)
        .extra_segment(0x5000_0000, vec![1, 2, 3])
        .image();

    let (segments, _) = segments(&image);
    let &(_, at, len) = segments.iter().find(|(addr, _, _)| *addr == 0x5000_0000).unwrap();
    assert_eq!(len, 4);
    assert_eq!(&image[at..at + 4], &[1, 2, 3, 0]);
}
