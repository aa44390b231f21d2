//! End to end through the real PC/SC stack: an isolated pcscd with the vpcd reader, a virtual
//! YubiKey inserted as an NFC tap, and the freshly built `keytally scan`. Each model's record
//! is checked field by field, and Yubico's ykman (the referee) reads the same virtual key and
//! must agree on name, serial, firmware, form factor and every application's state.
//!
//! ykman comes from `$KEYTALLY_YKMAN` (`tests/run.sh` sets it) or the `.venv` that
//! `tests/setup.sh` makes. Outside CI a missing ykman or pcscd is reported as skipped
//! (tests/support/skip.rs); with `CI=true` it fails.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use keytally_virtual_key::lab::InsertedCard;
use keytally_virtual_key::model::{Fault, KeyModel};
use keytally_virtual_key::{Card, PcscLab};
use serde_json::Value;

#[path = "../support/mod.rs"]
mod support;

use support::{insert, keytally_in_lab, lab, ykman, KEYTALLY};

/// keytally on the lab, with one state dir for the whole file (stable uniqueIds).
fn keytally(lab: &PcscLab, args: &[&str]) -> Output {
    keytally_in_lab(lab, &std::env::temp_dir().join("keytally-e2e-state"), args)
}

fn scan_json(lab: &PcscLab, extra: &[&str]) -> (Vec<Value>, String) {
    let out = keytally(lab, &[&["scan", "--json"], extra].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "keytally scan failed: {stderr}");
    let records: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a JSON array ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (records, stderr)
}

/// What a preset's record must say.
struct Expected {
    name: &'static str,
    serial: Option<&'static str>,
    firmware: &'static str,
    form_factor: u64,
    interfaces: u64,
    usb: &'static [u64],
    nfc: &'static [u64],
    enabled_usb: &'static [u64],
    enabled_nfc: &'static [u64],
}

const ALL_5: &[u64] = &[1, 2, 4, 8, 16, 32, 512];
const ALL_5_HSM: &[u64] = &[1, 2, 4, 8, 16, 32, 256, 512];

fn expected(preset: &str) -> Expected {
    match preset {
        "yk5nfc" => Expected { name: "YubiKey 5 NFC", serial: Some("12345678"), firmware: "5.4.3", form_factor: 1, interfaces: 3, usb: ALL_5, nfc: ALL_5, enabled_usb: ALL_5, enabled_nfc: ALL_5 },
        "yk5cnfc" => Expected { name: "YubiKey 5C NFC", serial: Some("23456789"), firmware: "5.7.4", form_factor: 3, interfaces: 3, usb: ALL_5_HSM, nfc: ALL_5_HSM, enabled_usb: ALL_5_HSM, enabled_nfc: ALL_5_HSM },
        // Reference vector 3: OTP disabled over USB, no NFC.
        "yk5nano" => Expected { name: "YubiKey 5 Nano", serial: Some("29504708"), firmware: "5.7.1", form_factor: 2, interfaces: 1, usb: ALL_5_HSM, nfc: &[], enabled_usb: &[2, 4, 8, 16, 32, 256, 512], enabled_nfc: &[] },
        "bio" => Expected { name: "YubiKey Bio - FIDO Edition", serial: Some("28293724"), firmware: "5.7.2", form_factor: 6, interfaces: 1, usb: &[2, 512], nfc: &[], enabled_usb: &[2, 512], enabled_nfc: &[] },
        "skynfc" => Expected { name: "Security Key NFC", serial: None, firmware: "5.4.3", form_factor: 1, interfaces: 3, usb: &[2, 512], nfc: &[2, 512], enabled_usb: &[2, 512], enabled_nfc: &[2, 512] },
        // 4.x ignores tag 0x03, and over NFC there is no PID to derive USB-enabled from.
        "yk4" => Expected { name: "YubiKey 4", serial: Some("7050602"), firmware: "4.3.7", form_factor: 1, interfaces: 1, usb: &[1, 2, 4, 8, 16, 32], nfc: &[], enabled_usb: &[], enabled_nfc: &[] },
        // No READ CONFIG: synthesized from the OTP applet and an applet scan.
        "neo" => Expected { name: "YubiKey NEO", serial: Some("3123456"), firmware: "3.4.3", form_factor: 0, interfaces: 3, usb: &[1, 2, 8, 16, 32], nfc: &[1, 2, 8, 16, 32], enabled_usb: &[1, 2, 8, 16, 32], enabled_nfc: &[1, 2, 8, 16, 32] },
        other => panic!("no expectation for {other}"),
    }
}

