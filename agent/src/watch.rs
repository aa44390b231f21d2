//! "Something changed": the one place where the long-running modes (the service, the kiosk
//! and the enrollment desk) wait.
//!
//! A wait ([`Watch::next`]) ends when:
//! - PC/SC reports a reader or a card coming or going: one `SCardGetStatusChange` over every
//!   reader (device's `pcsc_watch`), no polling;
//! - a Yubico USB device comes or goes: nusb's hot-plug watch on a thread of its own, which
//!   raises [`Changes::usb`] and wakes the PC/SC wait;
//! - another thread asks: the tray's "Sync now" ([`Watch::sync_request`], raising
//!   [`Changes::sync`]) or the push worker's shutdown ([`Wake`]);
//! - the caller's timeout (its next timer) passes.
//!
//! While the PC/SC service is not running (pcscd down; on Windows, the Smart Card service
//! stopped with the last reader) it says so once on stderr and waits for it
//! (`PcscWatcher::wait_for_service`: the service's started event on Windows, a 2 s poll for
//! pcscd and wherever the event tells nothing), which a USB change, a request or a stop cuts
//! short; it says when PC/SC is back. Other PC/SC failures are tried again every 2 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keytally_device::error::LinkError;
use keytally_device::transport::pcsc_service;
use keytally_device::transport::pcsc_watch::{Canceller, PcscEvent, PcscWatcher};
use keytally_device::transport::usb_watch::UsbWatch;

/// How often PC/SC is tried again after a failure other than "no service".
const PCSC_RETRY: Duration = Duration::from_secs(2);
/// How often a raised [`Request`] wakes the loop again until taken, and for how long.
const REWAKE_EVERY: Duration = Duration::from_millis(100);
const REWAKE_TIMES: u32 = 30;

/// Wakes a [`Watch`] blocked in its PC/SC wait, from any thread (a no-op when no wait is in
/// progress). Cheap to clone; every clone wakes the same watch.
#[derive(Clone, Default)]
pub struct Wake(Arc<Mutex<Option<Canceller>>>);

impl Wake {
    /// Ends the wait in progress, if any.
    pub fn now(&self) {
        if let Some(c) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            c.cancel();
        }
    }

    /// Ends the wait in progress and, for the next 3 s, every wait begun meanwhile: PC/SC
    /// cancels only a wait in progress, so a stop that lands while the loop is between two
    /// waits (handling a burst of taps, say) would otherwise leave it blocked until its
    /// timeout. The repeats run on a thread of their own; a wake with no wait is a no-op.
    pub fn now_and_again(&self) {
        self.now();
        let again = self.clone();
        let spawned = std::thread::Builder::new().name("stop-wake".into()).spawn(move || {
            for _ in 0..REWAKE_TIMES {
                std::thread::sleep(REWAKE_EVERY);
                again.now();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread that repeats the stop's wake-up: {e}");
        }
    }

    fn set(&self, canceller: Option<Canceller>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = canceller;
    }
}

/// A reason for the loop to wake up, raised from another thread and taken by the loop: "a
/// Yubico USB device came or went", "Sync now".
pub struct Request {
    raised: AtomicBool,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Request {
    /// A request that calls `wake` to wake the loop.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Request { raised: AtomicBool::new(false), wake: Box::new(wake) })
    }

    /// Raises the request and wakes the loop. PC/SC cancels only a wait in progress, so a
    /// wake that lands between two waits is lost: it is repeated every 100 ms until the loop
    /// takes the request, for up to 3 s. Blocks that long at most: call it off any async
    /// runtime.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        for _ in 0..REWAKE_TIMES {
            (self.wake)();
            std::thread::sleep(REWAKE_EVERY);
            if !self.pending() {
                return;
            }
        }
    }

    /// Whether the request waits for the loop.
    pub fn pending(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Takes the request: true when it was raised since the last take.
    pub fn take(&self) -> bool {
        self.raised.swap(false, Ordering::SeqCst)
    }

    /// Marks it raised without waking anyone (the loop itself, before its first wait).
    fn mark(&self) {
        self.raised.store(true, Ordering::SeqCst);
    }
}

