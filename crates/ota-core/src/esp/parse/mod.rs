//! The incremental image parser: a state machine fed bytes in any chunks.
//!
//! Each stage waits for a fixed number of bytes (header, segment header,
//! checksum, hash) or skips a known number (segment data, padding), so where a
//! chunk ends never changes the answer. The SHA-256 of the file runs along:
//! cloned at the checksum it is the validation hash, continued to the
//! signature sector it is the digest the signature covers. State is a few
//! hundred bytes, plus the 4 KiB signature sector when there is one.

mod fields;
#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

use fields::{read_app_descriptor, read_header, u32_at};

use super::{
    APP_DESC_LEN, APP_DESC_MAGIC, APP_DESC_OFFSET, AppDescriptor, CHECKSUM_SEED, ChipRevision, EspImage, FlashMode,
    HEADER_LEN, IMAGE_MAGIC, ImageHeader, MAX_SEGMENTS, SIG_BLOCK_LEN, SIG_BLOCK_MAGIC, SIG_SECTOR_LEN, Segment,
    Signature, SignatureScheme, crc32,
};

/// A segment this long or longer is corrupt (the bootloader's own limit).
const MAX_SEGMENT_LEN: u32 = 16 * 1024 * 1024;
/// Where the CRC32 sits in a signature block; it covers the bytes before it.
const SIG_CRC_OFFSET: usize = 1196;
/// At most three signature blocks fit in the sector.
const MAX_SIG_BLOCKS: usize = 3;

/// Why a file is not a valid app image. Every message says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not an ESP app image: the first byte is 0x{found:02X}, not 0xE9{hint}")]
    BadMagic { found: u8, hint: &'static str },
    #[error("the header declares {count} segments; an app image has 1 to {MAX_SEGMENTS}")]
    SegmentCount { count: u8 },
    #[error("the header's hash_appended byte is {found}; it must be 0 or 1")]
    HashAppendedFlag { found: u8 },
    #[error("segment {index} at offset {offset} declares {len} bytes, {reason}")]
    SegmentLength {
        index: usize,
        offset: u64,
        len: u32,
        reason: &'static str,
    },
    #[error("the file ends after {len} bytes, inside {inside}: it is cut off")]
    Truncated { len: u64, inside: String },
    #[error(
        "checksum mismatch at offset {offset}: the image says 0x{stored:02X}, its segments give 0x{computed:02X} (corrupted data)"
    )]
    Checksum { offset: u64, stored: u8, computed: u8 },
    #[error(
        "SHA-256 mismatch at offset {offset}: the appended hash is {stored}, the image's is {computed} (corrupted data)"
    )]
    Hash {
        offset: u64,
        stored: String,
        computed: String,
    },
    #[error("no esp_app_desc_t at offset 0x20 (found 0x{found:08X}, expected 0xABCD5432){hint}")]
    NoAppDescriptor { found: u32, hint: &'static str },
    #[error("the image is too short to hold esp_app_desc_t at offset 0x20 ({len} bytes)")]
    AppDescriptorCut { len: u64 },
    #[error("the Secure Boot signature sector at offset {offset}: {reason}")]
    Signature { offset: u64, reason: String },
    #[error(
        "{len} bytes follow the image from offset {offset} that are neither 0xFF padding nor a Secure Boot v2 signature sector (first non-0xFF byte at {first_odd})"
    )]
    TrailingData { offset: u64, len: u64, first_odd: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    SegmentHeader {
        index: usize,
    },
    SegmentData {
        index: usize,
        remaining: u32,
    },
    Padding {
        remaining: u8,
    },
    Checksum,
    Hash,
    /// After the image: padding, perhaps a signature sector.
    Trailer,
}

/// Reads an app image fed in chunks: [`feed`](Self::feed) every byte in
/// order, then [`finish`](Self::finish).
#[derive(Debug, Clone)]
pub struct ImageParser {
    stage: Stage,
    /// Bytes fed so far.
    pos: u64,
    /// The bytes of the stage's fixed-size item (header, segment header, hash).
    pending: [u8; 32],
    pending_len: usize,
    header: Option<ImageHeader>,
    segments: Vec<Segment>,
    checksum: u8,
    stored_checksum: u8,
    /// SHA-256 of every byte fed: the file's hash, which a caller can have
    /// with [`ImageParser::finish_with_sha256`] instead of hashing again.
    sha: Sha256,
    /// The signature sector's offset, once known.
    sha_limit: u64,
    /// SHA-256 of everything before the signature sector: what it signs.
    signed_digest: Option<[u8; 32]>,
    /// SHA-256 of the image up to its checksum, when a hash is appended.
    expected_hash: Option<[u8; 32]>,
    validation_hash: Option<[u8; 32]>,
    image_len: u64,
    desc: Vec<u8>,
    app: Option<AppDescriptor>,
    /// Where the first byte of the trailer that is not 0xFF is, outside the
    /// signature sector: [before the sector, after it].
    odd_before_sector: Option<u64>,
    odd_after_sector: Option<u64>,
    sector: Vec<u8>,
    error: Option<ImageError>,
}

