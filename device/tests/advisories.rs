//! The advisory table (device/advisories.toml) and the matcher (keytally_device::advisory):
//! each row's models and firmware come out affected and their neighbours do not, boundaries
//! included; a key with unknown firmware is not guessed; the table parses and every row is
//! complete.

use keytally_device::advisory::{
    assess, parse_table, table, Applies, Assessment, KeyFacts, Series, UnknownReason,
};
use keytally_device::device_info::PerTransport;
use keytally_device::{Capabilities, DeviceInfo, FormFactor, KeyType, Version};

const ALL_APPS: Capabilities = Capabilities(0x0001 | 0x0002 | 0x0200 | 0x0010 | 0x0008 | 0x0020);
const FIDO_ONLY: Capabilities = Capabilities(0x0002 | 0x0200);
/// OTP + U2F: a YubiKey Edge.
const EDGE_APPS: Capabilities = Capabilities(0x0001 | 0x0002);

fn v(s: &str) -> Version {
    let p: Vec<u8> = s.split('.').map(|x| x.parse().unwrap()).collect();
    Version::new(p[0], p[1], p[2])
}

fn facts(series: Series, fw: &str, nfc: bool, ff: FormFactor, apps: Capabilities) -> KeyFacts {
    KeyFacts {
        series: Some(series),
        firmware: Some(v(fw)),
        nfc,
        form_factor: ff,
        apps: Some(apps),
    }
}

/// A plain key of a series: USB-A keychain, no NFC, every application the series has.
fn plain(series: Series, fw: &str) -> KeyFacts {
    let (ff, apps) = match series {
        Series::SecurityKey => (FormFactor::UsbAKeychain, FIDO_ONLY),
        Series::YubikeyBio => (FormFactor::UsbABio, FIDO_ONLY),
        Series::Neo | Series::Yubikey4 | Series::Yubikey4Fips => {
            (FormFactor::Unknown, ALL_APPS.without(Capabilities::FIDO2))
        }
        _ => (FormFactor::UsbAKeychain, ALL_APPS),
    };
    facts(series, fw, false, ff, apps)
}

/// A YubiKey 5 NFC (USB-A keychain with NFC).
fn yk5_nfc(fw: &str) -> KeyFacts {
    facts(
        Series::Yubikey5,
        fw,
        true,
        FormFactor::UsbAKeychain,
        ALL_APPS,
    )
}

/// `id -> "yes" | "if …"` for the advisories that apply; panics on an unknown assessment.
fn found(f: &KeyFacts) -> Vec<(String, String)> {
    match assess(f) {
        Assessment::Known(m) => m
            .into_iter()
            .map(|m| (m.id, m.applies.to_string()))
            .collect(),
        Assessment::Unknown(r) => panic!("unexpected unknown assessment: {r}"),
    }
}

fn has(f: &KeyFacts, id: &str) -> bool {
    found(f).iter().any(|(i, _)| i == id)
}

fn applies(f: &KeyFacts, id: &str) -> Option<String> {
    found(f).into_iter().find(|(i, _)| i == id).map(|(_, a)| a)
}

/// Asserts that advisory `id` applies to `k` as `want` (`yes` or `if …`).
fn assert_applies(k: &KeyFacts, id: &str, want: &str) {
    assert_eq!(applies(k, id).as_deref(), Some(want), "{id} on {k:?}");
}

fn assert_not_affected(id: &str, keys: &[KeyFacts]) {
    for k in keys {
        assert!(
            !has(k, id),
            "{id} should not apply to {k:?}, got {:?}",
            found(k)
        );
    }
}

