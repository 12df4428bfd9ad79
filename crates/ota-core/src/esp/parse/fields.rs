//! The fixed-layout parts: the image header and `esp_app_desc_t`.

use super::*;

pub(super) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

pub(super) const FLASH_SIZES: [&str; 8] = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"];

pub(super) fn read_header(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    if bytes[0] != IMAGE_MAGIC {
        let hint = match bytes[..2] {
            [0xAA, 0x50] => " (this is a partition table)",
            [0xFF, _] => " (it starts with erased flash: a merged flash image or a flash dump?)",
            [b'P', b'K'] => " (this is a ZIP archive)",
            [0x7F, b'E'] => " (this is an ELF file: convert it with esptool elf2image, or upload the build's .bin)",
            _ => "",
        };
        return Err(ImageError::BadMagic { found: bytes[0], hint });
    }
    let segment_count = bytes[1];
    if segment_count == 0 || usize::from(segment_count) > MAX_SEGMENTS {
        return Err(ImageError::SegmentCount { count: segment_count });
    }
    let hash_appended = match bytes[23] {
        0 => false,
        1 => true,
        found => return Err(ImageError::HashAppendedFlag { found }),
    };
    let chip_id = u16_at(bytes, 12);
    let max_rev = u16_at(bytes, 17);
    Ok(ImageHeader {
        chip: crate::esp::Chip::from_id(chip_id).name().to_owned(),
        chip_id,
        segment_count,
        flash_mode: FlashMode::from_byte(bytes[2]),
        flash_size: FLASH_SIZES
            .get(usize::from(bytes[3] >> 4))
            .map_or_else(|| format!("unknown (0x{:X})", bytes[3] >> 4), |s| (*s).to_owned()),
        flash_freq_code: bytes[3] & 0x0F,
        entry_addr: u32_at(bytes, 4),
        min_chip_revision: ChipRevision::from_full(u16_at(bytes, 15)),
        max_chip_revision: (max_rev != 0 && max_rev != 0xFFFF).then_some(ChipRevision::from_full(max_rev)),
        min_chip_revision_legacy: bytes[14],
        hash_appended,
    })
}

/// A NUL-padded C string field, as text (invalid UTF-8 replaced).
pub(super) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub(super) fn read_app_descriptor(desc: &[u8]) -> Result<AppDescriptor, ImageError> {
    let magic = u32_at(desc, 0);
    if magic != APP_DESC_MAGIC {
        let hint = if desc[0] == 0x50 {
            " (this looks like a bootloader image: upload the app binary, not bootloader.bin)"
        } else {
            " (not an ESP-IDF application, or built without its app descriptor)"
        };
        return Err(ImageError::NoAppDescriptor { found: magic, hint });
    }
    let mmu_log2 = desc[180];
    Ok(AppDescriptor {
        secure_version: u32_at(desc, 4),
        version: c_string(&desc[16..48]),
        project_name: c_string(&desc[48..80]),
        compile_time: c_string(&desc[80..96]),
        compile_date: c_string(&desc[96..112]),
        idf_version: c_string(&desc[112..144]),
        elf_sha256: hex::encode(&desc[144..176]),
        min_efuse_blk_rev: u16_at(desc, 176),
        max_efuse_blk_rev: u16_at(desc, 178),
        mmu_page_size: (mmu_log2 != 0 && mmu_log2 < 32).then(|| 1u32 << mmu_log2),
    })
}
