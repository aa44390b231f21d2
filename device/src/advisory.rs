//! Which Yubico security advisories concern a key, from its series and firmware.
//!
//! The advisories live in one hand-maintained data file, `device/advisories.toml`, embedded at
//! build time and parsed once, at first use ([`table`]); `build.rs` embeds it in JSON syntax,
//! since parsing the TOML was a third of the instructions of a `keytally scan`.
//! [`KeyFacts::from_device_info`] turns what identification read into the facts the table is
//! matched on (series, firmware, NFC, form factor, applications); [`assess`] returns the advisories that apply, sorted by id, each
//! `yes` or `if <condition>`. A key whose firmware is unknown is never guessed:
//! [`Assessment::Unknown`]. [`Assessment::settle`] lets a later posture read turn a condition
//! into `yes` or drop the advisory; [`Assessment::settle_with_posture`] does so with what
//! [`crate::posture`] read ([`posture_answer`] says which condition keys a posture settles).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::identify::nfc_key_type;
use crate::posture::Posture;
use crate::{Capabilities, DeviceInfo, FormFactor, Identified, KeyType, Transport, Version};

/// The data file, as shipped: `advisories.toml` in JSON syntax (see `build.rs`).
const DATA_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/advisories.json"));

/// A YubiKey product series, as Yubico's advisories name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Series {
    /// YubiKey NEO (firmware 3.x).
    Neo,
    /// YubiKey 4 Series (4, 4 Nano, 4C, 4C Nano, Edge).
    #[serde(rename = "yubikey-4")]
    Yubikey4,
    /// YubiKey FIPS (4 Series).
    #[serde(rename = "yubikey-4-fips")]
    Yubikey4Fips,
    /// YubiKey 5 Series (also YubiKey 5 CSPN keys: DeviceInfo carries no CSPN flag).
    #[serde(rename = "yubikey-5")]
    Yubikey5,
    /// YubiKey 5 FIPS Series.
    #[serde(rename = "yubikey-5-fips")]
    Yubikey5Fips,
    /// YubiKey 5 CSPN Series. Never derived from DeviceInfo; rows name it for completeness.
    #[serde(rename = "yubikey-5-cspn")]
    Yubikey5Cspn,
    /// Security Key Series (Security Key by Yubico, Security Key NFC, Enterprise Edition).
    SecurityKey,
    /// YubiKey Bio Series (FIDO Edition and Multi-protocol Edition).
    YubikeyBio,
}

impl Series {
    /// The series of an identified key, derived the way ykman names keys; `None` for families
    /// no advisory names (YubiKey Standard, YubiKey Plus, firmware 1.x/2.x).
    ///
    /// `key_type` is the family from the USB PID (`None` over NFC). A key whose firmware was
    /// not read (0.0.0) still gets a series when its PID says which.
    pub fn of(info: &DeviceInfo, key_type: Option<KeyType>) -> Option<Series> {
        let v = info.version;
        // Over NFC (no PID) the family is the one identify's product name guesses.
        match key_type.unwrap_or_else(|| nfc_key_type(info)) {
            KeyType::Neo => return Some(Series::Neo),
            KeyType::Sky => return Some(Series::SecurityKey),
            KeyType::Standard | KeyType::Plus => return None,
            KeyType::Yk4 => {}
        }
        if info.form_factor.is_bio() {
            return Some(Series::YubikeyBio);
        }
        if info.is_sky {
            return Some(Series::SecurityKey);
        }
        match v.major {
            4 if info.is_fips => Some(Series::Yubikey4Fips),
            4 => Some(Series::Yubikey4),
            5.. if info.is_fips => Some(Series::Yubikey5Fips),
            5.. => Some(Series::Yubikey5),
            _ => None,
        }
    }

    /// The name in the data file, e.g. `yubikey-5-fips`.
    pub fn as_str(self) -> &'static str {
        match self {
            Series::Neo => "neo",
            Series::Yubikey4 => "yubikey-4",
            Series::Yubikey4Fips => "yubikey-4-fips",
            Series::Yubikey5 => "yubikey-5",
            Series::Yubikey5Fips => "yubikey-5-fips",
            Series::Yubikey5Cspn => "yubikey-5-cspn",
            Series::SecurityKey => "security-key",
            Series::YubikeyBio => "yubikey-bio",
        }
    }
}

