//! Writes ESP app images and ELF files: test fixtures, fuzz seeds, and
//! realistic firmware for the simulator.
//!
//! [`AppImageSpec::image`] lays the image out the way `esptool elf2image`
//! does (flash segments on MMU page boundaries, RAM segments split to fill
//! the gaps), so an image written here and `esptool elf2image` run on
//! [`AppImageSpec::elf`] come out byte for byte the same. Everything is
//! deterministic: the filler bytes come from the spec's `seed`.

mod elf;
mod placement;
mod signature;
#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

use elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, write_elf};
use placement::{Section, layout, memory_map, merge_adjacent};
use signature::append_signature_sector;

use super::{
    APP_DESC_LEN, APP_DESC_MAGIC, CHECKSUM_SEED, Chip, HEADER_LEN, IMAGE_MAGIC, SIG_BLOCK_LEN, SIG_BLOCK_MAGIC,
    SIG_SECTOR_LEN, SignatureScheme, crc32,
};

const SEGMENT_HEADER_LEN: usize = 8;
const SHA256_LEN: usize = 32;
const DEFAULT_PAGE: u32 = 0x1_0000;
/// Where the ELF's SHA-256 sits inside `esp_app_desc_t`.
const DESC_ELF_SHA256: usize = 0x90;
/// A signature block's CRC32 covers the bytes before this offset.
const SIG_CRC_OFFSET: usize = 1196;

/// `esp_app_desc_t` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDescSpec {
    pub secure_version: u32,
    pub version: String,
    pub project_name: String,
    pub compile_time: String,
    pub compile_date: String,
    pub idf_version: String,
    /// `None`: the SHA-256 of [`AppImageSpec::elf`], as `esptool elf2image`
    /// writes it (the ELF itself holds zeros there).
    pub elf_sha256: Option<[u8; 32]>,
    pub min_efuse_blk_rev: u16,
    pub max_efuse_blk_rev: u16,
    /// log2 of the MMU page size; 0 for "not recorded" (IDF < 5.4).
    pub mmu_page_size_log2: u8,
}

/// A segment added to the usual ones, loaded at `load_addr`. A flash address
/// must not share an MMU page with another flash segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraSegment {
    pub load_addr: u32,
    /// Padded with zeros to a multiple of 4.
    pub data: Vec<u8>,
}

/// What to put in an app image. `new(chip)` gives a small valid image;
/// the builder methods change one thing each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppImageSpec {
    pub chip: Chip,
    /// `major * 100 + minor`.
    pub min_rev_full: u16,
    /// `major * 100 + minor`; 0xFFFF (esptool's default) for no bound.
    pub max_rev_full: u16,
    /// Header byte 14.
    pub min_rev_legacy: u8,
    /// 0 QIO, 1 QOUT, 2 DIO, 3 DOUT.
    pub flash_mode: u8,
    /// High nibble of header byte 3: 0 = 1MB … 4 = 16MB … 7 = 128MB.
    pub flash_size_code: u8,
    /// Low nibble of header byte 3 (chip-specific, as esptool's `FLASH_FREQUENCY`).
    pub flash_freq_code: u8,
    /// `None`: the start of `.iram0.text`.
    pub entry: Option<u32>,
    pub app: AppDescSpec,
    /// `.flash.rodata` bytes after the descriptor (a multiple of 4).
    pub rodata_len: u32,
    /// `.flash.text` bytes (a multiple of 4), in the first MMU page after
    /// the read-only data. Zero leaves the section out.
    pub text_len: u32,
    pub iram_len: u32,
    pub dram_len: u32,
    pub extra_segments: Vec<ExtraSegment>,
    /// The length the image should come out, up to its hash and without a
    /// signature sector: give or take 16 bytes (up to 36 more on the ESP32,
    /// where esptool pads a flash segment that ends just past a page
    /// boundary), and at least about 900. Grows `.flash.text`, or
    /// `.flash.rodata` when there is no text. For a target shorter than the
    /// image would be, `.flash.text` is left out (code starts on the second
    /// MMU page: about 70 KB), then `.flash.rodata` too, and the RAM sections
    /// are cut to 256 bytes.
    pub target_len: Option<usize>,
    pub hash_appended: bool,
    /// Appends a Secure Boot v2 signature sector with filler key and signature.
    pub signature: Option<SignatureScheme>,
    /// Seeds the filler bytes of every section.
    pub seed: u64,
}

