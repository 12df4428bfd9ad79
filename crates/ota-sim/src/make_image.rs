//! `ota-sim make-image`: a valid ESP-IDF app image written without ESP-IDF,
//! to try an `esp-app` device type's upload checks and anti-rollback with
//! the simulator.

use std::fmt::Write as _;
use std::path::Path;

use ota_core::esp::build::AppImageSpec;
use ota_core::esp::{Chip, ChipRevision, EspImage, SignatureScheme};
use sha2::{Digest, Sha256};

/// `esp_app_desc_t.version` and `.project_name` are `char[32]`, NUL included.
const DESC_TEXT_MAX: usize = 31;

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    pub chip: Chip,
    pub version: String,
    pub project_name: String,
    pub secure_version: u32,
    /// The length to aim at, up to the appended hash (the builder lands
    /// within 16 bytes, and makes nothing shorter than about 900 bytes).
    pub approx_len: usize,
    /// `None`: v0.0.
    pub min_chip_revision: Option<ChipRevision>,
    /// `None`: no upper bound.
    pub max_chip_revision: Option<ChipRevision>,
    pub signature: Option<SignatureScheme>,
}

/// An image made and read back.
pub struct MadeImage {
    pub bytes: Vec<u8>,
    pub image: EspImage,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
}

/// A chip by esptool's name, for the command line.
pub fn parse_chip(name: &str) -> Result<Chip, String> {
    Chip::parse(name).ok_or_else(|| format!("'{name}' is not a known chip; one of {}", Chip::known_names()))
}

/// A `version` or `project_name` that fits `esp_app_desc_t`.
pub fn parse_desc_text(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > DESC_TEXT_MAX {
        return Err(format!(
            "must be 1 to {DESC_TEXT_MAX} bytes (esp_app_desc_t holds 32 with the NUL)"
        ));
    }
    Ok(text.to_owned())
}

impl ImageOptions {
    fn spec(&self) -> anyhow::Result<AppImageSpec> {
        let min = self.min_chip_revision.map_or(0, ChipRevision::full);
        let max = self.max_chip_revision.map_or(u16::MAX, ChipRevision::full);
        anyhow::ensure!(
            min <= max,
            "--max-chip-revision {} is below --min-chip-revision {}",
            ChipRevision::from_full(max),
            ChipRevision::from_full(min)
        );
        let mut spec = AppImageSpec::new(self.chip)
            .version(&self.version)
            .project_name(&self.project_name)
            .secure_version(self.secure_version)
            .chip_revisions(min, max)
            .target_len(self.approx_len);
        // esptool writes the major of the minimum into the legacy byte too.
        spec.min_rev_legacy = u8::try_from(min / 100).unwrap_or(u8::MAX);
        if let Some(scheme) = self.signature {
            spec = spec.signed(scheme);
        }
        Ok(spec)
    }
}

/// Builds the image and parses it back, as the server will.
pub fn make(options: &ImageOptions) -> anyhow::Result<MadeImage> {
    let bytes = options.spec()?.image();
    let image = EspImage::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("the image made does not parse (a bug in the builder): {e}"))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(MadeImage { bytes, image, sha256 })
}

