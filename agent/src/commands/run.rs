//! `keytally run` (the service) and `keytally kiosk` (a headless NFC tap station): one
//! event loop over PC/SC, two ways of handling what it sees.
//!
//! The loop blocks in `SCardGetStatusChange` (readers and cards coming and going; no
//! polling) with the next heartbeat as its only timeout, and hands records to the
//! [`Pusher`], the only part that talks to the server.
//! - service: a full scan at start and after every change (PC/SC, or a Yubico USB device
//!   coming or going, from nusb's watch, which wakes the PC/SC wait); attached keys are
//!   re-sent at a jittered heartbeat (the outbox pushes only changed records otherwise);
//! - kiosk: each tap is read from its reader, recorded, pushed, and reported in one line;
//!   taps of the same key within the merge window are merged.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use keytally_device::error::LinkError;
use keytally_device::enumerate::{read_reader, FoundKey};
use keytally_device::transport::pcsc::PcscContext;
use keytally_device::transport::pcsc_watch::{Canceller, PcscEvent, PcscWatcher};
use keytally_device::transport::reader_signal::{driver_for, Signal};
use keytally_device::transport::usb_watch::UsbWatch;
use keytally_device::enumerate::InterfaceOrder;
use keytally_protocol::mapping::{record_for, rfc3339, ObservationContext};
use rand::Rng;
use serde_json::Value;

use keytally_protocol::record::{Counted, Owner};

use crate::cli::RunArgs;
use crate::session::LocalUser;
use crate::status_board::StatusBoard;
use crate::commands::sync::load_server_config;
use crate::pusher::{cancel_wait, wake_until_taken, Job, PushTiming, Pusher, TapLine};

pub fn run(config_path: Option<&Path>, args: &RunArgs) -> ExitCode {
    let cfg = match load_server_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let heartbeat = cfg.heartbeat;
    let state_dir = cfg.state_dir.clone();
    let timing = PushTiming { push_timeout: args.push_timeout, retry_every: args.retry_every, announce_delivery: args.kiosk };
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    // The tray's view of the service (not for the kiosk: no one looks at a kiosk's tray).
    let board = (!args.kiosk).then(|| StatusBoard::new(host.clone()));
    let pusher = match Pusher::start(cfg, timing, board.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keytally: cannot start the push worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let observer = Observer { agent_id: crate::agent_id::agent_id(&state_dir), host };
    if let Some(board) = board {
        tracing::info!("keytally service started");
        let canceller = Arc::clone(&pusher.canceller);
        board.set_wake(Box::new(move || cancel_wait(&canceller)));
        #[cfg(unix)]
        match crate::control::server_socket_path() {
            Some(path) => crate::control_server::start(path, Arc::clone(&board)),
            None => tracing::info!("no runtime directory for the control socket; the tray cannot reach this service"),
        }
        // The USB watch starts before the first scan: nusb reports only later events.
        let usb_changed = Arc::new(AtomicBool::new(false));
        watch_usb(Arc::clone(&usb_changed), Arc::clone(&pusher.canceller));
        let mut service = Service {
            usb_changed,
            reader: args.reader.clone(),
            state_dir,
            attached: HashMap::new(),
            heartbeat,
            next_heartbeat: Instant::now() + jittered(heartbeat),
            board,
            retry_at: None,
            unreadable_retries: 0,
        };
        service.rescan(&pusher, false);
        event_loop(&pusher, args.reader.as_deref(), &mut service);
    } else {
        eprintln!("keytally kiosk: waiting for taps (Ctrl-C to stop)");
        let mut kiosk = Kiosk { observer, merge_window: args.merge_window, last_tap: HashMap::new(), ctx: None, feedback: Feedback::default() };
        event_loop(&pusher, args.reader.as_deref(), &mut kiosk);
    }
    pusher.finish();
    ExitCode::SUCCESS
}

/// What the event loop drives.
trait Handler {
    /// How long the next wait may last (the next timer due).
    fn timeout(&self) -> Duration;
    /// A batch of PC/SC changes.
    fn on_events(&mut self, events: Vec<PcscEvent>, pusher: &Pusher);
    /// After every wait, events or not (timers).
    fn on_wake(&mut self, _pusher: &Pusher) {}
}

/// Waits on PC/SC until the pusher stops.
fn event_loop(pusher: &Pusher, reader: Option<&str>, handler: &mut dyn Handler) {
    let mut watcher = PcscWatcher::new(reader);
    let mut down_since: Option<Instant> = None;
    while !pusher.stopping() {
        // Until the watcher has a context there is nothing to cancel a blocking wait with,
        // so the first wait (and the first after pcscd comes back) only connects.
        let wait = if watcher.canceller().is_some() { handler.timeout() } else { Duration::ZERO };
        match watcher.wait(wait) {
            Ok(events) => {
                if down_since.take().is_some() {
                    eprintln!("keytally: PC/SC is back");
                }
                *pusher.canceller.lock().unwrap_or_else(|p| p.into_inner()) = watcher.canceller();
                if !events.is_empty() && !pusher.stopping() {
                    handler.on_events(events, pusher);
                }
            }
            Err(e) => {
                if down_since.is_none() {
                    eprintln!("keytally: PC/SC is not available ({e}); waiting for pcscd");
                    down_since = Some(Instant::now());
                }
                sleep_unless(&pusher.stop, Duration::from_secs(2));
            }
        }
        handler.on_wake(pusher);
    }
}

/// Raises `changed` and wakes the PC/SC wait whenever a Yubico USB device comes or goes.
/// Without a USB hot-plug source (no USB bus, no permission), USB keys are still seen at
/// every PC/SC change and heartbeat.
pub(crate) fn watch_usb(changed: Arc<AtomicBool>, canceller: Arc<Mutex<Option<Canceller>>>) {
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
            changed.store(true, Ordering::SeqCst);
            wake_until_taken(&changed, || cancel_wait(&canceller));
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch USB: {e}");
    }
}

