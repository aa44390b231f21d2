//! Whether this desktop can show the tray: a freedesktop StatusNotifierItem needs a
//! StatusNotifierWatcher on the D-Bus session bus with a host registered with it, which
//! tray-icon assumes rather than checks.

use std::sync::mpsc;
use std::time::Duration;

/// How long the D-Bus checks may take in all.
const HOST_CHECK: Duration = Duration::from_secs(5);

const WATCHER: &str = "org.kde.StatusNotifierWatcher";

/// Ok when a StatusNotifier host is there to show the item; else why not.
pub fn check_host() -> Result<(), String> {
    // zbus has no timeout on connecting or on a call: run the checks in a thread and stop
    // waiting for them after HOST_CHECK (the thread is left to finish or die with us).
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tray-host-check".into())
        .spawn(move || {
            let _ = tx.send(check_host_blocking());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    match rx.recv_timeout(HOST_CHECK) {
        Ok(r) => r,
        Err(_) => Err(format!("the D-Bus session bus did not answer within {}s", HOST_CHECK.as_secs())),
    }
}

fn check_host_blocking() -> Result<(), String> {
    let conn = zbus::blocking::Connection::session().map_err(|e| {
        let display = ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
        format!("no D-Bus session bus: {e}{}", if display { "" } else { "; no display either" })
    })?;
    let dbus = zbus::blocking::fdo::DBusProxy::new(&conn).map_err(|e| format!("D-Bus: {e}"))?;
    let name = zbus::names::BusName::try_from(WATCHER).map_err(|e| e.to_string())?;
    if !dbus.name_has_owner(name).map_err(|e| format!("D-Bus: {e}"))? {
        return Err(format!("no {WATCHER} on the session bus"));
    }
    let watcher = zbus::blocking::Proxy::new(&conn, WATCHER, "/StatusNotifierWatcher", WATCHER).map_err(|e| format!("D-Bus: {e}"))?;
    match watcher.get_property::<bool>("IsStatusNotifierHostRegistered") {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{WATCHER} has no host registered")),
        Err(e) => Err(format!("{WATCHER}: {e}")),
    }
}
