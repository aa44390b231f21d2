//! The workstation's tray icon (`keytally tray`). It runs as the logged-in user and only shows
//! what the service (which alone touches the keys and the servers) tells it over the control
//! channel (`crate::control`): the attached keys with their owner and status, the last sync,
//! warnings, and "Sync now" / "Quit".
//!
//! On Linux and the BSDs the icon is a freedesktop StatusNotifierItem on the D-Bus session bus
//! (tray-icon's ksni backend, no GTK); its menu is a dbusmenu the desktop's tray host draws.
//! tray-icon assumes a host is there, so this checks first: with no session bus, no
//! StatusNotifierWatcher or no host registered with it, one line on stderr and exit 0, since a
//! desktop without a tray is not an error. One tray per user session: a second `keytally tray`
//! says that one is running and exits 0 (`--once` needs no claim). On Windows it is a notification-area icon
//! (Shell_NotifyIconW) with a native menu; the shell is the host (tray-icon adds the icon again
//! when Explorer restarts), and the MSI starts it for every user at logon.
//!
//! Threads: the main thread owns the icon and runs one loop (`crate::platform::ui_loop`: on
//! Windows the Win32 message loop the icon's window needs) over the service's states, the
//! menu's clicks, a 30 s tick (relative times) and stop requests (SIGTERM/SIGINT; Ctrl+C on
//! Windows); a reader thread keeps the watch connection, reconnecting with a 1 s → 30 s backoff
//! (60 s after a refusal); "Sync now" is a short request on its own connection in its own
//! thread.
//!
//! Files: `menu` (what the menu shows, as data; every OS), `service_link` (the connection
//! to the service), `host` (is there a StatusNotifier host? Linux and the BSDs), `app` (the
//! icon and its loop), `icon` (the icon's pixels).

pub mod menu;

// The icon is built for Linux and the BSDs (tray-icon's ksni backend, a D-Bus host check) and
// Windows (the notification area); not for macOS. `menu` is used everywhere (`status` prints
// its key labels).
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
mod app;
#[cfg(all(unix, not(target_os = "macos")))]
mod host;
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
mod icon;
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
mod service_link;

/// How the tray ended.
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
pub enum Ended {
    /// "Quit", a stop request, or the service watcher stopped.
    Quit,
    /// No StatusNotifier host on this desktop (why): nothing was shown. (Never on Windows,
    /// whose shell is the host.)
    #[cfg_attr(windows, allow(dead_code))]
    NoHost(String),
    /// Another tray runs in this user session (its single-instance claim is held): nothing
    /// was shown.
    AlreadyRunning,
}

/// Shows the icon until "Quit" or a stop request, when it is the session's only tray
/// ([`crate::platform::ui_loop::claim_single_instance`], held until it ends). A desktop
/// without a tray host is not an error; nor is a tray already running.
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
pub fn run() -> Result<Ended, String> {
    let _instance = match crate::platform::ui_loop::claim_single_instance() {
        Ok(Some(claim)) => Some(claim),
        Ok(None) => return Ok(Ended::AlreadyRunning),
        // Better a second icon than none: shown, and said once.
        Err(e) => {
            tracing::warn!("tray: cannot make sure it is the only one in this session ({e}); starting anyway");
            None
        }
    };
    #[cfg(all(unix, not(target_os = "macos")))]
    if let Err(why) = host::check_host() {
        return Ok(Ended::NoHost(why));
    }
    app::run_tray().map(|()| Ended::Quit)
}

/// The menu as text, from one state of the service (`keytally tray --once`).
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
pub fn menu_text() -> Result<String, crate::control::ClientError> {
    let state = service_link::first_state()?;
    Ok(menu::build(&menu::View::Connected(state), std::time::SystemTime::now()).to_text())
}
