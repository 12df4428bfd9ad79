//! Names and small values that arrive from outside, parsed once at the edge.
//!
//! A `DeviceType` and a `Version` become parts of a storage path, so they are
//! held to a strict alphabet: nothing that could climb out of the storage
//! folder (`..`, `/`, NUL) can be represented.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters long")]
    TooLong { max: usize },
    #[error("may only contain {allowed}")]
    BadCharacter { allowed: &'static str },
    #[error("must not start with '.' or '-'")]
    BadStart,
    #[error("must be 64 hexadecimal characters")]
    NotSha256,
    #[error("must be between 0 and 100")]
    NotPercent,
}

fn check_token(value: &str, max: usize, allowed: &'static str, ok: impl Fn(char) -> bool) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    if value.len() > max {
        return Err(NameError::TooLong { max });
    }
    if !value.chars().all(ok) {
        return Err(NameError::BadCharacter { allowed });
    }
    if value.starts_with('.') || value.starts_with('-') {
        return Err(NameError::BadStart);
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                Self::parse(&value)
            }
        }
    };
}

string_newtype!(
    /// A product's device type, e.g. `scales_bridge_tab5`: lower-case ASCII
    /// letters, digits, `_` and `-`, at most 64 characters. It names a folder
    /// in firmware storage.
    DeviceType
);

impl DeviceType {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_token(value, Self::MAX_LEN, "lower-case letters, digits, '_' and '-'", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
        })?;
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// A named group of devices, e.g. `beta-testers`: lower-case ASCII
    /// letters, digits, `_` and `-`, at most 64 characters.
    GroupName
);

impl GroupName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_token(value, Self::MAX_LEN, "lower-case letters, digits, '_' and '-'", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
        })?;
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// A device's identity, the `sub` of its token: printable ASCII without
    /// spaces, at most 128 characters (MAC addresses, serial numbers, UUIDs).
    DeviceId
);

impl DeviceId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, NameError> {
        if value.is_empty() {
            return Err(NameError::Empty);
        }
        if value.len() > Self::MAX_LEN {
            return Err(NameError::TooLong { max: Self::MAX_LEN });
        }
        if !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(NameError::BadCharacter {
                allowed: "printable ASCII without spaces",
            });
        }
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// An update channel. `stable` admits only builds marked stable; any
    /// other channel (`beta`, `dev`, ...) admits pre-release builds as well.
    Channel
);

impl Channel {
    pub const STABLE: &'static str = "stable";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_token(value, 32, "lower-case letters, digits, '_' and '-'", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
        })?;
        Ok(Self(value.to_owned()))
    }

    pub fn stable() -> Self {
        Self(Self::STABLE.to_owned())
    }

    /// Whether builds not marked stable may be offered on this channel.
    pub fn admits_prerelease(&self) -> bool {
        self.0 != Self::STABLE
    }
}

impl Default for Channel {
    fn default() -> Self {
        Self::stable()
    }
}

string_newtype!(
    /// The name of a firmware file inside its device type's folder, such as
    /// `v1.1.0.bin`: letters, digits, `.`, `_`, `+` and `-`, not starting
    /// with a dot, at most 128 characters.
    FileName
);

impl FileName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_token(value, 128, "letters, digits, '.', '_', '+' and '-'", |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
        })?;
        if value.contains("..") {
            return Err(NameError::BadCharacter {
                allowed: "letters, digits, '.', '_', '+' and '-' (no '..')",
            });
        }
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// A SHA-256 digest as 64 lower-case hexadecimal characters.
    Sha256Hex
);

impl Sha256Hex {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if value.len() != 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(NameError::NotSha256);
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn from_digest(digest: &[u8; 32]) -> Self {
        Self(hex::encode(digest))
    }
}

/// A whole percentage, 0 to 100 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct Percent(u8);

/// A full rollout, unless one is given.
impl Default for Percent {
    fn default() -> Self {
        Percent::FULL
    }
}

impl Percent {
    pub const FULL: Percent = Percent(100);

    pub fn parse(value: i64) -> Result<Self, NameError> {
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= 100)
            .map(Self)
            .ok_or(NameError::NotPercent)
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Percent {
    type Error = NameError;
    fn try_from(value: i64) -> Result<Self, NameError> {
        Self::parse(value)
    }
}

impl From<Percent> for u8 {
    fn from(value: Percent) -> u8 {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_type_accepts_the_shipping_product() {
        assert_eq!(
            DeviceType::parse("scales_bridge_tab5").unwrap().as_str(),
            "scales_bridge_tab5"
        );
    }

    #[test]
    fn device_type_refuses_anything_that_could_escape_a_folder() {
        for bad in [
            "", "..", "../etc", "a/b", "a\\b", "a\0b", ".hidden", "-x", "UPPER", "sp ace",
        ] {
            assert!(DeviceType::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(DeviceType::parse(&"a".repeat(65)), Err(NameError::TooLong { max: 64 }));
        assert!(DeviceType::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn file_name_refuses_traversal_and_separators() {
        assert!(FileName::parse("v1.1.0.bin").is_ok());
        assert!(FileName::parse("v1.1.0+build.7.bin").is_ok());
        for bad in ["", "..", "a..b", "../x.bin", "a/b.bin", ".x", "x\0.bin"] {
            assert!(FileName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn device_id_is_printable_and_bounded() {
        assert!(DeviceId::parse("tab5-00:11:22:33:44:55").is_ok());
        assert_eq!(DeviceId::parse(""), Err(NameError::Empty));
        assert!(DeviceId::parse("has space").is_err());
        assert!(DeviceId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn only_the_stable_channel_refuses_prerelease_builds() {
        assert!(!Channel::stable().admits_prerelease());
        assert!(Channel::parse("beta").unwrap().admits_prerelease());
        assert!(Channel::parse("Beta").is_err());
    }

    #[test]
    fn sha256_is_normalised_to_lower_case() {
        let upper = "AB".repeat(32);
        assert_eq!(Sha256Hex::parse(&upper).unwrap().as_str(), "ab".repeat(32));
        assert_eq!(Sha256Hex::parse("abc"), Err(NameError::NotSha256));
        assert_eq!(Sha256Hex::parse(&"g".repeat(64)), Err(NameError::NotSha256));
    }

    #[test]
    fn percent_is_bounded() {
        assert_eq!(Percent::parse(0).unwrap().get(), 0);
        assert_eq!(Percent::parse(100).unwrap().get(), 100);
        assert_eq!(Percent::parse(101), Err(NameError::NotPercent));
        assert_eq!(Percent::parse(-1), Err(NameError::NotPercent));
    }
}