#[test]
fn the_table_parses_and_every_row_is_complete() {
    let rows = table().expect("the embedded advisory table parses");
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    for id in [
        "YSA-2015-1",
        "YSA-2017-01",
        "YSA-2018-01",
        "YSA-2019-02",
        "YSA-2020-04",
        "YSA-2020-05",
        "YSA-2024-02",
        "YSA-2024-03",
        "YSA-2025-02",
    ] {
        assert!(ids.contains(&id), "{id} missing from the table");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "rows come out sorted by id");
    for r in rows {
        assert!(
            r.url
                .starts_with("https://www.yubico.com/support/security-advisories/")
                || r.url.starts_with("https://developers.yubico.com/"),
            "{}: {}",
            r.id,
            r.url
        );
        assert_eq!(r.published.len(), 10, "{}: published date", r.id);
        assert_eq!(r.ranges_read, "2026-12-02", "{}: ranges_read", r.id);
        assert!(
            !r.source.is_empty() && !r.applications.is_empty(),
            "{}",
            r.id
        );
        assert!(!r.affected.is_empty(), "{}: no ranges", r.id);
        for a in &r.affected {
            assert!(a.from < a.before, "{}: {} .. {}", r.id, a.from, a.before);
            assert!(!a.series.is_empty(), "{}", r.id);
        }
        assert_eq!(
            r.condition.is_some(),
            !r.condition_keys.is_empty(),
            "{}",
            r.id
        );
    }
    // What could not be read from a Yubico page is marked so.
    let unconfirmed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.confirmed)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        unconfirmed,
        ["YSA-2018-01", "YSA-2019-02", "YSA-2024-02", "YSA-2025-02"]
    );
}

