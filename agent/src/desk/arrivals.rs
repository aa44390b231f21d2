//! The next key to arrive at the enrollment desk, plugged in or tapped, read, and then its
//! removal. The waiting is the [`Watch`]'s; this reads what it reports: PC/SC card insertions
//! (NFC readers and CCID keys) and, on a USB change, the USB keys that PC/SC cannot see (no
//! CCID interface, like the Security Key and Bio series, or any key while pcscd is not
//! running), read over HID.
//!
//! Each card PC/SC reports is read on a thread of its own (`enumerate::read_readers`: its own
//! PC/SC context, given up at [`READ_DEADLINE`]), so a card that stalls or floods one reader
//! never holds up a key on another; its outcome comes back over a channel.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keytally_device::enumerate::{
    discover, read_readers_with, scan_with, FoundKey, FullScanOptions, HidapiReader, PcscReport, PostureWanted, ReaderOutcome, ScanOptions, UsbKeyDevice,
};
use keytally_device::error::NFC_RESTRICTED_MESSAGE;
use keytally_device::transport::pcsc_watch::PcscEvent;
use keytally_device::Error;
use keytally_device::usb_ids::UsbInterfaces;

use crate::watch::{Changes, Wake, Watch};

/// How long a new USB device may take to show its HID nodes after the hot-plug event (the
/// USB device is announced before its interfaces are bound).
const HID_SETTLE: Duration = Duration::from_secs(3);
/// The longest wait: nothing else is timed at the desk.
const IDLE: Duration = Duration::from_secs(3600);
/// How long the read of one card may take before it is given up.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How often the wait looks for finished reads while some are in flight.
const READ_POLL: Duration = Duration::from_millis(20);

/// The outcome of reading the card on a reader, and the reader.
type ReadOutcome = (String, ReaderOutcome);

/// A key that arrived, and where.
pub struct Arrival {
    /// `key.reader` is the PC/SC reader, or the USB port path for a key read over HID.
    pub key: FoundKey,
    usb: bool,
}

pub struct Arrivals {
    watch: Watch,
    wake: Wake,
    /// USB ports already offered (until their key leaves).
    offered: HashSet<String>,
    /// Keys read and not offered yet.
    queued: VecDeque<Arrival>,
    /// The reads of PC/SC cards: their outcomes, and how many are still running.
    reads: (mpsc::Sender<ReadOutcome>, mpsc::Receiver<ReadOutcome>),
    in_flight: usize,
    /// Whether USB keys are watched (not with `--reader`).
    usb: bool,
}

impl Arrivals {
    /// Starts watching. With `reader` set only that PC/SC reader is watched (no USB).
    pub fn start(reader: Option<&str>) -> Self {
        let wake = Wake::default();
        let watch = Watch::start(reader, reader.is_none(), wake.clone());
        // Keys plugged in before the start count.
        watch.assume_usb_change();
        Arrivals { watch, wake, offered: HashSet::new(), queued: VecDeque::new(), reads: mpsc::channel(), in_flight: 0, usb: reader.is_none() }
    }

    /// Blocks until a key arrives and has been read.
    pub fn next(&mut self) -> Arrival {
        loop {
            self.take_reads();
            if let Some(arrival) = self.queued.pop_front() {
                return arrival;
            }
            let changes = self.wait();
            for event in changes.pcsc {
                if let PcscEvent::CardInserted { reader, .. } = event {
                    self.start_read(reader);
                }
            }
            if changes.usb {
                self.check_usb();
            }
        }
    }

    /// Reads the card on `reader` on a thread of its own; the outcome comes to [`Arrivals::take_reads`].
    fn start_read(&mut self, reader: String) {
        let (tx, wake) = (self.reads.0.clone(), self.wake.clone());
        let spawned = std::thread::Builder::new().name(format!("read:{reader}")).spawn(move || {
            // The desk always reads the posture (issue 13 §2).
            let outcome = read_readers_with(std::slice::from_ref(&reader), READ_DEADLINE, &PostureWanted::Always).next().map_or(Ok(None), |(_, outcome)| outcome);
            let _ = tx.send((reader, outcome));
            wake.now();
        });
        match spawned {
            Ok(_) => self.in_flight += 1,
            Err(e) => println!("Could not read the key: cannot start a thread for it ({e}). Remove it and try again."),
        }
    }