/// What the matcher needs to know about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// The product series; `None` when no advisory's series fits (or it could not be told).
    pub series: Option<Series>,
    /// The firmware version; `None` when it was not read. Such a key is never matched.
    pub firmware: Option<Version>,
    /// Whether the key has an NFC interface.
    pub nfc: bool,
    /// The physical shape; `Unknown` is not excluded by a row's form-factor filter.
    pub form_factor: FormFactor,
    /// The applications the key supports over USB or NFC; `None` when they were not read.
    pub apps: Option<Capabilities>,
}

impl KeyFacts {
    /// The facts of a key as identification returned it.
    pub fn from_identified(key: &Identified) -> Self {
        Self::from_device_info(&key.info, key.key_type)
    }

    /// The facts of an identified key (its DeviceInfo after fix-ups, and the PID's family).
    pub fn from_device_info(info: &DeviceInfo, key_type: Option<KeyType>) -> Self {
        let firmware = (info.version != Version::default()).then_some(info.version);
        let apps = info
            .supported
            .usb
            .unwrap_or_default()
            .union(info.supported.nfc.unwrap_or_default());
        Self {
            series: Series::of(info, key_type),
            firmware,
            nfc: info.has_transport(Transport::Nfc),
            form_factor: info.form_factor,
            apps: (!apps.is_empty()).then_some(apps),
        }
    }
}

/// Whether an advisory applies to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applies {
    /// It applies as the key stands.
    Yes,
    /// It applies if the condition (in words) holds; posture may settle it later.
    If(String),
}

impl fmt::Display for Applies {
    /// The record's form: `yes` or `if <condition in words>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applies::Yes => f.write_str("yes"),
            Applies::If(words) => write!(f, "if {words}"),
        }
    }
}

/// One advisory that applies to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The advisory id, e.g. `YSA-2024-03`.
    pub id: String,
    /// The URL of Yubico's advisory.
    pub url: String,
    /// `Yes`, or `If` a condition holds.
    pub applies: Applies,
    /// The condition keys not yet settled (empty when `applies` is `Yes`).
    pub open_conditions: Vec<String>,
}

/// Why a key's advisories could not be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownReason {
    /// The key's firmware version was not read; no range is guessed.
    FirmwareUnknown,
    /// The embedded advisory table did not parse or failed its checks (a build defect).
    TableUnreadable(String),
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownReason::FirmwareUnknown => f.write_str("firmware version unknown"),
            UnknownReason::TableUnreadable(e) => write!(f, "advisory table unreadable: {e}"),
        }
    }
}

/// The advisories of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// The advisories that apply, sorted by id; empty when none.
    Known(Vec<Match>),
    /// They could not be told; nothing is guessed.
    Unknown(UnknownReason),
}

impl Assessment {
    /// Settles open conditions with what posture read: `answer(key)` is `Some(true)` when the
    /// condition key holds, `Some(false)` when it does not, `None` when it is not known.
    ///
    /// An advisory with any condition key answered `false` is dropped; one whose keys all hold
    /// becomes `Yes`; otherwise it stays `If`, with the answered keys removed from
    /// `open_conditions`.
    pub fn settle(self, answer: impl Fn(&str) -> Option<bool>) -> Assessment {
        let matches = match self {
            Assessment::Known(matches) => matches,
            unknown => return unknown,
        };
        let settled = matches
            .into_iter()
            .filter_map(|mut m| {
                if m.applies == Applies::Yes {
                    return Some(m);
                }
                let mut open = Vec::new();
                for key in m.open_conditions.drain(..) {
                    match answer(&key) {
                        Some(false) => return None,
                        Some(true) => {}
                        None => open.push(key),
                    }
                }
                if open.is_empty() {
                    m.applies = Applies::Yes;
                }
                m.open_conditions = open;
                Some(m)
            })
            .collect();
        Assessment::Known(settled)
    }

    /// [`Assessment::settle`] with what a posture read found ([`posture_answer`]).
    pub fn settle_with_posture(self, posture: &Posture) -> Assessment {
        self.settle(|key| posture_answer(posture, key))
    }

