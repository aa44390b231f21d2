//! Watching PC/SC without polling: readers arriving and leaving, cards inserted and removed.
//!
//! One `SCardGetStatusChange` call waits on every reader plus the PnP pseudo-reader. Each
//! reader's current state is synced from its event state before the next wait, so the call
//! blocks until something really changes (passing the PnP entry as UNAWARE every time is the
//! well-known busy loop). A card present at two waits in a row was inserted again only when
//! the reader's event counter moved by two or more (`card_change`: pcscd can show a new card
//! before it counts its insertion). A lost context (pcscd restarted or stopped) is rebuilt on
//! the next wait. A PC/SC layer that answers "changed" at once with nothing changed, again and again
//! (Wine's winscard passes every current state to pcscd as UNAWARE), must not make the
//! watcher spin: `SpinGuard` notices and slows the waits down, logged once. While the PC/SC
//! service is not running, [`PcscWatcher::wait_for_service`] waits for it to start
//! ([`super::pcsc_service`]: Windows' started event, a bounded poll for pcscd).

use std::collections::HashMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

use pcsc::{Context, ReaderState, Scope, State, PNP_NOTIFICATION};

use super::pcsc::map_error;
use super::pcsc_service::ServiceWait;
use crate::error::LinkError;

/// A change seen on the PC/SC side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcscEvent {
    /// A reader appeared (its name).
    ReaderAdded(String),
    /// A reader went away (its name).
    ReaderRemoved(String),
    /// A card arrived in a reader.
    CardInserted {
        /// The reader's name.
        reader: String,
        /// The card's ATR.
        atr: Vec<u8>,
    },
    /// A card left a reader.
    CardRemoved {
        /// The reader's name.
        reader: String,
    },
}

/// Per-reader bookkeeping between two waits.
struct Known {
    present: bool,
    /// The reader's event counter at the last wait (the high 16 bits of `dwEventState`).
    event_count: u32,
}

/// What the card in a reader did since the last wait, from what was known then and the
/// reader's state now: (removed, inserted). A card present at both waits was removed and
/// inserted again when the reader's event counter moved by two or more.
///
/// pcsc-lite adds one to the counter at every removal and every insertion (Windows counts
/// the same events, MS-RDPESC 2.2.7), so a card that left and came back between two waits
/// moves it by two. It moves by one with the card
/// present at both waits when the earlier state was read in the middle of the insertion:
/// pcscd's thread for the reader stores the PRESENT state before it counts the insertion
/// (`EHStatusHandlerThread`, eventhandler.c), and pcscd hands the reader states to a
/// waiting client without a lock (`CMD_GET_READERS_STATE`, winscard_svc.c). A wait woken
/// in that moment by another reader's event sees the new card with the old count, and the
/// next wait sees the count catch up. Taken as a reinsertion, that was a second tap of one
/// card (the kiosk printed two lines for one tap). It also moves by one when pcscd lost the
/// reader for a moment (`SCARD_UNKNOWN`) and powered the card that stayed in it again: no
/// new tap either.
fn card_change(known: &Known, present: bool, count: u32) -> (bool, bool) {
    let came_back = known.present && present && (count.wrapping_sub(known.event_count) & 0xFFFF) >= 2;
    let removed = known.present && (!present || came_back);
    let inserted = present && (!known.present || came_back);
    (removed, inserted)
}

/// Blocks on PC/SC changes. Readers whose name does not contain the filter are ignored.
pub struct PcscWatcher {
    ctx: Option<Context>,
    /// Index 0 is the PnP pseudo-reader.
    states: Vec<ReaderState>,
    known: HashMap<String, Known>,
    filter: Option<String>,
    spin: SpinGuard,
    service: ServiceWait,
}

/// How many early answers with nothing changed, in a row, make the PC/SC layer suspect.
const SPURIOUS_IN_A_ROW: u32 = 20;
/// The pause after each such answer from then on (never longer than the caller's timeout).
const SLOW_WAIT: Duration = Duration::from_millis(500);