    /// Queues the keys whose reads have ended and says why the others could not be read.
    fn take_reads(&mut self) {
        while let Ok((reader, outcome)) = self.reads.1.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            match outcome {
                Ok(Some(key)) => self.queued.push_back(Arrival { key, usb: false }),
                Ok(None) => {}
                Err(Error::NfcRestricted) if self.usb => println!(
                    "{NFC_RESTRICTED_MESSAGE} (reader \"{reader}\"). Plug it in here to enroll it: waiting for it over USB."
                ),
                Err(Error::NfcRestricted) => println!(
                    "{NFC_RESTRICTED_MESSAGE} (reader \"{reader}\"). This desk reads only that reader (--reader): plug the key into a USB port once, then tap it again."
                ),
                Err(e) => println!("Could not read the key on \"{reader}\": {e}. Remove it and try again."),
            }
        }
    }

    /// Blocks until `arrival`'s key is gone (or its reader, or PC/SC altogether).
    pub fn wait_removed(&mut self, arrival: &Arrival) {
        let place = arrival.key.reader.as_str();
        loop {
            let changes = self.wait();
            // Reads of other cards that ended meanwhile: keys are offered next, problems said now.
            self.take_reads();
            // Keys plugged in meanwhile are read now and offered next.
            if changes.usb {
                self.check_usb();
                if arrival.usb && !self.offered.contains(place) {
                    return;
                }
            }
            if !arrival.usb
                && (!self.watch.pcsc_up()
                    || changes.pcsc.iter().any(|e| matches!(e, PcscEvent::CardRemoved { reader: r } | PcscEvent::ReaderRemoved(r) if r == place)))
            {
                return;
            }
        }
    }

    /// One wait; short while reads are in flight (a finished read also wakes it).
    fn wait(&mut self) -> Changes {
        self.watch.next(if self.in_flight > 0 { READ_POLL } else { IDLE })
    }

    /// Reads the USB keys PC/SC cannot see that have not been offered yet, and forgets the
    /// ones that left.
    fn check_usb(&mut self) {
        let pcsc_up = self.watch.pcsc_up();
        let settle_until = Instant::now() + HID_SETTLE;
        let fresh = loop {
            let devices = match discover() {
                Ok(d) => d,
                Err(e) => {
                    tracing::info!("cannot list USB devices: {e}");
                    return;
                }
            };
            let present: HashSet<&str> = devices.iter().map(|d| d.port.as_str()).collect();
            self.offered.retain(|p| present.contains(p.as_str()));
            let fresh: Vec<UsbKeyDevice> =
                devices.into_iter().filter(|d| !self.offered.contains(&d.port) && (!pcsc_up || !d.pid.interfaces().contains(UsbInterfaces::CCID))).collect();
            if fresh.iter().all(hid_nodes_ready) || Instant::now() >= settle_until {
                break fresh;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if fresh.is_empty() {
            return;
        }
        self.offered.extend(fresh.iter().map(|d| d.port.clone()));
        let opts = FullScanOptions { pcsc: ScanOptions { posture: PostureWanted::Always, ..ScanOptions::default() }, ..FullScanOptions::default() };
        let report = scan_with(&opts, |_| Ok(PcscReport::default()), Ok(fresh), Arc::new(HidapiReader::default()));
        for u in &report.unreadable {
            let why = u.attempts.first().map_or_else(|| "no interface keytally can open".to_string(), |a| a.error.to_string());
            println!("Could not read the {} on USB port {}: {why}. Remove it and try again.", u.description(), u.port);
        }
        for k in report.keys {
            let Some(port) = k.port.clone() else { continue };
            let key = FoundKey { key: k.key, reader: port, atr: Vec::new(), apdus: k.transfers, posture: k.posture };
            self.queued.push_back(Arrival { key, usb: true });
        }
    }
}

/// Whether a device's HID interfaces have their nodes yet.
fn hid_nodes_ready(d: &UsbKeyDevice) -> bool {
    let i = d.pid.interfaces();
    (!i.contains(UsbInterfaces::OTP) || !d.otp.is_empty()) && (!i.contains(UsbInterfaces::FIDO) || !d.fido.is_empty())
}
