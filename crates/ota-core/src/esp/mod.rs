//! ESP-IDF app images: what is in them and whether a device can boot them.
//!
//! [`ImageParser`] reads an image (`esptool elf2image` output, optionally
//! followed by a Secure Boot signature) incrementally: feed it the bytes as
//! they arrive, in chunks of any size, then [`ImageParser::finish`]. It keeps
//! a few hundred bytes of state, never the image, and never panics: whatever
//! the input, the answer is an [`EspImage`] or an [`ImageError`] that says
//! what is wrong and where. The layout is in `shared/ESP.md`.
//!
//! [`rules`] decides whether a parsed image fits a device type (chip, chip
//! revisions, project name); [`build`] writes images and ELF files for tests,
//! fuzz seeds and the simulator.

pub mod build;
mod chip;
mod parse;
pub mod rules;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use chip::{Chip, ChipRevision, ChipRevisionError};
pub use parse::{ImageError, ImageParser};

/// First byte of every image.
pub const IMAGE_MAGIC: u8 = 0xE9;
/// `esp_app_desc_t.magic_word`.
pub const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// File offset of `esp_app_desc_t`: the first segment's data.
pub const APP_DESC_OFFSET: usize = 0x20;
/// Size of `esp_app_desc_t`.
pub const APP_DESC_LEN: usize = 256;
/// The image header (`esp_image_header_t`).
pub const HEADER_LEN: usize = 24;
/// At most this many segments (`ESP_IMAGE_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 16;
/// The XOR checksum starts from this value.
pub const CHECKSUM_SEED: u8 = 0xEF;
/// The first byte of a Secure Boot v2 signature block.
pub const SIG_BLOCK_MAGIC: u8 = 0xE7;
/// A Secure Boot v2 signature sector and its alignment.
pub const SIG_SECTOR_LEN: usize = 4096;
/// One signature block in the sector.
pub const SIG_BLOCK_LEN: usize = 1216;
/// A device reads this much before it writes anything, and refuses less.
pub const MIN_IMAGE_LEN: u64 = 1024;

/// SPI flash mode, header byte 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlashMode {
    Qio,
    Qout,
    Dio,
    Dout,
    /// Any other value, as found.
    #[serde(untagged)]
    Other(u8),
}

impl FlashMode {
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0 => FlashMode::Qio,
            1 => FlashMode::Qout,
            2 => FlashMode::Dio,
            3 => FlashMode::Dout,
            other => FlashMode::Other(other),
        }
    }
}

/// The image header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageHeader {
    /// esptool's chip name (`esp32p4`), or `unknown`.
    #[schema(example = "esp32p4")]
    pub chip: String,
    /// `esp_chip_id_t`: 18 for the ESP32-P4.
    pub chip_id: u16,
    pub segment_count: u8,
    pub flash_mode: FlashMode,
    /// `1MB` … `128MB`, from the high nibble of byte 3.
    #[schema(example = "16MB")]
    pub flash_size: String,
    /// The low nibble of byte 3; its meaning in MHz depends on the chip.
    pub flash_freq_code: u8,
    pub entry_addr: u32,
    /// `v1.0`: the lowest chip revision the image runs on.
    #[schema(value_type = String, example = "v1.0")]
    pub min_chip_revision: ChipRevision,
    /// `v1.99`, or null when the image sets no upper bound.
    #[schema(value_type = Option<String>, example = "v1.99")]
    pub max_chip_revision: Option<ChipRevision>,
    /// The legacy one-byte minimum revision (byte 14).
    pub min_chip_revision_legacy: u8,
    /// Whether a SHA-256 of the image follows the checksum.
    pub hash_appended: bool,
}

impl ImageHeader {
    pub fn chip(&self) -> Chip {
        Chip::from_id(self.chip_id)
    }
}

/// One segment: where it loads and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    pub load_addr: u32,
    pub len: u32,
    /// Where its data starts in the file.
    pub file_offset: u64,
}

/// `esp_app_desc_t`, the application's description at offset 0x20.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppDescriptor {
    /// The anti-rollback counter (`CONFIG_BOOTLOADER_APP_SECURE_VERSION`).
    pub secure_version: u32,
    /// As built: often `git describe`, e.g. `v1.2.3-4-gabc1234`.
    #[schema(example = "v1.2.0")]
    pub version: String,
    #[schema(example = "scales_bridge")]
    pub project_name: String,
    pub compile_time: String,
    pub compile_date: String,
    #[schema(example = "v5.5.1")]
    pub idf_version: String,
    /// SHA-256 of the ELF file, hex.
    pub elf_sha256: String,
    pub min_efuse_blk_rev: u16,
    pub max_efuse_blk_rev: u16,
    /// The MMU page size in bytes, when the descriptor records it (IDF ≥ 5.4).
    pub mmu_page_size: Option<u32>,
}

/// How an image is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    /// Secure Boot v2, RSA-3072-PSS (block version 2).
    SecureBootV2Rsa,
    /// Secure Boot v2, ECDSA (block version 3).
    SecureBootV2Ecdsa,
}

/// The Secure Boot v2 signature sector after the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Signature {
    pub scheme: SignatureScheme,
    /// Signature blocks in the sector (1 to 3), each with a valid CRC.
    pub blocks: u8,
    /// Where the sector starts in the file.
    pub offset: u64,
}

/// Everything the server knows about an app image after reading it whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EspImage {
    pub header: ImageHeader,
    pub segments: Vec<Segment>,
    /// The XOR checksum byte (verified).
    pub checksum: u8,
    /// The appended SHA-256 (verified), hex: what a device reports as its
    /// running image's hash, and the base of a delta patch.
    pub validation_hash: Option<String>,
    /// Bytes of the image up to and including the checksum and hash.
    pub image_len: u64,
    /// Bytes in the file, signature included.
    pub file_len: u64,
    pub app: AppDescriptor,
    pub signature: Option<Signature>,
}

/// CRC-32 as zlib computes it (reflected, polynomial 0xEDB88320): the check
/// of a signature block.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

impl EspImage {
    /// Parses a whole image held in memory (tests, tools).
    pub fn parse(bytes: &[u8]) -> Result<EspImage, ImageError> {
        let mut parser = ImageParser::new();
        parser.feed(bytes);
        parser.finish()
    }
}
