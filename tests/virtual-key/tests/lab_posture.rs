//! ykman 5.9.2 is the referee for the posture answers and NFC restricted mode: each test taps a
//! virtual key with a given [`Posture`] on an isolated pcscd lab and asserts what `ykman piv
//! info`, `fido info`, `openpgp info`, `oath info` and `otp info` print for every posture field.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{field, require_tools, start_lab, tap, ykman_at};
use keytally_virtual_key::posture::{self, Posture};
use keytally_virtual_key::KeyModel;

/// What ykman must print: (command, label or whole line, expected value; `None` = absent).
type Expect = [(&'static str, &'static str, Option<&'static str>)];

fn check(preset: &str, posture: Posture, expect: &Expect) {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = start_lab() else { return };
    let card = tap(
        &lab,
        KeyModel::preset(preset)
            .unwrap()
            .with_posture(posture.clone()),
    );
    let mut outputs = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    for (cmd, label, want) in expect {
        let text = outputs.entry(*cmd).or_insert_with(|| {
            let (ok, text) = ykman_at(&ykman, &lab, lab.reader_name(), &[cmd, "info"]);
            assert!(ok, "{preset}: ykman {cmd} info failed:\n{text}");
            println!("=== {preset} [{posture}] ykman {cmd} info\n{text}");
            text
        });
        let got = if label.ends_with(':') {
            field(text, label).map(str::to_string)
        } else {
            text.lines()
                .any(|l| l.trim() == *label)
                .then(|| "present".to_string())
        };
        if got.as_deref() != *want {
            failures.push(format!(
                "{preset} {cmd} {label:?}: got {got:?}, want {want:?}"
            ));
        }
    }
    assert!(card.apdu_count() > 0);
    assert!(failures.is_empty(), "{failures:#?}");
}

const YES: Option<&str> = Some("present");

#[test]
fn factory_posture_as_ykman_reads_it() {
    check(
        "yk5cnfc",
        Posture::default(),
        &[
            ("piv", "PIN tries remaining:", Some("3/3")),
            ("piv", "PUK tries remaining:", Some("3/3")),
            ("piv", "WARNING: Using default PIN!", YES),
            ("piv", "WARNING: Using default PUK!", YES),
            ("piv", "WARNING: Using default Management key!", YES),
            ("piv", "Management key algorithm:", Some("AES192")),
            ("fido", "PIN:", Some("Not set")),
            ("fido", "Minimum PIN length:", Some("4")),
            ("fido", "Credential storage remaining:", Some("100")),
            (
                "fido",
                "NOTE: The FIDO PIN is disabled and must be changed before it can be used!",
                None,
            ),
            ("fido", "Fingerprints:", None),
            ("openpgp", "PIN tries remaining:", Some("3")),
            ("openpgp", "Reset code tries remaining:", Some("0")),
            ("openpgp", "Admin PIN tries remaining:", Some("3")),
            ("openpgp", "Application version:", Some("5.7.4")),
            ("oath", "Password protection:", Some("disabled")),
            ("otp", "Slot 1:", Some("empty")),
            ("otp", "Slot 2:", Some("empty")),
        ],
    );
}

#[test]
fn hardened_posture_as_ykman_reads_it() {
    check(
        "yk5cnfc",
        posture::hardened(),
        &[
            ("piv", "PIN tries remaining:", Some("2/5")),
            ("piv", "PUK tries remaining:", Some("0/3")),
            ("piv", "PUK is blocked", YES),
            ("piv", "WARNING: Using default PIN!", None),
            ("piv", "WARNING: Using default PUK!", None),
            ("piv", "WARNING: Using default Management key!", None),
            ("fido", "PIN:", Some("5 attempt(s) remaining")),
            ("fido", "Minimum PIN length:", Some("6")),
            ("fido", "Credential storage remaining:", Some("17")),
            (
                "fido",
                "NOTE: The FIDO PIN is disabled and must be changed before it can be used!",
                YES,
            ),
            ("openpgp", "PIN tries remaining:", Some("2")),
            ("openpgp", "Reset code tries remaining:", Some("1")),
            ("openpgp", "Admin PIN tries remaining:", Some("3")),
            ("oath", "Password protection:", Some("enabled")),
            ("otp", "Slot 1:", Some("programmed")),
            ("otp", "Slot 2:", Some("programmed")),
        ],
    );
}

/// Firmware 5.4: 3DES management key, CTAP 2.1-PRE (no credential count); fields mixed.
#[test]
fn mixed_posture_on_firmware_5_4() {
    let mut p = Posture::default();
    p.apply(
        "piv-pin-retries=1,piv-puk-default=false,piv-mgmt-key-default=false,fido2-pin-set=true,\
         openpgp-retries=0/0/3,oath-password=true,otp-slots=true/false",
    )
    .unwrap();
    check(
        "yk5nfc",
        p,
        &[
            ("piv", "PIN tries remaining:", Some("1/3")),
            ("piv", "PUK tries remaining:", Some("3/3")),
            ("piv", "WARNING: Using default PIN!", YES),
            ("piv", "WARNING: Using default PUK!", None),
            ("piv", "WARNING: Using default Management key!", None),
            ("piv", "Management key algorithm:", Some("TDES")),
            ("fido", "PIN:", Some("8 attempt(s) remaining")),
            ("fido", "Credential storage remaining:", None),
            ("openpgp", "PIN tries remaining:", Some("0")),
            ("openpgp", "Admin PIN tries remaining:", Some("3")),
            ("oath", "Password protection:", Some("enabled")),
            ("otp", "Slot 1:", Some("programmed")),
            ("otp", "Slot 2:", Some("empty")),
        ],
    );
}

// The Bio's fingerprints (`fido2-uv-enrolled`) are not refereed here: a Bio has no NFC, and
// ykman 5.9.2 over a reader fails on a key without NFC capabilities (KeyError: TRANSPORT.NFC).
// They are served over CTAPHID (ctap2 and ctap unit tests) for the USB gadget.

/// Before 5.3 there is no GET METADATA: ykman asks VERIFY for the PIN retries only.
#[test]
fn yubikey_4_piv_without_metadata() {
    let mut p = Posture::default();
    p.apply("piv-pin-retries=2").unwrap();
    check(
        "yk4",
        p,
        &[
            ("piv", "PIN tries remaining:", Some("2")),
            ("piv", "PUK tries remaining:", None),
            ("piv", "WARNING: Using default PIN!", None),
            ("piv", "Management key algorithm:", Some("TDES")),
        ],
    );
}

const RESTRICTED_MESSAGE: &str =
    "ERROR: YubiKey is in NFC restricted mode (see: https://www.yubico.com/getting-started/).";

/// A key in NFC restricted mode only answers the NDEF applet over NFC; ykman names the mode.
#[test]
fn nfc_restricted_key_as_ykman_reads_it() {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = start_lab() else { return };
    let card = tap(
        &lab,
        KeyModel::preset("yk5cnfc")
            .unwrap()
            .with_nfc_restricted(true),
    );
    let (ok, info) = ykman_at(&ykman, &lab, lab.reader_name(), &["info"]);
    println!("=== restricted: ykman info\n{info}");
    assert!(!ok);
    assert_eq!(info.trim(), RESTRICTED_MESSAGE);
    for cmd in ["piv", "fido", "oath"] {
        let (ok, text) = ykman_at(&ykman, &lab, lab.reader_name(), &[cmd, "info"]);
        assert!(!ok && text.trim() == RESTRICTED_MESSAGE, "{cmd}: {text}");
    }
    // `ykman list` never lists external readers; `--readers` shows the reader with the key.
    let list = |args: &[&str]| {
        let out = Command::new(&ykman)
            .args(args)
            .envs(lab.env())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(list(&["list"]), (true, String::new()));
    let (ok, readers) = list(&["list", "--readers"]);
    assert!(
        ok && readers.lines().any(|l| l == lab.reader_name()),
        "{readers}"
    );
    // ykman's check costs SELECT Management/OTP/… (refused), then SELECT NDEF, SELECT FILE,
    // READ BINARY: the same key not restricted reads normally.
    drop(card);
    std::thread::sleep(Duration::from_millis(600));
    let _card = tap(
        &lab,
        KeyModel::preset("yk5cnfc")
            .unwrap()
            .with_nfc_restricted(false),
    );
    let (ok, info) = ykman_at(&ykman, &lab, lab.reader_name(), &["info"]);
    assert!(ok, "{info}");
    assert_eq!(field(&info, "Serial number:"), Some("23456789"));
}

/// The same through the binary's flags, as a shell user would run it.
#[test]
fn keytally_vkey_flags_set_restricted_mode_and_posture() {
    let Some(ykman) = require_tools() else { return };
    if start_lab().is_none() {
        return;
    }
    let vkey = env!("CARGO_BIN_EXE_keytally-vkey");
    let run = |extra: &[&str], ykman_args: &[&str]| {
        let out = Command::new(vkey)
            .args(["--model", "yk5cnfc"])
            .args(extra)
            .args(["--lab", "--"])
            .arg(&ykman)
            .args(["--reader", "Virtual PCD 00 00"])
            .args(ykman_args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = run(&["--nfc-restricted"], &["info"]);
    assert_eq!((code, text.trim()), (Some(1), RESTRICTED_MESSAGE));
    let (code, text) = run(&["--posture", "oath-password=true"], &["oath", "info"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        field(&text, "Password protection:"),
        Some("enabled"),
        "{text}"
    );
    let (code, text) = run(&["--posture", "no-such-key=1"], &["info"]);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("unknown posture key \"no-such-key\""),
        "{text}"
    );
}

/// Each posture fault spoils one applet's answer: ykman fails on that applet's `info`
/// (printing the error below) and still reads another applet of the same key.
#[test]
fn posture_faults_spoil_one_applet_as_ykman_sees_it() {
    use keytally_virtual_key::posture::PostureFault as P;
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = start_lab() else { return };
    let cases = [
        (
            P::PivMetadataMalformed,
            "piv",
            "ERROR: Incorrect TLV length",
            "oath",
        ),
        (P::PivUnknownSw, "piv", "SW=0x6f00", "oath"),
        (
            P::GetInfoTruncated,
            "fido",
            "ERROR: An unexpected error has occurred",
            "piv",
        ),
        (
            P::GetInfoTooDeep,
            "fido",
            "ERROR: No compatible PIN/UV protocols supported!",
            "piv",
        ),
        (P::OpenPgpUnknownSw, "openpgp", "SW=0x6f00", "fido"),
        (P::OpenPgpPwStatusShort, "openpgp", "IndexError", "fido"),
        (
            P::OathSelectMalformed,
            "oath",
            "ERROR: Incorrect TLV length",
            "openpgp",
        ),
    ];
    for (fault, spoiled, says, other) in cases {
        let mut model = KeyModel::preset("yk5cnfc").unwrap();
        model.posture_fault = Some(fault);
        let card = tap(&lab, model);
        let (ok, text) = ykman_at(&ykman, &lab, lab.reader_name(), &[spoiled, "info"]);
        println!(
            "=== {}: ykman {spoiled} info: {}",
            fault.name(),
            text.lines().last().unwrap_or("")
        );
        assert!(!ok && text.contains(says), "{}: {text}", fault.name());
        let (ok, text) = ykman_at(&ykman, &lab, lab.reader_name(), &[other, "info"]);
        assert!(
            ok,
            "{}: ykman {other} info still reads: {text}",
            fault.name()
        );
        drop(card);
        std::thread::sleep(Duration::from_millis(600));
    }
}