    /// The matches, or `None` when the assessment is unknown.
    pub fn matches(&self) -> Option<&[Match]> {
        match self {
            Assessment::Known(m) => Some(m),
            Assessment::Unknown(_) => None,
        }
    }
}

/// The condition keys of the table that a posture read settles, with the posture field that
/// does; every other key ([`CONDITION_KEYS_NOT_READ`]) stays open whatever posture says.
pub const CONDITION_KEYS_FROM_POSTURE: &[(&str, &str)] = &[
    (
        "otp_slot_configured",
        "otpSlotsConfigured: slot 1 or slot 2 configured",
    ),
    (
        "openpgp_reset_code_retries_nonzero",
        "openpgpPinRetries: the reset code's tries (second of three) are not 0",
    ),
    ("oath_password_set", "oathPasswordSet"),
];

/// The condition keys no read of keytally's settles (it would take a PIN, a write, or a read
/// keytally does not do), with why.
pub const CONDITION_KEYS_NOT_READ: &[(&str, &str)] = &[
    ("otp_access_code_set", "the OTP status bytes do not say whether a slot has an access code"),
    ("ec_keys_in_piv_or_openpgp", "which algorithms PIV and OpenPGP keys use is not part of posture"),
    ("rsa_keys_generated_on_key", "whether an RSA key was generated on the key or imported cannot be read"),
    ("neo_openpgp_applet_before_1_0_10", "the NEO's OpenPGP applet version is not read"),
    ("neo_oath_applet_version_affected", "the NEO's OATH applet version is not read (and the affected versions are not in the table)"),
];

/// What a posture read says of one condition key: `Some(true)` it holds, `Some(false)` it
/// does not, `None` the posture does not say (a field not read, or a key posture cannot
/// settle; see [`CONDITION_KEYS_FROM_POSTURE`]).
pub fn posture_answer(posture: &Posture, condition_key: &str) -> Option<bool> {
    match condition_key {
        "otp_slot_configured" => posture.otp_slots_configured.map(|[one, two]| one || two),
        "openpgp_reset_code_retries_nonzero" => posture
            .openpgp_pin_retries
            .map(|[_, reset_code, _]| reset_code != 0),
        "oath_password_set" => posture.oath_password_set,
        _ => None,
    }
}

/// One row of the advisory table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advisory {
    /// The advisory id, e.g. `YSA-2024-03`.
    pub id: String,
    /// The advisory's title, in short.
    pub title: String,
    /// The published date, `YYYY-MM-DD`.
    pub published: String,
    /// The URL of Yubico's advisory.
    pub url: String,
    /// The applications concerned, in words.
    pub applications: Vec<String>,
    /// The key must support at least one of these applications (`OTP`, `U2F`, `FIDO2`, `PIV`,
    /// `OPENPGP`, `OATH`) for the row to apply; empty = no filter.
    #[serde(default)]
    pub needs_any_app: Vec<String>,
    /// With any of these applications the advisory applies with no condition.
    #[serde(default)]
    pub unconditional_with: Vec<String>,
    /// When the advisory matters, in words; `None` = always.
    #[serde(default)]
    pub condition: Option<String>,
    /// The machine form of `condition`: keys posture can settle; all must hold.
    #[serde(default)]
    pub condition_keys: Vec<String>,
    /// The date the ranges were read from the source, `YYYY-MM-DD`.
    pub ranges_read: String,
    /// Whether every range was read from a Yubico source.
    pub confirmed: bool,
    /// What was read, where.
    pub source: String,
    /// The affected series and firmware ranges.
    pub affected: Vec<AffectedRange>,
}

/// Series and a firmware range an advisory affects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffectedRange {
    /// The series this range is for.
    pub series: Vec<Series>,
    /// The first affected firmware (inclusive).
    #[serde(deserialize_with = "de_version")]
    pub from: Version,
    /// The first firmware no longer affected (exclusive).
    #[serde(deserialize_with = "de_version")]
    pub before: Version,
    /// Only keys with NFC.
    #[serde(default)]
    pub requires_nfc: bool,
    /// Only these form factors (a key's `Unknown` form factor is not excluded); `None` = all.
    #[serde(default, deserialize_with = "de_form_factors")]
    pub form_factors: Option<Vec<FormFactor>>,
}

