//! Posture end to end (issue 13 §2): a virtual key with a given posture on the isolated pcscd
//! lab, `keytally scan --posture --json`, and Yubico's ykman 5.9.2 (`piv`, `fido`, `openpgp`,
//! `oath`, `otp info`) on the same key as the referee, field by field. A plain scan keeps its
//! APDU count and carries no posture; each posture fault spoils exactly its applet's fields,
//! with a warning naming the reader, and the record still goes out.

use std::path::Path;
use std::process::{Command, Output};

use keytally_virtual_key::posture::{self, Posture, PostureFault};
use keytally_virtual_key::{KeyModel, PcscLab};
use serde_json::{json, Value};

#[path = "../support/mod.rs"]
mod support;

use support::{insert, keytally_in_lab, lab, ykman, KEYTALLY};

/// keytally on the lab, with one state dir for the whole file (stable uniqueIds).
fn keytally(lab: &PcscLab, args: &[&str]) -> Output {
    keytally_in_lab(lab, &std::env::temp_dir().join("keytally-e2e-posture-state"), args)
}

/// `scan --json [--posture]`: the one record and stderr.
fn scan(lab: &PcscLab, posture: bool) -> (Value, String) {
    let args: &[&str] = if posture { &["scan", "--json", "--posture"] } else { &["scan", "--json"] };
    let out = keytally(lab, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "keytally scan failed: {stderr}");
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(records.len(), 1, "one key: {records:#?}");
    (records[0].clone(), stderr)
}

fn ykman_info(ykman: &Path, lab: &PcscLab, applet: &str) -> String {
    let out = Command::new(ykman).args(["--reader", lab.reader_name(), applet, "info"]).envs(lab.env()).output().expect("run ykman");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ykman {applet} info failed:\n{text}");
    text
}

/// The value after `label` on the line that starts with it (lines trimmed).
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim().strip_prefix(label).map(str::trim))
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line)
}

/// The number before the slash of ykman's `2/5`, or the whole number.
fn tries(v: &str) -> Value {
    json!(v.split('/').next().unwrap().parse::<u64>().unwrap())
}

/// What ykman says, as `observation.posture` would hold it.
fn as_ykman_reads_it(ykman: &Path, lab: &PcscLab) -> Value {
    let piv = ykman_info(ykman, lab, "piv");
    let fido = ykman_info(ykman, lab, "fido");
    let openpgp = ykman_info(ykman, lab, "openpgp");
    let oath = ykman_info(ykman, lab, "oath");
    let otp = ykman_info(ykman, lab, "otp");
    let pin = field(&fido, "PIN:").expect("fido info has a PIN line");
    let slot = |n| match field(&otp, &format!("Slot {n}:")) {
        Some("empty") => false,
        Some(_) => true,
        None => panic!("otp info without slot {n}:\n{otp}"),
    };
    json!({
        "pivPinDefault": has_line(&piv, "WARNING: Using default PIN!"),
        "pivPukDefault": has_line(&piv, "WARNING: Using default PUK!"),
        "pivManagementKeyDefault": has_line(&piv, "WARNING: Using default Management key!"),
        "pivPinRetries": tries(field(&piv, "PIN tries remaining:").expect("piv PIN tries")),
        "pivPukRetries": tries(field(&piv, "PUK tries remaining:").expect("piv PUK tries")),
        "fido2PinSet": pin != "Not set",
        // ykman shows fingerprints only for a Bio key (none here, and a Bio has no NFC).
        "fido2UvEnrolled": field(&fido, "Fingerprints:").map(|f| f.starts_with("Registered")),
        "fido2MinPinLength": field(&fido, "Minimum PIN length:").map(|n| n.parse::<u64>().unwrap()),
        "fido2RemainingDiscoverableCredentials": field(&fido, "Credential storage remaining:").map(|n| n.parse::<u64>().unwrap()),
        "openpgpPinRetries": [
            tries(field(&openpgp, "PIN tries remaining:").expect("openpgp PIN tries")),
            tries(field(&openpgp, "Reset code tries remaining:").expect("openpgp reset code tries")),
            tries(field(&openpgp, "Admin PIN tries remaining:").expect("openpgp admin PIN tries")),
        ],
        "oathPasswordSet": field(&oath, "Password protection:") == Some("enabled"),
        "otpSlotsConfigured": [slot(1), slot(2)],
        // ykman prints its note only when a PIN is set: compared below.
        "fido2ForcePinChangeNote": has_line(&fido, "NOTE: The FIDO PIN is disabled and must be changed before it can be used!"),
    })
}

