//! `keytally tray`: the workstation's tray icon. It runs as the logged-in user and only shows
//! what the service (which alone touches the keys and the servers) tells it over the control
//! socket (`crate::control`): the attached keys with their owner and status, the last sync,
//! warnings, and "Sync now" / "Quit".
//!
//! The icon is a freedesktop StatusNotifierItem on the D-Bus session bus (tray-icon's ksni
//! backend, no GTK); its menu is a dbusmenu the desktop's tray host draws. tray-icon assumes a
//! host is there, so this checks first: with no session bus, no StatusNotifierWatcher or no
//! host registered with it, one line on stderr and exit 0, since a desktop without a tray is
//! not an error.
//!
//! Threads: the main thread owns the icon and runs one loop over the service's states, the
//! menu's clicks, a 30 s tick (relative times) and SIGTERM/SIGINT; a reader thread keeps the
//! watch connection, reconnecting with a 1 s → 30 s backoff (60 s after a refusal); "Sync now"
//! is a short request on its own connection in its own thread.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{select, Receiver, Sender};
use tray_icon::menu::{Menu as MudaMenu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder, TrayIconEvent};

use crate::cli::TrayArgs;
use crate::control::{Client, ClientError, Message, Request};
use crate::tray_menu::{self, Action, Entry, Menu, Tone, View};

/// How long the first state may take after connecting.
const FIRST_STATE: Duration = Duration::from_secs(10);
/// How long the D-Bus checks may take in all.
const HOST_CHECK: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After a refusal: the service will say the same thing again for a while.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// Relative times in the menu ("3 min ago") are refreshed this often.
const TICK: Duration = Duration::from_secs(30);

