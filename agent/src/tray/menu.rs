//! What the tray shows, as plain data: the service's [`State`] (or why there is none) turned
//! into menu entries, a title and an icon colour. No GUI here, so `keytally tray --once` prints
//! exactly what the tray's menu would show, and the tests need no desktop.

// The tray itself is built for Linux, the BSDs and Windows; elsewhere only `key_label` is used.
#![cfg_attr(not(any(windows, all(unix, not(target_os = "macos")))), allow(dead_code))]

use std::time::{Duration, SystemTime};

use crate::control::{KeyView, State};

/// What the tray knows about the service.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// Not connected yet.
    Connecting,
    /// Connected; the latest state.
    Connected(State),
    /// No service at the socket (or it went away); the tray reconnects on its own.
    NotRunning,
    /// The service refused this user's connection, with its reason.
    Refused(String),
}

/// What a menu entry does when clicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SyncNow,
    Quit,
}

impl Action {
    /// The menu item id (muda's `MenuId`).
    pub fn id(self) -> &'static str {
        match self {
            Action::SyncNow => "keytally-sync-now",
            Action::Quit => "keytally-quit",
        }
    }

    pub fn from_id(id: &str) -> Option<Action> {
        [Action::SyncNow, Action::Quit].into_iter().find(|a| a.id() == id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A line of information or a button; `action: None` entries are shown disabled.
    Item { label: String, enabled: bool, action: Option<Action> },
    Separator,
}

impl Entry {
    fn info(label: impl Into<String>) -> Entry {
        Entry::Item { label: label.into(), enabled: false, action: None }
    }
}

/// The icon's colour: how much attention the tray asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Synced, nothing to act on.
    Ok,
    /// A warning, a backlog or a backoff.
    Warning,
    /// The credential was rejected or the service refused us.
    Error,
    /// No service (or not connected yet).
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub entries: Vec<Entry>,
    /// The tray item's title and tooltip ("keytally: 2 keys, synced 1 min ago").
    pub title: String,
    pub tone: Tone,
}

impl Menu {
    /// The menu as text, one line per entry, as `keytally tray --once` prints it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            match e {
                Entry::Item { label, .. } => out.push_str(label),
                Entry::Separator => out.push_str("────────"),
            }
            out.push('\n');
        }
        out
    }
}

/// The menu for `view` at time `now` (relative times are computed against it).
pub fn build(view: &View, now: SystemTime) -> Menu {
    let mut entries = Vec::new();
    let (title, tone, connected) = match view {
        View::Connecting => {
            entries.push(Entry::info("keytally — connecting to the service…"));
            ("keytally: connecting to the service".to_string(), Tone::Offline, false)
        }
        View::NotRunning => {
            entries.push(Entry::info("keytally service not running"));
            entries.push(Entry::info("The tray reconnects when it starts."));
            ("keytally: service not running".to_string(), Tone::Offline, false)
        }
        View::Refused(reason) => {
            entries.push(Entry::info("keytally — refused by the service"));
            entries.push(Entry::info(format!("⚠ {}", one_line(reason))));
            ("keytally: refused by the service".to_string(), Tone::Error, false)
        }
        View::Connected(state) => {
            let sync_state = if state.sync.state.is_empty() { "unknown" } else { state.sync.state.as_str() };
            entries.push(Entry::info(format!("keytally — {}", one_line(sync_state))));
            entries.push(Entry::Separator);
            if state.keys.is_empty() {
                entries.push(Entry::info("No YubiKey attached"));
            }
            for key in &state.keys {
                entries.push(Entry::info(key_label(key)));
            }
            entries.push(Entry::Separator);
            let last = state.sync.last_success_at.as_deref().map(|t| describe_time(t, now));
            entries.push(Entry::info(match &last {
                Some(t) => format!("Last sync: {t}"),
                None => "Last sync: never".to_string(),
            }));
            if state.sync.pending > 0 {
                let n = state.sync.pending;
                entries.push(Entry::info(format!("{n} record{} waiting to be sent", if n == 1 { "" } else { "s" })));
            }
            if let Some(err) = state.sync.last_error.as_deref().filter(|e| !e.is_empty()) {
                if state.sync.state != "ok" {
                    entries.push(Entry::info(format!("Last error: {}", one_line(err))));
                }
            }
            for w in &state.warnings {
                entries.push(Entry::info(format!("⚠ {}", one_line(w))));
            }
            let tone = if state.sync.state == "credential rejected" {
                Tone::Error
            } else if !state.warnings.is_empty() || state.sync.pending > 0 || !matches!(state.sync.state.as_str(), "ok" | "") {
                Tone::Warning
            } else {
                Tone::Ok
            };
            let keys = match state.keys.len() {
                0 => "no keys".to_string(),
                1 => "1 key".to_string(),
                n => format!("{n} keys"),
            };
            let synced = match state.sync.last_success_at.as_deref().and_then(|t| ago(t, now)) {
                Some(a) => format!("synced {a}"),
                None => "never synced".to_string(),
            };
            let mut title = format!("keytally: {keys}, {synced}");
            if !state.warnings.is_empty() {
                title.push_str(&format!(", {} warning{}", state.warnings.len(), if state.warnings.len() == 1 { "" } else { "s" }));
            }
            (title, tone, true)
        }
    };
    entries.push(Entry::Separator);
    entries.push(Entry::Item { label: "Sync now".into(), enabled: connected, action: Some(Action::SyncNow) });
    entries.push(Entry::Item { label: "Quit".into(), enabled: true, action: Some(Action::Quit) });
    Menu { entries, title, tone }
}

