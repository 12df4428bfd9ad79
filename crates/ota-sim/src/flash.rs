//! What a simulated device keeps across reboots: the OTA partition being
//! written, and the anti-rollback counter in eFuse.

use ota_core::esp::{EspImage, ImageParser};

/// The part of flash being written: survives a reboot, as the partition and
/// the bytes-written counter in NVS do on a device (IDF ≥ 5.5's
/// `ota_resumption`). The running hash and image parse stand in for
/// re-reading the partition; neither keeps the image.
pub struct Flash {
    pub firmware_id: i64,
    pub written: u64,
    /// Parses the bytes and hashes them (the download's SHA-256).
    parser: ImageParser,
}

/// A finished download: its SHA-256 and, when it is one, the app image.
pub struct Written {
    /// Lower-case hex.
    pub sha256: String,
    /// `None` for a file that is not a valid ESP-IDF app image (any file of
    /// a `raw` device type may be).
    pub image: Option<EspImage>,
}

impl Flash {
    pub fn new(firmware_id: i64) -> Self {
        Self {
            firmware_id,
            written: 0,
            parser: ImageParser::new(),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.parser.feed(bytes);
        self.written += bytes.len() as u64;
    }

    pub fn finish(self) -> Written {
        let (image, sha256) = self.parser.finish_with_sha256();
        Written {
            sha256: hex::encode(sha256),
            image: image.ok(),
        }
    }
}

/// The anti-rollback counter (`CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK`): the
/// bootloader refuses an app whose `secure_version` is below it, and raises
/// it to the running app's once that app is confirmed. eFuses only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AntiRollback {
    /// `None`: a device built without anti-rollback.
    counter: Option<u32>,
}

impl AntiRollback {
    pub fn new(counter: Option<u32>) -> Self {
        Self { counter }
    }

    pub fn counter(self) -> Option<u32> {
        self.counter
    }

    /// Whether the bootloader would refuse to run `image`.
    pub fn refuses(self, image: &EspImage) -> bool {
        self.counter.is_some_and(|counter| image.app.secure_version < counter)
    }

    /// `image` booted and was confirmed: the counter takes its
    /// `secure_version` when that is higher.
    pub fn confirm(&mut self, image: &EspImage) {
        if let Some(counter) = &mut self.counter {
            *counter = (*counter).max(image.app.secure_version);
        }
    }
}

#[cfg(test)]
mod tests {
    use ota_core::esp::Chip;
    use ota_core::esp::build::app_image;
    use sha2::{Digest, Sha256};

    use super::*;

    fn image_with_secure_version(secure_version: u32) -> EspImage {
        EspImage::parse(&app_image(Chip::Esp32p4, "1.1.0", "app", secure_version, 4096)).unwrap()
    }

    #[test]
    fn flash_written_in_pieces_yields_the_hash_and_the_image() {
        let bytes = app_image(Chip::Esp32p4, "1.1.0", "app", 3, 20_000);
        let mut flash = Flash::new(1);

        for piece in bytes.chunks(777) {
            flash.write(piece);
        }

        assert_eq!(flash.written, bytes.len() as u64);
        let written = flash.finish();
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(written.image.unwrap().app.secure_version, 3);
    }

    #[test]
    fn a_file_that_is_not_an_app_image_has_no_image() {
        let mut flash = Flash::new(1);

        flash.write(&[0x42; 4096]);

        assert!(flash.finish().image.is_none());
    }

    #[test]
    fn a_device_without_anti_rollback_refuses_nothing_and_keeps_no_counter() {
        let mut efuse = AntiRollback::new(None);

        assert!(!efuse.refuses(&image_with_secure_version(0)));
        efuse.confirm(&image_with_secure_version(5));

        assert_eq!(efuse.counter(), None);
    }

    #[test]
    fn an_image_below_the_counter_is_refused_and_one_at_it_is_not() {
        let efuse = AntiRollback::new(Some(2));

        assert!(efuse.refuses(&image_with_secure_version(1)));
        assert!(!efuse.refuses(&image_with_secure_version(2)));
        assert!(!efuse.refuses(&image_with_secure_version(3)));
    }

    #[test]
    fn a_confirmed_image_raises_the_counter_and_never_lowers_it() {
        let mut efuse = AntiRollback::new(Some(1));

        efuse.confirm(&image_with_secure_version(2));
        assert_eq!(efuse.counter(), Some(2));
        efuse.confirm(&image_with_secure_version(0));
        assert_eq!(efuse.counter(), Some(2));
    }
}
