//! The kiosk (`keytally kiosk`, `run --kiosk`): a headless NFC tap station. Each tap is read
//! from its reader, recorded, pushed, and reported in one line on stdout (the push worker
//! prints it once the record is synced or queued); taps of the same key within the merge
//! window are merged. ACS readers beep and blink for a tap (see [`Feedback`]). A key's posture
//! is read at most once per `sync.posture_every` (24 h by default, [`PostureSchedule`]); its
//! taps in between carry the posture last read.
//!
//! Readers are independent: each tap is handled on a thread of its own, its read (on a
//! thread and PC/SC context of its own, `enumerate::read_readers`) given up at
//! [`READ_DEADLINE`], so a card that stalls or floods one reader, or a reader another program
//! holds, never holds up a tap on another reader. Only the merge window is shared, behind a
//! lock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use keytally_device::enumerate::{read_readers_with, reader_stalled, FoundKey};
use keytally_device::error::{LinkError, NFC_RESTRICTED_MESSAGE};
use keytally_device::transport::pcsc::PcscContext;
use keytally_device::transport::pcsc_watch::PcscEvent;
use keytally_device::transport::reader_signal::{driver_for, Signal};
use keytally_device::Error;
use keytally_protocol::mapping::{record_for, rfc3339, set_posture, ObservationContext};

use crate::config::Config;
use crate::outbox::Outbox;
use crate::posture::PostureSchedule;
use crate::pusher::{Job, PushTiming, Pusher, TapLine};
use crate::watch::Watch;

