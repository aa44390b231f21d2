//! Readers are independent (issue 12 §1), through a real pcscd with vpcd readers: a card that
//! stalls or floods one reader never holds up the key on another, the stalled read is given
//! up at its deadline, and the reader works again once the card has left.
//!
//! One test in this binary: libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process, so the
//! process can talk to one lab only.

#[allow(dead_code)]
#[path = "../../tests/support/skip.rs"]
mod skip;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use keytally_device::enumerate::{read_readers, reader_stalled, scan_pcsc, PcscReport, ScanOptions};
use keytally_device::caps::Transport;
use keytally_device::transport::pcsc::{InReader, PcscContext};
use keytally_device::{Error, LinkError};
use keytally_virtual_key::{Card, Fault, KeyModel, PcscLab};

/// How long a reader may take in these scans (the agent's default is 10 s).
const DEADLINE: Duration = Duration::from_secs(2);
/// A good key must come through within this, whatever the other readers do.
const GOOD_KEY_WITHIN: Duration = Duration::from_millis(500);
const PRESENT: Duration = Duration::from_secs(10);

fn key(preset: &str, serial: u32) -> Card {
    Card::new(KeyModel::preset(preset).unwrap().with_serial(Some(serial)))
}

fn faulty(fault: Fault) -> Card {
    Card::new(KeyModel::preset("yk5cnfc").unwrap().with_fault(Some(fault)))
}

fn options(filter: &str) -> ScanOptions {
    ScanOptions { reader_filter: Some(filter.into()), reader_timeout: DEADLINE, ..ScanOptions::default() }
}

/// (reader, serial) of every key found.
fn keys(report: &PcscReport) -> Vec<(String, Option<u32>)> {
    report.keys.iter().map(|k| (k.reader.clone(), k.key.info.serial)).collect()
}

fn problems(report: &PcscReport) -> Vec<(String, Error)> {
    report.problems.iter().map(|p| (p.reader.clone(), p.error.clone())).collect()
}

/// Reads `readers` and returns, per reader, its outcome and when it came.
fn timed_reads(readers: &[String]) -> Vec<(String, Result<Option<u32>, Error>, Duration)> {
    let started = Instant::now();
    let reads: Vec<_> = read_readers(readers, DEADLINE)
        .map(|(reader, outcome)| (reader, outcome.map(|k| k.and_then(|k| k.key.info.serial)), started.elapsed()))
        .collect();
    eprintln!("reads: {reads:?}");
    reads
}