/// What ended a wait. All empty/false: the timeout passed (or a stop).
#[derive(Debug, Default)]
pub struct Changes {
    /// PC/SC's readers and cards that came or went (the first wait reports the cards
    /// already present as insertions).
    pub pcsc: Vec<PcscEvent>,
    /// A Yubico USB device came or went since the last wait.
    pub usb: bool,
    /// "Sync now" was asked for.
    pub sync: bool,
}

/// The watch: PC/SC, USB hot-plug and requests from other threads, waited on together.
pub struct Watch {
    pcsc: PcscWatcher,
    wake: Wake,
    /// Raised by the USB watch thread; `None` without one.
    usb: Option<Arc<Request>>,
    sync: Arc<Request>,
    /// Raised when the caller is shutting down: ends a pause early.
    stop: Option<Arc<AtomicBool>>,
    pcsc_up: bool,
    told_down: bool,
}

impl Watch {
    /// Starts watching the PC/SC readers whose name contains `reader` (every reader without
    /// it) and, with `usb`, Yubico USB devices. The USB watch starts now, before the caller's
    /// first scan, since nusb reports only later events. Without a USB hot-plug source (no
    /// USB bus, no permission) USB keys are still seen at every PC/SC change and timeout.
    /// `wake` wakes this watch (give it to whoever must end a wait, the push worker at
    /// shutdown for one).
    pub fn start(reader: Option<&str>, usb: bool, wake: Wake) -> Self {
        let waker = |w: &Wake| {
            let w = w.clone();
            move || w.now()
        };
        let usb = usb.then(|| {
            let request = Request::new(waker(&wake));
            watch_usb(Arc::clone(&request));
            request
        });
        let sync = Request::new(waker(&wake));
        Watch { pcsc: PcscWatcher::new(reader), usb, sync, wake, stop: None, pcsc_up: true, told_down: false }
    }

