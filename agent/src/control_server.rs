//! The service's end of the control socket (protocol in `control`): checks each peer's
//! credentials (`SO_PEERCRED`), streams the status board to watchers and relays "Sync now".
//!
//! Who may connect: root, the service's own user, and users with an active local session
//! (the person at the machine, whose tray it is). Anyone else, an SSH user for example, is
//! told why and disconnected. The socket file is world-connectable on purpose; the peer
//! check is the gate.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::control::{Message, Request, MAX_LINE};
use crate::session;
use crate::tray_state::TrayState;
use crate::watch::Request as LoopRequest;

/// At most this many connections at once (a tray per logged-in user is a handful).
const MAX_CONNECTIONS: usize = 32;
/// A client that does not take a message within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts serving `path` on a thread of its own. Problems are logged, never fatal: the
/// service works without its tray.
pub fn start(path: PathBuf, board: Arc<TrayState>, sync: Arc<LoopRequest>) {
    let spawned = std::thread::Builder::new().name("control".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!("control socket: no runtime: {e}");
                return;
            }
        };
        rt.block_on(async move {
            let listener = match bind(&path) {
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

/// Binds the socket, replacing a stale one left by a crash but never a live one.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other("exists and is not a socket; not touching it"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other("another keytally service is serving it"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    // Anyone may connect; the peer check decides who is served.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

async fn serve(listener: UnixListener, board: Arc<TrayState>, sync: Arc<LoopRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
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

/// Whether `uid` may use the socket; the reason when not.
fn admit(uid: u32) -> Result<(), String> {
    if uid == 0 || uid == session::own_uid() || session::local_session_uids().contains(&uid) {
        return Ok(());
    }
    Err(format!("uid {uid} has no local session on this machine; only the logged-in user, root and the service's own user are served"))
}

async fn handle(stream: UnixStream, board: Arc<TrayState>, sync: Arc<LoopRequest>) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!("control socket: cannot read the peer's credentials: {e}");
            return;
        }
    };
    let (mut read, mut write) = stream.into_split();
    if let Err(reason) = admit(uid) {
        tracing::warn!(uid, "control socket: refused: {reason}");
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
    tracing::debug!(uid, "control socket: connected");
    let mut lines = BufReader::new(read);
    let mut watching: Option<(tokio::sync::watch::Receiver<crate::control::State>, crate::tray_state::WatcherGuard)> = None;
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
                        tracing::warn!(uid, "control socket: a request line too long or cut short; closing");
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
                        tracing::info!(uid, "sync requested over the control socket");
                        request_sync(&sync);
                        if send(&mut write, &Message::Ack { op: "sync".into() }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(uid, "control socket: not a request ({e}); closing");
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

async fn send(write: &mut OwnedWriteHalf, message: &Message) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client does not read")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Client;

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
        start(path.clone(), Arc::clone(&board), Arc::clone(&sync));
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
        assert!(bind(&path).is_err());
        assert!(client.next(Some(Duration::from_millis(200))).is_err(), "nothing more without a change");
    }

    #[test]
    fn refuses_a_stranger_and_replaces_a_stale_socket() {
        assert!(admit(0).is_ok());
        assert!(admit(session::own_uid()).is_ok());
        let reason = admit(3_999_999_998).unwrap_err();
        assert!(reason.contains("uid 3999999998"), "{reason}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in_rt = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(bind(&path).is_ok(), "a dead socket file is replaced");
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"x").unwrap();
        assert!(bind(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
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
