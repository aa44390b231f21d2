//! A revoked API key, through the real binary: `keytally sync --once` stops with
//! "credential rejected" (exit 3, records stay queued), `keytally status` shows it, and ten
//! more runs send no request at all (the credential is retried only at the backoff cap).

#![cfg(unix)]

#[path = "../support/mod.rs"]
mod support;

use serde_json::json;

#[test]
fn revoked_key_shows_credential_rejected_and_stays_quiet() {
    let setup = support::setup("");
    let (sb, dir, key) = (&setup.sb, &setup.dir, &setup.key);
    assert!(sb.revoke_api_key(&setup.key_id));
    let recs = dir.path().join("records.json");
    let body: Vec<_> = (0..3).map(|i| json!({"yubikey": {"uniqueId": format!("77{i}")}})).collect();
    std::fs::write(&recs, serde_json::to_string(&body).unwrap()).unwrap();
    let kt = |args: &[&str]| setup.keytally(args).output().unwrap();
    let out = kt(&["sync", "--once", "--records", recs.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("credential rejected"), "{stdout}");
    assert_eq!(sb.request_count(), 1);
    for _ in 0..10 {
        assert_eq!(kt(&["sync", "--once", "--records", recs.to_str().unwrap()]).status.code(), Some(3));
    }
    assert_eq!(sb.request_count(), 1, "ten more runs, no request: retried only at the cap");
    let status = kt(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("credential rejected"), "{text}");
    assert!(text.contains("3 pending"), "{text}");
    assert!(!text.contains(key.as_str()), "the key never appears");
    let status = kt(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["profiles"][0]["state"], "credential rejected");
    assert!(!String::from_utf8_lossy(&status.stdout).contains(key.as_str()));
}