fn ints(v: &Value) -> Vec<u64> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_u64().unwrap()).collect()
}

fn check_record(preset: &str, r: &Value, lab: &PcscLab) {
    let e = expected(preset);
    let y = &r["yubikey"];
    let m = &y["model"];
    assert_eq!(y["name"], e.name, "{preset}: name");
    assert_eq!(m["name"], e.name, "{preset}: model.name");
    assert_eq!(y["serialNumber"].as_str(), e.serial, "{preset}: serialNumber");
    let unique = y["uniqueId"].as_str().expect("uniqueId is a string");
    match e.serial {
        Some(s) => assert_eq!(unique, s, "{preset}: uniqueId is the serial"),
        None => assert!(unique.starts_with("noserial-"), "{preset}: uniqueId {unique}"),
    }
    assert_eq!(y["firmwareVersion"], e.firmware, "{preset}: firmwareVersion");
    assert_eq!(m["formFactor"], e.form_factor, "{preset}: formFactor");
    assert_eq!(ints(&m["interfaces"]), vec![e.interfaces], "{preset}: interfaces");
    assert_eq!(ints(&m["usbCapabilities"]), e.usb, "{preset}: usbCapabilities");
    assert_eq!(ints(&m["nfcCapabilities"]), e.nfc, "{preset}: nfcCapabilities");
    assert_eq!(ints(&y["enabledUSBCapabilities"]), e.enabled_usb, "{preset}: enabledUSBCapabilities");
    assert_eq!(ints(&y["enabledNFCCapabilities"]), e.enabled_nfc, "{preset}: enabledNFCCapabilities");
    for server_only in [&y["code"], &y["orgCode"], &m["code"], &m["prodLineCode"]] {
        assert!(server_only.is_null(), "{preset}: server-only fields stay null");
    }
    for t in [&y["lastUpdate"], &y["lastUsed"]] {
        let t = t.as_str().expect("timestamps are strings");
        assert!(humantime::parse_rfc3339(t).is_ok() && t.ends_with('Z'), "{preset}: {t} is RFC 3339 UTC");
    }
    let o = &r["observation"];
    assert_eq!(o["transport"], "nfc", "{preset}: a vpcd reader is an external (NFC) reader");
    assert_eq!(o["reader"], lab.reader_name(), "{preset}: reader");
    assert!(uuid::Uuid::parse_str(o["agentId"].as_str().unwrap()).is_ok(), "{preset}: agentId");
    assert!(!o["host"].as_str().unwrap().is_empty());
    assert_eq!(o["versionName"], e.firmware);
}

/// ykman's `info`, parsed: the header fields and each application's USB/NFC state.
struct YkmanInfo {
    fields: Vec<(String, String)>,
    /// (application, USB state, NFC state if the column exists)
    apps: Vec<(String, String, Option<String>)>,
}

impl YkmanInfo {
    fn parse(text: &str) -> Self {
        let mut fields = Vec::new();
        let mut apps = Vec::new();
        let mut in_table = false;
        for line in text.lines() {
            if line.starts_with("Applications") {
                in_table = true;
                continue;
            }
            if in_table {
                let cols: Vec<String> = line.split('\t').map(|c| c.trim().to_string()).collect();
                if cols.len() >= 2 && !cols[0].is_empty() {
                    apps.push((cols[0].clone(), cols[1].clone(), cols.get(2).cloned()));
                }
            } else if let Some((k, v)) = line.split_once(": ") {
                fields.push((k.to_string(), v.trim().to_string()));
            }
        }
        Self { fields, apps }
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn ykman_form_factor(code: u64) -> Option<&'static str> {
    ["Keychain (USB-A)", "Nano (USB-A)", "Keychain (USB-C)", "Nano (USB-C)", "Keychain (USB-C, Lightning)", "Bio (USB-A)", "Bio (USB-C)"]
        .get(code.checked_sub(1)? as usize)
        .copied()
}

fn app_bit(name: &str) -> u64 {
    match name {
        "Yubico OTP" => 0x01,
        "FIDO U2F" => 0x02,
        "OpenPGP" => 0x08,
        "PIV" => 0x10,
        "OATH" => 0x20,
        "YubiHSM Auth" => 0x100,
        "FIDO2" => 0x200,
        other => panic!("unknown application row {other:?} in ykman's output"),
    }
}

fn state(bit: u64, supported: &[u64], enabled: &[u64]) -> &'static str {
    if !supported.contains(&bit) {
        "Not available"
    } else if enabled.contains(&bit) {
        "Enabled"
    } else {
        "Disabled"
    }
}

