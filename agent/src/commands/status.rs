//! `keytally status [--json]`: what the running service sees (over its control socket:
//! attached keys, sync state, warnings), then outbox depth, dropped and quarantined records,
//! the last success and error per profile, and the credential in use (kind, source, expiry;
//! never its value). A user who cannot read the service's outbox gets the service's view.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::config::load_config;
use crate::control::{service_state, ClientError, State};
use crate::outbox::Outbox;

pub fn run(config_path: Option<&Path>, as_json: bool) -> ExitCode {
    let cfg = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let service = service_state(Duration::from_secs(2));
    let path = cfg.outbox_path();
    let outbox = match Outbox::open(&path, cfg.max_pending) {
        Ok(o) => o,
        // A user on a workstation cannot read the service's outbox; the service's own view
        // (over its control socket) is what they need.
        Err(e) if service.is_ok() => {
            if as_json {
                let report = json!({ "service": service_json(&service), "outbox": path.display().to_string(), "outbox_error": e.to_string() });
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print_service(&service);
                println!("outbox:      {} (not readable here: {e}; the service's view is above)", path.display());
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("keytally: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match crate::runtime::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = rt.block_on(crate::status_report::collect(&cfg, &outbox, service_json(&service)));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    print_service(&service);
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| "never".into());
    println!("outbox:      {} ({} pending, {} dropped)", report["outbox"].as_str().unwrap_or(""), report["pending"], report["dropped"]);
    if let Some(q) = report["quarantined"].as_array().filter(|q| !q.is_empty()) {
        println!("quarantined: {}", q.len());
        for e in q {
            println!("  {} [{}] HTTP {}: {}", s(&e["unique_id"]), s(&e["profile"]), e["status"], s(&e["reason"]));
        }
    }
    for p in report["profiles"].as_array().into_iter().flatten() {
        println!("profile {} ({}): {}, {} pending", s(&p["name"]), s(&p["server"]), s(&p["state"]), p["pending"]);
        println!("  last success: {}", s(&p["last_success_at"]));
        if !p["last_error"].is_null() {
            println!("  last error:   {} ({})", s(&p["last_error"]), s(&p["last_error_at"]));
        }
        if !p["next_attempt_at"].is_null() {
            println!("  next attempt: {}", s(&p["next_attempt_at"]));
        }
        let c = &p["credential"];
        if let Some(err) = c.get("error") {
            println!("  credential:   unusable: {}", s(err));
        } else {
            println!("  credential:   {} from {}, {}", s(&c["kind"]), s(&c["source"]), s(&c["expiry"]));
            if let Some(w) = c["expiry_warning"].as_str() {
                println!("  WARNING:      {w}");
            }
            if c["rotation_interrupted"].as_bool() == Some(true) {
                println!("  WARNING:      a machine-token rotation was interrupted; see the docs");
            }
        }
    }
    ExitCode::SUCCESS
}

fn service_json(service: &Result<State, ClientError>) -> serde_json::Value {
    match service {
        Ok(state) => json!({ "running": true, "state": state }),
        Err(e) => json!({ "running": false, "reason": e.to_string() }),
    }
}

fn print_service(service: &Result<State, ClientError>) {
    let state = match service {
        Ok(s) => s,
        Err(e) => {
            println!("service:     {e}");
            return;
        }
    };
    let last = state.sync.last_success_at.as_deref().unwrap_or("never");
    println!("service:     running: sync {}, last success {last}, {} pending", state.sync.state, state.sync.pending);
    if state.keys.is_empty() {
        println!("  keys:      none attached");
    }
    for k in &state.keys {
        println!("  key:       {}", crate::tray::menu::key_label(k));
    }
    if let Some(e) = &state.sync.last_error {
        println!("  last error: {e}");
    }
    for w in &state.warnings {
        println!("  WARNING:   {w}");
    }
}
