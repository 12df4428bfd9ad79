//! Writes ESP app images and ELF files: test fixtures, fuzz seeds, and
//! realistic firmware for the simulator.
//!
//! [`AppImageSpec::image`] lays the image out the way `esptool elf2image`
//! does (flash segments on MMU page boundaries, RAM segments split to fill
//! the gaps), so an image written here and `esptool elf2image` run on
//! [`AppImageSpec::elf`] come out byte for byte the same. Everything is
//! deterministic: the filler bytes come from the spec's `seed`.

use sha2::{Digest, Sha256};

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

/// The parts of esptool's chip description (`esptool/targets/*.py`) that
/// decide where sections go.
struct MemoryMap {
    irom: u32,
    irom_end: u32,
    drom: u32,
    drom_end: u32,
    iram: u32,
    dram: u32,
    machine: u16,
    /// log2 of the smallest of esptool's `MMU_PAGE_SIZE_CONF`; `None` where
    /// the page is fixed at 64 KiB.
    smallest_page_log2: Option<u8>,
}

const EM_XTENSA: u16 = 94;
const EM_RISCV: u16 = 243;

fn memory_map(chip: Chip) -> MemoryMap {
    #[rustfmt::skip]
    let (irom, irom_end, drom, drom_end, iram, dram, machine, smallest_page_log2) = match chip {
        Chip::Esp32 => (0x400D0000, 0x40400000, 0x3F400000, 0x3F800000, 0x40080000, 0x3FFB0000, EM_XTENSA, None),
        Chip::Esp32s2 => (0x40080000, 0x40B80000, 0x3F000000, 0x3F3F0000, 0x40020000, 0x3FFB0000, EM_XTENSA, None),
        Chip::Esp32s3 => (0x42000000, 0x44000000, 0x3C000000, 0x3E000000, 0x40370000, 0x3FC88000, EM_XTENSA, None),
        Chip::Esp32c3 => (0x42000000, 0x42800000, 0x3C000000, 0x3C800000, 0x4037C000, 0x3FC80000, EM_RISCV, None),
        Chip::Esp32c2 => (0x42000000, 0x42400000, 0x3C000000, 0x3C400000, 0x4037C000, 0x3FCA0000, EM_RISCV, Some(14)),
        Chip::Esp32c6 | Chip::Esp32h2 | Chip::Esp32c61 =>
            (0x42000000, 0x42800000, 0x42800000, 0x43000000, 0x40800000, 0x40810000, EM_RISCV, Some(13)),
        Chip::Esp32p4 => (0x40000000, 0x4C000000, 0x40000000, 0x4C000000, 0x4FF00000, 0x4FF10000, EM_RISCV, None),
        Chip::Esp32c5 => (0x42000000, 0x44000000, 0x42000000, 0x44000000, 0x40800000, 0x40810000, EM_RISCV, None),
        Chip::Esp32h21 => (0x42000000, 0x43000000, 0x42000000, 0x43000000, 0x40800000, 0x40810000, EM_RISCV, Some(13)),
        Chip::Esp32h4 | Chip::Unknown(_) =>
            (0x42000000, 0x44000000, 0x42000000, 0x44000000, 0x40810000, 0x40820000, EM_RISCV, Some(13)),
    };
    MemoryMap {
        irom,
        irom_end,
        drom,
        drom_end,
        iram,
        dram,
        machine,
        smallest_page_log2,
    }
}

impl MemoryMap {
    fn is_flash(&self, addr: u32) -> bool {
        (self.irom..self.irom_end).contains(&addr) || (self.drom..self.drom_end).contains(&addr)
    }
}

const SHF_WRITE: u32 = 1;
const SHF_ALLOC: u32 = 2;
const SHF_EXECINSTR: u32 = 4;

struct Section {
    name: String,
    addr: u32,
    data: Vec<u8>,
    flags: u32,
}

impl Section {
    fn new(name: &str, addr: u32, data: Vec<u8>, flags: u32) -> Self {
        Section {
            name: name.to_owned(),
            addr,
            data,
            flags,
        }
    }
}

/// An image segment before layout.
struct Segment {
    addr: u32,
    data: Vec<u8>,
}