/// For every range of every row, with a key the range is for: the lower bound and the last
/// version below the upper bound are affected; the upper bound and the version below the
/// lower bound are not, unless another range of the same row covers them.
#[test]
fn every_range_holds_at_its_boundaries() {
    fn prev(v: Version) -> Version {
        match (v.major, v.minor, v.patch) {
            (a, b, c) if c > 0 => Version::new(a, b, c - 1),
            (a, b, _) if b > 0 => Version::new(a, b - 1, 255),
            (a, _, _) => Version::new(a - 1, 255, 255),
        }
    }
    let rows = table().unwrap();
    let mut checked = 0;
    for row in rows {
        for range in &row.affected {
            for &series in &range.series {
                let ff = range
                    .form_factors
                    .as_ref()
                    .map_or(FormFactor::UsbAKeychain, |f| f[0]);
                let key = |fw: Version| KeyFacts {
                    series: Some(series),
                    firmware: Some(fw),
                    nfc: range.requires_nfc,
                    form_factor: ff,
                    apps: Some(ALL_APPS),
                };
                let other_covers = |fw: Version| {
                    row.affected
                        .iter()
                        .any(|r| !std::ptr::eq(r, range) && r.covers(series, fw, &key(fw)))
                };
                let hit = |fw: Version| match assess(&key(fw)) {
                    Assessment::Known(m) => m.iter().any(|m| m.id == row.id),
                    Assessment::Unknown(r) => panic!("{r}"),
                };
                assert!(
                    hit(range.from),
                    "{} {:?} lower bound {}",
                    row.id,
                    series,
                    range.from
                );
                assert!(
                    hit(prev(range.before)),
                    "{} {:?} below upper bound {}",
                    row.id,
                    series,
                    range.before
                );
                assert!(
                    !hit(range.before) || other_covers(range.before),
                    "{} {:?} upper bound {}",
                    row.id,
                    series,
                    range.before
                );
                let below = prev(range.from);
                assert!(
                    !hit(below) || other_covers(below),
                    "{} {:?} below lower bound {}",
                    row.id,
                    series,
                    range.from
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} ranges checked");
}

use Series::{
    Neo, SecurityKey as Sky, Yubikey4 as Yk4, Yubikey4Fips as Yk4Fips, Yubikey5 as Yk5,
    Yubikey5Cspn as Yk5Cspn, Yubikey5Fips as Yk5Fips, YubikeyBio as Bio,
};

/// Plain keys, as (series, firmware).
type Keys = &'static [(Series, &'static str)];

/// Per row: plain keys (series, firmware) it affects, and neighbours it does not — the
/// boundaries of each range, the version just outside them, and the series next to them.
/// Literal here, not derived from the data file, so a wrong range in the file fails.
#[rustfmt::skip]
const ROWS: &[(&str, Keys, Keys)] = &[
    ("YSA-2024-03",
     &[(Yk5, "5.0.0"), (Yk5, "5.4.3"), (Yk5, "5.6.255"), (Yk5Fips, "5.4.3"), (Yk5Cspn, "5.4.3"),
       (Sky, "5.1.2"), (Sky, "5.4.3"), (Bio, "5.5.6"), (Bio, "5.7.1")],
     &[(Yk5, "5.7.0"), (Yk5Fips, "5.7.0"), (Sky, "5.7.0"), (Bio, "5.7.2"), (Yk4, "4.3.7"),
       (Yk4Fips, "4.4.5"), (Neo, "3.4.3")]),
    ("YSA-2024-02",
     &[(Yk5, "5.0.0"), (Yk5, "5.6.255"), (Sky, "5.4.3"), (Yk5Fips, "5.4.3"), (Bio, "5.6.3")],
     &[(Yk5, "5.7.0"), (Bio, "5.6.4"), (Bio, "5.7.0"), (Yk4, "4.3.7")]),
    ("YSA-2025-02",
     &[(Yk5, "5.4.1"), (Yk5, "5.7.3"), (Yk5Fips, "5.7.3"), (Sky, "5.7.1"), (Bio, "5.7.3")],
     &[(Yk5, "5.4.0"), (Yk5, "5.7.4"), (Bio, "5.7.4"), (Yk4, "4.3.7")]),
    ("YSA-2020-05",
     &[(Yk5, "5.2.0"), (Yk5, "5.2.6")],
     &[(Yk5, "5.1.255"), (Yk5, "5.2.7"), (Yk5, "5.4.3"), (Sky, "5.2.4"), (Yk4, "4.3.7")]),
    ("YSA-2019-02",
     &[(Yk4Fips, "4.4.2"), (Yk4Fips, "4.4.4")],
     &[(Yk4Fips, "4.4.1"), (Yk4Fips, "4.4.5"), (Yk4, "4.3.7"), (Yk5Fips, "5.4.3")]),
    ("YSA-2017-01",
     &[(Yk4, "4.2.0"), (Yk4, "4.3.4")],
     &[(Yk4, "4.1.255"), (Yk4, "4.3.5"), (Yk4Fips, "4.4.5"), (Neo, "3.4.3"), (Yk5, "5.1.2")]),
    ("YSA-2015-1", &[(Neo, "3.4.3")], &[(Yk4, "4.3.7"), (Yk5, "5.4.3")]),
    ("YSA-2018-01", &[(Neo, "3.4.3")], &[(Yk4, "4.3.7"), (Sky, "5.4.3")]),
    // YubiKey 5 NFC only: a plain (no NFC) YubiKey 5 of an affected firmware is a neighbour.
    ("YSA-2020-04", &[], &[(Yk5, "5.2.4"), (Yk5, "5.3.1")]),
];

#[test]
fn each_row_affects_its_models_and_not_their_neighbours() {
    for (id, affected, neighbours) in ROWS {
        for (series, fw) in *affected {
            let k = plain(*series, fw);
            assert!(
                has(&k, id),
                "{id} should apply to {k:?}, got {:?}",
                found(&k)
            );
        }
        for (series, fw) in *neighbours {
            let k = plain(*series, fw);
            assert!(
                !has(&k, id),
                "{id} should not apply to {k:?}, got {:?}",
                found(&k)
            );
        }
    }
    let listed: Vec<&str> = ROWS.iter().map(|r| r.0).collect();
    for row in table().unwrap() {
        assert!(
            listed.contains(&row.id.as_str()),
            "{} has no test row",
            row.id
        );
    }
}

#[test]
fn ysa_2024_03_applies_to_fido_by_default_and_to_ec_keys_without_it() {
    let id = "YSA-2024-03";
    assert_applies(&plain(Yk5, "5.4.3"), id, "yes");
    let ccid = Capabilities::PIV.union(Capabilities::OPENPGP);
    let ccid_only = facts(Yk5, "5.4.3", false, FormFactor::UsbAKeychain, ccid);
    assert_applies(
        &ccid_only,
        id,
        "if ECDSA (EC) keys are used in PIV or OpenPGP",
    );
    let otp_only = facts(
        Yk5,
        "5.4.3",
        false,
        FormFactor::UsbAKeychain,
        Capabilities::OTP,
    );
    assert!(!has(&otp_only, id));
    // Without FIDO2, YSA-2025-02 does not concern a key either.
    assert!(!has(&ccid_only, "YSA-2025-02"));
    assert_applies(&plain(Yk5, "5.2.7"), "YSA-2024-02", "yes");
    assert_applies(&plain(Yk4Fips, "4.4.4"), "YSA-2019-02", "yes");
}

#[test]
fn ysa_2020_04_concerns_the_5_nfc_only() {
    let id = "YSA-2020-04";
    for fw in ["5.0.0", "5.2.6", "5.3.0", "5.3.1"] {
        assert!(has(&yk5_nfc(fw), id), "{fw}");
    }
    for fw in ["4.255.255", "5.2.7", "5.3.2", "5.4.3"] {
        assert!(!has(&yk5_nfc(fw), id), "{fw}");
    }
    // Neighbour models at an affected firmware: 5 Nano, 5C, 5C NFC, 5Ci, FIPS, Security Key NFC.
    let all = ALL_APPS;
    for k in [
        facts(Yk5, "5.2.4", false, FormFactor::UsbANano, all),
        facts(Yk5, "5.2.4", false, FormFactor::UsbCKeychain, all),
        facts(Yk5, "5.2.4", true, FormFactor::UsbCKeychain, all),
        facts(Yk5, "5.2.4", false, FormFactor::UsbCLightning, all),
        facts(Yk5Fips, "5.2.4", true, FormFactor::UsbAKeychain, all),
        facts(Sky, "5.2.4", true, FormFactor::UsbAKeychain, FIDO_ONLY),
        facts(Neo, "3.4.3", true, FormFactor::Unknown, all),
    ] {
        assert!(!has(&k, id), "{k:?}");
    }
    assert_applies(
        &yk5_nfc("5.2.4"),
        id,
        "if an OTP slot is configured and protected by an access code",
    );
    assert_applies(
        &plain(Yk5, "5.2.4"),
        "YSA-2020-05",
        "if the OpenPGP reset code retry counter is not zero",
    );
}

#[test]
fn ysa_2017_01_needs_piv_or_openpgp() {
    let id = "YSA-2017-01";
    // A YubiKey Edge (OTP + U2F) has neither.
    let edge = facts(Yk4, "4.3.1", false, FormFactor::Unknown, EDGE_APPS);
    assert!(!has(&edge, id));
    let roca = applies(&plain(Yk4, "4.3.1"), id).unwrap();
    assert!(
        roca.starts_with("if RSA keys were generated on the key"),
        "{roca}"
    );
}

#[test]
fn neo_applet_advisories_stay_conditional() {
    let neo = plain(Series::Neo, "3.4.3");
    let got = found(&neo);
    let ids: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ids, ["YSA-2015-1", "YSA-2018-01"]);
    assert!(got.iter().all(|(_, a)| a.starts_with("if ")), "{got:?}");
    assert_not_affected(
        "YSA-2015-1",
        &[
            plain(Series::Yubikey4, "4.3.7"),
            plain(Series::Yubikey5, "5.4.3"),
        ],
    );
    assert_not_affected(
        "YSA-2018-01",
        &[
            plain(Series::Yubikey4, "4.3.7"),
            plain(Series::SecurityKey, "5.4.3"),
        ],
    );
    // A NEO without the OATH applet is not concerned by YSA-2018-01.
    let no_oath = facts(
        Series::Neo,
        "3.4.3",
        true,
        FormFactor::Unknown,
        ALL_APPS.without(Capabilities::OATH),
    );
    assert!(!has(&no_oath, "YSA-2018-01") && has(&no_oath, "YSA-2015-1"));
}

