//! Firmware versions: semantic versions, read the way ESP-IDF projects write
//! them. Besides `MAJOR.MINOR.PATCH[-pre][+build]`:
//!
//! - a leading `v` is dropped: `v1.2.3` is `1.2.3`;
//! - `1` and `1.2` (ESP-IDF's default `PROJECT_VER` is `1`) are `1.0.0` and `1.2.0`;
//! - `git describe` output, `TAG-N-gHASH[-dirty]`, is N commits *after* TAG,
//!   so it becomes a pre-release of the next patch: `v1.2.3-4-gabc1234` is
//!   `1.2.4-dev.4+gabc1234` (after 1.2.3, before 1.2.4; `dev.5` after
//!   `dev.4`). A pre-release tag keeps its place: `v2.0.0-rc.1-3-gabc1234`
//!   is `2.0.0-rc.1.dev.3+gabc1234`;
//! - a `-dirty` suffix becomes build metadata: `v1.2.3-dirty` is `1.2.3+dirty`.
//!
//! Devices report the version of their app descriptor, so the same rule
//! reads a device's `current_version` and an uploaded image's version, and
//! both agree on which is newer.

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
        let read = if let Some(described) = git_describe(trimmed) {
            described
        } else if let Some(dirty) = trimmed.strip_suffix("-dirty")
            && !dirty.contains('+')
        {
            semver::Version::parse(&format!("{dirty}+dirty")).map_err(|e| e.to_string())
        } else {
            semver::Version::parse(&pad_short(trimmed)).map_err(|e| e.to_string())
        };
        let version = read.map_err(|reason| error(&reason))?;
        // The form it is read as is what is stored and parsed again: it
        // must fit too (`.dev.N` and `.0` make it longer than the input).
        if version.to_string().len() > Self::MAX_LEN {
            return Err(error(&format!("longer than 64 characters once read as {version}")));
        }
        Ok(Self(version))
    }

    /// The version in an `esp_app_desc_t`: [`Version::parse`] after trimming
    /// surrounding white space.
    pub fn from_app_descriptor(input: &str) -> Result<Self, VersionError> {
        Self::parse(input.trim())
    }

    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// The file name this version is stored under: `v<version>.bin`.
    pub fn file_name(&self) -> String {
        format!("v{}.bin", self.0)
    }
}

/// `1` and `1.2` as `1.0.0` and `1.2.0`; anything else as it is.
fn pad_short(text: &str) -> String {
    let parts = text.split('.').count();
    if parts < 3 && is_short_numeric(text) {
        format!("{text}{}", ".0".repeat(3 - parts))
    } else {
        text.to_owned()
    }
}

/// `1` or `1.2`: digits without leading zeros.
fn is_short_numeric(text: &str) -> bool {
    text.split('.').all(|part| {
        !part.is_empty()
            && part.len() <= 9
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'))
    })
}

/// `TAG-N-gHASH[-dirty]`, as `git describe --tags [--dirty]` prints it, read
/// as N commits after TAG; `None` when the text is not of that form.
fn git_describe(text: &str) -> Option<Result<semver::Version, String>> {
    let (rest, dirty) = match text.strip_suffix("-dirty") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let (rest, hash) = rest.rsplit_once("-g")?;
    let hash_ok = (4..=40).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit());
    let (tag, commits) = rest.rsplit_once('-')?;
    let commits_ok = !commits.is_empty()
        && commits.len() <= 9
        && commits.bytes().all(|b| b.is_ascii_digit())
        && !commits.starts_with('0');
    if !hash_ok || !commits_ok || tag.contains('+') {
        return None;
    }
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let mut version = match semver::Version::parse(&pad_short(tag)) {
        Ok(version) => version,
        Err(e) => return Some(Err(e.to_string())),
    };
    let pre = if version.pre.is_empty() {
        let Some(next) = version.patch.checked_add(1) else {
            return Some(Err(format!("the patch number of {tag} has no successor")));
        };
        version.patch = next;
        format!("dev.{commits}")
    } else {
        format!("{}.dev.{commits}", version.pre)
    };
    let build = if dirty {
        format!("g{hash}.dirty")
    } else {
        format!("g{hash}")
    };
    Some(
        semver::Prerelease::new(&pre)
            .and_then(|pre| semver::BuildMetadata::new(&build).map(|build| (pre, build)))
            .map(|(pre, build)| {
                version.pre = pre;
                version.build = build;
                version
            })
            .map_err(|e| e.to_string()),
    )
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
    fn git_describe_versions_come_after_their_tag() {
        let described = v("v1.2.3-4-gabc1234");
        assert_eq!(described.to_string(), "1.2.4-dev.4+gabc1234");
        assert!(described > v("1.2.3"));
        assert!(described < v("1.2.4"));
        assert!(described < v("v1.2.3-5-gdef5678"));
        assert!(v("v1.2.3-10-gabc1234") > v("v1.2.3-9-gabc1234"));
        assert_eq!(v("v1.2.3-4-gabc1234-dirty").to_string(), "1.2.4-dev.4+gabc1234.dirty");
        let candidate = v("v2.0.0-rc.1-3-g0123abcd");
        assert_eq!(candidate.to_string(), "2.0.0-rc.1.dev.3+g0123abcd");
        assert!(candidate > v("2.0.0-rc.1") && candidate < v("2.0.0-rc.2") && candidate < v("2.0.0"));
    }

    #[test]
    fn what_a_version_is_read_as_parses_again() {
        // Found by fuzzing: 62 characters that read as 65.
        let long = "v2.0.0-56789abcdef0123456789abcderc.1-3-g012345012345601234567";
        let error = Version::parse(long).unwrap_err();
        assert!(error.to_string().contains("once read as"), "{error}");
        let max = format!("v0.0.{}-1-gabcd", u64::MAX);
        assert!(Version::parse(&max).is_err(), "no patch after u64::MAX");
        for input in [
            "v1.2.3-4-gabc1234-dirty",
            "1",
            "v2.0.0-rc.1-3-g0123abcd",
            "v1.2.3-dirty",
        ] {
            let read = v(input);
            assert_eq!(Version::parse(&read.to_string()).unwrap().to_string(), read.to_string());
        }
    }

    #[test]
    fn dirty_and_short_versions_are_read_sensibly() {
        assert_eq!(v("v1.2.3-dirty").to_string(), "1.2.3+dirty");
        assert_eq!(v("v1.2.3-dirty"), v("1.2.3"));
        assert_eq!(v("1").to_string(), "1.0.0");
        assert_eq!(v("v1.2").to_string(), "1.2.0");
        assert_eq!(v("v1.2-4-gabc1234").to_string(), "1.2.1-dev.4+gabc1234");
        assert_eq!(Version::from_app_descriptor(" v5.5.1 \n").unwrap().to_string(), "5.5.1");
        // Not git describe: a semver pre-release stays one.
        assert!(v("1.2.3-4-beta").is_prerelease());
        assert!(v("1.2.3-4-beta") < v("1.2.3"));
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in [
            "",
            "1.2.3.4",
            "x1.2.3",
            "1.2.3 ",
            "../1.2.3",
            "1.2.3/..",
            "01.2.3",
            "01",
            "1.",
            ".1",
            "1..2",
            "vx-4-gabc1234",
            "1.2.x-4-gabc1234",
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