fn agrees_with_ykman(preset: &str, posture: Posture) {
    let Some(lab) = lab() else { return };
    let card = insert(&lab, KeyModel::preset(preset).unwrap().with_posture(posture.clone()));
    let (record, stderr) = scan(&lab, true);
    assert!(!stderr.contains("warning"), "{preset} [{posture}]: {stderr}");
    let mut ours = record["observation"]["posture"].clone();
    println!("{preset} [{posture}] keytally: {ours}");
    assert_eq!(ours["fido2ForcePinChange"], json!(posture.fido2_force_pin_change), "{preset}: forcePINChange as the key has it");
    assert_eq!(ours["fido2UvEnrolled"], Value::Null, "{preset}: no built-in UV");
    let Some(ykman) = ykman() else { return };
    let mut theirs = as_ykman_reads_it(&ykman, &lab);
    println!("{preset} [{posture}] ykman:    {theirs}");
    let note = theirs.as_object_mut().unwrap().remove("fido2ForcePinChangeNote").unwrap();
    assert_eq!(note, json!(ours["fido2ForcePinChange"] == json!(true) && ours["fido2PinSet"] == json!(true)), "{preset}: ykman's force-PIN-change note");
    ours.as_object_mut().unwrap().remove("fido2ForcePinChange");
    for (field, want) in theirs.as_object().unwrap() {
        assert_eq!(&ours[field], want, "{preset} [{posture}]: {field}: keytally vs ykman");
    }
    assert_eq!(ours.as_object().unwrap().len(), theirs.as_object().unwrap().len(), "every field compared");
    drop(card);
}

#[test]
fn factory_posture_agrees_with_ykman() {
    agrees_with_ykman("yk5cnfc", Posture::default());
}

#[test]
fn hardened_posture_agrees_with_ykman() {
    agrees_with_ykman("yk5cnfc", posture::hardened());
}

/// Firmware 5.4: no credential count in getInfo (null in both), 3DES management key.
#[test]
fn mixed_posture_on_5_4_agrees_with_ykman() {
    let mut p = Posture::default();
    p.apply("piv-pin-retries=1,piv-puk-default=false,piv-mgmt-key-default=false,fido2-pin-set=true,openpgp-retries=0/0/3,oath-password=true,otp-slots=true/false")
        .unwrap();
    agrees_with_ykman("yk5nfc", p);
}

#[test]
fn a_plain_scan_keeps_its_apdu_count_and_has_no_posture() {
    let Some(lab) = lab() else { return };
    let card = insert(&lab, KeyModel::preset("yk5nfc").unwrap());
    let before = card.apdu_count();
    let (plain, _) = scan(&lab, false);
    let plain_apdus = card.apdu_count() - before;
    assert_eq!(plain_apdus, 2, "SELECT management + READ CONFIG, as before posture existed");
    assert!(plain["observation"].get("posture").is_none(), "no posture in a plain scan: {}", plain["observation"]);

    let before = card.apdu_count();
    let (with, _) = scan(&lab, true);
    let posture_apdus = card.apdu_count() - before;
    println!("yk5nfc: scan {plain_apdus} APDUs, scan --posture {posture_apdus} APDUs");
    // The same two, then PIV: SELECT + GET METADATA 80/81/9B; FIDO2: SELECT + NFCCTAP
    // getInfo; OpenPGP: SELECT + GET DATA C4; OATH: SELECT; OTP: SELECT.
    assert_eq!(posture_apdus, plain_apdus + 10, "APDUs with posture");
    assert!(with["observation"]["posture"].is_object());
    assert_eq!(with["yubikey"], {
        let mut y = plain["yubikey"].clone();
        for t in ["lastUpdate", "lastUsed"] {
            y[t] = with["yubikey"][t].clone();
        }
        y
    });
}

/// The fields a fault spoils.
fn spoiled(fault: PostureFault) -> &'static [&'static str] {
    match fault {
        PostureFault::PivMetadataMalformed | PostureFault::PivUnknownSw => {
            &["pivPinDefault", "pivPukDefault", "pivManagementKeyDefault", "pivPinRetries", "pivPukRetries"]
        }
        PostureFault::GetInfoTruncated | PostureFault::GetInfoTooDeep => {
            &["fido2PinSet", "fido2ForcePinChange", "fido2MinPinLength", "fido2RemainingDiscoverableCredentials"]
        }
        PostureFault::OpenPgpUnknownSw | PostureFault::OpenPgpPwStatusShort => &["openpgpPinRetries"],
        PostureFault::OathSelectMalformed => &["oathPasswordSet"],
    }
}