    /// A pause for pcscd ends early when `stop` is raised (the caller's loop then ends).
    pub fn stop_on(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Treats the first wait as if a USB device had come (keys plugged in before the start
    /// count: the enrollment desk offers them).
    pub fn assume_usb_change(&self) {
        if let Some(usb) = &self.usb {
            usb.mark();
        }
    }

    /// The handle that asks the loop for a "Sync now" ([`Changes::sync`]).
    pub fn sync_request(&self) -> Arc<Request> {
        Arc::clone(&self.sync)
    }

    /// Whether PC/SC answered at the last wait.
    pub fn pcsc_up(&self) -> bool {
        self.pcsc_up
    }

    /// Blocks until something changes or `timeout` passes.
    pub fn next(&mut self, timeout: Duration) -> Changes {
        let stopping = self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        let pending = stopping || self.usb.as_ref().is_some_and(|u| u.pending()) || self.sync.pending();
        // Until the watcher has a context there is nothing to cancel a blocking wait with, so
        // the first wait (and the first after pcscd comes back) only connects. A stop already
        // raised does not block at all.
        let pcsc_timeout = if self.pcsc.canceller().is_some() && !pending { timeout } else { Duration::ZERO };
        let pcsc = match self.pcsc.wait(pcsc_timeout) {
            Ok(events) => {
                if !self.pcsc_up && self.told_down {
                    eprintln!("keytally: PC/SC is back");
                    self.told_down = false;
                }
                self.pcsc_up = true;
                self.wake.set(self.pcsc.canceller());
                events
            }
            Err(e) => {
                self.pcsc_up = false;
                // The old context is gone: nothing to cancel until the next one.
                self.wake.set(None);
                if !self.told_down {
                    let usb = if self.usb.is_some() { "; USB keys are still read over HID" } else { "" };
                    eprintln!("keytally: PC/SC is not available ({e}); waiting for {}{usb}", pcsc_service::SERVICE);
                    self.told_down = true;
                }
                if e == LinkError::NoService {
                    let (stop, sync, usb) = (self.stop.as_deref(), &self.sync, self.usb.as_deref());
                    self.pcsc.wait_for_service(timeout, &|| interrupted(stop, sync, usb));
                } else {
                    self.pause(PCSC_RETRY);
                }
                Vec::new()
            }
        };
        Changes { pcsc, usb: self.usb.as_ref().is_some_and(|u| u.take()), sync: self.sync.take() }
    }

    /// Sleeps up to `d`, less when a request is raised or the caller stops.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if interrupted(self.stop.as_deref(), &self.sync, self.usb.as_deref()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a pause for PC/SC ends early: the caller stops, or a request waits for the loop.
fn interrupted(stop: Option<&AtomicBool>, sync: &Request, usb: Option<&Request>) -> bool {
    stop.is_some_and(|s| s.load(Ordering::SeqCst)) || sync.pending() || usb.is_some_and(Request::pending)
}

/// Raises `changed` whenever a Yubico USB device comes or goes, from a thread of its own.
fn watch_usb(changed: Arc<Request>) {
    let mut watch = match UsbWatch::start() {
        Ok(w) => w,
        Err(e) => {
            tracing::info!("no USB hot-plug events ({e}); USB keys are read at PC/SC changes and heartbeats");
            return;
        }
    };
    let spawned = std::thread::Builder::new().name("usb-watch".into()).spawn(move || {
        while let Some(change) = watch.next_change() {
            tracing::debug!(?change, "Yubico USB device");
            changed.raise();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch USB: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_request_wakes_the_loop_until_taken() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let sync = Request::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        // Not taken: woken again and again, for a bounded time.
        sync.raise();
        assert_eq!(woken.load(Ordering::SeqCst), 30);
        assert!(sync.take());
        assert!(!sync.take());
    }

    /// Whether pcscd answers here or not, a "Sync now" from another thread ends a wait of an
    /// hour at once (a cancelled PC/SC wait, or a cut-short pause for pcscd), and says so once.
    #[test]
    fn a_sync_request_ends_a_long_wait() {
        let mut watch = Watch::start(Some("no reader is called this"), false, Wake::default());
        let first = watch.next(Duration::ZERO); // connects (or finds pcscd down)
        assert!(!first.sync && !first.usb);
        let sync = watch.sync_request();
        let asker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            sync.raise();
        });
        let started = Instant::now();
        let changes = watch.next(Duration::from_secs(3600));
        assert!(changes.sync, "woken by the request");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        asker.join().unwrap();
        assert!(!watch.next(Duration::ZERO).sync, "taken once");
    }

    /// A stop's wake-up that lands between two waits (the loop busy with a burst of taps)
    /// still ends the next wait of an hour: PC/SC cancels only a wait in progress, so the
    /// wake is repeated. And once the stop is raised, no wait blocks at all. Run through a
    /// real pcscd (the virtual-key lab): the test runs its body in a child process of this
    /// test binary, pointed at the lab's socket (libpcsclite reads that once per process).
    /// The lab is Linux's pcscd in a namespace of its own; under Wine it cannot start.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_stop_between_two_waits_is_not_lost() {
        if std::env::var_os(STOP_RACE_CHILD).is_some() {
            return stop_race_body();
        }
        let lab = match keytally_virtual_key::lab::PcscLab::start() {
            Ok(lab) => lab,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true, so pcscd and vpcd must be installed: {e}"),
            Err(e) => return eprintln!("skipped: no pcscd lab here ({e})"),
        };
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "watch::tests::a_stop_between_two_waits_is_not_lost", "--nocapture"])
            .envs(lab.env())
            .env(STOP_RACE_CHILD, "1")
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the wait was not ended by the stop's wake-up within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
    }

    #[cfg(target_os = "linux")]
    const STOP_RACE_CHILD: &str = "KEYTALLY_TEST_STOP_RACE_CHILD";

    #[cfg(target_os = "linux")]
    fn stop_race_body() {
        let wake = Wake::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut watch = Watch::start(Some("no reader is called this"), false, wake.clone()).stop_on(Arc::clone(&stop));
        watch.next(Duration::ZERO); // connects
        assert!(watch.pcsc_up(), "the lab's pcscd answers");
        wake.now_and_again(); // no wait in progress: the first cancel finds nothing to end
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        watch.next(Duration::from_secs(3600));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

        stop.store(true, Ordering::SeqCst);
        let started = Instant::now();
        watch.next(Duration::from_secs(3600));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
}
