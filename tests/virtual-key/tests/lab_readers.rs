//! Several readers in one isolated pcscd lab: each reader takes its own card, cards are tapped
//! and removed independently, and the hostile cards (endless chaining, stall, lying length byte,
//! overrunning TLV, …) behave the same on any reader. ykman (a separate process per reader) and
//! pyscard from ykman's venv (raw APDUs, no automatic GET RESPONSE) are the referees.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{field, require_tools, skip_or_panic, ykman_at, ykman_python};
use keytally_virtual_key::model::Fault;
use keytally_virtual_key::{Card, KeyModel, PcscLab};

const PRESENT: Duration = Duration::from_secs(10);
/// Long enough for pcscd (polling vpcd every ~400 ms) to see a removal.
const SETTLE: Duration = Duration::from_millis(700);

fn four_reader_lab() -> Option<PcscLab> {
    PcscLab::start_readers(4).map_or_else(skip_or_panic, Some)
}

fn key(preset: &str, serial: u32) -> Card {
    Card::new(KeyModel::preset(preset).unwrap().with_serial(Some(serial)))
}

fn serial_on(ykman: &std::path::PathBuf, lab: &PcscLab, reader: &str) -> Option<String> {
    let (_, text) = ykman_at(ykman, lab, reader, &["info"]);
    field(&text, "Serial number:").map(str::to_string)
}

#[test]
fn four_readers_each_with_its_own_card() {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = four_reader_lab() else { return };
    let names: Vec<String> = lab.readers().into_iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            "Virtual PCD 00 00",
            "Virtual PCD 00 01",
            "Virtual PCD B 00 00",
            "Virtual PCD B 00 01"
        ]
    );
    let out = Command::new(&ykman)
        .args(["list", "--readers"])
        .envs(lab.env())
        .output()
        .unwrap();
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, names, "pcscd publishes exactly the lab's readers");

    let presets = ["yk5nfc", "yk5cnfc", "yk5nano", "yk4"];
    let cards: Vec<_> = (0..4)
        .map(|i| {
            lab.tap(i, key(presets[i], 1000 + i as u32), PRESENT)
                .unwrap()
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            serial_on(&ykman, &lab, name),
            Some(format!("{}", 1000 + i)),
            "{name}"
        );
    }
    // Take the card off reader 1 only: reader 1 is empty, the others still read.
    let mut cards: Vec<Option<_>> = cards.into_iter().map(Some).collect();
    cards[1].take().unwrap().remove().unwrap();
    std::thread::sleep(SETTLE);
    let (ok, text) = ykman_at(&ykman, &lab, &names[1], &["info"]);
    assert!(!ok && field(&text, "Serial number:").is_none(), "{text}");
    assert_eq!(serial_on(&ykman, &lab, &names[0]), Some("1000".into()));
    assert_eq!(serial_on(&ykman, &lab, &names[2]), Some("1002".into()));
    // Another key on reader 1.
    cards[1] = Some(lab.tap(1, key("yk5nfc", 4242), PRESENT).unwrap());
    assert_eq!(serial_on(&ykman, &lab, &names[1]), Some("4242".into()));
    for c in cards.into_iter().flatten() {
        assert!(c.apdu_count() > 0);
    }
}

