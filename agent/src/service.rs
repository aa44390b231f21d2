//! The workstation service (`keytally run`, and the Windows service): keeps the attached keys
//! and pushes what changed.
//!
//! It waits on the [`watch`](crate::watch) (PC/SC changes, Yubico USB devices coming and
//! going, the tray's "Sync now") with the next timer as its only timeout, and hands records to
//! the [`Pusher`], the only part that talks to the server:
//! - a full scan at start and after every change; keys it finds but cannot read yet are
//!   scanned again 1, 2 and 4 s later; a key on an NFC or contact reader, or a USB key read
//!   through its own CCID reader, is pushed as soon as its read ends, never after another
//!   reader's stall;
//! - attached keys are re-sent at a jittered heartbeat (the outbox pushes only changed
//!   records otherwise);
//! - each record carries the logged-in user as a suggested owner;
//! - a key's posture is read when the service first sees it and then at most once per
//!   `sync.posture_every` (24 h by default; [`PostureSchedule`], kept in the state directory);
//!   the records in between carry the posture last read;
//! - the tray sees all this through the [`TrayState`] served on the control channel.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use keytally_device::enumerate::{InterfaceOrder, OnKey, ScannedKey};
use keytally_device::error::LinkError;
use keytally_protocol::mapping::rfc3339;
use keytally_protocol::record::{DeviceRecord, Owner, Owners};
use rand::Rng;

use crate::config::Config;
use crate::control::TrayState;
use crate::inventory::ScanResult;
use crate::outbox::Outbox;
use crate::posture::PostureSchedule;
use crate::platform::user::{self, LocalUser};
use crate::pusher::{Job, PushTiming, Pusher};
use crate::watch::{Changes, Watch};

/// Scans again for unreadable keys (1, 2, 4 s after the one that found them).
const UNREADABLE_RETRIES: u32 = 3;

/// Runs the service until SIGINT/SIGTERM (or a stop request) and its last push are done.
/// `reader`: only PC/SC readers whose name contains it. Fails only when the outbox cannot be
/// opened or the push worker cannot start.
pub fn run(cfg: Config, reader: Option<&str>, timing: PushTiming) -> anyhow::Result<()> {
    let heartbeat = cfg.heartbeat;
    let state_dir = cfg.state_dir.clone();
    let posture = PostureSchedule::new(cfg.posture_every, Some(&cfg.state_dir));
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let tray = TrayState::new(host);
    let outbox = Outbox::open(&cfg.outbox_path(), cfg.max_pending).context("cannot open the outbox")?;
    let pusher = Pusher::start(cfg, outbox, timing, Some(Arc::clone(&tray))).context("cannot start the push worker")?;
    tracing::info!("keytally service started");
    // The USB watch starts before the first scan: nusb reports only later events.
    let mut watch = Watch::start(reader, true, pusher.wake.clone()).stop_on(Arc::clone(&pusher.stop));
    crate::control::server::start(Arc::clone(&tray), watch.sync_request());
    let mut service = Service {
        reader: reader.map(str::to_string),
        state_dir,
        attached: HashMap::new(),
        heartbeat,
        next_heartbeat: Instant::now() + jittered(heartbeat),
        tray,
        retry_at: None,
        unreadable_retries: 0,
        posture,
    };
    service.rescan(&pusher, false);
    while !pusher.stopping() {
        let changes = watch.next(service.timeout());
        if !pusher.stopping() {
            service.on(changes, &pusher);
        }
    }
    pusher.finish();
    Ok(())
}

/// A heartbeat interval with ±10 % jitter, so a fleet does not beat in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..1.1))
}

/// The service's state between two waits.
struct Service {
    reader: Option<String>,
    /// Where the agent id lives.
    state_dir: PathBuf,
    /// uniqueId → the last record seen, for the heartbeat.
    attached: HashMap<String, DeviceRecord>,
    heartbeat: Duration,
    next_heartbeat: Instant,
    /// What the tray sees.
    tray: Arc<TrayState>,
    /// When to scan again for keys that could not be read, and how many times since the
    /// last change.
    retry_at: Option<Instant>,
    unreadable_retries: u32,
    /// Whose posture to read, and the posture last read of each key.
    posture: PostureSchedule,
}

impl Service {
    /// How long the next wait may last: until the next timer.
    fn timeout(&self) -> Duration {
        let next = self.retry_at.map_or(self.next_heartbeat, |at| at.min(self.next_heartbeat));
        next.saturating_duration_since(Instant::now())
    }

