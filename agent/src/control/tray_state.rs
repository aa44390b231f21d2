//! The service's picture of itself for the tray: the attached keys (from the service loop),
//! the server's owner and status for them and the sync state (from the push worker),
//! composed into one [`State`] that the control channel's watchers receive at every change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use keytally_protocol::record::DeviceRecord;
use keytally_protocol::server_view::ServerView;
use tokio::sync::watch;

use super::{KeyView, State, SyncView};

#[derive(Default)]
struct Parts {
    keys: Vec<KeyView>,
    server: HashMap<String, ServerView>,
    sync: SyncView,
    warnings: Vec<String>,
}

/// Shared between the service loop, the push worker and the control channel.
pub struct TrayState {
    host: String,
    parts: Mutex<Parts>,
    tx: watch::Sender<State>,
    /// Open `watch` connections: the server is asked for owners only while someone looks.
    watchers: AtomicUsize,
}

impl TrayState {
    pub fn new(host: String) -> Arc<Self> {
        let (tx, _) = watch::channel(State { host: host.clone(), ..State::default() });
        Arc::new(TrayState { host, parts: Mutex::default(), tx, watchers: AtomicUsize::new(0) })
    }

    fn parts(&self) -> MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The attached keys, as the records the service just made.
    pub fn set_keys(&self, records: &[DeviceRecord]) {
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
}

/// Counts a watcher while it lives.
pub struct WatcherGuard(Arc<TrayState>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

fn key_view(record: &DeviceRecord) -> Option<KeyView> {
    let y = &record.yubikey;
    Some(KeyView {
        unique_id: y.unique_id.clone(),
        name: y.name.clone(),
        serial: y.serial_number.as_deref().and_then(|n| n.parse().ok()),
        firmware: y.firmware_version.clone(),
        transport: record.observation.as_ref().map(|o| o.transport.clone()).unwrap_or_default(),
        advisories: crate::advisories::labels(record),
        ..KeyView::default()
    })
    .filter(|k| !k.unique_id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::test_record as record;
    use serde_json::json;

    #[test]
    fn composes_keys_with_the_servers_view_and_publishes_changes_only() {
        let board = TrayState::new("desk".into());
        let mut rx = board.subscribe();
        board.set_keys(&[record("2", "YubiKey 5C", Some("2")), record("1", "YubiKey 5 NFC", Some("1"))]);
        assert!(rx.has_changed().unwrap());
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.keys.iter().map(|k| k.unique_id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(s.keys[0].serial, Some(1));
        assert_eq!(s.keys[0].transport, "usb");
        assert_eq!(s.keys[0].advisories, Some(vec![]), "the records' advisories (none) reach the tray");
        board.set_keys(&[record("2", "YubiKey 5C", Some("2")), record("1", "YubiKey 5 NFC", Some("1"))]);
        assert!(!rx.has_changed().unwrap(), "the same keys again is no change");
        let device = json!({"owners": {"count": 1, "items": [{"name": "Alice", "email": "alice@example.com"}]}, "status": {"name": "Active"}, "tags": [{"name": "desk"}]});
        board.set_server_views(HashMap::from([("1".to_string(), ServerView::of(&device))]));
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.keys[0].owner.as_deref(), Some("alice@example.com"));
        assert_eq!(s.keys[0].status.as_deref(), Some("Active"));
        assert_eq!(s.keys[0].tags, ["desk"]);
        assert_eq!(s.keys[1].owner, None);
    }

    /// (The "Sync now" half of this test went with the request to `watch`.)
    #[test]
    fn watchers_are_counted() {
        let board = TrayState::new("h".into());
        let g = board.watcher_guard();
        assert!(board.has_watchers());
        drop(g);
        assert!(!board.has_watchers());
    }
}
