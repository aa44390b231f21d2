//! The service's end of the control channel: asks the platform who connected and whether
//! to serve them (on Unix `SO_PEERCRED`: root, the service's own user and users with a local
//! session), streams the tray state to watchers and relays "Sync now" to the service loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

use super::{Message, Request, MAX_LINE};
use crate::platform::channel::{self, Connection, Listener};
use super::tray_state::{TrayState, WatcherGuard};
use crate::watch::Request as LoopRequest;

/// At most this many connections at once (a tray per logged-in user is a handful).
const MAX_CONNECTIONS: usize = 32;
/// A client that does not take a message within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts serving the platform's endpoint on a thread of its own. Problems are logged, never
/// fatal: the service works without its tray.
pub fn start(board: Arc<TrayState>, sync: Arc<LoopRequest>) {
    match channel::server_endpoint() {
        Some(path) => serve_at(path, board, sync),
        None => tracing::info!("no endpoint for the control channel here (no runtime directory, or none on this platform yet); the tray cannot reach this service"),
    }
}

/// Starts serving `path` on a thread of its own.
pub fn serve_at(path: PathBuf, board: Arc<TrayState>, sync: Arc<LoopRequest>) {
    let spawned = std::thread::Builder::new().name("control".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!("control socket: no runtime: {e}");
                return;
            }
        };
        rt.block_on(async move {
            let listener = match Listener::bind(&path) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("control socket {}: {e}; the tray cannot reach this service", path.display());
                    return;
                }
            };
            tracing::info!(socket = %path.display(), "control socket listening");
            serve(listener, board, sync).await;
        });
    });
    if let Err(e) = spawned {
        tracing::warn!("control socket: cannot start its thread: {e}");
    }
}

async fn serve(listener: Listener, board: Arc<TrayState>, sync: Arc<LoopRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!("control socket: {MAX_CONNECTIONS} connections open; refusing another");
            continue;
        };
        let (board, sync) = (Arc::clone(&board), Arc::clone(&sync));
        tokio::spawn(async move {
            handle(stream, board, sync).await;
            drop(permit);
        });
    }
}

async fn handle(stream: Connection, board: Arc<TrayState>, sync: Arc<LoopRequest>) {
    let peer = match channel::peer(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("control socket: cannot read the peer's credentials: {e}");
            return;
        }
    };
    let (mut read, mut write) = tokio::io::split(stream);
    if let Err(reason) = peer.admit() {
        tracing::warn!(%peer, "control socket: refused: {reason}");
        let _ = send(&mut write, &Message::Refused { reason }).await;
        // Take what the client sends meanwhile (briefly, a little) before closing, so its
        // request does not meet a closed socket before it has read why.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(n) = read.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        return;
    }
    tracing::debug!(%peer, "control socket: connected");
    let mut lines = BufReader::new(read);
    let mut watching: Option<(tokio::sync::watch::Receiver<super::State>, WatcherGuard)> = None;
    let mut line = Vec::new();
    loop {
        let changed = async {
            match watching.as_mut() {
                Some((rx, _)) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let mut limited = (&mut lines).take((MAX_LINE + 1).saturating_sub(line.len()) as u64);
        tokio::select! {
            // Cancel-safe: bytes of a line cut off by the other branch stay in `line`.
            read = limited.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line.last() != Some(&b'\n') => {
                        tracing::warn!(%peer, "control socket: a request line too long or cut short; closing");
                        return;
                    }
                    Ok(_) => {}
                }
                let request = serde_json::from_slice::<Request>(&line);
                line.clear();
                match request {
                    Ok(Request::Watch) => {
                        if watching.is_none() {
                            let mut rx = board.subscribe();
                            let state = rx.borrow_and_update().clone();
                            watching = Some((rx, board.watcher_guard()));
                            // Someone looks now: fetch the owners for what is attached.
                            request_sync(&sync);
                            if send(&mut write, &Message::State(state)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Request::Sync) => {
                        tracing::info!(%peer, "sync requested over the control socket");
                        request_sync(&sync);
                        if send(&mut write, &Message::Ack { op: "sync".into() }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%peer, "control socket: not a request ({e}); closing");
                        return;
                    }
                }
            }
            ok = changed => {
                if !ok {
                    return;
                }
                let Some((rx, _)) = watching.as_mut() else { return };
                let state = rx.borrow_and_update().clone();
                if send(&mut write, &Message::State(state)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Hands "Sync now" to the service loop without holding up this runtime.
fn request_sync(sync: &Arc<LoopRequest>) {
    let sync = Arc::clone(sync);
    tokio::task::spawn_blocking(move || sync.raise());
}

async fn send(write: &mut (impl AsyncWrite + Unpin), message: &Message) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client does not read")),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::control::Client;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn serves_state_changes_and_sync_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("control.sock");
        let board = TrayState::new("desk".into());
        let synced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = Arc::clone(&synced);
        let sync = LoopRequest::new(move || {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        serve_at(path.clone(), Arc::clone(&board), Arc::clone(&sync));
        let mut client = connect_retrying(&path);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666);
        let first = client.watch(Duration::from_secs(5)).unwrap();
        assert_eq!(first.host, "desk");
        assert!(first.keys.is_empty());
        board.set_keys(&[crate::inventory::test_record("7", "YubiKey 5 NFC", Some("7"))]);
        let next = client.next_state(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(next.keys[0].serial, Some(7));
        client.send(&Request::Sync).unwrap();
        assert_eq!(client.next(Some(Duration::from_secs(5))).unwrap(), Message::Ack { op: "sync".into() });
        // The watch (owners lookup) and the request both asked the loop to sync.
        std::thread::sleep(Duration::from_millis(300));
        assert!(synced.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        assert!(sync.take());
        // A second service on the same path leaves the live one alone.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in_rt = rt.enter();
        assert!(Listener::bind(&path).is_err());
        assert!(client.next(Some(Duration::from_millis(200))).is_err(), "nothing more without a change");
    }

    fn connect_retrying(path: &Path) -> Client {
        for _ in 0..100 {
            if let Ok(c) = Client::connect(path) {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the control socket never came up at {}", path.display());
    }
}
