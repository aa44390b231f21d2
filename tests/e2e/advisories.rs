//! Security advisories end to end (issue 13 §1): virtual keys on a real pcscd (vpcd), the
//! freshly built `keytally`, and the sandbox server. A key's `scan --json` record carries the
//! advisories the table (device/advisories.toml) gives its series and firmware, with their
//! URLs; the table names them; `sync --once` delivers them to the server.


use keytally_virtual_key::PcscLab;
use serde_json::{json, Value};

#[path = "../support/mod.rs"]
mod support;

use support::{insert_preset, keytally_in_lab, lab};

fn url(id: &str) -> String {
    format!("https://www.yubico.com/support/security-advisories/{}/", id.to_lowercase())
}

/// `observation.advisories` as the table gives it for unconditional matches.
fn certain(ids: &[&str]) -> Value {
    Value::Array(ids.iter().map(|id| json!({"id": id, "url": url(id), "applies": "yes"})).collect())
}

fn scan(lab: &PcscLab, args: &[&str]) -> String {
    let state = tempfile::tempdir().unwrap();
    let out = keytally_in_lab(lab, state.path(), &[&["scan"], args].concat());
    assert!(out.status.success(), "keytally scan: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The one record `scan --json` prints for the key on the lab's reader.
fn record_of(lab: &PcscLab, preset: &str) -> Value {
    let card = insert_preset(lab, preset);
    let records: Vec<Value> = serde_json::from_str(&scan(lab, &["--json"])).unwrap();
    card.remove().unwrap();
    assert_eq!(records.len(), 1, "{preset}: {records:#?}");
    records.into_iter().next().unwrap()
}

#[test]
fn each_model_carries_the_advisories_its_firmware_has() {
    let Some(lab) = lab() else { return };
    // 5.4.3 (YubiKey 5 NFC, Security Key NFC): EUCLEAK, the FIDO2 listing and the PIN/UV
    // protocol advisories, each unconditional (FIDO is enabled), with Yubico's URL.
    for preset in ["yk5nfc", "skynfc"] {
        let r = record_of(&lab, preset);
        assert_eq!(r["observation"]["advisories"], certain(&["YSA-2024-02", "YSA-2024-03", "YSA-2025-02"]), "{preset}");
    }
    // 5.7.1 (YubiKey 5 Nano): only the PIN/UV protocol one (fixed in 5.7.4); Bio 5.7.2: the
    // same (EUCLEAK was fixed in 5.7.2 for Bio); 5.7.4 (YubiKey 5C NFC) and 4.3.7 (after
    // ROCA's 4.3.5): none, an empty list rather than null.
    assert_eq!(record_of(&lab, "yk5nano")["observation"]["advisories"], certain(&["YSA-2025-02"]));
    assert_eq!(record_of(&lab, "bio")["observation"]["advisories"], certain(&["YSA-2025-02"]));
    assert_eq!(record_of(&lab, "yk5cnfc")["observation"]["advisories"], json!([]));
    assert_eq!(record_of(&lab, "yk4")["observation"]["advisories"], json!([]));
    // A NEO: the applet advisories depend on applet versions keytally does not read, so they
    // stay conditional ("if …"), never a plain "yes".
    let neo = record_of(&lab, "neo");
    let neo = neo["observation"]["advisories"].as_array().unwrap();
    assert_eq!(neo.iter().map(|a| a["id"].as_str().unwrap()).collect::<Vec<_>>(), ["YSA-2015-1", "YSA-2018-01"]);
    for a in neo {
        assert!(a["applies"].as_str().unwrap().starts_with("if "), "{a}");
    }
}

#[test]
fn the_table_names_the_ids() {
    let Some(lab) = lab() else { return };
    let table_of = |preset| {
        let card = insert_preset(&lab, preset);
        let table = scan(&lab, &[]);
        card.remove().unwrap();
        println!("{table}");
        table
    };
    let table = table_of("yk5nfc");
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.ends_with("  ADVISORIES") && header.contains("NFC ENABLED "), "the last column: {table}");
    let row = lines.next().unwrap();
    let column = header.find("ADVISORIES").unwrap();
    assert_eq!(row.get(column..), Some("YSA-2024-02,YSA-2024-03,YSA-2025-02"), "{table}");
    let table = table_of("yk5cnfc");
    assert!(table.lines().nth(1).unwrap().ends_with("  none"), "{table}");
    let table = table_of("neo");
    assert!(table.lines().nth(1).unwrap().ends_with("  YSA-2015-1 (if),YSA-2018-01 (if)"), "{table}");
}

#[test]
fn sync_once_delivers_them_to_the_server() {
    let Some(lab) = lab() else { return };
    let setup = support::setup("");
    let card = insert_preset(&lab, "yk5nfc");
    let out = setup.keytally(&["sync", "--once"]).envs(lab.env()).output().unwrap();
    card.remove().unwrap();
    assert!(out.status.success(), "sync --once: {}", String::from_utf8_lossy(&out.stderr));
    let stored = setup.sb.store().device("12345678").expect("the key reached the server");
    assert_eq!(stored["observation"]["advisories"], certain(&["YSA-2024-02", "YSA-2024-03", "YSA-2025-02"]));
}

/// A YubiKey 5 NFC with firmware 5.2.4 (the range of the OTP access-code and OpenPGP
/// reset-code advisories) and the given posture.
fn yk5nfc_5_2_4(posture: keytally_virtual_key::Posture) -> keytally_virtual_key::KeyModel {
    let mut model = keytally_virtual_key::KeyModel::preset("yk5nfc").unwrap().with_posture(posture);
    model.version = keytally_virtual_key::model::Version::new(5, 2, 4);
    model
}

/// `(id, applies)` of each entry of the record `scan --json ARGS` prints for `model`.
fn advisories_with(lab: &PcscLab, model: keytally_virtual_key::KeyModel, args: &[&str]) -> Vec<(String, String)> {
    let card = support::insert(lab, model);
    let records: Vec<Value> = serde_json::from_str(&scan(lab, &[&["--json"], args].concat())).unwrap();
    card.remove().unwrap();
    records[0]["observation"]["advisories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_string(), a["applies"].as_str().unwrap().to_string()))
        .collect()
}

/// `scan --posture` settles the conditions its reads answer: the OpenPGP reset-code counter
/// (YSA-2020-05) and whether an OTP slot is configured (YSA-2020-04); a plain scan leaves them
/// open.
#[test]
fn a_posture_read_settles_the_conditions_it_answers() {
    let Some(lab) = lab() else { return };
    let pair = |id: &str, applies: &str| (id.to_string(), applies.to_string());
    let otp_if = pair("YSA-2020-04", "if an OTP slot is configured and protected by an access code");
    let pgp_if = pair("YSA-2020-05", "if the OpenPGP reset code retry counter is not zero");
    let fido = [pair("YSA-2024-02", "yes"), pair("YSA-2024-03", "yes")];

    // Factory posture: reset-code counter 0, no OTP slot configured.
    let factory = keytally_virtual_key::Posture::default();
    let plain = advisories_with(&lab, yk5nfc_5_2_4(factory.clone()), &[]);
    assert_eq!(plain, [otp_if.clone(), pgp_if.clone(), fido[0].clone(), fido[1].clone()]);
    let settled = advisories_with(&lab, yk5nfc_5_2_4(factory), &["--posture"]);
    assert_eq!(settled, fido, "both conditions ruled out");

    // A reset code set (3 tries) and slot 1 configured: YSA-2020-05 certain; YSA-2020-04 still
    // hangs on an access code, which no read tells.
    let used = keytally_virtual_key::Posture { openpgp_pin_retries: [3, 3, 3], otp_slots_configured: [true, false], ..Default::default() };
    let settled = advisories_with(&lab, yk5nfc_5_2_4(used), &["--posture"]);
    assert_eq!(settled, [otp_if, pair("YSA-2020-05", "yes"), fido[0].clone(), fido[1].clone()]);
}
