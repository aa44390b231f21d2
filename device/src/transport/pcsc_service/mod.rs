//! Waiting for the PC/SC service to come back after PC/SC answered "no service"
//! (`SCARD_E_NO_SERVICE` / `SCARD_E_SERVICE_STOPPED`, [`LinkError::NoService`]).
//!
//! Windows stops its Smart Card service when the last reader is removed and starts it again
//! when one arrives; `SCardAccessStartedEvent` gives the event it sets once it runs, so the
//! wait blocks on that event rather than polling. pcscd has no such signal (systemd starts it
//! on the first connection), so there the wait is a bounded poll, as it is wherever the event
//! cannot be had (logged once) or keeps saying "started" while PC/SC still answers "no
//! service" (Wine's winscard creates it set and never resets it: also logged once).
//!
//! The per-OS part is one small type behind the same names ([`os::Started`], [`SERVICE`]):
//! `windows.rs` (the event) and `pcscd.rs` (none). The wait is cut into short slices and asks
//! the caller between them whether to give up, so a stop request is honoured within
//! [`SLICE`] whatever the OS.
//!
//! [`LinkError::NoService`]: crate::error::LinkError::NoService

use std::time::{Duration, Instant};

#[cfg(not(windows))]
#[path = "pcscd.rs"]
mod os;
#[cfg(windows)]
#[path = "windows.rs"]
mod os;

/// What the PC/SC service is called on this OS, for messages ("waiting for …").
pub const SERVICE: &str = os::SERVICE;

/// How often PC/SC is tried again without a trustworthy "started" signal.
pub const POLL: Duration = Duration::from_secs(2);
/// How often a wait asks the caller whether to give up.
pub const SLICE: Duration = Duration::from_millis(100);
/// "Started" signals in a row, each followed by "no service" again, after which the signal is
/// not believed until PC/SC answers again.
const FALSE_STARTS: u32 = 3;
/// The pause after a "started" signal that PC/SC then contradicted, before the next try.
const AFTER_FALSE_START: Duration = Duration::from_millis(500);

/// One step of a wait, as decided by [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Block on the started signal for this long.
    Signal(Duration),
    /// Sleep this long, then let the caller try PC/SC again.
    Sleep(Duration),
}

/// Whether to believe the started signal: the decisions of [`ServiceWait`], without the OS.
#[derive(Debug, Default)]
struct Plan {
    /// The last wait ended because the signal was set (PC/SC was then tried again).
    signaled: bool,
    /// "Started" signals since PC/SC last answered, each contradicted by PC/SC's "no
    /// service" right after.
    false_starts: u32,
}

impl Plan {
    /// The next step, for a wait of up to `timeout`, with or without a signal to block on.
    fn next(&mut self, have_signal: bool, timeout: Duration) -> Step {
        // Called again after the signal said "started": PC/SC still answered "no service".
        let false_start = std::mem::take(&mut self.signaled);
        if false_start {
            self.false_starts = self.false_starts.saturating_add(1);
        }
        if !have_signal || self.distrusted() {
            Step::Sleep(POLL)
        } else if false_start {
            // A signal that stays set would otherwise make the caller spin.
            Step::Sleep(AFTER_FALSE_START)
        } else {
            // Never shorter than a poll, so a caller with a timer due does not make this spin.
            Step::Signal(timeout.max(POLL))
        }
    }

    /// The signal wait ended: `set` when the signal was set.
    fn signal_ended(&mut self, set: bool) {
        self.signaled = set;
    }

    fn distrusted(&self) -> bool {
        self.false_starts >= FALSE_STARTS
    }

    /// PC/SC answered: a later "started" is believed again.
    fn back(&mut self) {
        *self = Plan::default();
    }
}

/// The wait for the PC/SC service, kept by a watcher across outages (it holds the started
/// event, once opened, until dropped).
#[derive(Default)]
pub struct ServiceWait {
    /// `None` until first needed; then the signal, `None` inside when there is none.
    signal: Option<Option<os::Started>>,
    plan: Plan,
    said_distrust: bool,
}

impl ServiceWait {
    /// A wait that opens the OS's started signal when first needed.
    pub fn new() -> Self {
        Self::default()
    }