/// The referee: ykman reads the same virtual key; it must agree with keytally's record.
fn referee(preset: &str, lab: &PcscLab, record: &Value) {
    let Some(ykman) = ykman() else { return };
    let out = Command::new(ykman).args(["--reader", lab.reader_name(), "info"]).envs(lab.env()).output().expect("run ykman");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{preset}: ykman failed: {}", String::from_utf8_lossy(&out.stderr));
    let info = YkmanInfo::parse(&text);
    let y = &record["yubikey"];
    let m = &y["model"];
    assert_eq!(info.field("Device type"), y["name"].as_str(), "{preset}: ykman's name\n{text}");
    assert_eq!(info.field("Serial number"), y["serialNumber"].as_str(), "{preset}: ykman's serial\n{text}");
    assert_eq!(info.field("Firmware version"), record["observation"]["versionName"].as_str(), "{preset}: firmware\n{text}");
    assert_eq!(info.field("Form factor"), ykman_form_factor(m["formFactor"].as_u64().unwrap()), "{preset}: form factor\n{text}");
    let (usb, nfc) = (ints(&m["usbCapabilities"]), ints(&m["nfcCapabilities"]));
    let (en_usb, en_nfc) = (ints(&y["enabledUSBCapabilities"]), ints(&y["enabledNFCCapabilities"]));
    assert!(!info.apps.is_empty(), "{preset}: ykman printed no application table\n{text}");
    for (app, usb_state, nfc_state) in &info.apps {
        let bit = app_bit(app);
        assert_eq!(usb_state, state(bit, &usb, &en_usb), "{preset}: {app} over USB\n{text}");
        match nfc_state {
            Some(s) => assert_eq!(s, state(bit, &nfc, &en_nfc), "{preset}: {app} over NFC\n{text}"),
            None => assert!(nfc.is_empty(), "{preset}: ykman shows no NFC column but keytally has NFC\n{text}"),
        }
    }
}

fn read_preset(preset: &str) {
    let Some(lab) = lab() else { return };
    let card = insert(&lab, KeyModel::preset(preset).unwrap());
    let (records, stderr) = scan_json(&lab, &[]);
    assert_eq!(records.len(), 1, "{preset}: one record per key; stderr: {stderr}");
    check_record(preset, &records[0], &lab);
    referee(preset, &lab, &records[0]);
    card.remove().expect("remove");
}

#[test]
fn yubikey_5_nfc() {
    read_preset("yk5nfc");
}

#[test]
fn yubikey_5c_nfc_multi_page() {
    read_preset("yk5cnfc");
}

#[test]
fn yubikey_5_nano() {
    read_preset("yk5nano");
}

#[test]
fn yubikey_bio() {
    read_preset("bio");
}

#[test]
fn security_key_nfc_without_serial() {
    read_preset("skynfc");
}

#[test]
fn yubikey_4() {
    read_preset("yk4");
}

#[test]
fn yubikey_neo_fallback_chain() {
    read_preset("neo");
}

/// A single-page YubiKey 5 costs exactly two APDUs: SELECT management and READ CONFIG.
#[test]
fn a_single_page_key_costs_two_apdus() {
    let Some(lab) = lab() else { return };
    let card = insert(&lab, KeyModel::preset("yk5nfc").unwrap());
    let before = card.apdu_count();
    let (records, _) = scan_json(&lab, &[]);
    assert_eq!(records.len(), 1);
    assert_eq!(card.apdu_count() - before, 2);
    let before = card.apdu_count();
    let _ = scan_json(&lab, &[]);
    assert_eq!(card.apdu_count() - before, 2, "every scan re-reads the key with the same two APDUs");
}

/// The same key read twice gives the same uniqueId, also without a serial.
#[test]
fn unique_id_is_stable() {
    let Some(lab) = lab() else { return };
    let card = insert(&lab, KeyModel::preset("skynfc").unwrap());
    let (a, _) = scan_json(&lab, &[]);
    let (b, _) = scan_json(&lab, &[]);
    assert_eq!(a[0]["yubikey"]["uniqueId"], b[0]["yubikey"]["uniqueId"]);
    card.remove().unwrap();
}