impl Default for ImageParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageParser {
    pub fn new() -> Self {
        ImageParser {
            stage: Stage::Header,
            pos: 0,
            pending: [0; 32],
            pending_len: 0,
            header: None,
            segments: Vec::new(),
            checksum: CHECKSUM_SEED,
            stored_checksum: 0,
            sha: Sha256::new(),
            sha_limit: u64::MAX,
            signed_digest: None,
            expected_hash: None,
            validation_hash: None,
            image_len: 0,
            desc: Vec::with_capacity(APP_DESC_LEN),
            app: None,
            odd_before_sector: None,
            odd_after_sector: None,
            sector: Vec::new(),
            error: None,
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// The first error found so far: a caller may stop feeding early.
    pub fn error(&self) -> Option<&ImageError> {
        self.error.as_ref()
    }

    /// Feeds the next bytes of the file.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.error.is_some() {
                self.sha.update(bytes);
                self.pos += bytes.len() as u64;
                return;
            }
            let take = self.wanted().min(bytes.len() as u64) as usize;
            let (step, rest) = bytes.split_at(take.max(1).min(bytes.len()));
            self.absorb(step);
            self.advance(step);
            bytes = rest;
        }
    }

    /// How many bytes the current stage can take at most.
    fn wanted(&self) -> u64 {
        match self.stage {
            Stage::Header => (HEADER_LEN - self.pending_len) as u64,
            Stage::SegmentHeader { .. } => (8 - self.pending_len) as u64,
            Stage::SegmentData { remaining, .. } => u64::from(remaining),
            Stage::Padding { remaining } => u64::from(remaining),
            Stage::Checksum => 1,
            Stage::Hash => (32 - self.pending_len) as u64,
            Stage::Trailer => u64::MAX,
        }
    }

    /// What every byte goes through: the running SHA-256 and the capture of
    /// the app descriptor.
    fn absorb(&mut self, step: &[u8]) {
        let start = self.pos;
        let end = start + step.len() as u64;
        if start < self.sha_limit && self.sha_limit <= end {
            let cut = (self.sha_limit - start) as usize;
            self.sha.update(&step[..cut]);
            self.signed_digest = Some(self.sha.clone().finalize().into());
            self.sha.update(&step[cut..]);
        } else {
            self.sha.update(step);
        }
        let (desc_start, desc_end) = (APP_DESC_OFFSET as u64, (APP_DESC_OFFSET + APP_DESC_LEN) as u64);
        if start < desc_end && end > desc_start {
            let from = desc_start.max(start);
            let to = desc_end.min(end);
            self.desc
                .extend_from_slice(&step[(from - start) as usize..(to - start) as usize]);
            if self.desc.len() == APP_DESC_LEN {
                match read_app_descriptor(&self.desc) {
                    Ok(app) => self.app = Some(app),
                    Err(e) => self.fail(e),
                }
            }
        }
        self.pos = end;
    }

    fn fail(&mut self, error: ImageError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    fn collect(&mut self, step: &[u8]) {
        self.pending[self.pending_len..self.pending_len + step.len()].copy_from_slice(step);
        self.pending_len += step.len();
    }

    /// Moves the state machine over `step`, already absorbed.
    fn advance(&mut self, step: &[u8]) {
        match self.stage {
            Stage::Header => {
                self.collect(step);
                if self.pending_len == HEADER_LEN {
                    self.pending_len = 0;
                    let bytes = self.pending;
                    match read_header(&bytes[..HEADER_LEN]) {
                        Ok(header) => {
                            self.header = Some(header);
                            self.stage = Stage::SegmentHeader { index: 0 };
                        }
                        Err(e) => self.fail(e),
                    }
                }
            }
            Stage::SegmentHeader { index } => {
                self.collect(step);
                if self.pending_len == 8 {
                    self.pending_len = 0;
                    let load_addr = u32_at(&self.pending, 0);
                    let len = u32_at(&self.pending, 4);
                    let offset = self.pos - 8;
                    let reason = if !len.is_multiple_of(4) {
                        Some("not a multiple of 4")
                    } else if len >= MAX_SEGMENT_LEN {
                        Some("16 MiB or more")
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        return self.fail(ImageError::SegmentLength {
                            index,
                            offset,
                            len,
                            reason,
                        });
                    }
                    self.segments.push(Segment {
                        load_addr,
                        len,
                        file_offset: self.pos,
                    });
                    self.stage = Stage::SegmentData { index, remaining: len };
                    if len == 0 {
                        self.end_segment(index);
                    }
                }
            }
            Stage::SegmentData { index, remaining } => {
                self.checksum = step.iter().fold(self.checksum, |sum, b| sum ^ b);
                let remaining = remaining - step.len() as u32;
                self.stage = Stage::SegmentData { index, remaining };
                if remaining == 0 {
                    self.end_segment(index);
                }
            }
            Stage::Padding { remaining } => {
                let remaining = remaining - step.len() as u8;
                self.stage = if remaining == 0 {
                    Stage::Checksum
                } else {
                    Stage::Padding { remaining }
                };
            }
            Stage::Checksum => {
                let stored = step[0];
                if stored != self.checksum {
                    return self.fail(ImageError::Checksum {
                        offset: self.pos - 1,
                        stored,
                        computed: self.checksum,
                    });
                }
                self.stored_checksum = stored;
                if self.header.as_ref().is_some_and(|h| h.hash_appended) {
                    self.expected_hash = Some(self.sha.clone().finalize().into());
                    self.stage = Stage::Hash;
                } else {
                    self.end_image();
                }
            }
            Stage::Hash => {
                self.collect(step);
                if self.pending_len == 32 {
                    self.pending_len = 0;
                    let stored = self.pending;
                    let computed = self.expected_hash.unwrap_or_default();
                    if stored != computed {
                        return self.fail(ImageError::Hash {
                            offset: self.pos - 32,
                            stored: hex::encode(stored),
                            computed: hex::encode(computed),
                        });
                    }
                    self.validation_hash = Some(stored);
                    self.end_image();
                }
            }
            Stage::Trailer => self.trailer(step),
        }
    }

    fn end_segment(&mut self, index: usize) {
        let count = self.header.as_ref().map_or(0, |h| usize::from(h.segment_count));
        if index + 1 < count {
            self.stage = Stage::SegmentHeader { index: index + 1 };
        } else {
            // Zero padding so that the checksum is the last byte of a 16-byte block.
            let padding = 15 - (self.pos % 16) as u8;
            self.stage = if padding == 0 {
                Stage::Checksum
            } else {
                Stage::Padding { remaining: padding }
            };
        }
    }

    fn end_image(&mut self) {
        self.image_len = self.pos;
        self.sha_limit = self.pos.next_multiple_of(SIG_SECTOR_LEN as u64);
        if self.sha_limit == self.pos {
            self.signed_digest = Some(self.sha.clone().finalize().into());
        }
        self.stage = Stage::Trailer;
    }

    fn trailer(&mut self, step: &[u8]) {
        let start = self.pos - step.len() as u64;
        let sector_start = self.sha_limit;
        let sector_end = sector_start + SIG_SECTOR_LEN as u64;
        for (i, byte) in step.iter().enumerate() {
            let at = start + i as u64;
            if at < sector_start {
                if *byte != 0xFF && self.odd_before_sector.is_none() {
                    self.odd_before_sector = Some(at);
                }
            } else if at < sector_end {
                // The loop ends below once the sector is full.
                let upto = ((sector_end - at) as usize).min(step.len() - i);
                self.sector.extend_from_slice(&step[i..i + upto]);
                if let Some(odd) = step[i + upto..].iter().position(|b| *b != 0xFF)
                    && self.odd_after_sector.is_none()
                {
                    self.odd_after_sector = Some(at + (upto + odd) as u64);
                }
                return;
            } else {
                if let Some(odd) = step[i..].iter().position(|b| *b != 0xFF)
                    && self.odd_after_sector.is_none()
                {
                    self.odd_after_sector = Some(at + odd as u64);
                }
                return;
            }
        }
    }

    /// The image, and the SHA-256 of every byte fed (whatever they are), so
    /// that a caller who needs the file's hash does not compute it again.
    pub fn finish_with_sha256(mut self) -> (Result<EspImage, ImageError>, [u8; 32]) {
        let sha256 = std::mem::take(&mut self.sha).finalize().into();
        (self.finish(), sha256)
    }

    /// The image, once every byte has been fed.
    pub fn finish(mut self) -> Result<EspImage, ImageError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if self.stage != Stage::Trailer {
            return Err(self.truncated());
        }
        let Some(app) = self.app.take() else {
            return Err(ImageError::AppDescriptorCut { len: self.image_len });
        };
        let signature = self.signature()?;
        let header = self.header.take().ok_or_else(|| self.truncated())?;
        Ok(EspImage {
            header,
            segments: self.segments,
            checksum: self.stored_checksum,
            validation_hash: self.validation_hash.map(hex::encode),
            image_len: self.image_len,
            file_len: self.pos,
            app,
            signature,
        })
    }

    fn truncated(&self) -> ImageError {
        let count = self.header.as_ref().map_or(0, |h| h.segment_count);
        let inside = match self.stage {
            Stage::Header => format!("the {HEADER_LEN}-byte header"),
            Stage::SegmentHeader { index } => format!("the header of segment {index} (of {count})"),
            Stage::SegmentData { index, remaining } => format!(
                "segment {index} (of {count}), {remaining} bytes short of its declared {}",
                self.segments.last().map_or(0, |s| s.len)
            ),
            Stage::Padding { .. } | Stage::Checksum => "the padding before the checksum byte".to_owned(),
            Stage::Hash => "the appended SHA-256".to_owned(),
            Stage::Trailer => "the image".to_owned(),
        };
        ImageError::Truncated { len: self.pos, inside }
    }

    /// Whatever follows the image: nothing, 0xFF padding, or a signature sector.
    fn signature(&self) -> Result<Option<super::Signature>, ImageError> {
        let trailer_len = self.pos - self.image_len;
        if trailer_len == 0 {
            return Ok(None);
        }
        let offset = self.sha_limit;
        let odd = |first: Option<u64>| -> Result<(), ImageError> {
            match first {
                Some(first_odd) => Err(ImageError::TrailingData {
                    offset: self.image_len,
                    len: trailer_len,
                    first_odd,
                }),
                None => Ok(()),
            }
        };
        if self.sector.first() != Some(&SIG_BLOCK_MAGIC) {
            // Not signed: only erased-flash padding may follow.
            let in_sector = self.sector.iter().position(|b| *b != 0xFF).map(|i| offset + i as u64);
            odd(self.odd_before_sector.or(in_sector).or(self.odd_after_sector))?;
            return Ok(None);
        }
        if self.sector.len() < SIG_SECTOR_LEN {
            return Err(ImageError::Truncated {
                len: self.pos,
                inside: format!("the Secure Boot signature sector at offset {offset}"),
            });
        }
        let problem = |reason: String| ImageError::Signature { offset, reason };
        let digest = self.signed_digest.unwrap_or_default();
        let mut scheme = None;
        let mut blocks = 0u8;
        for index in 0..MAX_SIG_BLOCKS {
            let block = &self.sector[index * SIG_BLOCK_LEN..(index + 1) * SIG_BLOCK_LEN];
            if block[0] != SIG_BLOCK_MAGIC {
                break;
            }
            let stored_crc = u32_at(block, SIG_CRC_OFFSET);
            let crc = crc32(&block[..SIG_CRC_OFFSET]);
            if stored_crc != crc {
                return Err(problem(format!(
                    "block {index}'s CRC32 is 0x{stored_crc:08X}, its bytes give 0x{crc:08X}"
                )));
            }
            let block_scheme = match block[1] {
                2 => SignatureScheme::SecureBootV2Rsa,
                3 => SignatureScheme::SecureBootV2Ecdsa,
                other => {
                    return Err(problem(format!(
                        "block {index} has version {other}; Secure Boot v2 blocks are version 2 (RSA) or 3 (ECDSA)"
                    )));
                }
            };
            if block[4..36] != digest {
                return Err(problem(format!(
                    "block {index} signs the digest {}, but the image before the sector hashes to {} (the image was changed after signing)",
                    hex::encode(&block[4..36]),
                    hex::encode(digest)
                )));
            }
            scheme.get_or_insert(block_scheme);
            blocks += 1;
        }
        odd(self.odd_after_sector)?;
        Ok(scheme.map(|scheme| Signature { scheme, blocks, offset }))
    }
}