impl AppImageSpec {
    pub fn new(chip: Chip) -> Self {
        AppImageSpec {
            chip,
            min_rev_full: 0,
            max_rev_full: 0xFFFF,
            min_rev_legacy: 0,
            flash_mode: 2,
            flash_size_code: 4,
            flash_freq_code: 0,
            entry: None,
            app: AppDescSpec {
                secure_version: 0,
                version: "1.0.0".to_owned(),
                project_name: "app".to_owned(),
                compile_time: "12:00:00".to_owned(),
                compile_date: "Jan  1 2025".to_owned(),
                idf_version: "v5.5.1".to_owned(),
                elf_sha256: None,
                min_efuse_blk_rev: 0,
                max_efuse_blk_rev: 199,
                mmu_page_size_log2: 16,
            },
            rodata_len: 0x600,
            text_len: 0x1000,
            iram_len: 0x2000,
            dram_len: 0x800,
            extra_segments: Vec::new(),
            target_len: None,
            hash_appended: true,
            signature: None,
            seed: 0,
        }
    }

    #[must_use]
    pub fn chip_revisions(mut self, min_full: u16, max_full: u16) -> Self {
        (self.min_rev_full, self.max_rev_full) = (min_full, max_full);
        self
    }

    /// Mode byte, flash size code and frequency code of the header.
    #[must_use]
    pub fn flash(mut self, mode: u8, size_code: u8, freq_code: u8) -> Self {
        (self.flash_mode, self.flash_size_code, self.flash_freq_code) = (mode, size_code, freq_code);
        self
    }

    #[must_use]
    pub fn entry(mut self, addr: u32) -> Self {
        self.entry = Some(addr);
        self
    }

    #[must_use]
    pub fn version(mut self, version: &str) -> Self {
        self.app.version = version.to_owned();
        self
    }

    #[must_use]
    pub fn project_name(mut self, name: &str) -> Self {
        self.app.project_name = name.to_owned();
        self
    }

    #[must_use]
    pub fn secure_version(mut self, secure_version: u32) -> Self {
        self.app.secure_version = secure_version;
        self
    }

    #[must_use]
    pub fn idf_version(mut self, idf_version: &str) -> Self {
        self.app.idf_version = idf_version.to_owned();
        self
    }

    #[must_use]
    pub fn compiled(mut self, time: &str, date: &str) -> Self {
        (self.app.compile_time, self.app.compile_date) = (time.to_owned(), date.to_owned());
        self
    }

    #[must_use]
    pub fn elf_sha256(mut self, sha256: [u8; 32]) -> Self {
        self.app.elf_sha256 = Some(sha256);
        self
    }

    #[must_use]
    pub fn extra_segment(mut self, load_addr: u32, data: Vec<u8>) -> Self {
        self.extra_segments.push(ExtraSegment { load_addr, data });
        self
    }

    #[must_use]
    pub fn target_len(mut self, len: usize) -> Self {
        self.target_len = Some(len);
        self
    }

    #[must_use]
    pub fn hash_appended(mut self, appended: bool) -> Self {
        self.hash_appended = appended;
        self
    }

    #[must_use]
    pub fn signed(mut self, scheme: SignatureScheme) -> Self {
        self.signature = Some(scheme);
        self
    }

    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The flash MMU page size the image is laid out for.
    pub fn mmu_page_size(&self) -> u32 {
        let log2 = self.app.mmu_page_size_log2;
        let smallest = memory_map(self.chip).smallest_page_log2;
        if smallest.is_some_and(|smallest| (smallest..=16).contains(&log2)) {
            1 << log2
        } else {
            DEFAULT_PAGE
        }
    }