#[test]
fn empty_readers_give_an_empty_list() {
    let Some(lab) = lab() else { return };
    let (records, stderr) = scan_json(&lab, &[]);
    assert!(records.is_empty());
    assert!(stderr.is_empty(), "an empty reader is normal, not a warning: {stderr}");
    let table = keytally(&lab, &["scan"]);
    assert!(table.status.success());
    assert_eq!(String::from_utf8_lossy(&table.stdout).trim(), "No YubiKey found.");
}

/// A key that answers badly (each hostile card, `Fault::EVERY`: wrong answers, an endless
/// flood of 61xx, a 40 s stall) gets a warning naming its reader; the key in the other reader
/// is still listed and the scan exits 0, in its normal time for the faults that answer and
/// at scan's reader deadline (3 s) for the stall.
#[test]
fn hostile_keys_are_reported_and_the_rest_still_listed() {
    let Some(lab) = lab() else { return };
    let second_reader = lab.reader_name().replace("00 00", "00 01");
    let good = InsertedCard::connect(lab.port() + 1, Card::new(KeyModel::preset("yk5nfc").unwrap())).unwrap();
    good.wait_present(Duration::from_secs(10)).unwrap();
    for fault in Fault::EVERY {
        let bad = insert(&lab, KeyModel::preset("yk5cnfc").unwrap().with_fault(Some(fault)));
        let started = Instant::now();
        let (records, stderr) = scan_json(&lab, &[]);
        let took = started.elapsed();
        let normal = if fault == Fault::Stall { Duration::from_secs(6) } else { Duration::from_secs(2) };
        assert!(took < normal, "{fault:?}: the scan took {took:?}");
        assert_eq!(records.len(), 1, "{fault:?}: the good key is still listed; stderr: {stderr}");
        assert_eq!(records[0]["observation"]["reader"], second_reader.as_str());
        assert!(
            stderr.contains("warning") && stderr.contains(&format!("\"{}\"", lab.reader_name())),
            "{fault:?}: a warning names the bad reader: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{fault:?}: one line per bad reader: {stderr}");
        bad.remove().unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    good.remove().unwrap();
}

/// Issue 12's report: a card that holds READ CONFIG for 40 s on "Virtual PCD 00 00" beside a
/// good key on "Virtual PCD 00 01". `keytally scan --json` lists the good key, names the
/// stalled reader once on stderr (and the good one not at all), and gives the stalled reader
/// up at scan's reader deadline (3 s) rather than waiting for it.
#[test]
fn a_stalled_reader_does_not_lose_the_good_key_beside_it() {
    let Some(lab) = lab() else { return };
    let stalled = lab.tap(0, Card::new(KeyModel::preset("yk5cnfc").unwrap().with_fault(Some(Fault::Stall))), Duration::from_secs(10)).unwrap();
    let good = lab.tap(1, Card::new(KeyModel::preset("yk5nfc").unwrap()), Duration::from_secs(10)).unwrap();
    let (stalled_reader, good_reader) = (lab.reader(0).name, lab.reader(1).name);
    let started = Instant::now();
    let (records, stderr) = scan_json(&lab, &[]);
    let took = started.elapsed();
    eprintln!("scan --json beside a stalled reader: {took:?}");
    assert_eq!(records.len(), 1, "the good key is listed; stderr: {stderr}");
    assert_eq!(records[0]["observation"]["reader"], good_reader.as_str());
    assert_eq!(records[0]["yubikey"]["serialNumber"], "12345678");
    assert_eq!(stderr.matches(stalled_reader.as_str()).count(), 1, "the stalled reader is named once: {stderr}");
    assert!(stderr.contains("did not answer in time"), "{stderr}");
    assert!(!stderr.contains(good_reader.as_str()), "the good reader is not named: {stderr}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(6), "scan gives the stalled reader up at its 3 s deadline: {took:?}");
    stalled.remove().unwrap();
    good.remove().unwrap();
}

/// Issue 12 §2: a key in NFC restricted mode is named on stderr and in the table, and has no
/// record; ykman (the referee) says the same of it.
#[test]
fn a_key_in_nfc_restricted_mode_is_named_and_not_recorded() {
    const SAID: &str = "YubiKey in NFC restricted mode: plug it into a USB port once to enable NFC";
    let Some(lab) = lab() else { return };
    let card = insert(&lab, KeyModel::preset("yk5cnfc").unwrap().with_nfc_restricted(true));
    let (records, stderr) = scan_json(&lab, &[]);
    assert!(records.is_empty(), "no record: {records:?}");
    assert_eq!(stderr.trim(), format!("keytally: reader \"{}\": {SAID}", lab.reader_name()), "{stderr}");
    let table = keytally(&lab, &["scan"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    let row = text.lines().nth(1).unwrap_or_else(|| panic!("no row: {text}"));
    assert!(row.starts_with(SAID) && row.contains("NFC") && row.contains(lab.reader_name()), "{text}");
    if let Some(ykman) = ykman() {
        let out = Command::new(ykman).args(["--reader", lab.reader_name(), "info"]).envs(lab.env()).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains("YubiKey is in NFC restricted mode"), "ykman: {said}");
    }
    card.remove().unwrap();
}

#[test]
fn reader_filter_limits_the_scan() {
    let Some(lab) = lab() else { return };
    let a = insert(&lab, KeyModel::preset("yk5nfc").unwrap());
    let b = InsertedCard::connect(lab.port() + 1, Card::new(KeyModel::preset("bio").unwrap())).unwrap();
    b.wait_present(Duration::from_secs(10)).unwrap();
    let (all, _) = scan_json(&lab, &[]);
    assert_eq!(all.len(), 2);
    let (only, _) = scan_json(&lab, &["--reader", "pcd 00 01"]);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["yubikey"]["name"], "YubiKey Bio - FIDO Edition");
    let (none, _) = scan_json(&lab, &["--reader", "no such reader"]);
    assert!(none.is_empty());
    a.remove().unwrap();
    b.remove().unwrap();
}

/// pcscd not running: one clear line, nothing on stdout, exit code 2.
#[test]
fn missing_pcscd_is_one_clear_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("keytally-nopcscd-{}", std::process::id()));
    let out = Command::new(KEYTALLY)
        .args(["scan", "--json"])
        .env("PCSCLITE_CSOCK_NAME", dir.join("pcscd.comm"))
        .env("KEYTALLY_STATE_DIR", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("pcscd is not running"), "{stderr}");
}

