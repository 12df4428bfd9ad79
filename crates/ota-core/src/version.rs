//! Firmware versions: semantic versions, with the leading `v` that ESP-IDF's
//! `git describe` versions carry accepted and dropped.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build]): {reason}")]
pub struct VersionError {
    input: String,
    reason: String,
}

/// A semantic version. Equality and ordering follow SemVer precedence, so
/// build metadata (`+...`) does not make one version newer than another.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(semver::Version);

impl Version {
    pub const MAX_LEN: usize = 64;

    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let error = |reason: &str| VersionError {
            input: input.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if input.len() > Self::MAX_LEN {
            return Err(error("longer than 64 characters"));
        }
        let trimmed = input.strip_prefix('v').unwrap_or(input);
        semver::Version::parse(trimmed)
            .map(Self)
            .map_err(|e| error(&e.to_string()))
    }

    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// The file name this version is stored under: `v<version>.bin`.
    pub fn file_name(&self) -> String {
        format!("v{}.bin", self.0)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for Version {
    type Error = VersionError;
    fn try_from(value: String) -> Result<Self, VersionError> {
        Self::parse(&value)
    }
}

impl From<Version> for String {
    fn from(value: Version) -> String {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn a_leading_v_is_accepted_and_dropped() {
        assert_eq!(v("v1.2.3").to_string(), "1.2.3");
        assert_eq!(v("v1.2.3"), v("1.2.3"));
    }

    #[test]
    fn git_describe_versions_parse_as_prereleases() {
        let described = v("v1.2.3-4-gabc1234");
        assert!(described.is_prerelease());
        assert!(described < v("1.2.3"));
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in [
            "", "1", "1.2", "1.2.3.4", "x1.2.3", "1.2.3 ", "../1.2.3", "1.2.3/..", "01.2.3",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Version::parse(&format!("1.2.3-{}", "a".repeat(70))).is_err());
    }

    #[test]
    fn build_metadata_does_not_order() {
        assert_eq!(v("1.0.0+7"), v("1.0.0+8"));
        assert!(v("1.0.0-rc.1") < v("1.0.0"));
        assert!(v("1.0.0-alpha.9") < v("1.0.0-alpha.10"));
    }

    #[test]
    fn file_name_is_v_prefixed() {
        assert_eq!(v("1.1.0").file_name(), "v1.1.0.bin");
    }

    fn arb_version() -> impl Strategy<Value = Version> {
        (
            0u64..50,
            0u64..50,
            0u64..50,
            proptest::option::of("[a-z]{1,3}(\\.[1-9][0-9]?)?"),
        )
            .prop_map(|(a, b, c, pre)| match pre {
                Some(pre) => v(&format!("{a}.{b}.{c}-{pre}")),
                None => v(&format!("{a}.{b}.{c}")),
            })
    }

    proptest! {
        #[test]
        fn ordering_is_total_and_antisymmetric(a in arb_version(), b in arb_version()) {
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        }

        #[test]
        fn ordering_is_transitive(a in arb_version(), b in arb_version(), c in arb_version()) {
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }

        #[test]
        fn numeric_parts_order_numerically(a in 0u64..1000, b in 0u64..1000) {
            let (left, right) = (v(&format!("1.{a}.0")), v(&format!("1.{b}.0")));
            prop_assert_eq!(left.cmp(&right), a.cmp(&b));
        }

        #[test]
        fn a_release_is_newer_than_its_prereleases(x in 0u64..100, pre in "[a-z]{1,5}") {
            let (prerelease, release) = (v(&format!("{x}.0.0-{pre}")), v(&format!("{x}.0.0")));
            prop_assert!(prerelease < release);
        }

        #[test]
        fn display_round_trips(a in arb_version()) {
            prop_assert_eq!(Version::parse(&a.to_string()).unwrap(), a);
        }
    }
}
