//! The kiosk (`keytally kiosk`, `run --kiosk`): a headless NFC tap station. Each tap is read
//! from its reader, recorded, pushed, and reported in one line on stdout (the push worker
//! prints it once the record is synced or queued); taps of the same key within the merge
//! window are merged. ACS readers beep and blink for a tap (see [`Feedback`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use keytally_device::enumerate::{read_reader, FoundKey};
use keytally_device::error::LinkError;
use keytally_device::transport::pcsc::PcscContext;
use keytally_device::transport::pcsc_watch::PcscEvent;
use keytally_device::transport::reader_signal::{driver_for, Signal};
use keytally_protocol::mapping::{record_for, rfc3339, ObservationContext};

use crate::config::Config;
use crate::outbox::Outbox;
use crate::pusher::{Job, PushTiming, Pusher, TapLine};
use crate::watch::Watch;

/// Waits for taps on the PC/SC readers whose name contains `reader` (every reader without it)
/// until SIGINT/SIGTERM and the last push are done. Fails only when the outbox cannot be
/// opened or the push worker cannot start.
pub fn run(cfg: Config, reader: Option<&str>, merge_window: Duration, timing: PushTiming) -> anyhow::Result<()> {
    let observer = Observer { agent_id: crate::agent_id::agent_id(&cfg.state_dir), host: gethostname::gethostname().to_string_lossy().into_owned() };
    // No one looks at a kiosk's tray: no tray state.
    let outbox = Outbox::open(&cfg.outbox_path(), cfg.max_pending).context("cannot open the outbox")?;
    let pusher = Pusher::start(cfg, outbox, timing, None).context("cannot start the push worker")?;
    eprintln!("keytally kiosk: waiting for taps (Ctrl-C to stop)");
    let mut watch = Watch::start(reader, false, pusher.wake.clone()).stop_on(Arc::clone(&pusher.stop));
    let mut kiosk = Kiosk { observer, merge_window, last_tap: HashMap::new(), ctx: None, feedback: Feedback::default() };
    while !pusher.stopping() {
        let changes = watch.next(Duration::from_secs(3600));
        if !pusher.stopping() {
            kiosk.on_events(changes.pcsc, &pusher);
        }
    }
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

/// The kiosk: one read per tap, merged within a window, one line each.
struct Kiosk {
    observer: Observer,
    merge_window: Duration,
    last_tap: HashMap<String, Instant>,
    /// For reading the tapped keys and signalling on their readers.
    ctx: Option<PcscContext>,
    feedback: Feedback,
}

impl Kiosk {
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
            let mut record = record_for(&key.key, Some(&key.reader), &ctx);
            let unique_id = record.yubikey.unique_id.clone();
            let merged = self.last_tap.get(&unique_id).is_some_and(|t| present_at.duration_since(*t) < self.merge_window);
            self.last_tap.retain(|_, t| present_at.duration_since(*t) < self.merge_window);
            self.last_tap.insert(unique_id.clone(), present_at);
            if merged {
                tracing::info!(unique_id, "tap merged with the previous one of the same key");
                continue;
            }
            // A tap is an event of its own: its time makes it a new version to push.
            if let Some(o) = record.observation.as_mut() {
                o.tapped_at = Some(rfc3339(ctx.observed_at));
            }
            let advisories = crate::advisories::labels(&record);
            let tap = TapLine { reader: reader.clone(), name: key.key.name.clone(), serial: key.key.info.serial, unique_id, advisories, present_at };
            pusher.send(Job { records: vec![record], tap: Some(tap), lookup: false });
            // After the hand-over: the signal takes the reader a few hundred milliseconds.
            self.feedback.give(self.ctx.as_ref(), &reader, Signal::Accepted);
        }
    }

    fn read(&mut self, reader: &str) -> Result<Option<FoundKey>, keytally_device::Error> {
        if self.ctx.is_none() {
            self.ctx = Some(PcscContext::establish()?);
        }
        let Some(ctx) = self.ctx.as_ref() else {
            return Err(LinkError::NoService.into());
        };
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
    told: HashSet<String>,
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
