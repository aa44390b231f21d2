//! The tray icon and its loop. On Linux and the BSDs a freedesktop StatusNotifierItem
//! (tray-icon's ksni backend, no GTK) whose menu is a dbusmenu the desktop's tray host draws;
//! on Windows a notification-area icon whose window belongs to this thread. The main thread
//! owns the icon and runs one loop ([`crate::platform::ui_loop`], the Win32 message loop on
//! Windows) over one channel of events: the service's states, the menu's clicks, a 30 s tick
//! (relative times) and stop requests. Every sender wakes the loop after sending.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;
use tray_icon::menu::{Menu as MudaMenu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{TrayIcon, TrayIconBuilder, TrayIconEvent};

use super::icon::icon;
use super::menu::{self as tray_menu, Action, Entry, Menu, View};
use super::service_link::{sync_now, watch_service};
use crate::control::Client;
use crate::platform::ui_loop::{self, Waker};

/// Relative times in the menu ("3 min ago") are refreshed this often.
const TICK: Duration = Duration::from_secs(30);

/// What the loop handles.
enum Event {
    View(View),
    /// The service watcher ended (it only does when the loop is gone, or by a bug).
    WatcherGone,
    Menu(String),
    Tick,
    Stop,
}

/// Sends an event to the loop and wakes it; false when the loop is gone.
fn send(tx: &Sender<Event>, waker: &Waker, e: Event) -> bool {
    let sent = tx.send(e).is_ok();
    waker.wake();
    sent
}

pub fn run_tray() -> Result<(), String> {
    ui_loop::leave_console();
    let waker = Waker::for_this_thread();
    let (tx, events) = crossbeam_channel::unbounded::<Event>();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| std::thread::Builder::new().name(name.into()).spawn(f).map(drop).map_err(|e| format!("cannot start a thread: {e}"));

    let (state_tx, state_rx) = crossbeam_channel::unbounded::<View>();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    spawn("tray-watch", Box::new(move || watch_service(Client::connect_default, state_tx, stop_rx)))?;
    let t = tx.clone();
    spawn(
        "tray-states",
        Box::new(move || {
            for v in state_rx.iter() {
                if !send(&t, &waker, Event::View(v)) {
                    return;
                }
            }
            send(&t, &waker, Event::WatcherGone);
        }),
    )?;
    let t = tx.clone();
    spawn(
        "tray-tick",
        Box::new(move || loop {
            std::thread::sleep(TICK);
            if !send(&t, &waker, Event::Tick) {
                return;
            }
        }),
    )?;
    let t = tx.clone();
    ui_loop::on_stop_request(Box::new(move || {
        send(&t, &waker, Event::Stop);
    }));
    // The menu's clicks come through muda's handler (on Windows from this thread's message
    // dispatch, on Linux from ksni's thread); the icon's own clicks need nothing here.
    let t = tx.clone();
    MenuEvent::set_event_handler(Some(move |e: MenuEvent| {
        send(&t, &waker, Event::Menu(e.id.0));
    }));
    TrayIconEvent::set_event_handler(Some(|_: TrayIconEvent| {}));
    drop(tx);

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

    let mut failed = None;
    ui_loop::run(&events, |event| {
        let refresh = match event {
            Event::View(v) => {
                view = v;
                true
            }
            Event::WatcherGone => {
                tracing::warn!("the service watcher stopped");
                return false;
            }
            Event::Menu(id) => match Action::from_id(&id) {
                Some(Action::Quit) => {
                    tracing::info!("Quit from the menu");
                    return false;
                }
                Some(Action::SyncNow) => {
                    sync_now();
                    false
                }
                None => false,
            },
            Event::Tick => true,
            Event::Stop => {
                tracing::info!("stopping on request (signal or console)");
                return false;
            }
        };
        if refresh {
            let menu = tray_menu::build(&view, SystemTime::now());
            if menu != shown {
                if let Some(t) = tray.as_mut() {
                    if let Err(e) = update(t, &menu, menu.tone != shown.tone) {
                        failed = Some(e);
                        return false;
                    }
                }
                shown = menu;
            }
        }
        true
    });
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
    failed.map_or(Ok(()), Err)
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
