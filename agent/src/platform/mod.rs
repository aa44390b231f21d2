//! What differs per operating system, behind one small interface (in the style of nusb's
//! `platform/`): each OS module provides the same five parts under the same names, and the
//! rest of the agent uses them only through `crate::platform::…` (the tray's `ui_loop` only where
//! there is a tray: not on macOS).
//!
//! | part | what it answers | Linux and the BSDs (`unix/`) | macOS | Windows (`windows/`) |
//! |---|---|---|---|---|
//! | [`user`] | who is logged in at this machine: `logged_in_user() -> Option<LocalUser>`, a `LocalUser` having `name`, `sid()` (the id the owner record's `sid` carries) and `entra_id()` | systemd-logind's sessions, NSS names | as Unix (no logind: the agent's own user) | the active console session's `DOMAIN\name` and SID (WTS + its token), the Entra ID object id from an `S-1-12-1-…` SID ([`entra_sid`]) |
//! | [`channel`] | the tray↔service channel: where it lives (`server_endpoint`, `client_endpoints`), the client's blocking `Stream` (`connect`), the service's `Listener` (`bind`, `accept`) and who connected (`peer`, `Peer::admit`) | a stream socket in the runtime directory, `SO_PEERCRED` | as Unix | the named pipe `\\.\pipe\keytally-control` (a DACL for SYSTEM, Administrators and the interactive user), its client's process token; the client checks the pipe's owner |
//! | [`service_manager`] | running under the OS's service manager: `run_if_started_by_it(run, init_logging)`, its stop request (`asked_to_stop`), and whether it stamps log lines itself (`stamps_log_lines`) | systemd runs `keytally run` as is, SIGTERM; journald | as Unix | the Service Control Manager (`keytally service`, its Stop control) |
//! | [`ui_loop`] | the tray's main-thread loop: `Waker` (`for_this_thread`, `wake`), `run(events, handle)`, `on_stop_request`, `leave_console`; one tray per user session: `claim_single_instance() -> io::Result<Option<SingleInstance>>` (`None`: another tray holds it) | a wait on the tray's events; SIGTERM/SIGINT; a non-blocking `flock` on `$XDG_RUNTIME_DIR/keytally/tray.lock` (else `/tmp/keytally-UID/`) | no tray | the Win32 message loop tray-icon's window needs, woken by a thread message; Ctrl+C / console close; leaves a console of its own (started at logon); the named mutex `Local\keytally-tray` |
//! | [`settings`] | configuration from the OS's settings store: `read() -> Vec<Setting>` | none | none | `HKLM\SOFTWARE\keytally` and the policy key `HKLM\SOFTWARE\Policies\keytally` (Group Policy, Intune) |
//! | [`secrets`] | the OS keyring: `read`/`write` of an entry's bytes, [`SecretStoreError`], `UNAVAILABLE` (what "no keyring here" means, for messages) | the freedesktop Secret Service (D-Bus) | the login Keychain | Credential Manager |
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

/// The Entra ID object id in an Entra account's SID (pure; used by the Windows user module,
/// tested everywhere).
#[cfg_attr(not(windows), allow(dead_code))]
pub mod entra_sid;

/// The secret store of macOS and Windows (the `keyring` crate's native stores), which their
/// modules re-export as `secrets`.
#[cfg(any(target_os = "macos", windows))]
pub mod native_keyring;

pub use os::{channel, secrets, service_manager, settings, user};
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
pub use os::ui_loop;

/// The interface, written out: each OS module must provide these names with these types, or
/// this does not build on that OS. (Never called.)
#[allow(dead_code)]
fn interface() {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    let _: fn() -> Option<user::LocalUser> = user::logged_in_user;
    let _: fn(&user::LocalUser) -> String = user::LocalUser::sid;
    let _: fn(&user::LocalUser) -> Option<String> = user::LocalUser::entra_id;
    let _: fn() -> Option<PathBuf> = channel::server_endpoint;
    let _: fn() -> Vec<PathBuf> = channel::client_endpoints;
    let _: fn(&Path) -> io::Result<channel::Stream> = channel::connect;
    fn blocking_stream<S: io::Read + io::Write>() {}
    blocking_stream::<channel::Stream>();
    let _: fn(&channel::Stream) -> io::Result<channel::Stream> = channel::Stream::try_clone;
    let _: fn(&channel::Stream, Option<Duration>) -> io::Result<()> = channel::Stream::set_read_timeout;
    let _: fn(&channel::Stream, Option<Duration>) -> io::Result<()> = channel::Stream::set_write_timeout;
    fn async_stream<C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static>() {}
    async_stream::<channel::Connection>();
    fn shown<T: std::fmt::Display>() {}
    shown::<channel::Peer>();
    let _: fn(&Path) -> io::Result<channel::Listener> = channel::Listener::bind;
    let _: fn(&channel::Connection) -> io::Result<channel::Peer> = channel::peer;
    let _: fn(&channel::Peer) -> Result<(), String> = channel::Peer::admit;
    let _: fn(RunService, fn(u8)) -> Option<std::process::ExitCode> = service_manager::run_if_started_by_it;
    let _: fn() -> bool = service_manager::stamps_log_lines;
    let _: &Advice = &service_manager::ADVICE;
    let _ = service_manager::asked_to_stop; // async fn() resolving when the manager says stop
    let _: fn(&str, &str, Duration) -> Result<Vec<u8>, SecretStoreError> = secrets::read;
    let _: fn(&str, &str, &str, &str, Duration) -> Result<(), SecretStoreError> = secrets::write;
    let _: &str = secrets::UNAVAILABLE;
    let _: fn() -> Vec<Setting> = settings::read;
    #[cfg(any(windows, all(unix, not(target_os = "macos"))))]
    {
        let _: fn() -> ui_loop::Waker = ui_loop::Waker::for_this_thread;
        let _: fn(&ui_loop::Waker) = ui_loop::Waker::wake;
        fn shareable<T: Send + Sync + Copy>() {}
        shareable::<ui_loop::Waker>();
        type OnMessage = fn(()) -> bool;
        let _: fn(&crossbeam_channel::Receiver<()>, OnMessage) = ui_loop::run::<(), OnMessage>;
        let _: fn(Box<dyn Fn() + Send + Sync>) = ui_loop::on_stop_request;
        let _: fn() = ui_loop::leave_console;
        let _: fn() -> io::Result<Option<ui_loop::SingleInstance>> = ui_loop::claim_single_instance;
    }
}

/// One configuration value from the OS's settings store (the Windows registry), for
/// `crate::config` to merge: `name` is the config key it sets (`server`, `token_file`, …),
/// `source` where it was read (`HKLM\SOFTWARE\Policies\keytally`), `policy` whether that
/// is the policy key (which wins over everything), and `value` the text or why the stored
/// value is unusable (one line, e.g. a number where text belongs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub source: String,
    pub policy: bool,
    pub name: String,
    pub value: Result<String, String>,
}

/// What `doctor` tells a person to do, in this OS's words and commands.
pub struct Advice {
    /// What the PC/SC service is called here (`pcscd`; Windows' Smart Card service).
    pub pcsc_service: &'static str,
    /// How to install and start the PC/SC service when it is not reachable.
    pub start_pcsc: &'static str,
    /// How to restart the PC/SC service when it answers with an error, and where its log is.
    pub restart_pcsc: &'static str,
    /// How to start the keytally service, and where its log is.
    pub start_service: &'static str,
    /// Who may ask the service, when it refused this user.
    pub ask_as_admitted: &'static str,
}

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