/// "YubiKey 5 NFC · 12345678 · alice@example.com · Active · advisories YSA-2024-03": owner and
/// status only when the server knows them, advisories only when some apply (or, `not
/// assessed`, when the firmware is unknown).
pub fn key_label(key: &KeyView) -> String {
    let mut parts = vec![if key.name.is_empty() { "YubiKey".to_string() } else { one_line(&key.name) }];
    parts.push(match key.serial {
        Some(s) => s.to_string(),
        None => "no serial".to_string(),
    });
    if let Some(o) = key.owner.as_deref().filter(|o| !o.is_empty()) {
        parts.push(one_line(o));
    }
    if let Some(s) = key.status.as_deref().filter(|s| !s.is_empty()) {
        parts.push(one_line(s));
    }
    if key.advisories.as_ref().is_none_or(|a| !a.is_empty()) {
        parts.push(one_line(&format!("advisories {}", crate::advisories::summary(key.advisories.as_deref(), ", "))));
    }
    parts.join(" · ")
}

/// "2026-11-24 07:12 UTC (3 min ago)"; the text as given when it is not RFC 3339.
fn describe_time(rfc3339: &str, now: SystemTime) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(rfc3339.trim()) else {
        return one_line(rfc3339);
    };
    let shown = humantime::format_rfc3339_seconds(t).to_string();
    // "2026-11-24T07:12:05Z" → "2026-11-24 07:12 UTC"
    let short = match (shown.get(..10), shown.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => shown,
    };
    match ago(rfc3339, now) {
        Some(a) => format!("{short} ({a})"),
        None => short,
    }
}

/// "just now", "5 s ago", "3 min ago", "2 h ago", "4 days ago"; `None` for an unparsable time.
fn ago(rfc3339: &str, now: SystemTime) -> Option<String> {
    let t = humantime::parse_rfc3339_weak(rfc3339.trim()).ok()?;
    let d = match now.duration_since(t) {
        Ok(d) => d,
        // A clock a little behind the service's: treat as now.
        Err(e) if e.duration() < Duration::from_secs(120) => Duration::ZERO,
        Err(_) => return Some("in the future".to_string()),
    };
    let s = d.as_secs();
    Some(match s {
        0..=9 => "just now".to_string(),
        10..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        86_400..=172_799 => "1 day ago".to_string(),
        _ => format!("{} days ago", s / 86_400),
    })
}