#[test]
fn a_key_with_unknown_firmware_is_not_guessed() {
    for series in [
        Series::Neo,
        Series::Yubikey4,
        Series::Yubikey5,
        Series::SecurityKey,
        Series::YubikeyBio,
    ] {
        let k = KeyFacts {
            firmware: None,
            ..plain(series, "5.4.3")
        };
        assert_eq!(
            assess(&k),
            Assessment::Unknown(UnknownReason::FirmwareUnknown),
            "{series:?}"
        );
    }
    // Through identification: a DeviceInfo whose version was not read (0.0.0).
    let info = DeviceInfo::synthesized(Version::default(), Some(1), usb_caps(ALL_APPS));
    let k = KeyFacts::from_device_info(&info, Some(KeyType::Yk4));
    assert_eq!(k.firmware, None);
    assert_eq!(
        assess(&k),
        Assessment::Unknown(UnknownReason::FirmwareUnknown)
    );
}

#[test]
fn a_current_key_has_none() {
    for k in [
        plain(Series::Yubikey5, "5.7.4"),
        plain(Series::Yubikey5, "5.8.0"),
        plain(Series::SecurityKey, "5.7.4"),
        plain(Series::YubikeyBio, "5.7.4"),
        plain(Series::Yubikey4, "4.3.7"),
        plain(Series::Yubikey4Fips, "4.4.5"),
    ] {
        assert_eq!(assess(&k), Assessment::Known(vec![]), "{k:?}");
    }
    // A family no advisory names (YubiKey Standard) is known to have none.
    let info = DeviceInfo::synthesized(Version::new(2, 4, 3), Some(1), usb_caps(Capabilities::OTP));
    let k = KeyFacts::from_device_info(&info, Some(KeyType::Standard));
    assert_eq!(k.series, None);
    assert_eq!(assess(&k), Assessment::Known(vec![]));
}