impl MadeImage {
    /// What `make-image` prints about the file written at `path`.
    pub fn summary(&self, path: &Path) -> String {
        let image = &self.image;
        let max = image
            .header
            .max_chip_revision
            .map_or_else(|| "no upper bound".to_owned(), |r| r.to_string());
        let signature = match &image.signature {
            Some(signature) => match signature.scheme {
                SignatureScheme::SecureBootV2Rsa => "Secure Boot v2, RSA-3072 (filler key and signature)",
                SignatureScheme::SecureBootV2Ecdsa => "Secure Boot v2, ECDSA (filler key and signature)",
            }
            .to_owned(),
            None => "unsigned".to_owned(),
        };
        let mut out = format!("wrote {}: an ESP-IDF app image\n", path.display());
        let rows = [
            ("size", format!("{} bytes", self.bytes.len())),
            ("sha256", self.sha256.clone()),
            (
                "validation hash",
                image.validation_hash.clone().unwrap_or_else(|| "none".to_owned()),
            ),
            (
                "chip",
                format!("{} (chip id {})", image.header.chip, image.header.chip_id),
            ),
            ("chip revisions", format!("{} to {max}", image.header.min_chip_revision)),
            ("project", image.app.project_name.clone()),
            ("app version", image.app.version.clone()),
            ("secure_version", image.app.secure_version.to_string()),
            ("signature", signature),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "  {name:<16} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ImageOptions {
        ImageOptions {
            chip: Chip::Esp32p4,
            version: "1.2.0".to_owned(),
            project_name: "scales_bridge".to_owned(),
            secure_version: 2,
            approx_len: 100_000,
            min_chip_revision: None,
            max_chip_revision: None,
            signature: None,
        }
    }

    #[test]
    fn the_image_says_what_was_asked() {
        let options = ImageOptions {
            min_chip_revision: Some(ChipRevision::from_full(100)),
            max_chip_revision: Some(ChipRevision::from_full(199)),
            ..options()
        };

        let made = make(&options).unwrap();

        assert!(made.bytes.len().abs_diff(100_000) <= 16, "{}", made.bytes.len());
        let image = &made.image;
        assert_eq!(image.header.chip(), Chip::Esp32p4);
        assert_eq!(image.header.min_chip_revision, ChipRevision::from_full(100));
        assert_eq!(image.header.max_chip_revision, Some(ChipRevision::from_full(199)));
        assert_eq!(image.header.min_chip_revision_legacy, 1);
        assert_eq!(
            (image.app.version.as_str(), image.app.project_name.as_str()),
            ("1.2.0", "scales_bridge")
        );
        assert_eq!(image.app.secure_version, 2);
        assert!(image.signature.is_none());
        assert_eq!(made.sha256, hex::encode(Sha256::digest(&made.bytes)));
    }

    #[test]
    fn without_revisions_the_image_runs_on_every_revision() {
        let made = make(&options()).unwrap();

        assert_eq!(made.image.header.min_chip_revision, ChipRevision::from_full(0));
        assert_eq!(made.image.header.max_chip_revision, None);
    }

    #[test]
    fn a_signed_image_carries_a_signature_sector() {
        let made = make(&ImageOptions {
            signature: Some(SignatureScheme::SecureBootV2Ecdsa),
            ..options()
        })
        .unwrap();

        let signature = made.image.signature.as_ref().unwrap();
        assert_eq!(signature.scheme, SignatureScheme::SecureBootV2Ecdsa);
        assert_eq!(made.bytes.len() % 4096, 0);
    }

    #[test]
    fn a_maximum_below_the_minimum_is_refused() {
        let error = make(&ImageOptions {
            min_chip_revision: Some(ChipRevision::from_full(300)),
            max_chip_revision: Some(ChipRevision::from_full(199)),
            ..options()
        })
        .err()
        .unwrap();

        assert!(
            error.to_string().contains("v1.99 is below --min-chip-revision v3.0"),
            "{error}"
        );
    }

    #[test]
    fn descriptor_text_must_fit_its_32_byte_field() {
        assert_eq!(parse_desc_text("scales_bridge"), Ok("scales_bridge".to_owned()));
        assert!(parse_desc_text(&"x".repeat(32)).is_err());
        assert!(parse_desc_text("").is_err());
    }

    #[test]
    fn chips_are_named_as_esptool_names_them() {
        assert_eq!(parse_chip("ESP32-P4"), Ok(Chip::Esp32p4));
        assert!(parse_chip("esp99").unwrap_err().contains("esp32p4"));
    }

    #[test]
    fn the_summary_names_size_hashes_and_fields() {
        let made = make(&options()).unwrap();

        let summary = made.summary(Path::new("app.bin"));

        assert!(
            summary.starts_with("wrote app.bin: an ESP-IDF app image\n"),
            "{summary}"
        );
        assert!(
            summary.contains(&format!("sha256           {}", made.sha256)),
            "{summary}"
        );
        let validation = made.image.validation_hash.as_deref().unwrap();
        assert!(summary.contains(&format!("validation hash  {validation}")), "{summary}");
        assert!(summary.contains("secure_version   2"), "{summary}");
        assert!(summary.contains("chip revisions   v0.0 to no upper bound"), "{summary}");
    }
}
