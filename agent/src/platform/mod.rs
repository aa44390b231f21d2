//! What differs per operating system, behind one small interface (in the style of nusb's
//! `platform/`): each OS module provides the same four parts under the same names, and the
//! rest of the agent uses them only through `crate::platform::…`.
//!
//! | part | what it answers | Linux and the BSDs (`unix/`) | macOS | Windows (`windows/`) |
//! |---|---|---|---|---|
//! | [`user`] | who is logged in at this machine: `logged_in_user() -> Option<LocalUser>`, a `LocalUser` having `name` and `sid()` (the id the owner record's `sid` carries) | systemd-logind's sessions, NSS names | as Unix (no logind: the agent's own user) | not yet: the console session's user and SID (issue 11) |
//! | [`channel`] | the tray↔service channel: where it lives (`server_endpoint`, `client_endpoints`), the client's blocking `Stream` (`connect`), the service's `Listener` (`bind`, `accept`) and who connected (`peer`, `Peer::admit`) | a stream socket in the runtime directory, `SO_PEERCRED` | as Unix | not yet: a named pipe and its client's token (issue 11) |
//! | [`service_manager`] | running under the OS's service manager: `run_if_started_by_it(run, init_logging)`, its stop request (`asked_to_stop`), and whether it stamps log lines itself (`stamps_log_lines`) | systemd runs `keytally run` as is, SIGTERM; journald | as Unix | the Service Control Manager (`keytally service`, its Stop control) |
//! | [`secrets`] | the OS keyring: `read`/`write` of an entry's bytes, [`SecretStoreError`], `STORE` (its name in messages) | the freedesktop Secret Service (D-Bus) | the login Keychain | Credential Manager |
//!
//! The cross-platform parts stay outside: the control channel's messages and its client and
//! server (`crate::control`), the tray's menu (`crate::tray`), the keyring's entries, errors
//! and deadlines (`crate::keyring`).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use self::unix as os;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use self::windows as os;

/// The secret store of macOS and Windows (the `keyring` crate's native stores), which their
/// modules re-export as `secrets`.
#[cfg(any(target_os = "macos", windows))]
pub mod native_keyring;

pub use os::{channel, secrets, service_manager, user};

/// The `run` command's entry, which `main` hands to [`service_manager::run_if_started_by_it`]
/// (the platform code imports neither the commands nor logging).
pub type RunService = fn(Option<&std::path::Path>, &crate::cli::RunArgs) -> std::process::ExitCode;

/// Why the OS's secret store gave no secret, without naming the entry (the caller does) and
/// never containing the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretStoreError {
    /// No store to ask (no D-Bus session, no Secret Service, no Keychain...), and why.
    Unavailable(String),
    /// The store has no such entry.
    NoEntry,
    /// The store (or the entry) is locked; a detail when the store gave one.
    Locked(Option<String>),
    /// The store did not answer within the deadline (the Secret Service's own; the caller
    /// keeps a deadline over every store).
    #[cfg_attr(not(all(unix, not(target_os = "macos"))), allow(dead_code))]
    Timeout,
    /// The stored secret is not text (the `keyring` crate's stores say so; the Secret
    /// Service hands over bytes and the caller checks them).
    #[cfg_attr(all(unix, not(target_os = "macos")), allow(dead_code))]
    NotUnicode,
    /// Anything else, described.
    Other(String),
}