    /// The app image, followed by a signature sector when `signature` is set.
    pub fn image(&self) -> Vec<u8> {
        let mut sections = self.sections(&self.lens());
        let elf_sha256 = self.app.elf_sha256.unwrap_or_else(|| Sha256::digest(self.elf()).into());
        sections[0].data[DESC_ELF_SHA256..DESC_ELF_SHA256 + SHA256_LEN].copy_from_slice(&elf_sha256);
        let segments = merge_adjacent(self.chip, sections);
        let pieces = layout(self.chip, self.mmu_page_size(), &segments);

        let mut out = self.header(pieces.len());
        let mut checksum = CHECKSUM_SEED;
        for piece in &pieces {
            out.extend_from_slice(&piece.load_addr.to_le_bytes());
            out.extend_from_slice(&(piece.len() as u32).to_le_bytes());
            let data = &segments[piece.segment].data[piece.range.clone()];
            let zeros = std::iter::repeat_n(0u8, piece.zero_tail);
            for byte in data.iter().copied().chain(zeros) {
                checksum ^= byte;
                out.push(byte);
            }
        }
        out.resize(align_up(out.len() + 1, 16) - 1, 0);
        out.push(checksum);
        if self.hash_appended {
            let hash = Sha256::digest(&out);
            out.extend_from_slice(&hash);
        }
        if let Some(scheme) = self.signature {
            append_signature_sector(&mut out, scheme, self.seed);
        }
        out
    }

    /// An ELF32 executable that `esptool --chip <chip> elf2image` turns into
    /// [`AppImageSpec::image`] (unsigned), given the same header options.
    pub fn elf(&self) -> Vec<u8> {
        let sections = self.sections(&self.lens());
        write_elf(memory_map(self.chip).machine, self.entry_addr(), &sections)
    }

    fn entry_addr(&self) -> u32 {
        self.entry.unwrap_or(memory_map(self.chip).iram)
    }