fn usb_caps(apps: Capabilities) -> PerTransport {
    PerTransport {
        usb: Some(apps),
        nfc: None,
    }
}

fn info(version: &str, ff: FormFactor, nfc: bool, apps: Capabilities) -> DeviceInfo {
    let caps = PerTransport {
        usb: Some(apps),
        nfc: nfc.then_some(apps),
    };
    let mut info = DeviceInfo::synthesized(v(version), Some(12345678), caps);
    info.form_factor = ff;
    info
}

#[test]
fn series_and_facts_come_from_device_info() {
    // YubiKey 5 NFC 5.2.4: four advisories, sorted by id.
    let k = KeyFacts::from_device_info(
        &info("5.2.4", FormFactor::UsbAKeychain, true, ALL_APPS),
        Some(KeyType::Yk4),
    );
    assert_eq!(
        (k.series, k.nfc, k.apps),
        (Some(Series::Yubikey5), true, Some(ALL_APPS))
    );
    let ids: Vec<String> = found(&k).into_iter().map(|(i, _)| i).collect();
    assert_eq!(
        ids,
        ["YSA-2020-04", "YSA-2020-05", "YSA-2024-02", "YSA-2024-03"]
    );

    let mut fips = info("5.4.3", FormFactor::UsbCNano, false, ALL_APPS);
    fips.is_fips = true;
    assert_eq!(
        Series::of(&fips, Some(KeyType::Yk4)),
        Some(Series::Yubikey5Fips)
    );

    let mut sky = info("5.4.3", FormFactor::UsbAKeychain, true, FIDO_ONLY);
    sky.is_sky = true;
    assert_eq!(
        Series::of(&sky, Some(KeyType::Yk4)),
        Some(Series::SecurityKey)
    );
    assert_eq!(
        Series::of(
            &info("5.1.2", FormFactor::Unknown, false, FIDO_ONLY),
            Some(KeyType::Sky)
        ),
        Some(Series::SecurityKey)
    );

    // Over NFC (no PID): a FIDO-only key without serial before 5.2.8 is a Security Key NFC.
    let mut sky_nfc = info("5.1.2", FormFactor::UsbAKeychain, true, FIDO_ONLY);
    sky_nfc.serial = None;
    assert_eq!(Series::of(&sky_nfc, None), Some(Series::SecurityKey));
    sky_nfc.version = Version::new(5, 2, 8);
    assert_eq!(Series::of(&sky_nfc, None), Some(Series::Yubikey5));
    assert_eq!(
        Series::of(
            &info("5.1.2", FormFactor::UsbAKeychain, true, ALL_APPS),
            None
        ),
        Some(Series::Yubikey5)
    );

    let bio = info("5.6.3", FormFactor::UsbCBio, false, FIDO_ONLY);
    assert_eq!(
        Series::of(&bio, Some(KeyType::Yk4)),
        Some(Series::YubikeyBio)
    );

    let mut yk4_fips = info(
        "4.4.4",
        FormFactor::UsbANano,
        false,
        ALL_APPS.without(Capabilities::FIDO2),
    );
    yk4_fips.is_fips = true;
    assert_eq!(
        Series::of(&yk4_fips, Some(KeyType::Yk4)),
        Some(Series::Yubikey4Fips)
    );
    assert_eq!(
        Series::of(
            &info("4.3.4", FormFactor::Unknown, false, ALL_APPS),
            Some(KeyType::Yk4)
        ),
        Some(Series::Yubikey4)
    );

    // NEO by PID, and over NFC (no PID) by its 3.x firmware.
    let neo = info(
        "3.4.3",
        FormFactor::Unknown,
        true,
        ALL_APPS.without(Capabilities::FIDO2),
    );
    assert_eq!(Series::of(&neo, Some(KeyType::Neo)), Some(Series::Neo));
    assert_eq!(Series::of(&neo, None), Some(Series::Neo));
    assert_eq!(Series::of(&neo, Some(KeyType::Plus)), None);
}

