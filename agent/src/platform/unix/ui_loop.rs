//! The tray's main-thread loop on Linux and the BSDs: nothing to pump (the StatusNotifierItem
//! lives on D-Bus threads), so the loop is a wait on the tray's events; a stop request is
//! SIGTERM or SIGINT.

use crossbeam_channel::Receiver;

/// Wakes the loop after an event was sent (a no-op here: the loop waits on the channel).
#[derive(Debug, Clone, Copy)]
pub struct Waker;

impl Waker {
    /// A waker for the calling thread's loop.
    pub fn for_this_thread() -> Waker {
        Waker
    }

    pub fn wake(&self) {}
}

/// Runs `handle` on every event until it returns false or every sender is gone.
pub fn run<E, F: FnMut(E) -> bool>(events: &Receiver<E>, mut handle: F) {
    for e in events.iter() {
        if !handle(e) {
            return;
        }
    }
}

/// Calls `stop` on SIGTERM or SIGINT (once), from a thread of its own.
pub fn on_stop_request(stop: Box<dyn Fn() + Send + Sync>) {
    let _ = std::thread::Builder::new().name("tray-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        let signalled = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return false;
            };
            tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => true,
            }
        });
        if signalled {
            stop();
        }
    });
}

/// Nothing to leave: a tray started by the session has no terminal of its own.
pub fn leave_console() {}