/// A stalled card holds only its own reader: ykman on another reader reads at once, and
/// removing the stalled card ends the stall at once.
#[test]
fn a_stall_on_any_reader_holds_only_that_reader() {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = four_reader_lab() else { return };
    // One DeviceInfo page (yk5nfc): ykman's read of the stalled key is held once.
    let stall = Duration::from_secs(6);
    for bad in [0usize, 3] {
        let good = (bad + 1) % 4;
        let mut model = KeyModel::preset("yk5nfc")
            .unwrap()
            .with_fault(Some(Fault::Stall));
        model.stall = stall;
        let stalled = lab.tap(bad, Card::new(model), PRESENT).unwrap();
        let fine = lab.tap(good, key("yk5nfc", 777), PRESENT).unwrap();
        let bad_name = lab.reader(bad).name;
        let held = std::thread::spawn({
            let (ykman, env) = (ykman.clone(), lab.env());
            move || {
                let t = Instant::now();
                let out = Command::new(ykman)
                    .args(["--reader", &bad_name, "info"])
                    .envs(env)
                    .output()
                    .unwrap();
                (
                    t.elapsed(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            }
        });
        std::thread::sleep(Duration::from_millis(500)); // ykman is waiting for READ CONFIG
        let t = Instant::now();
        assert_eq!(
            serial_on(&ykman, &lab, &lab.reader(good).name),
            Some("777".into())
        );
        let good_took = t.elapsed();
        let (held_took, held_text) = held.join().unwrap();
        println!("reader {bad} stalled: ykman there {held_took:?}; on reader {good} {good_took:?}");
        assert!(
            good_took < stall,
            "reader {good} waited for reader {bad}: {good_took:?}"
        );
        assert!(
            held_took >= stall,
            "the stall held READ CONFIG: {held_took:?}"
        );
        assert_eq!(
            field(&held_text, "Serial number:"),
            Some("12345678"),
            "{held_text}"
        );
        drop(fine);

        // Removal in the middle of a stall ends it promptly.
        let mut model = KeyModel::preset("yk5cnfc")
            .unwrap()
            .with_fault(Some(Fault::Stall));
        model.stall = Duration::from_secs(60);
        let stalled_long = {
            drop(stalled);
            std::thread::sleep(SETTLE);
            lab.tap(bad, Card::new(model), PRESENT).unwrap()
        };
        let mut child = Command::new(&ykman)
            .args(["--reader", &lab.reader(bad).name, "info"])
            .envs(lab.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let t = Instant::now();
        stalled_long.remove().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "removal took {:?}",
            t.elapsed()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            status.is_some_and(|s| !s.success()),
            "ykman ends with an error once the card is gone: {status:?}"
        );
        std::thread::sleep(SETTLE);
    }
}

/// Raw APDUs through pcscd on reader `name` with pyscard: SELECT Management, READ CONFIG,
/// then up to 50 GET RESPONSEs while the card says 61xx. Prints one line: the status words.
const RAW_READ: &str = r#"
import sys
from smartcard.System import readers
r = [x for x in readers() if str(x) == sys.argv[1]][0]
c = r.createConnection(); c.connect()
sws = []
_, a, b = c.transmit(list(bytes.fromhex("00A4040008A000000527471117"))); sws.append("%02X%02X" % (a, b))
d, a, b = c.transmit([0x00, 0x1D, 0x00, 0x00, 0x00]); sws.append("%02X%02X" % (a, b))
n = 0
while a == 0x61 and n < 50:
    d, a, b = c.transmit([0x00, 0xC0, 0x00, 0x00, b]); sws.append("%02X%02X" % (a, b)); n += 1
print(" ".join(sws))
"#;

#[test]
fn endless_chaining_and_answer_faults_on_any_reader() {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = four_reader_lab() else { return };
    let python = ykman_python(&ykman);
    for bad in 0..4 {
        let good = 3 - bad;
        let _fine = lab
            .tap(good, key("yk5nfc", 900 + bad as u32), PRESENT)
            .unwrap();
        let flood = KeyModel::preset("yk5cnfc")
            .unwrap()
            .with_fault(Some(Fault::EndlessChaining));
        let card = lab.tap(bad, Card::new(flood), PRESENT).unwrap();
        let out = Command::new(&python)
            .args(["-c", RAW_READ, &lab.reader(bad).name])
            .envs(lab.env())
            .output()
            .unwrap();
        let sws = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let words: Vec<&str> = sws.split(' ').collect();
        assert_eq!(words.len(), 52, "{sws}");
        assert_eq!(words[0], "9000");
        assert!(
            words[1..].iter().all(|w| *w == "61FF"),
            "reader {bad}: {sws}"
        );
        assert_eq!(card.apdu_count(), 52);
        assert_eq!(
            serial_on(&ykman, &lab, &lab.reader(good).name),
            Some(format!("{}", 900 + bad)),
            "the good key beside it"
        );
        drop(card);
        std::thread::sleep(SETTLE);
    }
    // The answer faults on the last reader (second reader.conf entry, second slot).
    let last = lab.readers().len() - 1;
    for fault in Fault::ALL {
        let card = lab
            .tap(
                last,
                Card::new(KeyModel::preset("yk5nfc").unwrap().with_fault(Some(fault))),
                PRESENT,
            )
            .unwrap();
        let (_, text) = ykman_at(&ykman, &lab, &lab.reader(last).name, &["info"]);
        assert!(
            field(&text, "Serial number:").is_none(),
            "{}: {text}",
            fault.name()
        );
        assert!(card.apdu_count() > 0);
        drop(card);
        std::thread::sleep(SETTLE);
    }
}

/// A reader another program holds exclusively refuses ykman there at once; the other readers
/// read as usual, and the reader works again when the hold ends.
#[test]
fn a_reader_held_exclusively_holds_only_that_reader() {
    let Some(ykman) = require_tools() else { return };
    let Some(lab) = PcscLab::start_readers(2).map_or_else(skip_or_panic, Some) else {
        return;
    };
    let _a = lab.tap(0, key("yk5nfc", 51), PRESENT).unwrap();
    let _b = lab.tap(1, key("yk5cnfc", 52), PRESENT).unwrap();
    let hold = lab
        .hold_exclusively(0, &ykman_python(&ykman))
        .expect("hold reader 0");
    assert_eq!(hold.reader(), "Virtual PCD 00 00");
    let t = Instant::now();
    let (ok, text) = ykman_at(&ykman, &lab, &lab.reader(0).name, &["info"]);
    println!(
        "held reader: ykman {:?}: {}",
        t.elapsed(),
        text.lines().last().unwrap_or("")
    );
    assert!(!ok && field(&text, "Serial number:").is_none(), "{text}");
    assert_eq!(
        serial_on(&ykman, &lab, &lab.reader(1).name),
        Some("52".into())
    );
    drop(hold);
    assert_eq!(
        serial_on(&ykman, &lab, &lab.reader(0).name),
        Some("51".into())
    );
}