#[test]
fn posture_settles_conditions() {
    let k = yk5_nfc("5.2.4");
    // A reset-code counter of 0 drops YSA-2020-05; no configured OTP slot drops YSA-2020-04.
    let settled = assess(&k).settle(|key| match key {
        "openpgp_reset_code_retries_nonzero" => Some(false),
        "otp_slot_configured" => Some(false),
        _ => None,
    });
    let ids: Vec<&str> = settled
        .matches()
        .unwrap()
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(ids, ["YSA-2024-02", "YSA-2024-03"]);

    // A non-zero counter turns YSA-2020-05 into yes; a configured slot with an unknown access
    // code leaves YSA-2020-04 open on the one key still unanswered.
    let settled = assess(&k).settle(|key| match key {
        "openpgp_reset_code_retries_nonzero" | "otp_slot_configured" => Some(true),
        _ => None,
    });
    let m = settled.matches().unwrap();
    let pgp = m.iter().find(|m| m.id == "YSA-2020-05").unwrap();
    assert_eq!(
        (&pgp.applies, pgp.open_conditions.len()),
        (&Applies::Yes, 0)
    );
    let otp = m.iter().find(|m| m.id == "YSA-2020-04").unwrap();
    assert!(matches!(otp.applies, Applies::If(_)));
    assert_eq!(otp.open_conditions, ["otp_access_code_set"]);

    // Nothing answered: nothing changes. An unknown assessment stays unknown.
    assert_eq!(assess(&k).settle(|_| None), assess(&k));
    let unknown = Assessment::Unknown(UnknownReason::FirmwareUnknown);
    assert_eq!(unknown.clone().settle(|_| Some(false)), unknown);
    // A "yes" is not dropped by an answer about some other key.
    let yes = assess(&plain(Series::Yubikey5, "5.7.3")).settle(|_| Some(false));
    assert_eq!(yes.matches().unwrap().len(), 1);
}

#[test]
fn the_shipped_file_round_trips_through_parse_table() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/advisories.toml")).unwrap();
    assert_eq!(parse_table(&text).unwrap(), table().unwrap());
}

#[test]
fn every_condition_key_is_either_settled_by_posture_or_said_not_read() {
    use keytally_device::advisory::{CONDITION_KEYS_FROM_POSTURE, CONDITION_KEYS_NOT_READ};
    let listed: Vec<&str> = CONDITION_KEYS_FROM_POSTURE
        .iter()
        .chain(CONDITION_KEYS_NOT_READ)
        .map(|(k, _)| *k)
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for row in table().unwrap() {
        for key in &row.condition_keys {
            assert!(
                listed.contains(&key.as_str()),
                "{}: condition key {key:?} is in neither list",
                row.id
            );
            used.insert(key.as_str());
        }
    }
    for key in &listed {
        assert!(used.contains(key), "{key:?} is listed but no row uses it");
    }
}

#[test]
fn a_posture_read_settles_what_it_read() {
    use keytally_device::advisory::posture_answer;
    use keytally_device::posture::Posture;
    let k = yk5_nfc("5.2.4");
    let ids = |a: &Assessment| -> Vec<(String, String)> {
        a.matches()
            .unwrap()
            .iter()
            .map(|m| (m.id.clone(), m.applies.to_string()))
            .collect()
    };
    // A reset-code counter of 0 and no configured OTP slot: both conditional advisories go.
    let clean = Posture {
        openpgp_pin_retries: Some([3, 0, 3]),
        otp_slots_configured: Some([false, false]),
        ..Posture::default()
    };
    let settled = assess(&k).settle_with_posture(&clean);
    assert_eq!(
        ids(&settled),
        [
            ("YSA-2024-02".to_string(), "yes".to_string()),
            ("YSA-2024-03".to_string(), "yes".to_string())
        ]
    );
    // A non-zero reset-code counter makes YSA-2020-05 certain; a configured slot leaves
    // YSA-2020-04 on its access code, which posture does not read.
    let used = Posture {
        openpgp_pin_retries: Some([3, 3, 3]),
        otp_slots_configured: Some([true, false]),
        ..Posture::default()
    };
    let settled = ids(&assess(&k).settle_with_posture(&used));
    assert!(
        settled.contains(&("YSA-2020-05".into(), "yes".into())),
        "{settled:?}"
    );
    assert!(
        settled.contains(&(
            "YSA-2020-04".into(),
            "if an OTP slot is configured and protected by an access code".into()
        )),
        "{settled:?}"
    );
    // Fields not read (an applet disabled or failed) settle nothing.
    assert_eq!(
        assess(&k).settle_with_posture(&Posture::default()),
        assess(&k)
    );
    assert_eq!(
        posture_answer(&Posture::default(), "oath_password_set"),
        None
    );
    let oath = Posture {
        oath_password_set: Some(false),
        ..Posture::default()
    };
    assert_eq!(posture_answer(&oath, "oath_password_set"), Some(false));
    assert_eq!(posture_answer(&used, "ec_keys_in_piv_or_openpgp"), None);
    // A NEO whose OATH applet has no password: YSA-2018-01 goes, YSA-2015-1 stays open.
    let neo = plain(Series::Neo, "3.4.3");
    let settled = ids(&assess(&neo).settle_with_posture(&oath));
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(settled[0].0, "YSA-2015-1");
}