/// Menu labels are one line; the service's text should be too, but never trust it to be.
fn one_line(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let s = s.trim();
    if s.chars().count() > 200 {
        let mut cut: String = s.chars().take(199).collect();
        cut.push('…');
        cut
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::SyncView;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn key(name: &str, serial: Option<u32>, owner: Option<&str>, status: Option<&str>) -> KeyView {
        KeyView {
            unique_id: serial.map(|s| s.to_string()).unwrap_or_else(|| "noserial-x".into()),
            name: name.into(),
            serial,
            firmware: "5.4.3".into(),
            transport: "nfc".into(),
            owner: owner.map(Into::into),
            status: status.map(Into::into),
            tags: vec![],
            advisories: Some(vec![]),
        }
    }

    fn labels(m: &Menu) -> Vec<String> {
        m.to_text().lines().map(String::from).collect()
    }

    #[test]
    fn keys_sync_and_warnings() {
        let state = State {
            host: "ws1".into(),
            keys: vec![
                key("YubiKey 5 NFC", Some(12345678), Some("alice@example.com"), Some("Active")),
                key("Security Key NFC", None, None, None),
            ],
            sync: SyncView { state: "ok".into(), pending: 2, last_success_at: Some("2026-11-24T07:00:00Z".into()), last_error: None },
            warnings: vec!["the credential of profile default expires in 3 days".into()],
        };
        let m = build(&View::Connected(state), at("2026-11-24T07:03:30Z"));
        assert_eq!(
            labels(&m),
            [
                "keytally — ok",
                "────────",
                "YubiKey 5 NFC · 12345678 · alice@example.com · Active",
                "Security Key NFC · no serial",
                "────────",
                "Last sync: 2026-11-24 07:00 UTC (3 min ago)",
                "2 records waiting to be sent",
                "⚠ the credential of profile default expires in 3 days",
                "────────",
                "Sync now",
                "Quit",
            ]
        );
        assert_eq!(m.title, "keytally: 2 keys, synced 3 min ago, 1 warning");
        assert_eq!(m.tone, Tone::Warning);
        let enabled: Vec<_> = m
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Item { label, enabled: true, action } => Some((label.as_str(), *action)),
                _ => None,
            })
            .collect();
        assert_eq!(enabled, [("Sync now", Some(Action::SyncNow)), ("Quit", Some(Action::Quit))]);
    }

    #[test]
    fn no_keys_never_synced_rejected() {
        let state = State {
            host: "ws1".into(),
            keys: vec![],
            sync: SyncView {
                state: "credential rejected".into(),
                pending: 1,
                last_success_at: None,
                last_error: Some("401 Unauthorized\nfrom server".into()),
            },
            warnings: vec![],
        };
        let m = build(&View::Connected(state), SystemTime::now());
        assert_eq!(
            labels(&m),
            [
                "keytally — credential rejected",
                "────────",
                "No YubiKey attached",
                "────────",
                "Last sync: never",
                "1 record waiting to be sent",
                "Last error: 401 Unauthorized from server",
                "────────",
                "Sync now",
                "Quit",
            ]
        );
        assert_eq!(m.title, "keytally: no keys, never synced");
        assert_eq!(m.tone, Tone::Error);
    }

    #[test]
    fn all_good_is_ok() {
        let state = State {
            keys: vec![key("YubiKey 5C NFC", Some(1), None, Some("Active"))],
            sync: SyncView { state: "ok".into(), last_success_at: Some("2026-11-24T07:00:00Z".into()), ..SyncView::default() },
            ..State::default()
        };
        let m = build(&View::Connected(state), at("2026-11-24T07:00:04Z"));
        assert_eq!(m.tone, Tone::Ok);
        assert_eq!(m.title, "keytally: 1 key, synced just now");
        assert!(labels(&m).contains(&"YubiKey 5C NFC · 1 · Active".to_string()));
    }

    #[test]
    fn without_a_service_sync_is_disabled() {
        for (view, first) in [
            (View::NotRunning, "keytally service not running"),
            (View::Connecting, "keytally — connecting to the service…"),
            (View::Refused("uid 1001 is not served".into()), "keytally — refused by the service"),
        ] {
            let m = build(&view, SystemTime::now());
            assert_eq!(labels(&m)[0], first);
            let sync = m.entries.iter().find(|e| matches!(e, Entry::Item { action: Some(Action::SyncNow), .. })).unwrap();
            assert!(matches!(sync, Entry::Item { enabled: false, .. }));
            assert!(m.entries.iter().any(|e| matches!(e, Entry::Item { action: Some(Action::Quit), enabled: true, .. })));
        }
        let m = build(&View::Refused("uid 1001 is not served".into()), SystemTime::now());
        assert!(labels(&m).contains(&"⚠ uid 1001 is not served".to_string()));
        assert_eq!(m.tone, Tone::Error);
    }

    #[test]
    fn a_key_names_its_advisories() {
        let mut k = key("YubiKey 5 NFC", Some(12345678), None, Some("Active"));
        k.advisories = Some(vec!["YSA-2024-02".into(), "YSA-2024-03".into(), "YSA-2025-02".into()]);
        assert_eq!(key_label(&k), "YubiKey 5 NFC · 12345678 · Active · advisories YSA-2024-02, YSA-2024-03, YSA-2025-02");
        k.advisories = Some(vec!["YSA-2015-1 (if)".into()]);
        assert_eq!(key_label(&k), "YubiKey 5 NFC · 12345678 · Active · advisories YSA-2015-1 (if)");
        k.advisories = None;
        assert_eq!(key_label(&k), "YubiKey 5 NFC · 12345678 · Active · advisories not assessed");
    }

    #[test]
    fn relative_times() {
        let now = at("2026-11-24T12:00:00Z");
        assert_eq!(ago("2026-11-24T11:59:30Z", now).unwrap(), "30 s ago");
        assert_eq!(ago("2026-11-24T10:00:00Z", now).unwrap(), "2 h ago");
        assert_eq!(ago("2026-11-20T12:00:00Z", now).unwrap(), "4 days ago");
        assert_eq!(ago("2026-11-24T12:00:30Z", now).unwrap(), "just now");
        assert_eq!(ago("2026-11-25T12:00:00Z", now).unwrap(), "in the future");
        assert_eq!(ago("yesterday", now), None);
        assert_eq!(describe_time("yesterday", now), "yesterday");
        assert_eq!(describe_time("2026-11-24T10:59:59.5+00:00", now), "2026-11-24 10:59 UTC (1 h ago)");
    }

    #[test]
    fn action_ids_round_trip() {
        for a in [Action::SyncNow, Action::Quit] {
            assert_eq!(Action::from_id(a.id()), Some(a));
        }
        assert_eq!(Action::from_id("other"), None);
    }
}