    fn header(&self, segment_count: usize) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&[IMAGE_MAGIC, segment_count as u8, self.flash_mode]);
        header.push((self.flash_size_code << 4) | (self.flash_freq_code & 0x0F));
        header.extend_from_slice(&self.entry_addr().to_le_bytes());
        header.extend_from_slice(&[0xEE, 0, 0, 0]);
        header.extend_from_slice(&self.chip.id().to_le_bytes());
        header.push(self.min_rev_legacy);
        header.extend_from_slice(&self.min_rev_full.to_le_bytes());
        header.extend_from_slice(&self.max_rev_full.to_le_bytes());
        header.extend_from_slice(&[0, 0, 0, 0, u8::from(self.hash_appended)]);
        header
    }

    fn app_desc(&self) -> Vec<u8> {
        let app = &self.app;
        let mut desc = Vec::with_capacity(APP_DESC_LEN);
        desc.extend_from_slice(&APP_DESC_MAGIC.to_le_bytes());
        desc.extend_from_slice(&app.secure_version.to_le_bytes());
        desc.extend_from_slice(&[0; 8]);
        put_str(&mut desc, &app.version, 32);
        put_str(&mut desc, &app.project_name, 32);
        put_str(&mut desc, &app.compile_time, 16);
        put_str(&mut desc, &app.compile_date, 16);
        put_str(&mut desc, &app.idf_version, 32);
        desc.extend_from_slice(&[0; SHA256_LEN]);
        desc.extend_from_slice(&app.min_efuse_blk_rev.to_le_bytes());
        desc.extend_from_slice(&app.max_efuse_blk_rev.to_le_bytes());
        desc.push(app.mmu_page_size_log2);
        desc.resize(APP_DESC_LEN, 0);
        desc
    }

    /// The ELF's sections, in the order a linker script puts them; an empty
    /// one is left out, as esptool would skip it.
    fn sections(&self, lens: &Lens) -> Vec<Section> {
        let map = memory_map(self.chip);
        let page = self.mmu_page_size();
        let desc_addr = map.drom + 0x20;
        let rodata_end_offset = 0x20 + APP_DESC_LEN as u32 + lens.rodata;
        // Code goes in the first page after the read-only data, so that
        // where IROM and DROM share an address range they do not overlap.
        let text_addr = map.irom + rodata_end_offset.div_ceil(page) * page + 0x20;
        let mut filler = Filler::new(self.seed);
        let (rodata, text) = (filler.bytes(lens.rodata), filler.bytes(lens.text));
        let (iram, dram) = (filler.bytes(lens.iram), filler.bytes(lens.dram));
        let mut sections = vec![
            Section::new(".flash.appdesc", desc_addr, self.app_desc(), SHF_ALLOC),
            Section::new(".flash.rodata", desc_addr + APP_DESC_LEN as u32, rodata, SHF_ALLOC),
            Section::new(".flash.text", text_addr, text, SHF_ALLOC | SHF_EXECINSTR),
            Section::new(".iram0.text", map.iram, iram, SHF_ALLOC | SHF_EXECINSTR),
            Section::new(".dram0.data", map.dram, dram, SHF_ALLOC | SHF_WRITE),
        ];
        for (n, extra) in self.extra_segments.iter().enumerate() {
            let mut data = extra.data.clone();
            data.resize(align_up(data.len(), 4), 0);
            let name = format!(".extra{n}");
            sections.push(Section::new(&name, extra.load_addr, data, SHF_ALLOC | SHF_WRITE));
        }
        sections.retain(|section| !section.data.is_empty());
        sections
    }

    /// The section lengths, fitted to `target_len`.
    fn lens(&self) -> Lens {
        let mut lens = Lens {
            rodata: round4(self.rodata_len),
            text: round4(self.text_len),
            iram: round4(self.iram_len),
            dram: round4(self.dram_len),
        };
        let Some(target) = self.target_len else {
            return lens;
        };
        if target < self.image_len(&lens) {
            lens.text = 0;
        }
        if target < self.image_len(&lens) {
            (lens.rodata, lens.iram, lens.dram) = (0, lens.iram.min(0x100), lens.dram.min(0x100));
        }
        let grow = target.saturating_sub(self.image_len(&lens)) / 16 * 16;
        let grow = u32::try_from(grow).unwrap_or(u32::MAX);
        if lens.text > 0 {
            lens.text = lens.text.saturating_add(grow);
        } else {
            lens.rodata = lens.rodata.saturating_add(grow);
        }
        lens
    }

    /// Up to the hash, without a signature sector.
    fn image_len(&self, lens: &Lens) -> usize {
        let segments = merge_adjacent(self.chip, self.sections(lens));
        let pieces = layout(self.chip, self.mmu_page_size(), &segments);
        let body: usize = pieces.iter().map(|p| SEGMENT_HEADER_LEN + p.len()).sum();
        align_up(HEADER_LEN + body + 1, 16) + if self.hash_appended { SHA256_LEN } else { 0 }
    }
}

/// Section lengths, multiples of 4.
struct Lens {
    rodata: u32,
    text: u32,
    iram: u32,
    dram: u32,
}

/// An app image with the usual defaults, about `approx_len` bytes long (at
/// least about 900 bytes).
pub fn app_image(chip: Chip, version: &str, project_name: &str, secure_version: u32, approx_len: usize) -> Vec<u8> {
    AppImageSpec::new(chip)
        .version(version)
        .project_name(project_name)
        .secure_version(secure_version)
        .target_len(approx_len)
        .image()
}

/// Deterministic filler bytes (SplitMix64).
struct Filler(u64);

impl Filler {
    fn new(seed: u64) -> Self {
        Filler(seed ^ 0xE5B3_2024_0000_0001)
    }

    fn bytes(&mut self, len: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(len as usize + 8);
        while out.len() < len as usize {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len as usize);
        out
    }
}

/// A NUL-padded string field, truncated to keep a terminating NUL.
fn put_str(out: &mut Vec<u8>, text: &str, field_len: usize) {
    let bytes = &text.as_bytes()[..text.len().min(field_len - 1)];
    out.extend_from_slice(bytes);
    out.extend(std::iter::repeat_n(0, field_len - bytes.len()));
}

fn put_u16s(out: &mut Vec<u8>, values: &[u16]) {
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
}

fn put_u32s(out: &mut Vec<u8>, values: &[u32]) {
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
}

fn align_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn round4(n: u32) -> u32 {
    n.div_ceil(4) * 4
}
