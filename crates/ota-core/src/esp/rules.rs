//! Whether an app image fits a device type: the checks that keep a build a
//! device cannot boot from ever being offered to it.

use super::{Chip, ChipRevision, EspImage, MIN_IMAGE_LEN};

/// What a device type demands of its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRules {
    pub chip: Chip,
    /// When set, the image's `project_name` must be exactly this.
    pub project_name: Option<String>,
    /// The revisions the device type's units have: every one of them must be
    /// inside the image's range.
    pub min_chip_revision: ChipRevision,
    pub max_chip_revision: Option<ChipRevision>,
}

/// Why an image does not fit; the message is the detail an operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misfit {
    #[error(
        "the image is {len} bytes; an ESP32 reads the first {MIN_IMAGE_LEN} before it writes anything and refuses a shorter image"
    )]
    TooShort { len: u64 },
    #[error(
        "the image is built for {found} (chip id {found_id}), but this device type runs on {expected} (chip id {expected_id})"
    )]
    WrongChip {
        expected: Chip,
        expected_id: u16,
        found: Chip,
        found_id: u16,
    },
    #[error(
        "the image needs chip revision {image_min} or later, but this device type's units start at {device_min}: they would refuse to boot it"
    )]
    RevisionTooLow {
        image_min: ChipRevision,
        device_min: ChipRevision,
    },
    #[error(
        "the image runs on chip revisions up to {image_max}, but this device type's units go up to {device_max}: those would refuse to boot it"
    )]
    RevisionTooHigh {
        image_max: ChipRevision,
        device_max: String,
    },
    #[error("the image's project_name is '{found}', but this device type expects '{expected}'")]
    WrongProject { expected: String, found: String },
}

impl ImageRules {
    /// Checks an image; the first misfit found is the answer.
    pub fn check(&self, image: &EspImage) -> Result<(), Misfit> {
        if image.file_len < MIN_IMAGE_LEN {
            return Err(Misfit::TooShort { len: image.file_len });
        }
        let found = image.header.chip();
        if found != self.chip {
            return Err(Misfit::WrongChip {
                expected: self.chip,
                expected_id: self.chip.id(),
                found,
                found_id: image.header.chip_id,
            });
        }
        if image.header.min_chip_revision > self.min_chip_revision {
            return Err(Misfit::RevisionTooLow {
                image_min: image.header.min_chip_revision,
                device_min: self.min_chip_revision,
            });
        }
        if let Some(image_max) = image.header.max_chip_revision {
            let too_low = match self.max_chip_revision {
                Some(device_max) => image_max < device_max,
                None => true,
            };
            if too_low {
                return Err(Misfit::RevisionTooHigh {
                    image_max,
                    device_max: self
                        .max_chip_revision
                        .map_or_else(|| "any revision (no upper bound is set)".to_owned(), |r| r.to_string()),
                });
            }
        }
        if let Some(expected) = &self.project_name
            && image.app.project_name != *expected
        {
            return Err(Misfit::WrongProject {
                expected: expected.clone(),
                found: image.app.project_name.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::build::AppImageSpec;

    fn tab5() -> ImageRules {
        ImageRules {
            chip: Chip::Esp32p4,
            project_name: Some("scales_bridge".to_owned()),
            min_chip_revision: ChipRevision::from_full(100),
            max_chip_revision: Some(ChipRevision::from_full(199)),
        }
    }

    fn image(spec: AppImageSpec) -> EspImage {
        EspImage::parse(&spec.image()).unwrap()
    }

    fn p4(min: u16, max: u16) -> AppImageSpec {
        AppImageSpec::new(Chip::Esp32p4)
            .chip_revisions(min, max)
            .project_name("scales_bridge")
    }

    #[test]
    fn a_tab5_build_fits_the_tab5() {
        assert_eq!(tab5().check(&image(p4(0, 199))), Ok(()));
        assert_eq!(tab5().check(&image(p4(100, 199))), Ok(()));
        assert_eq!(
            tab5().check(&image(p4(100, 0xFFFF))),
            Ok(()),
            "no upper bound covers every unit"
        );
    }

    #[test]
    fn a_build_for_newer_silicon_does_not_fit() {
        let misfit = tab5().check(&image(p4(301, 399))).unwrap_err();
        assert_eq!(
            misfit.to_string(),
            "the image needs chip revision v3.1 or later, but this device type's units start at v1.0: they would refuse to boot it"
        );
    }

    #[test]
    fn a_build_capped_below_the_fleet_does_not_fit() {
        let misfit = tab5().check(&image(p4(0, 101))).unwrap_err();
        assert!(matches!(misfit, Misfit::RevisionTooHigh { .. }), "{misfit}");
        let mut unbounded = tab5();
        unbounded.max_chip_revision = None;
        assert!(
            unbounded.check(&image(p4(0, 199))).is_err(),
            "a capped image cannot serve an open range"
        );
    }

    #[test]
    fn the_wrong_chip_is_named() {
        let misfit = tab5()
            .check(&image(AppImageSpec::new(Chip::Esp32c6).project_name("scales_bridge")))
            .unwrap_err();
        assert_eq!(
            misfit.to_string(),
            "the image is built for esp32c6 (chip id 13), but this device type runs on esp32p4 (chip id 18)"
        );
    }

    #[test]
    fn another_project_does_not_fit_when_one_is_configured() {
        let other = image(p4(0, 199).project_name("thermostat"));
        assert!(matches!(tab5().check(&other), Err(Misfit::WrongProject { .. })));
        let mut any_project = tab5();
        any_project.project_name = None;
        assert_eq!(any_project.check(&other), Ok(()));
    }

    #[test]
    fn a_tiny_image_is_refused() {
        let mut tiny = image(p4(0, 199));
        tiny.file_len = 1023;
        assert_eq!(tab5().check(&tiny), Err(Misfit::TooShort { len: 1023 }));
    }
}
