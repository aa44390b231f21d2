//! The next key to arrive at the enrollment desk, plugged in or tapped, read, and then its
//! removal. The waiting is the [`Watch`]'s; this reads what it reports: PC/SC card insertions
//! (NFC readers and CCID keys) and, on a USB change, the USB keys that PC/SC cannot see (no
//! CCID interface, like the Security Key and Bio series, or any key while pcscd is not
//! running), read over HID.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keytally_device::enumerate::{discover, read_reader, scan_with, FoundKey, FullScanOptions, HidapiReader, PcscReport, UsbKeyDevice};
use keytally_device::transport::pcsc::PcscContext;
use keytally_device::transport::pcsc_watch::PcscEvent;
use keytally_device::usb_ids::UsbInterfaces;

use crate::watch::{Changes, Wake, Watch};

/// How long a new USB device may take to show its HID nodes after the hot-plug event (the
/// USB device is announced before its interfaces are bound).
const HID_SETTLE: Duration = Duration::from_secs(3);
/// The longest wait: nothing else is timed at the desk.
const IDLE: Duration = Duration::from_secs(3600);

/// A key that arrived, and where.
pub struct Arrival {
    /// `key.reader` is the PC/SC reader, or the USB port path for a key read over HID.
    pub key: FoundKey,
    usb: bool,
}

pub struct Arrivals {
    watch: Watch,
    /// For reading the cards PC/SC reports.
    ctx: Option<PcscContext>,
    /// USB ports already offered (until their key leaves).
    offered: HashSet<String>,
    queued: VecDeque<FoundKey>,
}

impl Arrivals {
    /// Starts watching. With `reader` set only that PC/SC reader is watched (no USB).
    pub fn start(reader: Option<&str>) -> Self {
        let watch = Watch::start(reader, reader.is_none(), Wake::default());
        // Keys plugged in before the start count.
        watch.assume_usb_change();
        Arrivals { watch, ctx: None, offered: HashSet::new(), queued: VecDeque::new() }
    }

    /// Blocks until a key arrives and has been read.
    pub fn next(&mut self) -> Arrival {
        loop {
            if let Some(key) = self.queued.pop_front() {
                return Arrival { key, usb: true };
            }
            let changes = self.wait();
            for event in changes.pcsc {
                let PcscEvent::CardInserted { reader, .. } = event else { continue };
                if self.ctx.is_none() {
                    self.ctx = PcscContext::establish().ok();
                }
                let Some(c) = self.ctx.as_ref() else { continue };
                match read_reader(c, &reader) {
                    Ok(Some(key)) => return Arrival { key, usb: false },
                    Ok(None) => {}
                    Err(e) => println!("Could not read the key on \"{reader}\": {e}. Remove it and try again."),
                }
            }
            if changes.usb {
                self.check_usb();
            }
        }
    }

    /// Blocks until `arrival`'s key is gone (or its reader, or PC/SC altogether).
    pub fn wait_removed(&mut self, arrival: &Arrival) {
        let place = arrival.key.reader.as_str();
        loop {
            let changes = self.wait();
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

    /// One wait; a context for reading does not outlive pcscd.
    fn wait(&mut self) -> Changes {
        let changes = self.watch.next(IDLE);
        if !self.watch.pcsc_up() {
            self.ctx = None;
        }
        changes
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
        let report = scan_with(&FullScanOptions::default(), |_| Ok(PcscReport::default()), Ok(fresh), Arc::new(HidapiReader::default()));
        for u in &report.unreadable {
            let why = u.attempts.first().map_or_else(|| "no interface keytally can open".to_string(), |a| a.error.to_string());
            println!("Could not read the {} on USB port {}: {why}. Remove it and try again.", u.description(), u.port);
        }
        for k in report.keys {
            let Some(port) = k.port.clone() else { continue };
            self.queued.push_back(FoundKey { key: k.key, reader: port, atr: Vec::new(), apdus: k.transfers, posture: k.posture });
        }
    }
}

/// Whether a device's HID interfaces have their nodes yet.
fn hid_nodes_ready(d: &UsbKeyDevice) -> bool {
    let i = d.pid.interfaces();
    (!i.contains(UsbInterfaces::OTP) || !d.otp.is_empty()) && (!i.contains(UsbInterfaces::FIDO) || !d.fido.is_empty())
}