/// Another program with the key open (pyscard, from ykman's venv, connected in shared mode
/// with PIV selected, as a signing or ssh agent would be) is not disturbed by a scan: keytally
/// disconnects leaving the card as it is, so that program's next command goes through rather
/// than failing with "Card was reset" (which a reset on disconnect, the `pcsc` crate's default,
/// gives every other program connected to the key, with the loss of its state).
#[test]
fn a_scan_leaves_the_key_as_it_was_for_other_programs() {
    const HOLDER: &str = r#"
import sys
from smartcard.scard import *
SELECT_PIV = [0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08]
_, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
_, readers = SCardListReaders(ctx, [])
rv, card, proto = SCardConnect(ctx, readers[0], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
rv, resp = SCardTransmit(card, proto, SELECT_PIV)
print("ready", hex(rv & 0xffffffff), bytes(resp[-2:]).hex(), flush=True)
sys.stdin.readline()
rv, resp = SCardTransmit(card, proto, SELECT_PIV)
print("after", hex(rv & 0xffffffff), bytes(resp[-2:]).hex(), flush=True)
SCardDisconnect(card, SCARD_LEAVE_CARD)
"#;
    use std::io::{BufRead, BufReader, Write};
    let Some(lab) = lab() else { return };
    let Some(ykman) = ykman() else { return };
    let card = insert(&lab, KeyModel::preset("yk5nfc").unwrap());
    let mut holder = Command::new(ykman.with_file_name("python3"))
        .args(["-c", HOLDER])
        .envs(lab.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the other program (ykman's python)");
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), "ready 0x0 9000", "the other program has the key open with PIV selected");

    let (records, stderr) = scan_json(&lab, &[]);
    assert_eq!(records.len(), 1, "the key is read while another program has it open; stderr: {stderr}");

    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let after = next();
    let _ = holder.wait();
    assert_eq!(after, "after 0x0 9000", "the other program's next command after the scan (0x80100068 is 'Card was reset')");
    card.remove().expect("remove");
}
