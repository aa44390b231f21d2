//! Firmware versions (`major.minor.patch`) and the version qualifier of pre-release builds.

use std::fmt;

/// A three-part firmware version, ordered the way firmware gates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Patch level.
    pub patch: u8,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Self { major, minor, patch }
    }

    /// Three raw bytes `major minor patch`, as tags 0x05, 0x20 and 0x21 carry them.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            [major, minor, patch] => Some(Self::new(*major, *minor, *patch)),
            _ => None,
        }
    }

    /// Finds the first `d.d.d` in a text such as the management applet's SELECT answer.
    ///
    /// ykman's pattern is `\b(\d+).(\d).(\d)\b`; this accepts any number of digits in each part,
    /// which is what newer firmware ("5.7.10") needs.
    pub fn find_in_text(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
                if let Some(v) = Self::parse_at(&text[i..]) {
                    return Some(v);
                }
            }
            i += 1;
        }
        None
    }

    fn parse_at(s: &str) -> Option<Self> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let mut parts = s[..end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        Some(Self::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The kind of build a version qualifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseType {
    /// An alpha build.
    Alpha,
    /// A beta build.
    Beta,
    /// A release build.
    Final,
}

impl ReleaseType {
    /// The release type from tag 0x19's type byte (0 alpha, 1 beta, 2 final).
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Alpha),
            1 => Some(Self::Beta),
            2 => Some(Self::Final),
            _ => None,
        }
    }

    /// `alpha`, `beta` or `final`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alpha => "alpha",
            Self::Beta => "beta",
            Self::Final => "final",
        }
    }
}

/// Tag 0x19: the real version of a pre-release build, its release type and iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionQualifier {
    /// The build's real version.
    pub version: Version,
    /// Alpha, beta or final.
    pub release: ReleaseType,
    /// The build iteration (0 for a final build).
    pub iteration: u32,
}

impl VersionQualifier {
    /// The qualifier of a plain release build.
    pub fn final_of(version: Version) -> Self {
        Self { version, release: ReleaseType::Final, iteration: 0 }
    }
}

impl fmt::Display for VersionQualifier {
    /// `5.7.8.beta.233`, the form ykman prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.version, self.release.as_str(), self.iteration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_version_in_select_text() {
        assert_eq!(Version::find_in_text("5.7.0"), Some(Version::new(5, 7, 0)));
        assert_eq!(
            Version::find_in_text("Virtual mgr - FW version 5.4.3"),
            Some(Version::new(5, 4, 3))
        );
        assert_eq!(Version::find_in_text("5.7.10"), Some(Version::new(5, 7, 10)));
        assert_eq!(Version::find_in_text("no version"), None);
        assert_eq!(Version::find_in_text("1.2"), None);
    }

    #[test]
    fn orders_like_firmware_gates() {
        assert!(Version::new(4, 4, 0) <= Version::new(4, 4, 5));
        assert!(Version::new(4, 4, 5) < Version::new(4, 5, 0));
        assert!(Version::new(5, 2, 3) < Version::new(5, 2, 4));
    }
}
