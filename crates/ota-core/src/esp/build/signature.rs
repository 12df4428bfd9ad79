//! A Secure Boot v2 signature sector with filler key and signature.

use super::*;

pub(super) fn append_signature_sector(out: &mut Vec<u8>, scheme: SignatureScheme, seed: u64) {
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