/// Notices a status wait that keeps returning early with nothing changed and says how long to
/// pause instead, so the watcher polls slowly rather than spinning.
#[derive(Debug, Default)]
struct SpinGuard {
    in_a_row: u32,
    logged: bool,
}

impl SpinGuard {
    /// After a wait of `timeout` that returned after `elapsed`: the pause to make, if any.
    fn after_wait(&mut self, timeout: Duration, elapsed: Duration, changed: bool) -> Option<Duration> {
        if changed || timeout.is_zero() || elapsed >= timeout / 2 {
            self.in_a_row = 0;
            return None;
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self.in_a_row < SPURIOUS_IN_A_ROW {
            return None;
        }
        if !self.logged {
            self.logged = true;
            tracing::warn!(
                "the PC/SC status wait keeps returning at once with nothing changed; \
                 polling every {} ms instead",
                SLOW_WAIT.as_millis()
            );
        }
        Some(SLOW_WAIT.min(timeout - elapsed))
    }
}

impl PcscWatcher {
    /// A watcher of every reader, or of those whose name contains `reader_filter`
    /// (case-insensitive). Nothing is connected until the first wait.
    pub fn new(reader_filter: Option<&str>) -> Self {
        Self {
            ctx: None,
            states: Vec::new(),
            known: HashMap::new(),
            filter: reader_filter.map(str::to_lowercase),
            spin: SpinGuard::default(),
            service: ServiceWait::new(),
        }
    }

    /// A handle that wakes a blocked [`PcscWatcher::wait`] (for shutdown), once connected.
    pub fn canceller(&self) -> Option<Canceller> {
        self.ctx.clone().map(Canceller)
    }

    /// After [`PcscWatcher::wait`] failed with `LinkError::NoService`: blocks until the PC/SC
    /// service says it has started (Windows), for a bounded poll's pause where it cannot say
    /// (pcscd, Wine), or until `give_up` is true (checked every 100 ms). The next
    /// [`PcscWatcher::wait`] connects again.
    pub fn wait_for_service(&mut self, timeout: Duration, give_up: &dyn Fn() -> bool) {
        self.service.wait(timeout, give_up);
    }

    /// Waits up to `timeout` and returns what changed (empty on timeout or cancel). The first
    /// call reports the cards already present as insertions.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<PcscEvent>, LinkError> {
        let mut events = Vec::new();
        if self.ctx.is_none() {
            self.connect(&mut events)?;
            if !events.is_empty() {
                // Readers just (re)appeared: report their cards at once.
                return self.poll_now(events);
            }
        }
        let started = Instant::now();
        let events = self.wait_inner(timeout, events)?;
        if let Some(pause) = self.spin.after_wait(timeout, started.elapsed(), !events.is_empty()) {
            std::thread::sleep(pause);
        }
        Ok(events)
    }

    fn poll_now(&mut self, events: Vec<PcscEvent>) -> Result<Vec<PcscEvent>, LinkError> {
        self.wait_inner(Duration::ZERO, events)
    }

