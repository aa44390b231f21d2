//! The service's picture of itself for the tray: the attached keys (from the event loop),
//! the server's owner and status for them and the sync state (from the push worker),
//! composed into one [`State`] that the control socket's watchers receive at every change.

// The control socket is Unix-only for now: elsewhere parts of this are unused.
#![cfg_attr(not(unix), allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

use crate::control::{KeyView, State, SyncView};
use crate::pusher::wake_until_taken;

/// What the server says about a key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerView {
    pub owner: Option<String>,
    pub status: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Default)]
struct Parts {
    keys: Vec<KeyView>,
    server: HashMap<String, ServerView>,
    sync: SyncView,
    warnings: Vec<String>,
}

/// Shared between the event loop, the push worker and the control socket.
pub struct StatusBoard {
    host: String,
    parts: Mutex<Parts>,
    tx: watch::Sender<State>,
    /// Open `watch` connections: the server is asked for owners only while someone looks.
    watchers: AtomicUsize,
    sync_requested: AtomicBool,
    /// Wakes the event loop (a cancel of its PC/SC wait).
    wake: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl StatusBoard {
    pub fn new(host: String) -> Arc<Self> {
        let (tx, _) = watch::channel(State { host: host.clone(), ..State::default() });
        Arc::new(StatusBoard {
            host,
            parts: Mutex::default(),
            tx,
            watchers: AtomicUsize::new(0),
            sync_requested: AtomicBool::new(false),
            wake: Mutex::new(None),
        })
    }

    fn parts(&self) -> MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The attached keys, as the records the service just made.
    pub fn set_keys(&self, records: &[Value]) {
        let mut keys: Vec<KeyView> = records.iter().filter_map(key_view).collect();
        keys.sort_by(|a, b| (&a.name, a.serial, &a.unique_id).cmp(&(&b.name, b.serial, &b.unique_id)));
        self.parts().keys = keys;
        self.publish();
    }

    /// The server's view of some keys (a lookup's result).
    pub fn set_server_views(&self, views: HashMap<String, ServerView>) {
        self.parts().server.extend(views);
        self.publish();
    }

    pub fn set_sync(&self, sync: SyncView, warnings: Vec<String>) {
        {
            let mut p = self.parts();
            p.sync = sync;
            p.warnings = warnings;
        }
        self.publish();
    }

    fn compose(&self) -> State {
        let p = self.parts();
        let keys = p
            .keys
            .iter()
            .map(|k| {
                let mut k = k.clone();
                if let Some(v) = p.server.get(&k.unique_id) {
                    k.owner.clone_from(&v.owner);
                    k.status.clone_from(&v.status);
                    k.tags.clone_from(&v.tags);
                }
                k
            })
            .collect();
        State { host: self.host.clone(), keys, sync: p.sync.clone(), warnings: p.warnings.clone() }
    }

    fn publish(&self) {
        let state = self.compose();
        self.tx.send_if_modified(|s| {
            if *s == state {
                return false;
            }
            *s = state;
            true
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.tx.subscribe()
    }

    pub fn watcher_guard(self: &Arc<Self>) -> WatcherGuard {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        WatcherGuard(Arc::clone(self))
    }

    pub fn has_watchers(&self) -> bool {
        self.watchers.load(Ordering::SeqCst) > 0
    }

    /// Sets how the event loop is woken for a "Sync now".
    pub fn set_wake(&self, wake: Box<dyn Fn() + Send>) {
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(wake);
    }

    /// "Sync now": the event loop rescans and pushes at its next wake-up, which this causes
    /// (repeatedly, until taken: see [`wake_until_taken`]). Blocks up to 3 s: call it off any
    /// async runtime.
    pub fn request_sync(&self) {
        self.sync_requested.store(true, Ordering::SeqCst);
        wake_until_taken(&self.sync_requested, || {
            if let Some(wake) = self.wake.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                wake();
            }
        });
    }

    /// Whether a "Sync now" waits for the loop.
    pub fn sync_pending(&self) -> bool {
        self.sync_requested.load(Ordering::SeqCst)
    }

    pub fn take_sync_request(&self) -> bool {
        self.sync_requested.swap(false, Ordering::SeqCst)
    }
}

/// Counts a watcher while it lives.
pub struct WatcherGuard(Arc<StatusBoard>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

fn key_view(record: &Value) -> Option<KeyView> {
    let y = record.get("yubikey")?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    Some(KeyView {
        unique_id: s(y.get("uniqueId")).to_string(),
        name: s(y.get("name")),
        serial: y.get("serialNumber").and_then(Value::as_str).and_then(|n| n.parse().ok()),
        firmware: s(y.get("firmwareVersion")),
        transport: s(record.pointer("/observation/transport")),
        ..KeyView::default()
    })
    .filter(|k| !k.unique_id.is_empty())
}

/// The server's owner (email, else name), status name and tag names in a device record.
pub fn server_view(device: &Value) -> ServerView {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let owner = device
        .pointer("/owners/items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        // An owner keytally itself suggested is not the server's assignment.
        .filter(|o| o.get("suggested").and_then(Value::as_bool) != Some(true))
        .find_map(|o| text(o.get("email")).or_else(|| text(o.get("name"))));
    let status = text(device.pointer("/status/name"));
    let tags = device
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| text(t.get("name")).or_else(|| t.as_str().map(str::to_string)))
        .collect();
    ServerView { owner, status, tags }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(uid: &str, name: &str, serial: Option<&str>) -> Value {
        json!({"yubikey": {"uniqueId": uid, "name": name, "serialNumber": serial, "firmwareVersion": "5.7.2"}, "observation": {"transport": "usb"}})
    }

    #[test]
    fn composes_keys_with_the_servers_view_and_publishes_changes_only() {
        let board = StatusBoard::new("desk".into());
        let mut rx = board.subscribe();
        board.set_keys(&[record("2", "YubiKey 5C", Some("2")), record("1", "YubiKey 5 NFC", Some("1"))]);
        assert!(rx.has_changed().unwrap());
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.keys.iter().map(|k| k.unique_id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(s.keys[0].serial, Some(1));
        assert_eq!(s.keys[0].transport, "usb");
        board.set_keys(&[record("2", "YubiKey 5C", Some("2")), record("1", "YubiKey 5 NFC", Some("1"))]);
        assert!(!rx.has_changed().unwrap(), "the same keys again is no change");
        let device = json!({"owners": {"count": 1, "items": [{"name": "Alice", "email": "alice@example.com"}]}, "status": {"name": "Active"}, "tags": [{"name": "desk"}]});
        board.set_server_views(HashMap::from([("1".to_string(), server_view(&device))]));
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.keys[0].owner.as_deref(), Some("alice@example.com"));
        assert_eq!(s.keys[0].status.as_deref(), Some("Active"));
        assert_eq!(s.keys[0].tags, ["desk"]);
        assert_eq!(s.keys[1].owner, None);
    }

    #[test]
    fn a_suggested_owner_is_not_the_servers_owner() {
        let device = json!({"owners": {"count": 1, "items": [{"name": "alice", "sid": "1000", "suggested": true}]}});
        assert_eq!(server_view(&device), ServerView::default());
    }

    #[test]
    fn watchers_are_counted_and_sync_requests_wake_the_loop() {
        let board = StatusBoard::new("h".into());
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        board.set_wake(Box::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        let g = board.watcher_guard();
        assert!(board.has_watchers());
        drop(g);
        assert!(!board.has_watchers());
        // Not taken: woken again and again, for a bounded time.
        board.request_sync();
        assert_eq!(woken.load(Ordering::SeqCst), 30);
        assert!(board.take_sync_request());
        assert!(!board.take_sync_request());
    }
}
