//! The control socket's protocol and its client: how the per-user tray sees what the
//! service sees (attached keys, the server's owner and status for each, the sync state,
//! credential warnings) and asks it to sync now.
//!
//! A Unix stream socket carrying newline-delimited JSON, one object per line:
//! - client → service: `{"op":"watch"}` (the current [`State`] now, then a new one at every
//!   change, for as long as the connection lasts) and `{"op":"sync"}` (rescan and push now;
//!   answered with `{"type":"ack","op":"sync"}`);
//! - service → client: `{"type":"state", ...}`, `{"type":"ack", ...}`, and
//!   `{"type":"refused","reason":...}` just before the service closes a connection whose
//!   peer (checked with `SO_PEERCRED`) it does not serve.
//!
//! The service (root or its own system user) listens; see `control_server`.

// The control socket is Unix-only for now: elsewhere parts of this are unused.
#![cfg_attr(not(unix), allow(dead_code))]

#[cfg(unix)]
use std::io::{BufRead, BufReader, Read, Write};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest line either side accepts.
pub const MAX_LINE: usize = 256 * 1024;

/// What the service shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The machine's host name.
    pub host: String,
    /// The keys attached now, in a stable order (name, then serial).
    pub keys: Vec<KeyView>,
    pub sync: SyncView,
    /// Things the user should act on: a credential about to expire or rejected, a
    /// quarantined record. Plain sentences, never a secret.
    pub warnings: Vec<String>,
}

/// One attached key, with the server's view of it where known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    pub unique_id: String,
    pub name: String,
    pub serial: Option<u32>,
    pub firmware: String,
    /// `usb` or `nfc`.
    pub transport: String,
    /// The owner the server has (email, else name); `None` when unknown or unassigned.
    pub owner: Option<String>,
    /// The server's status name for the key.
    pub status: Option<String>,
    pub tags: Vec<String>,
}

/// The sync state over every server profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncView {
    /// `ok`, `backing off` or `credential rejected` (the worst over the profiles).
    pub state: String,
    /// Records waiting in the outbox.
    pub pending: u64,
    /// RFC 3339, the most recent success of any profile.
    pub last_success_at: Option<String>,
    /// The most recent error, without secrets.
    pub last_error: Option<String>,
}

/// Client → service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Watch,
    Sync,
}

/// Service → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    State(State),
    Ack { op: String },
    Refused { reason: String },
}

/// Where the service listens: `KEYTALLY_CONTROL_SOCKET`, else the systemd
/// `RuntimeDirectory=` (`$RUNTIME_DIRECTORY/control.sock`, i.e. /run/keytally), else the
/// user's `$XDG_RUNTIME_DIR/keytally/control.sock` (a service started by hand).
pub fn server_socket_path() -> Option<PathBuf> {
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
pub fn client_socket_paths() -> Vec<PathBuf> {
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

/// Why a client could not talk to the service.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the keytally service is not running (no control socket at {0})")]
    NotRunning(String),
    #[error("cannot reach the keytally service at {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the keytally service refused this connection: {0}")]
    Refused(String),
    #[error("the keytally service closed the connection")]
    Closed,
    #[error("the keytally service sent something this keytally does not understand: {0}")]
    Protocol(String),
    #[error("the service's control socket is not available on this platform yet")]
    #[cfg_attr(unix, allow(dead_code))]
    Unsupported,
}

/// What the running service sees: connects, subscribes, and returns the first state, all
/// within `timeout` (for `status` and `doctor`).
pub fn service_state(timeout: Duration) -> Result<State, ClientError> {
    #[cfg(unix)]
    return Client::connect_default().and_then(|mut c| c.watch(timeout));
    #[cfg(not(unix))]
    {
        let _ = timeout;
        Err(ClientError::Unsupported)
    }
}

/// A connection to the service.
#[cfg(unix)]
pub struct Client {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

#[cfg(unix)]
impl Client {
    /// Connects to the first socket of [`client_socket_paths`] that exists.
    pub fn connect_default() -> Result<Client, ClientError> {
        let paths = client_socket_paths();
        let path = paths.iter().find(|p| p.exists()).or(paths.first()).cloned().unwrap_or_default();
        Client::connect(&path)
    }

    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => ClientError::NotRunning(shown.clone()),
            _ => ClientError::Io { path: shown.clone(), error },
        })?;
        // Writes are tiny; a service that stops reading must not block the tray.
        let io = |error| ClientError::Io { path: shown.clone(), error };
        stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(Client { path: path.to_owned(), writer: stream, reader })
    }

    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|error| ClientError::Io { path: self.path.display().to_string(), error })
    }

    /// The next message, waiting at most `timeout` (`None`: until one comes or the
    /// service goes away).
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Message, ClientError> {
        let io = |error| ClientError::Io { path: self.path.display().to_string(), error };
        self.reader.get_ref().set_read_timeout(timeout).map_err(io)?;
        let mut line = Vec::new();
        let n = (&mut self.reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return Err(ClientError::Protocol(format!("a line longer than {MAX_LINE} bytes or cut short")));
        }
        match serde_json::from_slice::<Message>(&line) {
            Ok(Message::Refused { reason }) => Err(ClientError::Refused(reason)),
            Ok(m) => Ok(m),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        }
    }

    /// Subscribes and returns the first state.
    pub fn watch(&mut self, timeout: Duration) -> Result<State, ClientError> {
        self.send(&Request::Watch)?;
        self.next_state(Some(timeout))
    }

    /// The next state message, skipping acks.
    pub fn next_state(&mut self, timeout: Option<Duration>) -> Result<State, ClientError> {
        loop {
            if let Message::State(s) = self.next(timeout)? {
                return Ok(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_tagged_json() {
        assert_eq!(serde_json::to_string(&Request::Watch).unwrap(), r#"{"op":"watch"}"#);
        assert_eq!(serde_json::to_string(&Request::Sync).unwrap(), r#"{"op":"sync"}"#);
        let m = Message::Refused { reason: "no".into() };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"type":"refused","reason":"no"}"#);
        let s = Message::State(State { host: "h".into(), ..State::default() });
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.starts_with(r#"{"type":"state","host":"h","keys":[]"#), "{line}");
        assert_eq!(serde_json::from_str::<Message>(&line).unwrap(), s);
    }

    #[cfg(unix)]
    #[test]
    fn a_missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(&dir.path().join("none.sock")).err().unwrap();
        assert!(matches!(err, ClientError::NotRunning(_)), "{err}");
    }
}