pub fn run(args: &TrayArgs) -> ExitCode {
    if args.once {
        return once();
    }
    if let Err(why) = check_host() {
        eprintln!("keytally tray: no StatusNotifier host on this desktop ({why}); the service runs without the tray");
        return ExitCode::SUCCESS;
    }
    match run_tray() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally tray: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--once`: the menu as text, from one state; exit 1 when there is none.
fn once() -> ExitCode {
    match Client::connect_default().and_then(|mut c| start_watch(&mut c)) {
        Ok(state) => {
            print!("{}", tray_menu::build(&View::Connected(state), SystemTime::now()).to_text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keytally tray: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `watch`, and the first state. A service that refuses this user says why and closes
/// without reading the request, so sending it can fail while the reason waits to be read.
fn start_watch(client: &mut Client) -> Result<crate::control::State, ClientError> {
    match client.watch(FIRST_STATE) {
        Err(e @ ClientError::Io { .. }) => match client.next(Some(Duration::from_secs(1))) {
            Err(refused @ ClientError::Refused(_)) => Err(refused),
            _ => Err(e),
        },
        r => r,
    }
}

const WATCHER: &str = "org.kde.StatusNotifierWatcher";

/// Ok when a StatusNotifier host is there to show the item; else why not.
fn check_host() -> Result<(), String> {
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

fn run_tray() -> Result<(), String> {
    let (state_tx, state_rx) = crossbeam_channel::unbounded::<View>();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("tray-watch".into())
        .spawn(move || watch_service(Client::connect_default, state_tx, stop_rx))
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let signals = signal_channel();

    let mut view = View::Connecting;
    let mut shown = tray_menu::build(&view, SystemTime::now());
    let tray = TrayIconBuilder::new()
        .with_id("keytally")
        .with_menu(Box::new(muda_menu(&shown)?))
        .with_icon(icon(shown.tone))
        .with_title(&shown.title)
        .with_tooltip(&shown.title)
        .build()
        .map_err(|e| format!("cannot create the tray icon: {e}"))?;
    let mut tray = Some(tray);
    tracing::info!("tray icon registered");

    let menu_events = MenuEvent::receiver();
    let icon_events = TrayIconEvent::receiver();
    let tick = crossbeam_channel::tick(TICK);
    loop {
        let mut refresh = false;
        select! {
            recv(state_rx) -> v => match v {
                Ok(v) => { view = v; refresh = true; }
                Err(_) => { tracing::warn!("the service watcher stopped"); break; }
            },
            recv(menu_events) -> ev => if let Ok(ev) = ev {
                match Action::from_id(ev.id.as_ref()) {
                    Some(Action::Quit) => { tracing::info!("Quit from the menu"); break; }
                    Some(Action::SyncNow) => sync_now(),
                    None => {}
                }
            },
            // A click on the icon itself: the host opens the menu; nothing else to do.
            recv(icon_events) -> _ => {},
            recv(tick) -> _ => refresh = true,
            recv(signals) -> _ => { tracing::info!("stopping on a signal"); break; }
        }
        if refresh {
            let menu = tray_menu::build(&view, SystemTime::now());
            if menu != shown {
                if let Some(t) = tray.as_mut() {
                    update(t, &menu, menu.tone != shown.tone)?;
                }
                shown = menu;
            }
        }
    }
    let _ = stop_tx.try_send(());
    // Dropping the icon unregisters it; do not hang on a bus that went away.
    let (done_tx, done_rx) = mpsc::channel();
    let t = tray.take();
    // TrayIcon is not Send (its menu is not); drop it here but bounded by a watchdog.
    std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(3)).is_err() {
            std::process::exit(0);
        }
    });
    drop(t);
    let _ = done_tx.send(());
    Ok(())
}

fn update(tray: &mut TrayIcon, menu: &Menu, tone_changed: bool) -> Result<(), String> {
    let new = muda_menu(menu)?;
    // A change of labels alone reaches the host as ItemsPropertiesUpdated, which a host that
    // is still fetching the previous layout can lose (seen with xfce4-panel: a stale key line).
    // Going through an empty menu makes every change a LayoutUpdated, which hosts refetch.
    tray.set_menu(None);
    tray.set_menu(Some(Box::new(new)));
    tray.set_title(Some(&menu.title));
    let _ = tray.set_tooltip(Some(&menu.title));
    if tone_changed {
        let _ = tray.set_icon(Some(icon(menu.tone)));
    }
    Ok(())
}

fn muda_menu(menu: &Menu) -> Result<MudaMenu, String> {
    let m = MudaMenu::new();
    for e in &menu.entries {
        let r = match e {
            // muda reads '&' as a mnemonic marker; "&&" is a literal '&'.
            Entry::Item { label, enabled, action } => {
                let text = label.replace('&', "&&");
                match action {
                    Some(a) => m.append(&MenuItem::with_id(a.id(), text, *enabled, None)),
                    None => m.append(&MenuItem::new(text, *enabled, None)),
                }
            }
            Entry::Separator => m.append(&PredefinedMenuItem::separator()),
        };
        r.map_err(|e| format!("cannot build the menu: {e}"))?;
    }
    Ok(m)
}

/// The reader thread: watch the service, forward every state; reconnect with backoff.
fn watch_service(connect: impl Fn() -> Result<Client, ClientError>, tx: Sender<View>, stop: Receiver<()>) {
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
fn sync_now() {
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

/// SIGTERM and SIGINT, as messages (a clean exit unregisters the item).
fn signal_channel() -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let _ = std::thread::Builder::new().name("tray-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        });
        let _ = tx.send(());
    });
    rx
}

const ICON_SIZE: u32 = 32;

/// A 32×32 key, drawn here: a ring (the bow) and a shaft with two teeth, in the tone's colour.
fn icon(tone: Tone) -> Icon {
    let rgba = icon_rgba(tone);
    // Only fails for a buffer that does not match the size, which icon_rgba never makes.
    Icon::from_rgba(rgba, ICON_SIZE, ICON_SIZE).unwrap_or_else(|_| Icon::from_rgba(vec![0; 4], 1, 1).expect("1x1 icon"))
}

fn icon_rgba(tone: Tone) -> Vec<u8> {
    let (r, g, b) = match tone {
        Tone::Ok => (0x2e, 0xa0, 0x43),
        Tone::Warning => (0xe8, 0xa2, 0x00),
        Tone::Error => (0xd3, 0x2f, 0x2f),
        Tone::Offline => (0x9a, 0x9a, 0x9a),
    };
    let n = ICON_SIZE as usize;
    let mut px = vec![0u8; n * n * 4];
    for y in 0..n {
        for x in 0..n {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            // Bow: a ring centred at (10, 16), outer radius 8.5, hole radius 3.5.
            let d = ((fx - 10.0).powi(2) + (fy - 16.0).powi(2)).sqrt();
            let ring = (8.5 - d + 0.5).clamp(0.0, 1.0) * (d - 3.5 + 0.5).clamp(0.0, 1.0);
            // Shaft from the ring to x = 30, y 14..18; teeth below it at x 22..25 and 26..30.
            let shaft = (17.0..30.0).contains(&fx) && (14.0..18.0).contains(&fy);
            let tooth = ((22.0..25.0).contains(&fx) || (27.0..30.0).contains(&fx)) && (18.0..23.0).contains(&fy);
            let a = if shaft || tooth { 1.0 } else { ring };
            if a > 0.0 {
                let i = (y * n + x) * 4;
                px[i..i + 4].copy_from_slice(&[r, g, b, (a * 255.0).round() as u8]);
            }
        }
    }
    px
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn icons_differ_by_tone_and_have_a_shape() {
        let ok = icon_rgba(Tone::Ok);
        assert_eq!(ok.len(), 32 * 32 * 4);
        let opaque = ok.chunks(4).filter(|p| p[3] == 255).count();
        assert!((150..700).contains(&opaque), "{opaque} opaque pixels");
        // The ring's hole and the corners are transparent.
        assert_eq!(ok[(16 * 32 + 10) * 4 + 3], 0);
        assert_eq!(ok[3], 0);
        assert_ne!(ok, icon_rgba(Tone::Warning));
        assert_ne!(icon_rgba(Tone::Error), icon_rgba(Tone::Offline));
    }

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
            writeln!(w, r#"{{"type":"state","host":"h","keys":[],"sync":{{"state":"ok","pending":0,"last_success_at":null,"last_error":null}},"warnings":[]}}"#).unwrap();
            writeln!(w, r#"{{"type":"state","host":"h","keys":[],"sync":{{"state":"ok","pending":3,"last_success_at":null,"last_error":null}},"warnings":[]}}"#).unwrap();
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