/// A heartbeat interval with ±10 % jitter, so a fleet does not beat in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..1.1))
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent facts that go into every record.
struct Observer {
    agent_id: uuid::Uuid,
    host: String,
}

impl Observer {
    fn context(&self) -> ObservationContext {
        ObservationContext { agent_id: self.agent_id, host: self.host.clone(), observed_at: SystemTime::now() }
    }
}

/// The service: keeps the attached keys and pushes what changed.
struct Service {
    reader: Option<String>,
    /// Where the agent id lives.
    state_dir: std::path::PathBuf,
    /// uniqueId → the last record seen, for the heartbeat.
    attached: HashMap<String, Value>,
    heartbeat: Duration,
    next_heartbeat: Instant,
    /// Set by the USB watch thread.
    usb_changed: Arc<AtomicBool>,
    /// What the tray sees; also carries its "Sync now".
    board: Arc<StatusBoard>,
    /// When to scan again for keys that could not be read, and how many times since the
    /// last change.
    retry_at: Option<Instant>,
    unreadable_retries: u32,
}

/// Scans again for unreadable keys (1, 2, 4 s after the one that found them).
const UNREADABLE_RETRIES: u32 = 3;

impl Handler for Service {
    fn timeout(&self) -> Duration {
        if self.usb_changed.load(Ordering::SeqCst) || self.board.sync_pending() {
            return Duration::ZERO;
        }
        let next = self.retry_at.map_or(self.next_heartbeat, |at| at.min(self.next_heartbeat));
        next.saturating_duration_since(Instant::now())
    }

    fn on_events(&mut self, _events: Vec<PcscEvent>, pusher: &Pusher) {
        self.unreadable_retries = 0;
        self.rescan(pusher, false);
    }

    fn on_wake(&mut self, pusher: &Pusher) {
        let usb = self.usb_changed.swap(false, Ordering::SeqCst);
        let asked = self.board.take_sync_request();
        let retry = self.retry_at.is_some_and(|at| Instant::now() >= at);
        if usb {
            self.unreadable_retries = 0;
        }
        if (usb || asked || retry) && !pusher.stopping() {
            self.retry_at = None;
            self.rescan(pusher, asked);
        }
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat(pusher);
            self.next_heartbeat = Instant::now() + jittered(self.heartbeat);
        }
    }
}