/// Waits (up to 5 s) until pcscd reports `reader` empty.
fn wait_empty(reader: &str) {
    let ctx = PcscContext::establish().expect("a pcscd context");
    let readers = [reader.to_string()];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let contents = ctx.reader_contents(&readers);
        if contents == [InReader::Empty] {
            return;
        }
        assert!(Instant::now() < deadline, "pcscd still sees {contents:?} on {reader}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stalled_or_flooding_reader_never_holds_up_another() {
    let lab = match PcscLab::start_readers(4) {
        Ok(lab) => lab,
        Err(e) if e.kind() == ErrorKind::NotFound => return skip::skip(format!("the pcscd lab: {e}")),
        Err(e) => panic!("the pcscd lab did not start: {e}"),
    };
    for (name, value) in lab.env() {
        std::env::set_var(name, value);
    }
    let names: Vec<String> = lab.readers().into_iter().map(|r| r.name).collect();
    assert_eq!(names.len(), 4);

    // Two readers: a card that holds READ CONFIG for 40 s, and a good key beside it.
    let stalled = lab.tap(0, faulty(Fault::Stall), PRESENT).unwrap();
    let good = lab.tap(1, key("yk5nfc", 1001), PRESENT).unwrap();
    let two = options("virtual pcd 00 0");
    let started = Instant::now();
    let report = scan_pcsc(&two).unwrap();
    let took = started.elapsed();
    assert_eq!(report.readers, names[..2]);
    assert_eq!(keys(&report), vec![(names[1].clone(), Some(1001))], "the good key is listed");
    assert_eq!(problems(&report), vec![(names[0].clone(), Error::Link(LinkError::Timeout))], "only the stalled reader is named");
    assert!(took >= DEADLINE && took < DEADLINE + Duration::from_secs(1), "the scan ends at the deadline: {took:?}");
    assert!(reader_stalled(&names[0]) && !reader_stalled(&names[1]));

    // The stalled read is still running (the card answers in 40 s): the next read of that
    // reader fails at once instead of queueing behind it, and the good key comes as fast.
    let reads = timed_reads(&names[..2]);
    assert_eq!(reads.len(), 2, "{reads:?}");
    for (reader, outcome, at) in &reads {
        assert!(*at < GOOD_KEY_WITHIN, "{reader}: {outcome:?} after {at:?}");
    }
    assert!(reads.iter().any(|(r, o, _)| *r == names[0] && *o == Err(Error::Link(LinkError::StillStalled))), "{reads:?}");
    assert!(reads.iter().any(|(r, o, _)| *r == names[1] && *o == Ok(Some(1001))), "{reads:?}");

    // When the card leaves, the abandoned read ends and the reader works again. The next card
    // comes once pcscd has seen the reader empty, as with a person's hand: vpcd is polled about
    // every 400 ms, and a card swapped in within one poll is never seen to arrive (nothing
    // powers it).
    stalled.remove().unwrap();
    wait_empty(&names[0]);
    let back = lab.tap(0, key("yk5nfc", 1000), PRESENT).unwrap();
    let limit = Instant::now() + Duration::from_secs(15);
    loop {
        let report = scan_pcsc(&two).unwrap();
        if keys(&report).len() == 2 {
            assert_eq!(keys(&report), vec![(names[0].clone(), Some(1000)), (names[1].clone(), Some(1001))]);
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            assert!(!reader_stalled(&names[0]));
            break;
        }
        assert!(Instant::now() < limit, "reader 0 never worked again: {:?}", problems(&report));
        std::thread::sleep(Duration::from_millis(200));
    }
    back.remove().unwrap();
    good.remove().unwrap();

    // Four readers: a stall, a flood of 61xx, and two good keys. Each good key comes within
    // GOOD_KEY_WITHIN; the flood is an error of its own reader, the stall a timeout of its own.
    let cards = [
        lab.tap(0, faulty(Fault::Stall), PRESENT).unwrap(),
        lab.tap(1, faulty(Fault::EndlessChaining), PRESENT).unwrap(),
        lab.tap(2, key("yk5nfc", 2002), PRESENT).unwrap(),
        lab.tap(3, key("bio", 3003), PRESENT).unwrap(),
    ];
    let reads = timed_reads(&names);
    assert_eq!(reads.len(), 4, "{reads:?}");
    let of = |i: usize| reads.iter().find(|(r, _, _)| *r == names[i]).unwrap_or_else(|| panic!("no outcome for {}", names[i]));
    assert_eq!(of(2).1, Ok(Some(2002)));
    assert_eq!(of(3).1, Ok(Some(3003)));
    assert!(of(2).2 < GOOD_KEY_WITHIN && of(3).2 < GOOD_KEY_WITHIN, "{reads:?}");
    assert_eq!(of(0).1, Err(Error::Link(LinkError::Timeout)));
    assert!(of(0).2 >= DEADLINE, "the stall is given up at the deadline: {reads:?}");
    assert!(matches!(of(1).1, Err(ref e) if *e != Error::Link(LinkError::Timeout)), "the flood is its own error: {reads:?}");

    // And the scan says the same: two keys, two readers named once each.
    let report = scan_pcsc(&options("virtual pcd")).unwrap();
    assert_eq!(keys(&report), vec![(names[2].clone(), Some(2002)), (names[3].clone(), Some(3003))]);
    // A scan of several readers takes each card's ATR from the one reader-state call that
    // also tells the empty readers (no SCardStatus per card): it is the ATR a read of that
    // reader alone asks the card for, and the key is on NFC, as that ATR says.
    let alone = read_readers(&names[2..3], DEADLINE).next().expect("one outcome").1.expect("read").expect("a key");
    let scanned = report.keys.iter().find(|k| k.reader == names[2]).unwrap();
    assert_eq!(scanned.atr, alone.atr);
    assert!(!scanned.atr.is_empty());
    assert_eq!((scanned.key.transport, alone.key.transport), (Transport::Nfc, Transport::Nfc));
    let named: Vec<String> = report.problems.iter().map(|p| p.reader.clone()).collect();
    assert_eq!(named, names[..2]);
    for card in cards {
        card.remove().unwrap();
    }
}
