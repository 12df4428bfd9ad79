//! Where sections go: esptool's memory maps, and its layout of segments in
//! the image.

use super::*;

/// The parts of esptool's chip description (`esptool/targets/*.py`) that
/// decide where sections go.
pub(super) struct MemoryMap {
    pub(super) irom: u32,
    pub(super) irom_end: u32,
    pub(super) drom: u32,
    pub(super) drom_end: u32,
    pub(super) iram: u32,
    pub(super) dram: u32,
    pub(super) machine: u16,
    /// log2 of the smallest of esptool's `MMU_PAGE_SIZE_CONF`; `None` where
    /// the page is fixed at 64 KiB.
    pub(super) smallest_page_log2: Option<u8>,
}

pub(super) const EM_XTENSA: u16 = 94;
pub(super) const EM_RISCV: u16 = 243;

pub(super) fn memory_map(chip: Chip) -> MemoryMap {
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
    pub(super) fn is_flash(&self, addr: u32) -> bool {
        (self.irom..self.irom_end).contains(&addr) || (self.drom..self.drom_end).contains(&addr)
    }
}

pub(super) struct Section {
    pub(super) name: String,
    pub(super) addr: u32,
    pub(super) data: Vec<u8>,
    pub(super) flags: u32,
}

impl Section {
    pub(super) fn new(name: &str, addr: u32, data: Vec<u8>, flags: u32) -> Self {
        Section {
            name: name.to_owned(),
            addr,
            data,
            flags,
        }
    }
}

/// An image segment before layout.
pub(super) struct Segment {
    pub(super) addr: u32,
    pub(super) data: Vec<u8>,
}

/// Sections that follow each other in memory become one segment, as in
/// esptool's `merge_adjacent_segments`.
pub(super) fn merge_adjacent(chip: Chip, sections: Vec<Section>) -> Vec<Segment> {
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
pub(super) struct Piece {
    pub(super) load_addr: u32,
    pub(super) segment: usize,
    pub(super) range: std::ops::Range<usize>,
    pub(super) zero_tail: usize,
}

impl Piece {
    pub(super) fn len(&self) -> usize {
        self.range.len() + self.zero_tail
    }
}

/// esptool's `ESP32FirmwareImage.save`: flash segments (the app descriptor's
/// first) at file offsets congruent to their addresses modulo the MMU page,
/// the gaps filled with slices of RAM segments or zero padding, then the
/// rest of the RAM segments.
pub(super) fn layout(chip: Chip, page: u32, segments: &[Segment]) -> Vec<Piece> {
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
pub(super) fn alignment_padding(pos: usize, addr: usize, page: usize) -> usize {
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
