//! ESP chips and chip revisions, as the image header names them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ESP chip, by the id in the image header (`esp_chip_id_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chip {
    Esp32,
    Esp32s2,
    Esp32c3,
    Esp32s3,
    Esp32c2,
    Esp32c6,
    Esp32h2,
    Esp32p4,
    Esp32c61,
    Esp32c5,
    Esp32h21,
    Esp32h4,
    /// An id this server does not know (yet).
    Unknown(u16),
}

const KNOWN: [(Chip, u16, &str); 12] = [
    (Chip::Esp32, 0, "esp32"),
    (Chip::Esp32s2, 2, "esp32s2"),
    (Chip::Esp32c3, 5, "esp32c3"),
    (Chip::Esp32s3, 9, "esp32s3"),
    (Chip::Esp32c2, 12, "esp32c2"),
    (Chip::Esp32c6, 13, "esp32c6"),
    (Chip::Esp32h2, 16, "esp32h2"),
    (Chip::Esp32p4, 18, "esp32p4"),
    (Chip::Esp32c61, 20, "esp32c61"),
    (Chip::Esp32c5, 23, "esp32c5"),
    (Chip::Esp32h21, 25, "esp32h21"),
    (Chip::Esp32h4, 28, "esp32h4"),
];

impl Chip {
    /// Every chip this server knows, in id order.
    pub fn known() -> impl Iterator<Item = Chip> {
        KNOWN.iter().map(|(chip, _, _)| *chip)
    }

    pub fn from_id(id: u16) -> Chip {
        KNOWN
            .iter()
            .find(|(_, known, _)| *known == id)
            .map_or(Chip::Unknown(id), |(chip, _, _)| *chip)
    }

    pub fn id(self) -> u16 {
        match self {
            Chip::Unknown(id) => id,
            known => KNOWN.iter().find(|(c, _, _)| *c == known).map_or(0, |(_, id, _)| *id),
        }
    }

    /// esptool's name: `esp32p4`. Accepts `ESP32-P4` and `esp32_p4` too.
    pub fn parse(name: &str) -> Option<Chip> {
        let folded: String = name
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        KNOWN.iter().find(|(_, _, n)| *n == folded).map(|(chip, _, _)| *chip)
    }

    /// esptool's name (`esp32p4`), or `unknown`.
    pub fn name(self) -> &'static str {
        KNOWN
            .iter()
            .find(|(chip, _, _)| *chip == self)
            .map_or("unknown", |(_, _, name)| *name)
    }

    /// The names of the known chips, for error messages.
    pub fn known_names() -> String {
        KNOWN.iter().map(|(_, _, n)| *n).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Chip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chip::Unknown(id) => write!(f, "unknown chip (id {id})"),
            known => f.write_str(known.name()),
        }
    }
}

/// A chip revision, `major * 100 + minor` as in the image header
/// (`min_chip_rev_full`), written `v1.0` … `v1.99` as esptool prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChipRevision(u16);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a chip revision: write it as v<major>.<minor>, minor 0 to 99 (e.g. v1.0 or v1.99)")]
pub struct ChipRevisionError(String);

impl ChipRevision {
    pub const fn from_full(full: u16) -> Self {
        ChipRevision(full)
    }

    pub const fn full(self) -> u16 {
        self.0
    }

    pub const fn major(self) -> u16 {
        self.0 / 100
    }

    pub const fn minor(self) -> u16 {
        self.0 % 100
    }

    /// `v1.99`, `1.0` or `v3`.
    pub fn parse(input: &str) -> Result<Self, ChipRevisionError> {
        let error = || ChipRevisionError(input.chars().take(40).collect());
        let text = input.trim();
        let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
        let (major, minor) = text.split_once('.').unwrap_or((text, "0"));
        let number = |part: &str, max: u16| {
            if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse::<u16>().ok().filter(|n| *n <= max)
        };
        let major = number(major, 655).ok_or_else(error)?;
        let minor = number(minor, 99).ok_or_else(error)?;
        // The header holds any u16: up to v655.35.
        let full = (major * 100).checked_add(minor).ok_or_else(error)?;
        Ok(ChipRevision(full))
    }
}

impl fmt::Display for ChipRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major(), self.minor())
    }
}

impl TryFrom<String> for ChipRevision {
    type Error = ChipRevisionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ChipRevision> for String {
    fn from(value: ChipRevision) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chips_round_trip_through_ids_and_names() {
        for chip in Chip::known() {
            assert_eq!(Chip::from_id(chip.id()), chip);
            assert_eq!(Chip::parse(&chip.to_string()), Some(chip));
        }
        assert_eq!(Chip::from_id(18), Chip::Esp32p4);
        assert_eq!(Chip::parse("ESP32-P4"), Some(Chip::Esp32p4));
        assert_eq!(Chip::from_id(99), Chip::Unknown(99));
        assert_eq!(Chip::parse("esp8266"), None);
    }

    #[test]
    fn revisions_read_and_print_like_esptool() {
        assert_eq!(ChipRevision::parse("v1.0").unwrap().full(), 100);
        assert_eq!(ChipRevision::parse("1.99").unwrap().full(), 199);
        assert_eq!(ChipRevision::parse("v3").unwrap().full(), 300);
        assert_eq!(ChipRevision::from_full(301).to_string(), "v3.1");
        assert_eq!(ChipRevision::from_full(199).to_string(), "v1.99");
        for full in [0, 99, 100, 65_499, 65_500, 65_535] {
            let revision = ChipRevision::from_full(full);
            assert_eq!(ChipRevision::parse(&revision.to_string()), Ok(revision), "{revision}");
        }
        for bad in ["", "v", "1.100", "x1.0", "1.-1", "1..2", "99999.0", "v655.36", "v656.0"] {
            assert!(ChipRevision::parse(bad).is_err(), "{bad}");
        }
    }
}
