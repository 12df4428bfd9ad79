//! Whether an uploaded file may become a device type's firmware, and under
//! which version: the checks behind "never offer a device a build it cannot
//! boot". The parse itself ran while the file streamed in.

use ota_core::Version;
use ota_core::esp::{EspImage, ImageError, MIN_IMAGE_LEN};
use ota_core::wire::{DeviceTypeRecord, ImageFormat};

use crate::http::error::{ApiError, ApiResult};

/// What a checked file is, and the version it is registered under.
#[derive(Debug)]
pub struct CheckedFile {
    pub image_format: ImageFormat,
    pub image: Option<EspImage>,
    pub version: Version,
    /// The operator's version was kept although the image says another.
    pub version_overridden: bool,
}

/// Checks a file of `file_size` bytes, parsed as `parsed`, against its
/// device type. `version` is the uploader's, if any; `override_version`
/// keeps it even when the image's app descriptor says otherwise.
pub fn check_file(
    device_type: &DeviceTypeRecord,
    parsed: Result<EspImage, ImageError>,
    file_size: u64,
    version: Option<Version>,
    override_version: bool,
) -> ApiResult<CheckedFile> {
    if device_type.image_format == ImageFormat::Raw {
        let version = version.ok_or_else(|| {
            ApiError::invalid(
                "version",
                format!(
                    "is required: '{}' is a raw device type, so the version cannot be read from the file",
                    device_type.name
                ),
            )
        })?;
        // Not checked, but a file that is an app image keeps what it says
        // about itself: its secure_version still protects anti-rollback devices.
        return Ok(CheckedFile {
            image_format: ImageFormat::Raw,
            image: parsed.ok(),
            version,
            version_overridden: false,
        });
    }
    let Some(rules) = device_type.image_rules() else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "device type {} is esp-app without a known chip",
            device_type.name
        )));
    };
    if file_size < MIN_IMAGE_LEN {
        return Err(ApiError::invalid(
            "file",
            format!(
                "the file is {file_size} bytes; an ESP32 reads the first {MIN_IMAGE_LEN} bytes of an image before it writes anything and refuses a shorter one"
            ),
        ));
    }
    let image = parsed.map_err(|e| {
        ApiError::invalid(
            "file",
            format!("not a valid ESP-IDF app image for {}: {e}", device_type.name),
        )
    })?;
    rules.check(&image).map_err(|misfit| {
        ApiError::invalid(
            "file",
            format!("this image cannot run on {} devices: {misfit}", device_type.name),
        )
    })?;

    let described = Version::from_app_descriptor(&image.app.version);
    let (version, version_overridden) = match (version, described) {
        (None, Ok(described)) => (described, false),
        (None, Err(e)) => {
            return Err(ApiError::invalid(
                "version",
                format!(
                    "is required: the image's own version '{}' cannot be used ({e}); pass version, with override_version=true",
                    image.app.version
                ),
            ));
        }
        (Some(given), Ok(described)) if given.to_string() == described.to_string() => (given, false),
        (Some(given), described) if override_version => {
            tracing::warn!(
                version = %given,
                image_version = %image.app.version,
                read_as = described.as_ref().map(ToString::to_string).unwrap_or_default(),
                "registering firmware under a version its image does not carry (override_version)"
            );
            (given, true)
        }
        (Some(given), described) => {
            let read_as = match described {
                Ok(described) => format!(" (read as {described})"),
                Err(_) => String::new(),
            };
            return Err(ApiError::invalid(
                "version",
                format!(
                    "{given} differs from the image's app descriptor version '{}'{read_as}; leave version out to use the image's, or pass override_version=true to register it as {given} anyway (this is recorded)",
                    image.app.version
                ),
            ));
        }
    };
    Ok(CheckedFile {
        image_format: ImageFormat::EspApp,
        image: Some(image),
        version,
        version_overridden,
    })
}
