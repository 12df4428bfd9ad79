//! Signed download links: a link handed out by `check` carries the device it
//! was made for, an expiry and an HMAC-SHA256 over all of it, so it works
//! without a bearer token until it expires and cannot be altered.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::names::DeviceId;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the download link has expired")]
    Expired,
    #[error("the download link's signature does not match")]
    BadSignature,
}

/// Signs and verifies download links with one secret key.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(<redacted>)")
    }
}

impl LinkSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, firmware_id: i64, device: Option<&DeviceId>, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        let message = format!(
            "ota-download-v1\n{firmware_id}\n{}\n{expires}",
            device.map(DeviceId::as_str).unwrap_or("")
        );
        mac.update(message.as_bytes());
        mac
    }

    /// The `sig` of a link, as lower-case hex.
    pub fn sign(&self, firmware_id: i64, device: Option<&DeviceId>, expires: i64) -> String {
        hex::encode(self.mac(firmware_id, device, expires).finalize().into_bytes())
    }

    /// The query string of a link: `device=...&expires=...&sig=...`.
    pub fn query(&self, firmware_id: i64, device: Option<&DeviceId>, expires: i64) -> String {
        let sig = self.sign(firmware_id, device, expires);
        match device {
            Some(device) => format!("device={}&expires={expires}&sig={sig}", percent_encode(device.as_str())),
            None => format!("expires={expires}&sig={sig}"),
        }
    }

    /// Checks a link's signature (in constant time) and then its expiry.
    pub fn verify(
        &self,
        firmware_id: i64,
        device: Option<&DeviceId>,
        expires: i64,
        sig: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        let given = hex::decode(sig).map_err(|_| LinkError::BadSignature)?;
        self.mac(firmware_id, device, expires)
            .verify_slice(&given)
            .map_err(|_| LinkError::BadSignature)?;
        if now >= expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        DeviceId::parse("tab5-0001").unwrap()
    }

    #[test]
    fn a_fresh_link_verifies() {
        let signer = LinkSigner::new(b"k");
        let sig = signer.sign(12, Some(&device()), 1_000);
        assert_eq!(signer.verify(12, Some(&device()), 1_000, &sig, 999), Ok(()));
    }

    #[test]
    fn an_expired_link_is_refused() {
        let signer = LinkSigner::new(b"k");
        let sig = signer.sign(12, Some(&device()), 1_000);
        assert_eq!(
            signer.verify(12, Some(&device()), 1_000, &sig, 1_000),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn tampering_with_any_part_is_refused() {
        let signer = LinkSigner::new(b"k");
        let sig = signer.sign(12, Some(&device()), 1_000);
        let other = DeviceId::parse("tab5-0002").unwrap();
        assert_eq!(
            signer.verify(13, Some(&device()), 1_000, &sig, 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify(12, Some(&other), 1_000, &sig, 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(signer.verify(12, None, 1_000, &sig, 0), Err(LinkError::BadSignature));
        assert_eq!(
            signer.verify(12, Some(&device()), 2_000, &sig, 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify(12, Some(&device()), 1_000, "zz", 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            LinkSigner::new(b"other").verify(12, Some(&device()), 1_000, &sig, 0),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn device_ids_are_percent_encoded_in_the_query() {
        let signer = LinkSigner::new(b"k");
        let odd = DeviceId::parse("a&b=c#d").unwrap();
        let query = signer.query(1, Some(&odd), 5);
        assert!(query.starts_with("device=a%26b%3Dc%23d&expires=5&sig="), "{query}");
    }
}
