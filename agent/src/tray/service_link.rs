//! The tray's connection to the service: the watch connection on a thread of its own that
//! reconnects with a 1 s → 30 s backoff (60 s after a refusal), and "Sync now" as a short
//! request on its own connection in its own thread.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::menu::View;
use crate::control::{Client, ClientError, Message, Request, State};

/// How long the first state may take after connecting.
const FIRST_STATE: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After a refusal: the service will say the same thing again for a while.
const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// One state of the service, on a connection of its own.
pub fn first_state() -> Result<State, ClientError> {
    Client::connect_default().and_then(|mut c| start_watch(&mut c))
}

/// `watch`, and the first state. A service that refuses this user says why and closes
/// without reading the request, so sending it can fail while the reason waits to be read.
fn start_watch(client: &mut Client) -> Result<State, ClientError> {
    match client.watch(FIRST_STATE) {
        Err(e @ ClientError::Io { .. }) => match client.next(Some(Duration::from_secs(1))) {
            Err(refused @ ClientError::Refused(_)) => Err(refused),
            _ => Err(e),
        },
        r => r,
    }
}

/// The reader thread: watch the service, forward every state; reconnect with backoff.
pub fn watch_service(connect: impl Fn() -> Result<Client, ClientError>, tx: Sender<View>, stop: Receiver<()>) {
    let mut backoff = BACKOFF_MIN;
    let mut last_problem = String::new();
    loop {
        let wait = match connect().and_then(|mut c| start_watch(&mut c).map(|s| (c, s))) {
            Ok((mut client, state)) => {
                tracing::info!("connected to the service");
                last_problem.clear();
                backoff = BACKOFF_MIN;
                if tx.send(View::Connected(state)).is_err() {
                    return;
                }
                let err = loop {
                    match client.next_state(None) {
                        Ok(state) => {
                            if tx.send(View::Connected(state)).is_err() {
                                return;
                            }
                        }
                        Err(e) => break e,
                    }
                };
                problem(&tx, &err, &mut last_problem)
            }
            Err(e) => problem(&tx, &e, &mut last_problem),
        };
        let Some(refused) = wait else { return };
        let pause = if refused { REFUSED_RETRY } else { backoff };
        backoff = (backoff * 2).min(BACKOFF_MAX);
        match stop.recv_timeout(pause) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Shows a lost or refused connection; logs it once per change. `None` when the main
/// thread is gone; else whether it was a refusal.
fn problem(tx: &Sender<View>, err: &ClientError, last: &mut String) -> Option<bool> {
    let (view, refused) = match err {
        ClientError::Refused(reason) => (View::Refused(reason.clone()), true),
        _ => (View::NotRunning, false),
    };
    let text = err.to_string();
    if *last != text {
        if refused {
            tracing::warn!("{text}");
        } else {
            tracing::warn!("{text}; retrying in the background");
        }
        *last = text;
    }
    tx.send(view).ok().map(|_| refused)
}

/// "Sync now": `{"op":"sync"}` on a connection of its own, in a thread of its own. The new
/// state comes through the watch connection.
pub fn sync_now() {
    let _ = std::thread::Builder::new().name("tray-sync".into()).spawn(|| {
        let r = Client::connect_default().and_then(|mut c| {
            c.send(&Request::Sync)?;
            loop {
                match c.next(Some(Duration::from_secs(10)))? {
                    Message::Ack { op } if op == "sync" => return Ok(()),
                    _ => continue,
                }
            }
        });
        match r {
            Ok(()) => tracing::info!("sync requested"),
            Err(e) => tracing::warn!("Sync now: {e}"),
        }
    });
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// The reader thread against a fake service on a temporary socket: states are forwarded,
    /// the service going away shows "not running", and a refusal is shown with its reason.
    #[test]
    fn watcher_forwards_states_and_reports_loss_and_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            // First connection: two states, then close.
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), r#"{"op":"watch"}"#);
            let mut w = s;
            writeln!(
                w,
                r#"{{"type":"state","host":"h","keys":[],"sync":{{"state":"ok","pending":0,"last_success_at":null,"last_error":null}},"warnings":[]}}"#
            )
            .unwrap();
            writeln!(
                w,
                r#"{{"type":"state","host":"h","keys":[],"sync":{{"state":"ok","pending":3,"last_success_at":null,"last_error":null}},"warnings":[]}}"#
            )
            .unwrap();
            drop(w);
            drop(r);
            // Second connection (after the 1 s backoff): refused.
            let (mut s, _) = listener.accept().unwrap();
            // Like the service: the refusal goes out before the request is read, so the
            // tray's request may hit a closed socket; the reason must still be shown.
            writeln!(s, r#"{{"type":"refused","reason":"uid 4242 is not this machine's user"}}"#).unwrap();
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let (_stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || watch_service(move || Client::connect(&path), tx, stop_rx));
        let next = || rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(next(), View::Connected(s) if s.sync.pending == 0));
        assert!(matches!(next(), View::Connected(s) if s.sync.pending == 3));
        assert_eq!(next(), View::NotRunning);
        assert_eq!(next(), View::Refused("uid 4242 is not this machine's user".into()));
        server.join().unwrap();
    }
}
