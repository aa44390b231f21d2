//! What `keytally status` reports about this machine's side of the sync, as JSON: the outbox
//! (pending, dropped, quarantined records) and, per profile, the sync state, the last success
//! and error, and the credential in use (kind, source, expiry; never its value).

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::clients::client_for;
use crate::config::Config;
use crate::outbox::{fmt_time, Outbox};

/// The report, with `service` (the running service's view, or why there is none) as given.
pub async fn collect(cfg: &Config, outbox: &Outbox, service: Value) -> Value {
    let mut profiles = Vec::new();
    for p in &cfg.profiles {
        let state = outbox.sync_state(&p.name).unwrap_or_default();
        let credential = match client_for(cfg, p) {
            Ok(c) => {
                let mut info = c.auth().info(SystemTime::now()).await;
                info.source = p.shown_source(&info.source);
                serde_json::to_value(info).unwrap_or_default()
            }
            Err(e) => json!({ "error": format!("{e:#}") }),
        };
        profiles.push(json!({
            "name": p.name,
            "server": p.server,
            "state": crate::sync::describe(&state),
            "pending": outbox.depth(Some(&p.name)).unwrap_or(0),
            "last_success_at": state.last_success_at.map(fmt_time),
            "last_error": state.last_error,
            "last_error_at": state.last_error_at.map(fmt_time),
            "next_attempt_at": state.next_attempt_at.map(fmt_time),
            "credential": credential,
        }));
    }
    json!({
        "service": service,
        "config": cfg.file,
        "outbox": cfg.outbox_path().display().to_string(),
        "pending": outbox.depth(None).unwrap_or(0),
        "dropped": outbox.dropped().unwrap_or(0),
        "quarantined": outbox.quarantined().unwrap_or_default(),
        "profiles": profiles,
    })
}
