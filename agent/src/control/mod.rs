//! The control channel between the service and the per-user tray: how the tray sees what the
//! service sees (attached keys, the server's owner and status for each, the sync state,
//! credential warnings) and asks it to sync now. The messages are the same on every OS; the
//! channel itself (a Unix socket; on Windows a named pipe) is the platform's
//! (`crate::platform::channel`).
//!
//! Newline-delimited JSON, one object per line:
//! - client → service: `{"op":"watch"}` (the current [`State`] now, then a new one at every
//!   change, for as long as the connection lasts) and `{"op":"sync"}` (rescan and push now;
//!   answered with `{"type":"ack","op":"sync"}`);
//! - service → client: `{"type":"state", ...}`, `{"type":"ack", ...}`, and
//!   `{"type":"refused","reason":...}` just before the service closes a connection whose
//!   peer (checked by the platform: `SO_PEERCRED` on Unix, the client's process token on
//!   Windows) it does not serve.
//!
//! The service publishes its [`TrayState`] and listens ([`server`]); the tray, `status` and
//! `doctor` connect ([`client`]).

mod client;
pub mod server;
mod tray_state;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::Client;
pub use tray_state::TrayState;

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
    /// The Yubico advisories that apply to the key, as `crate::advisories::label`s (ids, `(if)`
    /// under a condition); `None` when not assessed (firmware unknown, or an older service).
    #[serde(default)]
    pub advisories: Option<Vec<String>>,
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

/// Why a client could not talk to the service.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the keytally service is not running (nothing listens at {0})")]
    NotRunning(String),
    #[error("cannot reach the keytally service at {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the keytally service refused this connection: {0}")]
    Refused(String),
    #[error("the keytally service closed the connection")]
    Closed,
    #[error("the keytally service sent something this keytally does not understand: {0}")]
    Protocol(String),
    #[error("the service's control channel is not available on this platform")]
    Unsupported,
}

/// What the running service sees: connects, subscribes, and returns the first state, all
/// within `timeout` (for `status` and `doctor`).
pub fn service_state(timeout: Duration) -> Result<State, ClientError> {
    Client::connect_default().and_then(|mut c| c.watch(timeout))
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
}
