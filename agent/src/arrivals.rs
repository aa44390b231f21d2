//! The next key to arrive at the enrollment desk, plugged in or tapped, and its removal:
//! PC/SC card insertions (NFC readers and CCID keys) and, from nusb's hot-plug watch, USB keys
//! that PC/SC cannot see (no CCID interface, like the Security Key and Bio series, or any
//! key while pcscd is not running), read over HID.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keytally_device::usb_ids::UsbInterfaces;
use keytally_device::enumerate::{read_reader, FoundKey, PcscReport};
use keytally_device::transport::pcsc::PcscContext;
use keytally_device::transport::pcsc_watch::{Canceller, PcscEvent, PcscWatcher};
use keytally_device::enumerate::{discover, scan_with, FullScanOptions, HidapiReader, UsbKeyDevice};

/// How long a new USB device may take to show its HID nodes after the hot-plug event (the
/// USB device is announced before its interfaces are bound).
const HID_SETTLE: Duration = Duration::from_secs(3);

/// A key that arrived, and where.
pub struct Arrival {
    /// `key.reader` is the PC/SC reader, or the USB port path for a key read over HID.
    pub key: FoundKey,
    usb: bool,
}

pub struct Arrivals {
    watcher: PcscWatcher,
    ctx: Option<PcscContext>,
    /// Raised by the USB watch thread; `None` when there is no USB watch (a reader filter).
    usb_changed: Option<Arc<AtomicBool>>,
    canceller: Arc<Mutex<Option<Canceller>>>,
    /// USB ports already offered (until their key leaves).
    offered: HashSet<String>,
    queued: VecDeque<FoundKey>,
    pcsc_up: bool,
    told_down: bool,
}

impl Arrivals {
    /// Starts watching. With `reader` set only that PC/SC reader is watched (no USB).
    pub fn start(reader: Option<&str>) -> Self {
        let canceller: Arc<Mutex<Option<Canceller>>> = Arc::default();
        let usb_changed = reader.is_none().then(|| {
            let flag = Arc::new(AtomicBool::new(true)); // keys plugged in before the start count
            crate::commands::run::watch_usb(Arc::clone(&flag), Arc::clone(&canceller));
            flag
        });
        Arrivals {
            watcher: PcscWatcher::new(reader),
            ctx: None,
            usb_changed,
            canceller,
            offered: HashSet::new(),
            queued: VecDeque::new(),
            pcsc_up: true,
            told_down: false,
        }
    }

    /// Blocks until a key arrives and has been read.
    pub fn next(&mut self) -> Arrival {
        loop {
            if let Some(key) = self.queued.pop_front() {
                return Arrival { key, usb: true };
            }
            for event in self.wait() {
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
            if self.take_usb_change() {
                self.check_usb();
            }
        }
    }

    /// Blocks until `arrival`'s key is gone (or its reader, or PC/SC altogether).
    pub fn wait_removed(&mut self, arrival: &Arrival) {
        let place = arrival.key.reader.as_str();
        loop {
            let events = self.wait();
            // Keys plugged in meanwhile are read now and offered next.
            if self.take_usb_change() {
                self.check_usb();
                if arrival.usb && !self.offered.contains(place) {
                    return;
                }
            }
            if !arrival.usb
                && (!self.pcsc_up
                    || events.iter().any(|e| matches!(e, PcscEvent::CardRemoved { reader: r } | PcscEvent::ReaderRemoved(r) if r == place)))
            {
                return;
            }
        }
    }

    /// One PC/SC wait. The first (and the first after pcscd comes back) only connects: a
    /// USB change could not cancel a wait before there is a context.
    fn wait(&mut self) -> Vec<PcscEvent> {
        let usb_pending = self.usb_changed.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
        let timeout = if self.watcher.canceller().is_some() && !usb_pending { Duration::from_secs(3600) } else { Duration::ZERO };
        match self.watcher.wait(timeout) {
            Ok(events) => {
                if !self.pcsc_up && self.told_down {
                    eprintln!("keytally: PC/SC is back");
                    self.told_down = false;
                }
                self.pcsc_up = true;
                *self.canceller.lock().unwrap_or_else(|p| p.into_inner()) = self.watcher.canceller();
                events
            }
            Err(e) => {
                self.pcsc_up = false;
                self.ctx = None;
                if !self.told_down {
                    let usb = if self.usb_changed.is_some() { "; USB keys are still read over HID" } else { "" };
                    eprintln!("keytally: PC/SC is not available ({e}); waiting for pcscd{usb}");
                    self.told_down = true;
                }
                // Retry pcscd every 2 s; a USB change cuts the pause short.
                let end = Instant::now() + Duration::from_secs(2);
                while Instant::now() < end && !self.usb_changed.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Vec::new()
            }
        }
    }

    fn take_usb_change(&self) -> bool {
        self.usb_changed.as_ref().is_some_and(|f| f.swap(false, Ordering::SeqCst))
    }

    /// Reads the USB keys PC/SC cannot see that have not been offered yet, and forgets the
    /// ones that left.
    fn check_usb(&mut self) {
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
            let fresh: Vec<UsbKeyDevice> = devices
                .into_iter()
                .filter(|d| !self.offered.contains(&d.port) && (!self.pcsc_up || !d.pid.interfaces().contains(UsbInterfaces::CCID)))
                .collect();
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
            self.queued.push_back(FoundKey { key: k.key, reader: port, atr: Vec::new(), apdus: k.transfers });
        }
    }
}

/// Whether a device's HID interfaces have their nodes yet.
fn hid_nodes_ready(d: &UsbKeyDevice) -> bool {
    let i = d.pid.interfaces();
    (!i.contains(UsbInterfaces::OTP) || !d.otp.is_empty()) && (!i.contains(UsbInterfaces::FIDO) || !d.fido.is_empty())
}
