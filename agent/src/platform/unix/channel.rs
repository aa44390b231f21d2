//! The tray↔service channel on Unix: a stream socket, whose peers the service tells apart by
//! their credentials (`SO_PEERCRED`).
//!
//! Who may connect: root, the service's own user, and users with an active local session
//! (the person at the machine, whose tray it is). Anyone else, an SSH user for example, is
//! told why and disconnected. The socket file is world-connectable on purpose; the peer
//! check is the gate.

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::user;

/// The client's end: blocking, with read and write timeouts.
pub type Stream = std::os::unix::net::UnixStream;
/// The service's end of one connection (tokio).
pub type Connection = tokio::net::UnixStream;

/// Where the service listens: `KEYTALLY_CONTROL_SOCKET`, else the systemd
/// `RuntimeDirectory=` (`$RUNTIME_DIRECTORY/control.sock`, i.e. /run/keytally), else the
/// user's `$XDG_RUNTIME_DIR/keytally/control.sock` (a service started by hand).
pub fn server_endpoint() -> Option<PathBuf> {
    if let Some(p) = env_path("KEYTALLY_CONTROL_SOCKET") {
        return Some(p);
    }
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several directories separated by ':'; ours is the first.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return Some(Path::new(&first).join("control.sock"));
    }
    env_path("XDG_RUNTIME_DIR").map(|d| d.join("keytally").join("control.sock"))
}

/// Where a client looks, in order: `KEYTALLY_CONTROL_SOCKET`, the system service's
/// `/run/keytally/control.sock`, then the user's own `$XDG_RUNTIME_DIR/keytally/control.sock`.
pub fn client_endpoints() -> Vec<PathBuf> {
    if let Some(p) = env_path("KEYTALLY_CONTROL_SOCKET") {
        return vec![p];
    }
    let mut paths = vec![PathBuf::from("/run/keytally/control.sock")];
    if let Some(d) = env_path("XDG_RUNTIME_DIR") {
        paths.push(d.join("keytally").join("control.sock"));
    }
    paths
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Connects to the service at `endpoint`. No socket there (or no one listening) is
/// `NotFound` or `ConnectionRefused`.
pub fn connect(endpoint: &Path) -> io::Result<Stream> {
    Stream::connect(endpoint)
}

/// The service's listening socket.
pub struct Listener(UnixListener);

impl Listener {
    /// Binds `endpoint`, replacing a stale socket left by a crash but never a live one or
    /// anything that is not a socket. Call it inside a tokio runtime.
    pub fn bind(endpoint: &Path) -> io::Result<Listener> {
        if let Some(dir) = endpoint.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(endpoint) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::other("exists and is not a socket; not touching it"));
            }
            if Stream::connect(endpoint).is_ok() {
                return Err(io::Error::other("another keytally service is serving it"));
            }
            std::fs::remove_file(endpoint)?;
        }
        let listener = UnixListener::bind(endpoint)?;
        // Anyone may connect; the peer check decides who is served.
        std::fs::set_permissions(endpoint, std::fs::Permissions::from_mode(0o666))?;
        Ok(Listener(listener))
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Connection> {
        self.0.accept().await.map(|(stream, _)| stream)
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    uid: u32,
}

/// The peer's credentials, from the kernel.
pub fn peer(conn: &Connection) -> io::Result<Peer> {
    conn.peer_cred().map(|c| Peer { uid: c.uid() })
}

impl Peer {
    /// Whether this peer is served; the reason when not.
    pub fn admit(&self) -> Result<(), String> {
        admit(self.uid)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {}", self.uid)
    }
}

fn admit(uid: u32) -> Result<(), String> {
    if uid == 0 || uid == user::own_uid() || user::local_session_uids().contains(&uid) {
        return Ok(());
    }
    Err(format!("uid {uid} has no local session on this machine; only the logged-in user, root and the service's own user are served"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_stranger_and_replaces_a_stale_socket() {
        assert!(admit(0).is_ok());
        assert!(admit(user::own_uid()).is_ok());
        let reason = admit(3_999_999_998).unwrap_err();
        assert!(reason.contains("uid 3999999998"), "{reason}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in_rt = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(Listener::bind(&path).is_ok(), "a dead socket file is replaced");
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"x").unwrap();
        assert!(Listener::bind(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