/// How long the read of one tap may take before it is given up (a good key takes a few
/// milliseconds; the reader is named and works again once the card leaves).
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Waits for taps on the PC/SC readers whose name contains `reader` (every reader without it)
/// until SIGINT/SIGTERM and the last push are done. Fails only when the outbox cannot be
/// opened or the push worker cannot start.
pub fn run(cfg: Config, reader: Option<&str>, merge_window: Duration, timing: PushTiming) -> anyhow::Result<()> {
    let observer = Observer { agent_id: crate::agent_id::agent_id(&cfg.state_dir), host: gethostname::gethostname().to_string_lossy().into_owned() };
    let posture = PostureSchedule::new(cfg.posture_every, Some(&cfg.state_dir));
    // No one looks at a kiosk's tray: no tray state.
    let outbox = Outbox::open(&cfg.outbox_path(), cfg.max_pending).context("cannot open the outbox")?;
    let pusher = Pusher::start(cfg, outbox, timing, None).context("cannot start the push worker")?;
    eprintln!("keytally kiosk: waiting for taps (Ctrl-C to stop)");
    let mut watch = Watch::start(reader, false, pusher.wake.clone()).stop_on(Arc::clone(&pusher.stop));
    let kiosk = Kiosk { observer, merge_window, last_tap: Mutex::default(), feedback: Feedback::default(), posture };
    // Every tap's thread ends within its read deadline (plus the hand-over and the reader
    // signal), so the scope ends soon after the loop.
    std::thread::scope(|taps| {
        while !pusher.stopping() {
            let changes = watch.next(Duration::from_secs(3600));
            if pusher.stopping() {
                break;
            }
            for event in changes.pcsc {
                let PcscEvent::CardInserted { reader, .. } = event else {
                    tracing::debug!(?event, "PC/SC event");
                    continue;
                };
                let present_at = Instant::now();
                let (kiosk, pusher, name) = (&kiosk, &pusher, reader.clone());
                let spawned = std::thread::Builder::new().name(format!("tap:{reader}")).spawn_scoped(taps, move || kiosk.on_tap(&name, present_at, pusher));
                if let Err(e) = spawned {
                    println!("{}  {reader}  unreadable key: cannot start a thread for the tap: {e}", rfc3339(SystemTime::now()));
                }
            }
        }
    });
    pusher.finish();
    Ok(())
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

/// The kiosk: one read per tap, merged within a window, one line each. Shared by the taps'
/// threads.
struct Kiosk {
    observer: Observer,
    merge_window: Duration,
    /// When each key was last tapped (the merge window), by uniqueId.
    last_tap: Mutex<HashMap<String, Instant>>,
    feedback: Feedback,
    /// Whose posture to read, and the posture last read of each key.
    posture: PostureSchedule,
}

impl Kiosk {
    /// Reads the card that PC/SC saw arrive on `reader` at `present_at`, and hands its record
    /// to the push worker unless it merges with the key's previous tap.
    fn on_tap(&self, reader: &str, present_at: Instant, pusher: &Pusher) {
        let outcome = read_readers_with(&[reader.to_string()], READ_DEADLINE, &self.posture.wanted()).next().map_or(Ok(None), |(_, outcome)| outcome);
        let key = match outcome {
            Ok(Some(key)) => key,
            Ok(None) => return, // gone before it could be read: not a tap
            Err(Error::NfcRestricted) => {
                println!("{}  {reader}  {NFC_RESTRICTED_MESSAGE}", rfc3339(SystemTime::now()));
                self.feedback.give(reader, Signal::Failed);
                return;
            }
            Err(e) => {
                println!("{}  {reader}  unreadable key: {e}", rfc3339(SystemTime::now()));
                self.feedback.give(reader, Signal::Failed);
                return;
            }
        };
        let Some(tap) = self.record_tap(&key, reader, present_at) else { return };
        pusher.send(tap);
        // After the hand-over: the signal takes the reader a few hundred milliseconds.
        self.feedback.give(reader, Signal::Accepted);
    }

    /// The push job for a tap of `key`, or `None` when it merges with the key's previous tap.
    fn record_tap(&self, key: &FoundKey, reader: &str, present_at: Instant) -> Option<Job> {
        let ctx = self.observer.context();
        let mut record = record_for(&key.key, Some(&key.reader), &ctx);
        set_posture(&mut record, key.posture.as_ref().map(|p| &p.posture));
        self.posture.remember(&[&key.key], &[key.posture.as_ref()], std::slice::from_mut(&mut record));
        if let Some(read) = &key.posture {
            for line in crate::posture::warning_lines(&crate::posture::place_words(Some(reader), None), read) {
                eprintln!("{line}");
            }
        }
        let unique_id = record.yubikey.unique_id.clone();
        {
            let mut last_tap = lock(&self.last_tap);
            let merged = last_tap.get(&unique_id).is_some_and(|t| present_at.saturating_duration_since(*t) < self.merge_window);
            last_tap.retain(|_, t| present_at.saturating_duration_since(*t) < self.merge_window);
            last_tap.insert(unique_id.clone(), present_at);
            if merged {
                tracing::info!(unique_id, "tap merged with the previous one of the same key");
                return None;
            }
        }
        // A tap is an event of its own: its time makes it a new version to push.
        if let Some(o) = record.observation.as_mut() {
            o.tapped_at = Some(rfc3339(ctx.observed_at));
        }
        let advisories = crate::advisories::labels(&record);
        let tap = TapLine { reader: reader.to_string(), name: key.key.name.clone(), serial: key.key.info.serial, unique_id, advisories, present_at };
        Some(Job { records: vec![record], tap: Some(tap), lookup: false })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Buzzer/LED feedback on readers that document a PC/SC command for it (see
/// `reader_signal`); for any other reader, and when a reader refuses, it is said once per
/// reader and the stdout line is the feedback. A reader whose read was given up and is still
/// stalled gets no signal (it would wait for the stalled card's transaction).
#[derive(Default)]
struct Feedback {
    told: Mutex<HashSet<String>>,
}

impl Feedback {
    fn give(&self, reader: &str, signal: Signal) {
        let Some(driver) = driver_for(reader) else {
            if lock(&self.told).insert(reader.to_string()) {
                eprintln!("keytally kiosk: reader \"{reader}\" has no buzzer/LED control keytally can drive; the line on stdout is the feedback");
            }
            return;
        };
        if reader_stalled(reader) {
            tracing::debug!(reader, ?signal, "no reader signal: the reader's read is stalled");
            return;
        }
        // A context of this tap's own: signals on other readers do not wait for this one.
        let signalled = PcscContext::establish().and_then(|ctx| ctx.signal(reader, driver, signal));
        match signalled {
            Ok(()) => tracing::debug!(reader, ?signal, "reader signal given"),
            // A key lifted at once leaves nothing to signal through: not worth a word.
            Err(LinkError::NoCard | LinkError::Removed) => {}
            Err(e) if lock(&self.told).insert(reader.to_string()) => {
                eprintln!("keytally kiosk: reader \"{reader}\" did not take the buzzer/LED command ({e}); the line on stdout is the feedback");
            }
            Err(e) => tracing::debug!(reader, "reader signal failed: {e}"),
        }
    }
}