impl Service {
    /// Reads every key and pushes what changed. `asked`: a "Sync now" (push even with no
    /// key, so a backlog goes at once, and ask the server for the owners).
    fn rescan(&mut self, pusher: &Pusher, asked: bool) {
        let scanned = crate::commands::scan::scan(self.reader.as_deref(), &InterfaceOrder::default(), &self.state_dir);
        let (records, unreadable) = match scanned {
            Ok(r) => (r.records, r.unreadable_keys.len()),
            Err(e) => {
                tracing::warn!("scan failed: {e:#}");
                (Vec::new(), 0)
            }
        };
        self.schedule_unreadable_retry(unreadable);
        let suggestion = crate::session::logged_in_user().map(|u| suggested_owner(&u));
        let mut now_attached = HashMap::new();
        let mut arrived = false;
        for mut r in records {
            let uid = r.yubikey.unique_id.clone();
            if !self.attached.contains_key(&uid) {
                tracing::info!(unique_id = uid, name = r.yubikey.name, "key attached");
                arrived = true;
            }
            if let Some(owner) = &suggestion {
                r.owners = Counted { count: 1, items: vec![owner.clone()] };
            }
            if let Ok(v) = serde_json::to_value(&r) {
                now_attached.insert(uid, v);
            }
        }
        for uid in self.attached.keys().filter(|u| !now_attached.contains_key(*u)) {
            tracing::info!(unique_id = uid, "key removed");
        }
        self.attached = now_attached;
        let records: Vec<Value> = self.attached.values().cloned().collect();
        self.board.set_keys(&records);
        if !records.is_empty() || asked {
            pusher.send(Job { records, tap: None, lookup: asked || arrived });
        }
    }

    /// A key just plugged in is often scanned before udev has given its hidraw nodes to
    /// group keytally (or bound them at all): while a scan finds keys it cannot read, scan
    /// again 1, 2 and 4 s after the change, then wait for the next change as usual.
    fn schedule_unreadable_retry(&mut self, unreadable: usize) {
        if unreadable == 0 {
            self.unreadable_retries = 0;
            self.retry_at = None;
        } else if self.unreadable_retries < UNREADABLE_RETRIES {
            self.retry_at = Some(Instant::now() + Duration::from_secs(1 << self.unreadable_retries));
            self.unreadable_retries += 1;
        } else if self.unreadable_retries == UNREADABLE_RETRIES {
            tracing::info!("{unreadable} key(s) still unreadable; reading them again at the next change");
            self.unreadable_retries += 1;
        }
    }

    /// Re-sends the attached keys with a fresh `lastUsed`; the outbox turns an unchanged
    /// record into a push only once its heartbeat is due.
    fn heartbeat(&mut self, pusher: &Pusher) {
        let now = rfc3339(SystemTime::now());
        let records: Vec<Value> = self
            .attached
            .values_mut()
            .map(|r| {
                if let Some(y) = r.get_mut("yubikey").and_then(Value::as_object_mut) {
                    y.insert("lastUsed".into(), Value::String(now.clone()));
                }
                r.clone()
            })
            .collect();
        tracing::info!(keys = records.len(), "heartbeat");
        if !records.is_empty() {
            pusher.send(Job { records, tap: None, lookup: false });
        }
    }
}

/// The person logged in at this workstation, as a suggested owner of its keys: the name,
/// and the uid where Windows would give the SID. Marked `suggested`, so the server can tell
/// it from an owner it assigned (kiosk and enrollment-desk records carry none).
fn suggested_owner(user: &LocalUser) -> Owner {
    Owner::suggestion(&user.name, &user.uid.to_string())
}

/// The kiosk: one read per tap, merged within a window, one line each.
struct Kiosk {
    observer: Observer,
    merge_window: Duration,
    last_tap: HashMap<String, Instant>,
    ctx: Option<PcscContext>,
    feedback: Feedback,
}