fn applet(fault: PostureFault) -> &'static str {
    match spoiled(fault)[0] {
        f if f.starts_with("piv") => "piv",
        f if f.starts_with("fido2") => "fido2",
        f if f.starts_with("openpgp") => "openpgp",
        _ => "oath",
    }
}

#[test]
fn each_posture_fault_spoils_its_fields_only_with_a_warning_naming_the_reader() {
    let Some(lab) = lab() else { return };
    let card = insert(&lab, KeyModel::preset("yk5cnfc").unwrap());
    let (clean, _) = scan(&lab, true);
    let clean = clean["observation"]["posture"].clone();
    drop(card);
    for fault in PostureFault::ALL.iter() {
        let mut model = KeyModel::preset("yk5cnfc").unwrap();
        model.posture_fault = Some(*fault);
        let card = insert(&lab, model);
        let (record, stderr) = scan(&lab, true);
        let posture = &record["observation"]["posture"];
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(warnings.len(), 1, "{fault:?}: one warning: {stderr}");
        let want = format!("keytally: warning: reader \"{}\": {} posture not read: ", lab.reader_name(), applet(*fault));
        assert!(warnings[0].starts_with(&want), "{fault:?}: {}", warnings[0]);
        for (field, value) in clean.as_object().unwrap() {
            if spoiled(*fault).contains(&field.as_str()) {
                assert!(posture[field].is_null(), "{fault:?}: {field} is null");
            } else {
                assert_eq!(&posture[field], value, "{fault:?}: {field} untouched");
            }
        }
        assert_eq!(record["yubikey"]["serialNumber"], "23456789", "{fault:?}: the record still goes out");
        assert_eq!(record["yubikey"]["name"], "YubiKey 5C NFC");
        println!("{fault:?}: {}", warnings[0]);
        drop(card);
    }
}

/// Kills the child when dropped, also when the test fails before it could.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The service reads a key's posture when it first sees it, and not again within
/// `sync.posture_every`: the key tapped again costs what a plain scan costs, and the server
/// keeps the posture read the first time.
#[test]
fn the_service_reads_posture_on_first_sight_and_not_again_the_same_day() {
    posture_on_first_sight_only(&["run", "--retry-every", "1s"]);
}

/// The kiosk likewise: the first tap of a key reads its posture, a second tap the same day
/// does not, and its record still carries the posture.
#[test]
fn the_kiosk_reads_posture_on_the_first_tap_and_not_again_the_same_day() {
    posture_on_first_sight_only(&["kiosk", "--merge-window", "0s"]);
}

/// `keytally ARGS` (a long-running mode) sees the key twice: posture the first time only.
fn posture_on_first_sight_only(args: &[&str]) {
    let Some(lab) = lab() else { return };
    let model = KeyModel::preset("yk5cnfc").unwrap().with_posture(posture::hardened());
    // What a plain scan and a posture scan of this key cost.
    let card = insert(&lab, model.clone());
    scan(&lab, false);
    let plain = card.apdu_count();
    scan(&lab, true);
    let with_posture = card.apdu_count() - plain;
    println!("yk5cnfc: scan {plain} APDUs, scan --posture {with_posture} APDUs");
    card.remove().unwrap();

    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let (_, token) = sb.create_api_key("e2e-posture");
    let _service = KillOnDrop(
        Command::new(KEYTALLY)
            .args(args)
            .envs(lab.env())
            .env("KEYTALLY_SERVER", sb.devices_base())
            .env("KEYTALLY_TOKEN", &token)
            .env("KEYTALLY_STATE_DIR", state.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start keytally"),
    );
    // The kiosk reads taps it sees arrive: let it start watching first.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let on_server = |what: &str| {
        support::wait_for(what, std::time::Duration::from_secs(15), || {
            sb.store().device("23456789").filter(|d| d["observation"]["posture"]["oathPasswordSet"] == json!(true))
        })
    };
    let card = insert(&lab, model.clone());
    on_server("the key on the server with its posture");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(card.apdu_count(), with_posture, "first sight: identification and posture");
    assert!(state.path().join("posture-read.json").is_file(), "the schedule is kept in the state dir");
    drop(card);
    std::thread::sleep(std::time::Duration::from_secs(1));

    let card = insert(&lab, model);
    support::wait_until("the second read", std::time::Duration::from_secs(10), || card.apdu_count() >= plain);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(card.apdu_count(), plain, "posture is not read again the same day");
    let record = on_server("the key still on the server with its posture");
    assert_eq!(record["observation"]["posture"]["pivPinRetries"], json!(2));
    // The advisories settled by posture stay settled (5.7.4: none apply).
    assert_eq!(record["observation"]["advisories"], json!([]));
}