    /// After PC/SC answered "no service": blocks until the service says it has started, up to
    /// `timeout` (at least [`POLL`]), or for [`POLL`] where there is no signal to believe;
    /// returns early, within [`SLICE`], once `give_up` is true. The caller then tries PC/SC
    /// again (and calls [`ServiceWait::back`] when it answers).
    pub fn wait(&mut self, timeout: Duration, give_up: &dyn Fn() -> bool) {
        let signal = self.signal.get_or_insert_with(|| match os::Started::open() {
            Ok(signal) => signal,
            Err(why) => {
                tracing::warn!("cannot wait for {} to start ({why}); trying PC/SC every {} s instead", os::SERVICE, POLL.as_secs());
                None
            }
        });
        let step = self.plan.next(signal.is_some(), timeout);
        if self.plan.distrusted() && signal.is_some() && !self.said_distrust {
            self.said_distrust = true;
            tracing::warn!(
                "{} says it has started, but PC/SC still answers that it is not running; trying PC/SC every {} s instead",
                os::SERVICE,
                POLL.as_secs()
            );
        }
        match (step, signal.as_ref()) {
            (Step::Signal(d), Some(started)) => {
                let set = sliced(d, give_up, |slice| started.wait(slice));
                self.plan.signal_ended(set);
            }
            (Step::Signal(d) | Step::Sleep(d), _) => {
                sliced(d, give_up, |slice| {
                    std::thread::sleep(slice);
                    false
                });
            }
        }
    }

    /// PC/SC answered again.
    pub fn back(&mut self) {
        self.plan.back();
    }
}

/// Runs `wait(slice)` in slices of at most [`SLICE`] for up to `total`, until it returns true
/// (returned) or `give_up` is (false).
fn sliced(total: Duration, give_up: &dyn Fn() -> bool, mut wait: impl FnMut(Duration) -> bool) -> bool {
    let end = Instant::now() + total;
    loop {
        if give_up() {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if wait(left.min(SLICE)) {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn without_a_signal_it_polls() {
        let mut p = Plan::default();
        for _ in 0..5 {
            assert_eq!(p.next(false, HOUR), Step::Sleep(POLL));
        }
    }

    #[test]
    fn a_signal_is_waited_on_for_the_callers_timeout_never_less_than_a_poll() {
        let mut p = Plan::default();
        assert_eq!(p.next(true, HOUR), Step::Signal(HOUR));
        p.signal_ended(false); // timed out: nothing contradicted it
        assert_eq!(p.next(true, Duration::ZERO), Step::Signal(POLL));
    }

    /// Wine's event: set from the start and never reset. Each "started" that PC/SC contradicts
    /// costs a short pause before the next, and after three the signal is not believed until
    /// PC/SC answers again (polling).
    #[test]
    fn a_signal_that_keeps_saying_started_while_pcsc_says_no_service_is_not_believed() {
        let mut p = Plan::default();
        for _ in 1..FALSE_STARTS {
            assert_eq!(p.next(true, HOUR), Step::Signal(HOUR));
            p.signal_ended(true);
            assert_eq!(p.next(true, HOUR), Step::Sleep(AFTER_FALSE_START));
            assert!(!p.distrusted());
        }
        assert_eq!(p.next(true, HOUR), Step::Signal(HOUR));
        p.signal_ended(true);
        assert_eq!(p.next(true, HOUR), Step::Sleep(POLL));
        assert!(p.distrusted());
        assert_eq!(p.next(true, HOUR), Step::Sleep(POLL));
        // PC/SC answered: believed again at the next outage.
        p.back();
        assert_eq!(p.next(true, HOUR), Step::Signal(HOUR));
    }

    #[test]
    fn a_set_signal_right_after_which_pcsc_answers_is_no_false_start() {
        let mut p = Plan::default();
        assert_eq!(p.next(true, HOUR), Step::Signal(HOUR));
        p.signal_ended(true);
        p.back();
        assert_eq!(p.next(true, HOUR), Step::Signal(HOUR));
    }

    #[test]
    fn a_sliced_wait_gives_up_within_a_slice_and_ends_when_set() {
        let t = Instant::now();
        let calls = Cell::new(0);
        let give_up = || {
            calls.set(calls.get() + 1);
            calls.get() > 3
        };
        let set = sliced(HOUR, &give_up, |slice| {
            std::thread::sleep(slice);
            false
        });
        assert!(!set);
        assert!(t.elapsed() < 4 * SLICE + Duration::from_millis(200), "{:?}", t.elapsed());
        assert!(sliced(HOUR, &|| false, |_| true));
        assert!(!sliced(Duration::ZERO, &|| false, |_| true), "nothing left to wait");
    }

    /// The real thing on this OS: with nobody setting anything and a caller giving up at
    /// once, a wait returns at once.
    #[test]
    fn a_wait_returns_when_the_caller_gives_up() {
        let mut w = ServiceWait::new();
        let t = Instant::now();
        w.wait(HOUR, &|| true);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