/// The README's advisory table, as the data file gives it: one row per advisory (its id linked
/// to Yubico's page), the affected series and firmware ranges, when it matters, and whether
/// every range was read from a Yubico source.
fn readme_table() -> String {
    fn series_name(s: Series) -> &'static str {
        match s {
            Series::Neo => "YubiKey NEO",
            Series::Yubikey4 => "YubiKey 4",
            Series::Yubikey4Fips => "YubiKey FIPS (4 Series)",
            Series::Yubikey5 => "YubiKey 5",
            Series::Yubikey5Fips => "YubiKey 5 FIPS",
            Series::Yubikey5Cspn => "YubiKey 5 CSPN",
            Series::SecurityKey => "Security Key",
            Series::YubikeyBio => "YubiKey Bio",
        }
    }
    let mut out = String::from(
        "| advisory | published | title | series: affected firmware | applications | matters when | ranges confirmed |\n|---|---|---|---|---|---|---|\n",
    );
    for a in table().unwrap() {
        let ranges: Vec<String> = a
            .affected
            .iter()
            .map(|r| {
                let series: Vec<&str> = r.series.iter().map(|s| series_name(*s)).collect();
                let mut only = Vec::new();
                if r.requires_nfc {
                    only.push("with NFC".to_string());
                }
                if let Some(ffs) = &r.form_factors {
                    let names: Vec<&str> = ffs
                        .iter()
                        .map(|f| match f {
                            FormFactor::UsbAKeychain => "USB-A keychain",
                            FormFactor::UsbANano => "USB-A nano",
                            FormFactor::UsbCKeychain => "USB-C keychain",
                            FormFactor::UsbCNano => "USB-C nano",
                            FormFactor::UsbCLightning => "USB-C and Lightning",
                            FormFactor::UsbABio => "USB-A Bio",
                            FormFactor::UsbCBio => "USB-C Bio",
                            FormFactor::Unknown => "unknown form factor",
                        })
                        .collect();
                    only.push(names.join(", "));
                }
                let only = if only.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", only.join(", "))
                };
                format!(
                    "{}{only}: {} to before {}",
                    series.join(", "),
                    r.from,
                    r.before
                )
            })
            .collect();
        let when = match (&a.condition, a.unconditional_with.is_empty()) {
            (None, _) => "always".to_string(),
            (Some(c), true) => c.clone(),
            (Some(c), false) => format!(
                "always on a key with {}; otherwise if {c}",
                a.unconditional_with.join(" or ")
            ),
        };
        let confirmed = if a.confirmed {
            "yes"
        } else {
            "no (see `source` in the data file)"
        };
        out.push_str(&format!(
            "| [{}]({}) | {} | {} | {} | {} | {} | {} |\n",
            a.id,
            a.url,
            a.published,
            a.title,
            ranges.join("; "),
            a.applications.join(", "),
            when,
            confirmed
        ));
    }
    out
}

/// README.md's advisory table is the data file's: this fails when either changes alone, and
/// prints the table to paste.
#[test]
fn the_readme_table_matches_the_data_file() {
    const BEGIN: &str = "<!-- advisory table: generated from device/advisories.toml; checked by device/tests/advisories.rs -->\n";
    const END: &str = "<!-- end of the advisory table -->";
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let want = readme_table();
    let Some(shown) = readme
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(table, _)| table)
    else {
        panic!("README.md has no advisory table between\n{BEGIN}and\n{END}\nHere it is:\n{want}");
    };
    assert!(
        shown == want,
        "README.md's advisory table differs from device/advisories.toml; the table should be:\n{want}"
    );
}