impl AffectedRange {
    /// Whether this range covers the key.
    pub fn covers(&self, series: Series, firmware: Version, facts: &KeyFacts) -> bool {
        self.series.contains(&series)
            && self.from <= firmware
            && firmware < self.before
            && (!self.requires_nfc || facts.nfc)
            && self.form_factors.as_ref().is_none_or(|ffs| {
                facts.form_factor == FormFactor::Unknown || ffs.contains(&facts.form_factor)
            })
    }
}

impl Advisory {
    /// Whether, and how, this advisory applies to the key; `None` when it does not.
    /// The caller has checked that the firmware is known.
    fn applies_to(&self, series: Series, firmware: Version, facts: &KeyFacts) -> Option<Match> {
        if !self
            .affected
            .iter()
            .any(|r| r.covers(series, firmware, facts))
        {
            return None;
        }
        if let Some(apps) = facts.apps {
            if !self.needs_any_app.is_empty() && !apps.intersects(app_caps(&self.needs_any_app)) {
                return None;
            }
        }
        let unconditional = !self.unconditional_with.is_empty()
            && facts
                .apps
                .is_none_or(|apps| apps.intersects(app_caps(&self.unconditional_with)));
        let (applies, open_conditions) = match &self.condition {
            Some(words) if !unconditional => {
                (Applies::If(words.clone()), self.condition_keys.clone())
            }
            _ => (Applies::Yes, Vec::new()),
        };
        Some(Match {
            id: self.id.clone(),
            url: self.url.clone(),
            applies,
            open_conditions,
        })
    }

    /// Checks one row; the message names the row and the fault.
    fn check(&self) -> Result<(), String> {
        let fail = |what: &str| Err(format!("{}: {what}", self.id));
        if self.id.is_empty() || self.title.is_empty() || self.source.is_empty() {
            return fail("id, title and source must not be empty");
        }
        if !(self.url.starts_with("https://www.yubico.com/")
            || self.url.starts_with("https://developers.yubico.com/"))
        {
            return fail("url must be a https Yubico page");
        }
        if !is_date(&self.published) || !is_date(&self.ranges_read) {
            return fail("published and ranges_read must be YYYY-MM-DD");
        }
        if self.applications.is_empty() {
            return fail("applications must not be empty");
        }
        for app in self.needs_any_app.iter().chain(&self.unconditional_with) {
            if app_cap(app).is_none() {
                return fail(&format!("unknown application {app:?}"));
            }
        }
        if self.condition.is_some() == self.condition_keys.is_empty() {
            return fail("condition and condition_keys go together");
        }
        if !self.unconditional_with.is_empty() && self.condition.is_none() {
            return fail("unconditional_with needs a condition for the other keys");
        }
        if self.affected.is_empty() {
            return fail("no affected range");
        }
        for r in &self.affected {
            if r.series.is_empty() {
                return fail("a range without series");
            }
            if r.from >= r.before {
                return fail(&format!("range {} .. {} is empty", r.from, r.before));
            }
        }
        Ok(())
    }
}

/// The advisory table, parsed and checked at first use.
///
/// Fails only if the embedded data file is broken, which the crate's tests rule out.
pub fn table() -> Result<&'static [Advisory], &'static str> {
    static TABLE: OnceLock<Result<Vec<Advisory>, String>> = OnceLock::new();
    match TABLE.get_or_init(|| parse_rows(serde_json::from_str::<TableFile>(DATA_JSON).map_err(|e| e.to_string()))) {
        Ok(rows) => Ok(rows),
        Err(e) => Err(e),
    }
}

/// Parses and checks a table in the data file's format: ids unique, every row's checks pass,
/// rows sorted by id.
pub fn parse_table(text: &str) -> Result<Vec<Advisory>, String> {
    parse_rows(toml::from_str::<TableFile>(text).map_err(|e| e.to_string()))
}

/// The data file's layout, in whichever syntax.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    advisory: Vec<Advisory>,
}