/// Sections that follow each other in memory become one segment, as in
/// esptool's `merge_adjacent_segments`.
fn merge_adjacent(chip: Chip, sections: Vec<Section>) -> Vec<Segment> {
    let map = memory_map(chip);
    let mut segments: Vec<Segment> = Vec::with_capacity(sections.len());
    for section in sections {
        if let Some(last) = segments.last_mut()
            && last.addr as usize + last.data.len() == section.addr as usize
            && map.is_flash(last.addr) == map.is_flash(section.addr)
        {
            last.data.extend_from_slice(&section.data);
            continue;
        }
        segments.push(Segment {
            addr: section.addr,
            data: section.data,
        });
    }
    segments
}

/// One segment as written: part of a source segment (or none, for a zero
/// padding segment at address 0), then `zero_tail` zeros.
struct Piece {
    load_addr: u32,
    segment: usize,
    range: std::ops::Range<usize>,
    zero_tail: usize,
}

impl Piece {
    fn len(&self) -> usize {
        self.range.len() + self.zero_tail
    }
}

/// esptool's `ESP32FirmwareImage.save`: flash segments (the app descriptor's
/// first) at file offsets congruent to their addresses modulo the MMU page,
/// the gaps filled with slices of RAM segments or zero padding, then the
/// rest of the RAM segments.
fn layout(chip: Chip, page: u32, segments: &[Segment]) -> Vec<Piece> {
    let map = memory_map(chip);
    let page = page as usize;
    let by_addr = |flash: bool| {
        let mut picked: Vec<usize> = (0..segments.len())
            .filter(|&i| map.is_flash(segments[i].addr) == flash)
            .collect();
        picked.sort_by_key(|&i| segments[i].addr);
        picked
    };
    let mut flash = by_addr(true);
    if let Some(at) = flash.iter().position(|&i| i == 0) {
        flash.remove(at);
        flash.insert(0, 0);
    }
    // (segment, consumed so far)
    let mut ram: std::collections::VecDeque<(usize, usize)> = by_addr(false).into_iter().map(|i| (i, 0)).collect();
    let mut pieces = Vec::new();
    let mut pos = HEADER_LEN;
    let zero_pad = |len: usize| Piece {
        load_addr: 0,
        segment: 0,
        range: 0..0,
        zero_tail: len,
    };

    for &index in &flash {
        let segment = &segments[index];
        loop {
            let pad = alignment_padding(pos, segment.addr as usize, page);
            if pad == 0 {
                break;
            }
            let piece = match ram.front_mut() {
                Some((ram_index, used)) if pad > SEGMENT_HEADER_LEN => {
                    let ram_segment = &segments[*ram_index];
                    let take = pad.min(ram_segment.data.len() - *used);
                    let piece = Piece {
                        load_addr: ram_segment.addr + *used as u32,
                        segment: *ram_index,
                        range: *used..*used + take,
                        zero_tail: 0,
                    };
                    *used += take;
                    if *used == ram_segment.data.len() {
                        ram.pop_front();
                    }
                    piece
                }
                _ => zero_pad(pad),
            };
            pos += SEGMENT_HEADER_LEN + piece.len();
            pieces.push(piece);
        }
        let mut piece = Piece {
            load_addr: segment.addr,
            segment: index,
            range: 0..segment.data.len(),
            zero_tail: 0,
        };
        if chip == Chip::Esp32 {
            // esptool works around an old ESP32 bootloader bug that did not
            // map a page when a flash segment ended less than 0x24 bytes into it.
            let past_page = (pos + SEGMENT_HEADER_LEN + segment.data.len()) % page;
            if past_page < 0x24 {
                piece.zero_tail = 0x24 - past_page;
            }
        }
        pos += SEGMENT_HEADER_LEN + piece.len();
        pieces.push(piece);
    }
    for (index, used) in ram {
        let segment = &segments[index];
        pieces.push(Piece {
            load_addr: segment.addr + used as u32,
            segment: index,
            range: used..segment.data.len(),
            zero_tail: 0,
        });
    }
    pieces
}

/// esptool's `get_alignment_data_needed`: the data length of a padding
/// segment that puts the next segment's data at `addr` modulo the page.
fn alignment_padding(pos: usize, addr: usize, page: usize) -> usize {
    let (pos, addr, page, header) = (pos as i64, addr as i64, page as i64, SEGMENT_HEADER_LEN as i64);
    let align_past = addr % page - header;
    let mut pad = (page - pos % page) + align_past;
    if pad == 0 || pad == page {
        return 0;
    }
    pad -= header;
    if pad < 0 {
        pad += page;
    }
    pad as usize
}