    fn wait_inner(&mut self, timeout: Duration, mut events: Vec<PcscEvent>) -> Result<Vec<PcscEvent>, LinkError> {
        let Some(ctx) = self.ctx.clone() else { return Ok(events) };
        for s in &mut self.states {
            s.sync_current_state();
        }
        match ctx.get_status_change(timeout, &mut self.states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout | pcsc::Error::Cancelled) => return Ok(events),
            Err(e) => {
                // The context is gone (pcscd restarted or stopped): forget it and every card.
                tracing::debug!("PC/SC status wait failed: {e} ({:#010X}); rebuilding the context", e as u32);
                self.drop_context(&mut events);
                let mapped = map_error(e);
                return if events.is_empty() { Err(mapped) } else { Ok(events) };
            }
        }
        let pnp_changed = self.states.first().is_some_and(|s| s.event_state().contains(State::CHANGED));
        let mut gone = Vec::new();
        for s in self.states.iter().skip(1) {
            let name = s.name().to_string_lossy().into_owned();
            let ev = s.event_state();
            if ev.intersects(State::UNKNOWN | State::IGNORE) {
                gone.push(name);
                continue;
            }
            let present = ev.contains(State::PRESENT) && !ev.contains(State::MUTE);
            let count = s.event_count();
            tracing::trace!(reader = %name, state = format_args!("{:#x}", ev.bits()), count, "reader state");
            let known = self.known.entry(name.clone()).or_insert(Known { present: false, event_count: count });
            let (removed, inserted) = card_change(known, present, count);
            if known.present && present && count != known.event_count && !inserted {
                tracing::debug!(reader = %name, "the event counter moved by one with the card present throughout (its insertion counted after its state was read, or the card powered again): the same card");
            }
            if removed {
                events.push(PcscEvent::CardRemoved { reader: name.clone() });
            }
            if inserted {
                events.push(PcscEvent::CardInserted { reader: name.clone(), atr: s.atr().to_vec() });
            }
            known.present = present;
            known.event_count = count;
        }
        for name in gone {
            self.forget(&name, &mut events);
        }
        if pnp_changed {
            let added = self.refresh_readers(&mut events)?;
            if added {
                return self.poll_now(events);
            }
        }
        Ok(events)
    }

    fn connect(&mut self, events: &mut Vec<PcscEvent>) -> Result<(), LinkError> {
        let ctx = Context::establish(Scope::User).map_err(|e| {
            tracing::debug!("PC/SC context: {e} ({:#010X})", e as u32);
            map_error(e)
        })?;
        self.service.back();
        self.states = vec![ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE)];
        self.ctx = Some(ctx);
        self.refresh_readers(events)?;
        Ok(())
    }

    /// Re-lists the readers: adds new ones (as UNAWARE, so the next wait reports their
    /// state at once) and forgets those that left. Returns whether any were added.
    fn refresh_readers(&mut self, events: &mut Vec<PcscEvent>) -> Result<bool, LinkError> {
        let Some(ctx) = &self.ctx else { return Ok(false) };
        let names: Vec<String> = match ctx.list_readers_owned() {
            Ok(n) => n.into_iter().map(|c| c.to_string_lossy().into_owned()).collect(),
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            Err(e) => return Err(map_error(e)),
        };
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| self.filter.as_ref().is_none_or(|f| n.to_lowercase().contains(f)))
            .collect();
        let watched: Vec<String> = self.states.iter().skip(1).map(|s| s.name().to_string_lossy().into_owned()).collect();
        for old in watched.iter().filter(|w| !names.contains(w)) {
            self.forget(old, events);
        }
        let mut added = false;
        for name in names.iter().filter(|n| !watched.contains(n)) {
            let Ok(c) = CString::new(name.as_str()) else { continue };
            self.states.push(ReaderState::new(c, State::UNAWARE));
            events.push(PcscEvent::ReaderAdded(name.clone()));
            added = true;
        }
        Ok(added)
    }

    fn forget(&mut self, reader: &str, events: &mut Vec<PcscEvent>) {
        if self.known.remove(reader).is_some_and(|k| k.present) {
            events.push(PcscEvent::CardRemoved { reader: reader.to_string() });
        }
        let before = self.states.len();
        self.states.retain(|s| s.name().to_string_lossy() != reader || s.name() == PNP_NOTIFICATION());
        if self.states.len() != before {
            events.push(PcscEvent::ReaderRemoved(reader.to_string()));
        }
    }

    fn drop_context(&mut self, events: &mut Vec<PcscEvent>) {
        let readers: Vec<String> = self.states.iter().skip(1).map(|s| s.name().to_string_lossy().into_owned()).collect();
        for r in readers {
            self.forget(&r, events);
        }
        self.states.clear();
        self.ctx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_wait_that_keeps_returning_early_with_nothing_changed_is_slowed_down() {
        let mut g = SpinGuard::default();
        let early = Duration::from_micros(30);
        for _ in 1..SPURIOUS_IN_A_ROW {
            assert_eq!(g.after_wait(SEC, early, false), None);
        }
        assert_eq!(g.after_wait(SEC, early, false), Some(SLOW_WAIT));
        assert_eq!(g.after_wait(SEC, early, false), Some(SLOW_WAIT));
        // Never past the caller's timeout.
        assert_eq!(g.after_wait(Duration::from_millis(100), early, false), Some(Duration::from_millis(100) - early));
        // A real change or a wait that really blocked starts the count again.
        assert_eq!(g.after_wait(SEC, early, true), None);
        assert_eq!(g.after_wait(SEC, early, false), None);
        for _ in 0..SPURIOUS_IN_A_ROW {
            g.after_wait(SEC, early, false);
        }
        assert_eq!(g.after_wait(SEC, SEC, false), None);
        assert_eq!(g.after_wait(SEC, early, false), None);
    }

    #[test]
    fn a_card_is_inserted_again_only_when_the_event_counter_says_it_left_and_came_back() {
        let was = |present: bool, event_count: u32| Known { present, event_count };
        assert_eq!(card_change(&was(false, 4), true, 5), (false, true), "arrived");
        assert_eq!(card_change(&was(false, 0), true, 0), (false, true), "present at the first wait");
        assert_eq!(card_change(&was(true, 5), false, 6), (true, false), "left");
        assert_eq!(card_change(&was(false, 6), false, 6), (false, false), "still empty");
        assert_eq!(card_change(&was(true, 5), true, 5), (false, false), "still there");
        // Left and came back between two waits: removal + insertion.
        assert_eq!(card_change(&was(true, 5), true, 7), (true, true), "tapped again");
        assert_eq!(card_change(&was(true, 0xFFFF), true, 1), (true, true), "tapped again, the counter wrapped");
        // The earlier state was read mid-insertion (PRESENT, the insertion not yet counted):
        // the same card.
        assert_eq!(card_change(&was(true, 4), true, 5), (false, false), "the insertion counted late");
        assert_eq!(card_change(&was(true, 0xFFFF), true, 0), (false, false), "counted late, wrapped");
        // ...then left and came back as well.
        assert_eq!(card_change(&was(true, 4), true, 7), (true, true), "counted late, then tapped again");
    }

    #[test]
    fn a_poll_without_timeout_is_never_slowed_down() {
        let mut g = SpinGuard::default();
        for _ in 0..3 * SPURIOUS_IN_A_ROW {
            assert_eq!(g.after_wait(Duration::ZERO, Duration::ZERO, false), None);
        }
    }

    /// Against the PC/SC service of this machine (under Wine: the lab's pcscd, whose status
    /// waits all return at once): 3 s of 1-s waits with nothing changing make few calls.
    #[test]
    fn the_watcher_does_not_spin_on_a_live_pc_sc_service() {
        let mut w = PcscWatcher::new(None);
        if let Err(e) = w.wait(Duration::ZERO) {
            eprintln!("SKIP: no PC/SC service here ({e})");
            return;
        }
        let started = Instant::now();
        let mut calls = 0;
        while started.elapsed() < 3 * SEC {
            let _ = w.wait(SEC);
            calls += 1;
        }
        // Blocking waits: 3 calls; Wine's at-once answers, slowed down: 20 + about 6.
        assert!(calls <= SPURIOUS_IN_A_ROW as usize + 10, "{calls} status waits in 3 s");
    }
}

/// Wakes a watcher blocked in [`PcscWatcher::wait`] from another thread.
#[derive(Clone)]
pub struct Canceller(Context);

impl Canceller {
    /// Wakes the blocked wait (it returns no events).
    pub fn cancel(&self) {
        let _ = self.0.cancel();
    }
}