    /// After every wait: rescan on a change, a "Sync now" or a due retry; heartbeat when due.
    fn on(&mut self, changes: Changes, pusher: &Pusher) {
        let changed = !changes.pcsc.is_empty() || changes.usb;
        let retry = self.retry_at.is_some_and(|at| Instant::now() >= at);
        if changed {
            self.unreadable_retries = 0;
        }
        if changed || changes.sync || retry {
            self.retry_at = None;
            self.rescan(pusher, changes.sync);
        }
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat(pusher);
            self.next_heartbeat = Instant::now() + jittered(self.heartbeat);
        }
    }

    /// Reads every key and pushes what changed. `asked`: a "Sync now" (push even with no
    /// key, so a backlog goes at once, and ask the server for the owners).
    ///
    /// A key whose entry is final as its read ends (on an NFC or contact reader, or a USB key
    /// read through its own CCID reader: `FullScanOptions::on_key`) is pushed at that moment
    /// ([`Self::scan`]), not when the slowest reader is done: a card that stalls another
    /// reader (given up at `inventory::READER_DEADLINE`) never holds it back. The scan's full
    /// set of records then goes as before; the outbox drops the ones already pushed unchanged.
    fn rescan(&mut self, pusher: &Pusher, asked: bool) {
        let suggestion = user::logged_in_user().map(|u| suggested_owner(&u));
        let (scanned, early) = self.scan(pusher, suggestion.as_ref());
        let (records, unreadable) = match scanned {
            Ok(mut r) => {
                let keys: Vec<_> = r.keys.iter().map(|k| &k.key).collect();
                let postures: Vec<_> = r.keys.iter().map(|k| k.posture.as_ref()).collect();
                self.posture.remember(&keys, &postures, &mut r.records);
                (r.records, r.unreadable_keys.len())
            }
            Err(e) => {
                tracing::warn!("scan failed: {e:#}");
                (Vec::new(), 0)
            }
        };
        self.schedule_unreadable_retry(unreadable);
        let mut now_attached = HashMap::new();
        let mut arrived = false;
        for mut r in records {
            let uid = r.yubikey.unique_id.clone();
            if !self.attached.contains_key(&uid) && !early.contains(&uid) {
                tracing::info!(unique_id = uid, name = r.yubikey.name, "key attached");
                arrived = true;
            }
            if let Some(owner) = &suggestion {
                r.owners = Owners::one(owner.clone());
            }
            now_attached.insert(uid, r);
        }
        for uid in self.attached.keys().filter(|u| !now_attached.contains_key(*u)) {
            tracing::info!(unique_id = uid, "key removed");
        }
        self.attached = now_attached;
        let records: Vec<DeviceRecord> = self.attached.values().cloned().collect();
        self.tray.set_keys(&records);
        if !records.is_empty() || asked {
            pusher.send(Job { records, tap: None, lookup: asked || arrived });
        }
    }

    /// One scan of every transport on a thread of its own, while this one pushes each key
    /// the scan tells of as its read ends. Returns the scan and the uniqueIds pushed early.
    fn scan(&self, pusher: &Pusher, suggestion: Option<&Owner>) -> (Result<ScanResult, LinkError>, HashSet<String>) {
        enum Told {
            Key(Box<ScannedKey>),
            Done(Result<ScanResult, LinkError>),
        }
        let (tx, rx) = mpsc::channel();
        let tell = tx.clone();
        let on_key = OnKey(Arc::new(move |k: &ScannedKey| {
            let _ = tell.send(Told::Key(Box::new(k.clone())));
        }));
        let (reader, state_dir, wanted) = (self.reader.as_deref(), self.state_dir.as_path(), self.posture.wanted());
        let mut early = HashSet::new();
        let scanned = std::thread::scope(|s| {
            let spawned = std::thread::Builder::new().name("scan".into()).spawn_scoped(s, move || {
                let scanned = crate::inventory::scan_telling(reader, &InterfaceOrder::default(), state_dir, wanted, Some(on_key));
                let _ = tx.send(Told::Done(scanned));
            });
            if let Err(e) = spawned {
                return Err(LinkError::Other(format!("cannot start the scan thread: {e}")));
            }
            // The scan ends by its readers' deadlines; a scan thread that died without a word
            // has dropped every sender.
            loop {
                match rx.recv() {
                    Ok(Told::Key(k)) => {
                        early.insert(self.push_early(&k, pusher, suggestion));
                    }
                    Ok(Told::Done(scanned)) => break scanned,
                    Err(_) => break Err(LinkError::Other("the scan thread ended without a result".into())),
                }
            }
        });
        (scanned, early)
    }

    /// Pushes the record of a key the scan told of at once (as the scan will return it:
    /// place, posture, suggested owner); returns its uniqueId.
    fn push_early(&self, k: &ScannedKey, pusher: &Pusher, suggestion: Option<&Owner>) -> String {
        let mut records = [crate::inventory::early_record(k, &self.state_dir)];
        self.posture.remember(&[&k.key], &[k.posture.as_ref()], &mut records);
        let [mut record] = records;
        if let Some(owner) = suggestion {
            record.owners = Owners::one(owner.clone());
        }
        let uid = record.yubikey.unique_id.clone();
        let arrived = !self.attached.contains_key(&uid);
        if arrived {
            tracing::info!(unique_id = uid, name = record.yubikey.name, place = k.place().unwrap_or("-"), "key attached");
        }
        pusher.send(Job { records: vec![record], tap: None, lookup: arrived });
        uid
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
        let records: Vec<DeviceRecord> = self
            .attached
            .values_mut()
            .map(|r| {
                r.yubikey.last_used = Some(now.clone());
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
/// and the account's id (the uid on Unix, where Windows gives the SID). Marked `suggested`, so the server can tell
/// it from an owner it assigned (kiosk and enrollment-desk records carry none).
fn suggested_owner(user: &LocalUser) -> Owner {
    Owner { entra_id: user.entra_id(), ..Owner::suggestion(&user.name, &user.sid()) }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_logged_in_user_is_a_marked_suggestion() {
        let owner = suggested_owner(&LocalUser { uid: 1000, name: "alice".into() });
        let v = serde_json::to_value(&owner).unwrap();
        assert_eq!((&v["name"], &v["sid"], &v["suggested"]), (&Value::from("alice"), &Value::from("1000"), &Value::Bool(true)));
        assert!(v["email"].is_null(), "keytally does not invent an email: {v}");
        // The tray and the enrollment desk do not take it for the server's owner.
        let device = serde_json::json!({"owners": {"count": 1, "items": [v]}});
        assert_eq!(keytally_protocol::server_view::ServerView::of(&device).owner, None);
    }
}
