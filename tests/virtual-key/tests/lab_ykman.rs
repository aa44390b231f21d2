//! End-to-end proof: an isolated pcscd lab serves each preset and Yubico's `ykman` reads it.
//!
//! Finding ykman and skipping without it: see `common/mod.rs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{field, require_tools, start_lab, ykman_info};
use keytally_virtual_key::model::{KeyModel, PRESETS};
use keytally_virtual_key::Card;

#[test]
fn ykman_reads_every_preset() {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = start_lab() else { return };
    let mut failures = Vec::new();
    for name in PRESETS {
        let model = KeyModel::preset(name).unwrap();
        let t = Instant::now();
        let card = lab.insert(Card::new(model.clone())).expect("insert");
        card.wait_present(Duration::from_secs(10))
            .expect("card present");
        let detected = t.elapsed();
        let t = Instant::now();
        let (ok, text) = ykman_info(&ykman, &lab);
        let elapsed = t.elapsed();
        let apdus = card.apdu_count();
        card.remove().expect("remove");
        println!(
            "=== {name}: present after {detected:?}; ykman {elapsed:?}, {apdus} APDUs\n{text}"
        );
        let serial = model.serial.map(|s| s.to_string());
        let checks = [
            ("Device type:", Some(model.expected_name.clone())),
            ("Serial number:", serial),
            ("Firmware version:", Some(model.version.to_string())),
        ];
        if !ok {
            failures.push(format!("{name}: ykman failed"));
        }
        for (label, want) in checks {
            let got = field(&text, label).map(str::to_string);
            if got != want {
                failures.push(format!("{name}: {label} got {got:?}, want {want:?}"));
            }
        }
        assert!(apdus > 0, "{name}: no APDUs counted");
        // Let pcscd notice the removal before the next tap.
        std::thread::sleep(Duration::from_millis(600));
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\npcscd log:\n{}",
        lab.log()
    );
}

#[test]
fn two_labs_run_in_parallel() {
    let Some(ykman) = require_tools() else { return };
    let (Some(a), Some(b)) = (start_lab(), start_lab()) else {
        return;
    };
    assert_ne!(a.socket_path(), b.socket_path());
    let ca = a
        .insert(Card::new(
            KeyModel::preset("yk5nfc").unwrap().with_serial(Some(111)),
        ))
        .unwrap();
    let cb = b
        .insert(Card::new(
            KeyModel::preset("yk5cnfc").unwrap().with_serial(Some(222)),
        ))
        .unwrap();
    ca.wait_present(Duration::from_secs(10)).unwrap();
    cb.wait_present(Duration::from_secs(10)).unwrap();
    let ta = std::thread::spawn({
        let ykman = ykman.clone();
        move || (ykman_info(&ykman, &a).1, a)
    });
    let (tb, _b) = (ykman_info(&ykman, &b).1, b);
    let (ta, _a) = ta.join().unwrap();
    assert_eq!(field(&ta, "Serial number:"), Some("111"), "{ta}");
    assert_eq!(field(&tb, "Serial number:"), Some("222"), "{tb}");
    assert!(ca.apdu_count() > 0 && cb.apdu_count() > 0);
}

#[test]
fn ykman_rejects_every_fault() {
    use keytally_virtual_key::model::Fault;
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = start_lab() else { return };
    for fault in Fault::ALL {
        let model = KeyModel::preset("yk5nfc").unwrap().with_fault(Some(fault));
        let card = lab.insert(Card::new(model)).unwrap();
        card.wait_present(Duration::from_secs(10)).unwrap();
        let (ok, text) = ykman_info(&ykman, &lab);
        drop(card);
        let last = text
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        println!("=== {}: ykman exit ok={ok}: {last}", fault.name());
        assert!(
            field(&text, "Serial number:").is_none(),
            "{}: ykman accepted the fault:\n{text}",
            fault.name()
        );
        std::thread::sleep(Duration::from_millis(600));
    }
}

#[test]
fn binary_serves_and_counts() {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = start_lab() else { return };
    let count_file = std::env::temp_dir().join(format!("vkey-count-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_keytally-vkey"))
        .args([
            "--model",
            "yk5nano",
            "--serial",
            "424242",
            "--port",
            &lab.port().to_string(),
        ])
        .arg("--count-file")
        .arg(&count_file)
        .spawn()
        .expect("spawn keytally-vkey");
    // The binary has no presence hook: retry ykman until pcscd has detected the card.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (ok, text) = ykman_info(&ykman, &lab);
        if ok || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(field(&text, "Serial number:"), Some("424242"), "{text}");
    std::thread::sleep(Duration::from_millis(50));
    let count: u64 = std::fs::read_to_string(&count_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(count >= 3, "count {count}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_file(count_file);
}
