//! The tray icon and its loop: a freedesktop StatusNotifierItem (tray-icon's ksni backend, no
//! GTK) whose menu is a dbusmenu the desktop's tray host draws. The main thread owns the icon
//! and runs one loop over the service's states, the menu's clicks, a 30 s tick (relative
//! times) and SIGTERM/SIGINT.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{select, Receiver};
use tray_icon::menu::{Menu as MudaMenu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{TrayIcon, TrayIconBuilder, TrayIconEvent};

use super::icon::icon;
use super::menu::{self as tray_menu, Action, Entry, Menu, View};
use super::service_link::{sync_now, watch_service};
use crate::control::Client;

/// Relative times in the menu ("3 min ago") are refreshed this often.
const TICK: Duration = Duration::from_secs(30);

pub fn run_tray() -> Result<(), String> {
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

/// SIGTERM and SIGINT, as messages (a clean exit unregisters the item).
fn signal_channel() -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let _ = std::thread::Builder::new().name("tray-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        });
        let _ = tx.send(());
    });
    rx
}
