//! Reading what `esptool image-info` prints.

/// What `esptool image-info` (esptool 5) prints about an app image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub image_size: u64,
    /// `Entry point: 0x…`; 0 for "Entry point not set".
    pub entry: u32,
    pub segment_count: usize,
    /// `16MB`; `None` when esptool warns that the code is invalid.
    pub flash_size: Option<String>,
    pub flash_freq: Option<String>,
    /// Upper case: `DIO`.
    pub flash_mode: Option<String>,
    pub chip_id: u16,
    /// esptool's `CHIP_NAME` for the header's chip id: `ESP32-P4`.
    pub chip_name: String,
    /// `v1.0`.
    pub min_rev: String,
    pub min_rev_legacy: u8,
    pub max_rev: String,
    pub segments: Vec<InfoSegment>,
    pub checksum: u8,
    pub checksum_valid: bool,
    /// The hash esptool computes, and whether the stored one matches it.
    pub validation_hash: Option<(String, bool)>,
    pub app: Option<InfoApp>,
    pub report: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoSegment {
    pub len: u32,
    pub load_addr: u32,
    /// Where the segment's 8-byte header starts.
    pub header_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoApp {
    pub project_name: String,
    pub version: String,
    pub compile_date: String,
    pub compile_time: String,
    pub elf_sha256: String,
    pub idf_version: String,
    /// `major.minor`: `1.99`.
    pub min_efuse_blk_rev: String,
    pub max_efuse_blk_rev: String,
    /// `64 KB`, printed only when the descriptor records it.
    pub mmu_page_size: Option<String>,
    pub secure_version: u32,
}

impl ImageInfo {
    /// Whether esptool found both the checksum and the appended hash good.
    pub fn is_valid(&self) -> bool {
        self.checksum_valid && self.validation_hash.as_ref().is_none_or(|(_, valid)| *valid)
    }

    /// Reads the report line by line; a line it needs and does not find
    /// panics with the whole report, so a change of format is noticed.
    pub fn read(report: &str) -> ImageInfo {
        let field = |key: &str| -> Option<&str> {
            report
                .lines()
                .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix(": ")))
        };
        let need = |key: &str| field(key).unwrap_or_else(|| panic!("no '{key}:' in esptool's report:\n{report}"));
        let number = |text: &str| -> u64 {
            let text = text.trim();
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            }
            .unwrap_or_else(|_| panic!("'{text}' is not a number in esptool's report:\n{report}"))
        };

        let (chip_id, chip_name) = need("Chip ID").split_once(' ').expect("Chip ID: <id> (<name>)");
        let (min_rev, legacy) = need("Minimal chip revision")
            .split_once(", ")
            .expect("min rev, (legacy …)");
        let legacy = legacy.trim_start_matches("(legacy min_rev = ").trim_end_matches(')');
        let (checksum, checksum_state) = need("Checksum").split_once(' ').expect("Checksum: 0x.. (state)");
        let validation_hash = field("Validation hash").map(|value| {
            let (hash, state) = value.split_once(' ').expect("Validation hash: <hex> (state)");
            (hash.to_owned(), state == "(valid)")
        });
        let app = report.contains("\nApplication Information\n").then(|| {
            let compiled = need("Compile time");
            let (date, time) = compiled.rsplit_once(' ').expect("Compile time: <date> <time>");
            InfoApp {
                project_name: need("Project name").to_owned(),
                version: need("App version").to_owned(),
                compile_date: date.to_owned(),
                compile_time: time.to_owned(),
                elf_sha256: need("ELF file SHA256").to_owned(),
                idf_version: need("ESP-IDF").to_owned(),
                min_efuse_blk_rev: need("Minimal eFuse block revision").to_owned(),
                max_efuse_blk_rev: need("Maximal eFuse block revision").to_owned(),
                mmu_page_size: field("MMU page size").map(str::to_owned),
                secure_version: number(need("Secure version")) as u32,
            }
        });

        ImageInfo {
            image_size: number(need("Image size").trim_end_matches(" bytes")),
            entry: field("Entry point").map_or(0, |e| number(e) as u32),
            segment_count: number(need("Segments")) as usize,
            flash_size: field("Flash size").map(str::to_owned),
            flash_freq: field("Flash freq").map(str::to_owned),
            flash_mode: field("Flash mode").map(str::to_owned),
            chip_id: number(chip_id) as u16,
            chip_name: chip_name.trim_matches(['(', ')']).to_owned(),
            min_rev: min_rev.to_owned(),
            min_rev_legacy: number(legacy) as u8,
            max_rev: need("Maximal chip revision").to_owned(),
            segments: segment_table(report),
            checksum: number(checksum) as u8,
            checksum_valid: checksum_state == "(valid)",
            validation_hash,
            app,
            report: report.to_owned(),
        }
    }
}

/// The rows under "Segments Information": index, length, load address,
/// file offset, memory types.
fn segment_table(report: &str) -> Vec<InfoSegment> {
    let rows = report
        .lines()
        .skip_while(|line| !line.starts_with("-------"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty());
    rows.map(|row| {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let hex = |cell: &str| {
            u64::from_str_radix(cell.trim_start_matches("0x"), 16)
                .unwrap_or_else(|_| panic!("bad segment row '{row}' in esptool's report:\n{report}"))
        };
        assert!(
            cells.len() >= 4,
            "bad segment row '{row}' in esptool's report:\n{report}"
        );
        InfoSegment {
            len: hex(cells[1]) as u32,
            load_addr: hex(cells[2]) as u32,
            header_offset: hex(cells[3]),
        }
    })
    .collect()
}