/// [`parse_table`] after the parse: the checks and the order.
fn parse_rows(file: Result<TableFile, String>) -> Result<Vec<Advisory>, String> {
    let mut rows = file?.advisory;
    let mut ids = BTreeSet::new();
    for row in &rows {
        row.check()?;
        if !ids.insert(row.id.as_str()) {
            return Err(format!("{}: listed twice", row.id));
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

/// The advisories that apply to a key, sorted by id; [`Assessment::Unknown`] when its firmware
/// is unknown (nothing is guessed) or the table is unreadable.
pub fn assess(facts: &KeyFacts) -> Assessment {
    let rows = match table() {
        Ok(rows) => rows,
        Err(e) => return Assessment::Unknown(UnknownReason::TableUnreadable(e.to_string())),
    };
    assess_with(rows, facts)
}

/// [`assess`] against a given table (rows as [`parse_table`] returns them).
pub fn assess_with(rows: &[Advisory], facts: &KeyFacts) -> Assessment {
    let Some(firmware) = facts.firmware else {
        return Assessment::Unknown(UnknownReason::FirmwareUnknown);
    };
    let Some(series) = facts.series else {
        return Assessment::Known(Vec::new());
    };
    let mut matches: Vec<Match> = rows
        .iter()
        .filter_map(|row| row.applies_to(series, firmware, facts))
        .collect();
    matches.sort_by(|a, b| a.id.cmp(&b.id));
    Assessment::Known(matches)
}

fn app_cap(name: &str) -> Option<Capabilities> {
    Some(match name {
        "OTP" => Capabilities::OTP,
        "U2F" => Capabilities::U2F,
        "FIDO2" => Capabilities::FIDO2,
        "PIV" => Capabilities::PIV,
        "OPENPGP" => Capabilities::OPENPGP,
        "OATH" => Capabilities::OATH,
        _ => return None,
    })
}

fn app_caps(names: &[String]) -> Capabilities {
    names
        .iter()
        .filter_map(|n| app_cap(n))
        .fold(Capabilities::NONE, Capabilities::union)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && matches!(s[5..7].parse::<u8>(), Ok(1..=12))
        && matches!(s[8..10].parse::<u8>(), Ok(1..=31))
}

fn parse_version(s: &str) -> Option<Version> {
    let mut parts = s.split('.');
    let v = Version::new(
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(v)
}

fn de_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
    let s = String::deserialize(d)?;
    parse_version(&s).ok_or_else(|| serde::de::Error::custom(format!("not a version a.b.c: {s:?}")))
}

fn de_form_factors<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<FormFactor>>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| {
            Ok(match n.as_str() {
                "usb-a-keychain" => FormFactor::UsbAKeychain,
                "usb-a-nano" => FormFactor::UsbANano,
                "usb-c-keychain" => FormFactor::UsbCKeychain,
                "usb-c-nano" => FormFactor::UsbCNano,
                "usb-c-lightning" => FormFactor::UsbCLightning,
                "usb-a-bio" => FormFactor::UsbABio,
                "usb-c-bio" => FormFactor::UsbCBio,
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "unknown form factor {other:?}"
                    )))
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_dates_parse_strictly() {
        assert_eq!(parse_version("5.7.10"), Some(Version::new(5, 7, 10)));
        assert_eq!(parse_version("5.7"), None);
        assert_eq!(parse_version("5.7.1.2"), None);
        assert_eq!(parse_version("5.x.1"), None);
        assert!(is_date("2026-12-02"));
        assert!(!is_date("2026-13-02"));
        assert!(!is_date("2026-1-02"));
        assert!(!is_date("02.12.2026"));
    }

    #[test]
    fn a_broken_row_is_refused_with_its_id() {
        let bad = r#"
[[advisory]]
id = "YSA-X"
title = "t"
published = "2020-01-01"
url = "https://www.yubico.com/x"
applications = ["OTP"]
ranges_read = "2026-12-02"
confirmed = true
source = "s"
  [[advisory.affected]]
  series = ["yubikey-5"]
  from = "5.2.7"
  before = "5.2.7"
"#;
        let err = parse_table(bad).unwrap_err();
        assert!(err.starts_with("YSA-X:") && err.contains("empty"), "{err}");
        let unknown_series = bad.replace("yubikey-5\"]", "yubikey-6\"]");
        assert!(parse_table(&unknown_series).is_err());
        let not_yubico = bad.replace("https://www.yubico.com/x", "https://example.com/x");
        assert!(parse_table(&not_yubico).unwrap_err().contains("url"));
    }
}