fn append_signature_sector(out: &mut Vec<u8>, scheme: SignatureScheme, seed: u64) {
    out.resize(align_up(out.len(), SIG_SECTOR_LEN), 0xFF);
    let digest = Sha256::digest(&*out);
    let mut filler = Filler::new(seed ^ 0x5167_5167);
    let mut block = vec![SIG_BLOCK_MAGIC];
    match scheme {
        SignatureScheme::SecureBootV2Rsa => {
            block.extend_from_slice(&[2, 0, 0]);
            block.extend_from_slice(&digest);
            block.extend_from_slice(&filler.bytes(384)); // modulus
            block.extend_from_slice(&65537u32.to_le_bytes());
            block.extend_from_slice(&filler.bytes(384 + 4 + 384)); // rinv, m', signature
        }
        SignatureScheme::SecureBootV2Ecdsa => {
            // SHA-256 digest, curve P-256
            block.extend_from_slice(&[3, 0, 0]);
            block.extend_from_slice(&digest);
            block.push(2);
            block.extend_from_slice(&filler.bytes(64 + 64)); // public key, signature
        }
    }
    block.resize(SIG_CRC_OFFSET, 0);
    let crc = crc32(&block);
    block.extend_from_slice(&crc.to_le_bytes());
    block.resize(SIG_BLOCK_LEN, 0);
    block.resize(SIG_SECTOR_LEN, 0xFF);
    out.extend_from_slice(&block);
}

fn write_elf(machine: u16, entry: u32, sections: &[Section]) -> Vec<u8> {
    const EHDR_LEN: usize = 52;
    const PHDR_LEN: usize = 32;
    const SHDR_LEN: usize = 40;
    let flags: u32 = if machine == EM_XTENSA { 0x300 } else { 0x1 };

    let mut shstrtab = vec![0u8];
    let mut name_offsets = Vec::with_capacity(sections.len());
    for section in sections {
        name_offsets.push(shstrtab.len() as u32);
        shstrtab.extend_from_slice(section.name.as_bytes());
        shstrtab.push(0);
    }
    let shstrtab_name = shstrtab.len() as u32;
    shstrtab.extend_from_slice(b".shstrtab\0");

    let phoff = EHDR_LEN;
    let mut out = vec![0u8; phoff + PHDR_LEN * sections.len()];
    let mut offsets = Vec::with_capacity(sections.len());
    for section in sections {
        out.resize(align_up(out.len(), 16), 0);
        offsets.push(out.len() as u32);
        out.extend_from_slice(&section.data);
    }
    let shstrtab_offset = out.len() as u32;
    out.extend_from_slice(&shstrtab);
    out.resize(align_up(out.len(), 4), 0);
    let shoff = out.len();
    let shnum = sections.len() + 2;

    let mut header = Vec::with_capacity(EHDR_LEN);
    header.extend_from_slice(&[0x7F, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    put_u16s(&mut header, &[2, machine]);
    put_u32s(&mut header, &[1, entry, phoff as u32, shoff as u32, flags]);
    put_u16s(&mut header, &[EHDR_LEN as u16, PHDR_LEN as u16, sections.len() as u16]);
    put_u16s(&mut header, &[SHDR_LEN as u16, shnum as u16, (shnum - 1) as u16]);
    out[..EHDR_LEN].copy_from_slice(&header);

    for (n, (section, &offset)) in sections.iter().zip(&offsets).enumerate() {
        let len = section.data.len() as u32;
        let writable = if section.flags & SHF_WRITE != 0 { 2 } else { 0 };
        let executable = if section.flags & SHF_EXECINSTR != 0 { 1 } else { 0 };
        let mut phdr = Vec::with_capacity(PHDR_LEN);
        put_u32s(
            &mut phdr,
            &[
                1,
                offset,
                section.addr,
                section.addr,
                len,
                len,
                4 | writable | executable,
                4,
            ],
        );
        let at = phoff + n * PHDR_LEN;
        out[at..at + PHDR_LEN].copy_from_slice(&phdr);
    }

    out.extend_from_slice(&[0; SHDR_LEN]);
    for ((section, &offset), &name) in sections.iter().zip(&offsets).zip(&name_offsets) {
        let len = section.data.len() as u32;
        put_u32s(
            &mut out,
            &[name, 1, section.flags, section.addr, offset, len, 0, 0, 4, 0],
        );
    }
    put_u32s(
        &mut out,
        &[
            shstrtab_name,
            3,
            0,
            0,
            shstrtab_offset,
            shstrtab.len() as u32,
            0,
            0,
            1,
            0,
        ],
    );
    out
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

#[cfg(test)]
mod tests {
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
}