impl Handler for Kiosk {
    fn timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn on_events(&mut self, events: Vec<PcscEvent>, pusher: &Pusher) {
        for event in events {
            let PcscEvent::CardInserted { reader, .. } = event else {
                tracing::debug!(?event, "PC/SC event");
                continue;
            };
            let present_at = Instant::now();
            let key = match self.read(&reader) {
                Ok(Some(key)) => key,
                Ok(None) => continue, // gone before it could be read: not a tap
                Err(e) => {
                    println!("{}  {reader}  unreadable key: {e}", rfc3339(SystemTime::now()));
                    self.feedback.give(self.ctx.as_ref(), &reader, Signal::Failed);
                    continue;
                }
            };
            let ctx = self.observer.context();
            let record = record_for(&key.key, Some(&key.reader), &ctx);
            let unique_id = record.yubikey.unique_id.clone();
            let merged = self.last_tap.get(&unique_id).is_some_and(|t| present_at.duration_since(*t) < self.merge_window);
            self.last_tap.retain(|_, t| present_at.duration_since(*t) < self.merge_window);
            self.last_tap.insert(unique_id.clone(), present_at);
            if merged {
                tracing::info!(unique_id, "tap merged with the previous one of the same key");
                continue;
            }
            let Ok(mut record) = serde_json::to_value(&record) else { continue };
            // A tap is an event of its own: its time makes it a new version to push.
            if let Some(o) = record.get_mut("observation").and_then(Value::as_object_mut) {
                o.insert("tappedAt".into(), Value::String(rfc3339(ctx.observed_at)));
            }
            let tap = TapLine { reader: reader.clone(), name: key.key.name.clone(), serial: key.key.info.serial, unique_id, present_at };
            pusher.send(Job { records: vec![record], tap: Some(tap), lookup: false });
            // After the hand-over: the signal takes the reader a few hundred milliseconds.
            self.feedback.give(self.ctx.as_ref(), &reader, Signal::Accepted);
        }
    }
}

impl Kiosk {
    fn read(&mut self, reader: &str) -> Result<Option<FoundKey>, keytally_device::Error> {
        if self.ctx.is_none() {
            self.ctx = Some(PcscContext::establish()?);
        }
        let Some(ctx) = self.ctx.as_ref() else { return Err(LinkError::NoService.into()) };
        let r = read_reader(ctx, reader);
        if matches!(r, Err(keytally_device::Error::Link(LinkError::NoService))) {
            self.ctx = None;
        }
        r
    }
}

/// Buzzer/LED feedback on readers that document a PC/SC command for it (see
/// `reader_signal`); for any other reader, and when a reader refuses, it is said once per
/// reader and the stdout line is the feedback.
#[derive(Default)]
struct Feedback {
    told: std::collections::HashSet<String>,
}

impl Feedback {
    fn give(&mut self, ctx: Option<&PcscContext>, reader: &str, signal: Signal) {
        let Some(driver) = driver_for(reader) else {
            if self.told.insert(reader.to_string()) {
                eprintln!("keytally kiosk: reader \"{reader}\" has no buzzer/LED control keytally can drive; the line on stdout is the feedback");
            }
            return;
        };
        let Some(ctx) = ctx else { return };
        match ctx.signal(reader, driver, signal) {
            Ok(()) => tracing::debug!(reader, ?signal, "reader signal given"),
            // A key lifted at once leaves nothing to signal through: not worth a word.
            Err(LinkError::NoCard | LinkError::Removed) => {}
            Err(e) if self.told.insert(reader.to_string()) => {
                eprintln!("keytally kiosk: reader \"{reader}\" did not take the buzzer/LED command ({e}); the line on stdout is the feedback");
            }
            Err(e) => tracing::debug!(reader, "reader signal failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_in_user_is_a_marked_suggestion() {
        let owner = suggested_owner(&LocalUser { uid: 1000, name: "alice".into() });
        let v = serde_json::to_value(&owner).unwrap();
        assert_eq!((&v["name"], &v["sid"], &v["suggested"]), (&Value::from("alice"), &Value::from("1000"), &Value::Bool(true)));
        assert!(v["email"].is_null(), "keytally does not invent an email: {v}");
        // The tray and the enrollment desk do not take it for the server's owner.
        let device = serde_json::json!({"owners": {"count": 1, "items": [v]}});
        assert_eq!(crate::status_board::server_view(&device).owner, None);
    }
}
