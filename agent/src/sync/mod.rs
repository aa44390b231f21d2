//! The sync engine: records go into the outbox for every profile they match, then each
//! profile's backlog is pushed once (machine-token rotation first, then [`schedule::drain`]
//! under the backoff and rate limits of [`schedule`]).
//!
//! `sync --once` runs it once per process; the push worker of `run`/`kiosk` and the
//! enrollment desk run it with one outbox and one set of clients for their whole lifetime.

pub mod schedule;
#[cfg(test)]
mod sim;

use std::time::Duration;

use keytally_protocol::record::DeviceRecord;

use crate::clients::{rotate_if_due, Clients};
use crate::config::{AuthConfig, Config};
use crate::outbox::{Enqueued, Outbox, Serialized};
use schedule::{blocked_until, drain, Backoff, DrainLimits, DrainReport};
pub use schedule::{describe, Clock, Stopped, SystemClock};

#[derive(Debug, Default)]
pub struct Summary {
    pub queued: u64,
    pub unchanged: u64,
    pub per_profile: Vec<(String, DrainReport)>,
    pub remaining: u64,
}

/// Opens the outbox, enqueues `records` for every profile they match, and drains each
/// profile once, with fresh clients (`sync --once`).
pub async fn sync_once(cfg: &Config, records: &[Serialized]) -> anyhow::Result<Summary> {
    sync_once_at(cfg, records, &SystemClock).await
}

/// [`sync_once`] on the given clock.
pub async fn sync_once_at(cfg: &Config, records: &[Serialized], clock: &dyn Clock) -> anyhow::Result<Summary> {
    let mut outbox = Outbox::open(&cfg.outbox_path(), cfg.max_pending)?;
    sync_serialized(cfg, &mut outbox, &mut Clients::default(), records, clock).await
}

/// The long-running modes' sync: the process's outbox and clients, typed records
/// (serialized here, once, on their way into the outbox).
pub async fn sync_records(cfg: &Config, outbox: &mut Outbox, clients: &mut Clients, records: &[DeviceRecord], clock: &dyn Clock) -> anyhow::Result<Summary> {
    sync_serialized(cfg, outbox, clients, &Serialized::all(records)?, clock).await
}

/// Enqueues serialized records for every profile they match, then drains each profile once.
pub async fn sync_serialized(cfg: &Config, outbox: &mut Outbox, clients: &mut Clients, records: &[Serialized], clock: &dyn Clock) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let now = clock.now();
    // The service's heartbeat timer is jittered (±10 %) and a delivery lands a little after the
    // tick that queued it, so an unchanged state is due again after 80 % of the interval:
    // otherwise a tick that comes early finds it "not due" and the next heartbeat is ~2 away.
    let heartbeat_due_after = cfg.heartbeat.mul_f64(0.8);
    for r in records {
        for p in cfg.profiles.iter().filter(|p| p.matches(&r.unique_id)) {
            match outbox.enqueue(&p.name, &r.unique_id, &r.fingerprint, &r.body, Some(heartbeat_due_after), now)? {
                Enqueued::Queued { .. } => summary.queued += 1,
                Enqueued::Unchanged => summary.unchanged += 1,
            }
        }
    }
    let limits = DrainLimits { min_interval: Duration::from_secs_f64(1.0 / cfg.drain_rate), ..DrainLimits::default() };
    let backoff = Backoff { cap: cfg.backoff_cap, heartbeat: cfg.heartbeat, ..Backoff::default() };
    for p in &cfg.profiles {
        let client = match clients.get(cfg, p) {
            Ok(c) => c,
            Err(e) => {
                let mut st = outbox.sync_state(&p.name)?;
                st.last_error = Some(format!("{e:#}"));
                st.last_error_at = Some(clock.now());
                outbox.set_sync_state(&p.name, &st)?;
                eprintln!("keytally: profile {}: {e:#}", p.name);
                continue;
            }
        };
        if let AuthConfig::Machine { rotate: Some(rotation), .. } = &p.auth {
            // Rotation goes first, before any other request with the old token, and only
            // while the profile is not backing off.
            let mut st = outbox.sync_state(&p.name)?;
            if blocked_until(&st, clock.now(), true).is_none() {
                if let Err(e) = rotate_if_due(client, *rotation, clock.now()).await {
                    eprintln!("keytally: profile {}: {e}", p.name);
                    st.last_error = Some(e.to_string());
                    st.last_error_at = Some(clock.now());
                    outbox.set_sync_state(&p.name, &st)?;
                }
            }
        }
        let report = drain(client, outbox, &p.name, limits, backoff, clock).await?;
        summary.per_profile.push((p.name.clone(), report));
    }
    summary.remaining = outbox.depth(None)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, Config, Profile};
    use crate::outbox::unix_now;
    use schedule::ManualClock;
    use serde_json::json;
    use std::path::Path;

    fn cfg(dir: &Path, server: &str, auth: AuthConfig) -> Config {
        Config {
            file: "test".into(),
            state_dir: dir.to_path_buf(),
            max_pending: 1000,
            backoff_cap: Duration::from_secs(900),
            drain_rate: 200.0,
            heartbeat: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(5),
            posture_every: Duration::from_secs(24 * 3600),
            profiles: vec![Profile { name: "default".into(), server: server.into(), auth, ca_file: None, pins: vec![], match_prefixes: vec![] }],
        }
    }

    fn records(n: u32, gen: u32) -> Vec<Serialized> {
        (0..n)
            .filter_map(|i| Serialized::from_json(json!({"yubikey": {"uniqueId": format!("{}", 1000 + i), "firmwareVersion": "5.7.2", "lastUsed": format!("t{gen}")}, "observation": {"gen": gen}})))
            .collect()
    }

    fn secret_file(dir: &Path, name: &str, value: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, value).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        p
    }

    /// A sandbox, an API key for it (its id is returned) in a private token file, and a
    /// one-profile configuration using it.
    async fn with_api_key() -> (keytally_sandbox::Sandbox, String, tempfile::TempDir, Config) {
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
        let (id, key) = sb.create_api_key("t");
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &sb.devices_base(), AuthConfig::TokenFile(secret_file(dir.path(), "tok", &key)));
        (sb, id, dir, c)
    }

    #[tokio::test]
    async fn sync_once_delivers_and_skips_unchanged() {
        let (sb, _, _dir, c) = with_api_key().await;
        let s = sync_once(&c, &records(20, 1)).await.unwrap();
        assert_eq!((s.queued, s.remaining), (20, 0));
        assert_eq!(sb.store().device_count(), 20);
        // Same records again (only lastUsed differs): nothing queued, nothing sent.
        let before = sb.device_request_count();
        let s = sync_once(&c, &records(20, 1)).await.unwrap();
        assert_eq!((s.queued, s.unchanged), (0, 20));
        assert_eq!(sb.device_request_count(), before);
        // A changed record is pushed.
        let s = sync_once(&c, &records(20, 2)[..1]).await.unwrap();
        assert_eq!(s.queued, 1);
        assert_eq!(sb.store().device("1000").unwrap()["observation"]["gen"], 2);
    }

    #[tokio::test]
    async fn outage_then_recovery_obeys_retry_after() {
        let (sb, _, _dir, c) = with_api_key().await;
        {
            let mut f = sb.faults();
            f.down = true;
            f.fail_status = Some(503);
            f.retry_after = Some(2);
        }
        // The engine's clock, not the wall's: a slow run (Wine, a loaded CI) cannot let the
        // Retry-After pass between two calls.
        let t0 = 1_000_000;
        let clock = ManualClock::at(t0);
        let s = sync_once_at(&c, &records(10, 1), &clock).await.unwrap();
        assert_eq!(s.remaining, 10);
        assert_eq!(sb.device_request_count(), 0, "503 answered by the fault layer");
        assert_eq!(sb.request_count(), 1, "one request, then back off");
        let state = Outbox::open(&c.outbox_path(), 1000).unwrap().sync_state("default").unwrap();
        let next = state.next_attempt_at.unwrap();
        assert!(next >= t0 + 2 && next <= t0 + 3, "Retry-After (2 s) is the floor, plus a little jitter: {next} - {t0}");
        // The server is back, but the Retry-After has not passed: no request, at once or 1 s on.
        sb.faults().down = false;
        let s = sync_once_at(&c, &[], &clock).await.unwrap();
        assert_eq!(s.remaining, 10);
        assert_eq!(sb.request_count(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(sync_once_at(&c, &[], &clock).await.unwrap().remaining, 10);
        assert_eq!(sb.request_count(), 1);
        clock.advance(Duration::from_secs(3));
        let s = sync_once_at(&c, &[], &clock).await.unwrap();
        assert_eq!(s.remaining, 0);
        assert_eq!(sb.store().device_count(), 10);
    }

    #[tokio::test]
    async fn revoked_key_stops_with_credential_rejected_and_bounded_requests() {
        let (sb, id, _dir, c) = with_api_key().await;
        sb.revoke_api_key(&id);
        // Before the loop: its 20 runs take seconds where each is slow (0.7 s under Wine).
        let start = unix_now();
        for _ in 0..20 {
            let s = sync_once(&c, &records(5, 1)).await.unwrap();
            assert_eq!(s.remaining, 5);
        }
        assert_eq!(sb.request_count(), 1, "20 runs, one request: retried only at the cap");
        let ob = Outbox::open(&c.outbox_path(), 1000).unwrap();
        let st = ob.sync_state("default").unwrap();
        assert!(st.credential_rejected);
        // The one request was at or after `start`; the wait after it is the cap (900 s) plus up
        // to 10 %, so never more than 990 s after now.
        let next = st.next_attempt_at.unwrap();
        assert!(next > start + 898 && next <= unix_now() + 991, "the cap: {next} - {start}");
        assert!(st.last_error.unwrap().contains("credential rejected"));
    }

    /// A heartbeat tick that comes early (the timer's jitter) still re-sends an unchanged key;
    /// one well inside the interval does not.
    #[tokio::test]
    async fn an_early_heartbeat_tick_still_counts() {
        let (sb, _, _dir, c) = with_api_key().await;
        let clock = ManualClock::at(1_000_000);
        sync_once_at(&c, &records(1, 1), &clock).await.unwrap();
        let hb = c.heartbeat.as_secs();
        clock.advance(Duration::from_secs(hb / 2));
        assert_eq!(sync_once_at(&c, &records(1, 1), &clock).await.unwrap().unchanged, 1, "half an interval: not due");
        clock.advance(Duration::from_secs(hb * 2 / 5));
        let s = sync_once_at(&c, &records(1, 1), &clock).await.unwrap();
        assert_eq!((s.queued, s.remaining), (1, 0), "a tick 10 % early re-sends it");
        assert_eq!(sb.store().puts_applied(), 2);
    }

    /// Revoked, then replaced by an admin: the new key is tried at once, not at the cap, both
    /// by a running agent (the same clients) and by the next `sync --once`.
    #[tokio::test]
    async fn a_replaced_key_lifts_the_rejection_at_once() {
        let (sb, id, dir, c) = with_api_key().await;
        sb.revoke_api_key(&id);
        let mut clients = Clients::default();
        let mut ob = Outbox::open(&c.outbox_path(), c.max_pending).unwrap();
        let s = sync_serialized(&c, &mut ob, &mut clients, &records(3, 1), &SystemClock).await.unwrap();
        assert_eq!(s.remaining, 3);
        let st = Outbox::open(&c.outbox_path(), 1000).unwrap().sync_state("default").unwrap();
        let refused = st.rejected_fingerprint.clone().expect("the refused credential is remembered");
        assert!(st.credential_rejected && refused.len() == 16);
        // Unchanged: still blocked, no request.
        let before = sb.request_count();
        sync_serialized(&c, &mut ob, &mut clients, &[], &SystemClock).await.unwrap();
        assert_eq!(sb.request_count(), before);
        // The admin writes a new key into the same file: the running agent uses it now.
        let (_, fresh) = sb.create_api_key("replacement");
        secret_file(dir.path(), "tok", &fresh);
        let s = sync_serialized(&c, &mut ob, &mut clients, &[], &SystemClock).await.unwrap();
        assert_eq!((s.remaining, sb.store().device_count()), (0, 3));
        let st = Outbox::open(&c.outbox_path(), 1000).unwrap().sync_state("default").unwrap();
        assert!(!st.credential_rejected && st.next_attempt_at.is_none());
        assert!(!refused.contains(&fresh[..8]) && !format!("{st:?}").contains(&fresh), "only a fingerprint is kept");

        // And across runs: revoke the new key, replace it again, run again.
        let (id2, third) = sb.create_api_key("third");
        secret_file(dir.path(), "tok", &third);
        sb.revoke_api_key(&id2);
        assert_eq!(sync_once(&c, &records(3, 2)).await.unwrap().remaining, 3);
        let (_, fourth) = sb.create_api_key("fourth");
        secret_file(dir.path(), "tok", &fourth);
        assert_eq!(sync_once(&c, &[]).await.unwrap().remaining, 0);
        assert_eq!(sb.store().device("1000").unwrap()["observation"]["gen"], 2);
    }

    #[tokio::test]
    async fn oauth_and_quarantine_through_sync_once() {
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthConfig::OAuth {
            client_id: "keytally".into(),
            secret_env: None,
            secret_file: Some(secret_file(dir.path(), "cs", "sandbox-client-secret")),
            secret_keyring: None,
            token_url: sb.token_url(),
            basic: false,
            scope: None,
        };
        let c = cfg(dir.path(), &sb.devices_base(), auth);
        let s = sync_once(&c, &records(3, 1)).await.unwrap();
        assert_eq!(s.remaining, 0);
        assert_eq!(sb.store().device_count(), 3);
        assert_eq!(sb.token_request_count(), 1);
    }

    #[tokio::test]
    async fn permanent_rejection_is_quarantined_with_reason() {
        let (sb, _, _dir, c) = with_api_key().await;
        {
            let mut f = sb.faults();
            f.fail_next = 1;
            f.fail_status = Some(422);
        }
        let s = sync_once(&c, &records(3, 1)).await.unwrap();
        assert_eq!(s.remaining, 0);
        assert_eq!(sb.store().device_count(), 2);
        let q = Outbox::open(&c.outbox_path(), 1000).unwrap().quarantined().unwrap();
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].status, 422);
        assert!(q[0].reason.contains("injected fault"), "{q:?}");
    }

    /// The server is down for 30 s (virtual) answering 503 with `Retry-After: 5`, then
    /// comes back. A pass runs every virtual second; every request is real HTTP on loopback.
    #[tokio::test]
    async fn outage_of_30s_retry_after_obeyed_everything_delivered() {
        let (sb, _, _dir, c) = with_api_key().await;
        let clock = ManualClock::at(unix_now());
        {
            let mut f = sb.faults();
            f.down = true;
            f.fail_status = Some(503);
            f.retry_after = Some(5);
        }
        let mut attempts: Vec<(u64, bool)> = Vec::new(); // (virtual second, server was down)
        let mut delivered_at = None;
        for sec in 0..180u64 {
            if sec == 30 {
                sb.faults().down = false;
            }
            let recs = if sec == 0 { records(50, 1) } else if sec == 10 { records(50, 2)[..10].to_vec() } else { vec![] };
            let before = sb.request_count();
            let s = sync_once_at(&c, &recs, &clock).await.unwrap();
            let sent = sb.request_count() - before;
            if sent > 0 {
                attempts.push((sec, sec < 30));
            }
            if s.remaining == 0 {
                delivered_at = Some(sec);
                break;
            }
            clock.advance(Duration::from_secs(1));
        }
        let down: Vec<u64> = attempts.iter().filter(|a| a.1).map(|a| a.0).collect();
        let (devices, applied) = {
            let st = sb.store();
            (st.device_count(), st.puts_applied())
        };
        eprintln!(
            "FIGURE 30 s outage: attempts while down at virtual s {down:?}; everything delivered at s {delivered_at:?} ({} records, {} PUTs applied)",
            devices, applied
        );
        // Retry-After is a floor: two attempts are at least 5 s apart while the server says so.
        for w in attempts.windows(2) {
            if w[0].1 {
                assert!(w[1].0 - w[0].0 >= 5, "attempt at {} came {}s after a 503 with Retry-After: 5", w[1].0, w[1].0 - w[0].0);
            }
        }
        assert!(down.len() <= 30 / 5 + 1, "at most one attempt per Retry-After while down: {down:?}");
        let done = delivered_at.expect("everything is delivered after the server is back");
        assert!((30..=30 + 2 * 60).contains(&done), "delivered at {done}");
        assert_eq!(sb.store().device_count(), 50);
        for i in 0..50u32 {
            let want = if i < 10 { 2 } else { 1 };
            assert_eq!(sb.store().device(&format!("{}", 1000 + i)).unwrap()["observation"]["gen"], want);
        }
        assert_eq!(Outbox::open(&c.outbox_path(), 1000).unwrap().depth(None).unwrap(), 0);
    }

    /// A revoked API key: 60 virtual seconds of passes (one a second) send one request, and
    /// two hours send no more than one per backoff cap.
    #[tokio::test]
    async fn revoked_key_bounded_requests_over_60s_and_2h_virtual() {
        let (sb, id, _dir, c) = with_api_key().await;
        let clock = ManualClock::at(unix_now());
        sync_once_at(&c, &records(5, 1), &clock).await.unwrap();
        assert!(sb.revoke_api_key(&id));
        let before = sb.request_count();
        for sec in 0..60u64 {
            let recs = if sec == 0 { records(5, 2) } else { vec![] };
            let s = sync_once_at(&c, &recs, &clock).await.unwrap();
            assert_eq!(s.remaining, 5);
            clock.advance(Duration::from_secs(1));
        }
        let in_60s = sb.request_count() - before;
        let st = Outbox::open(&c.outbox_path(), 1000).unwrap().sync_state("default").unwrap();
        assert_eq!(describe(&st), "credential rejected");
        assert!(st.last_error.as_deref().unwrap_or("").starts_with("credential rejected"), "{st:?}");
        // Two more hours, a pass every virtual minute.
        for _ in 0..120 {
            clock.advance(Duration::from_secs(60));
            sync_once_at(&c, &[], &clock).await.unwrap();
        }
        let in_2h = sb.request_count() - before;
        eprintln!("FIGURE revoked key: {in_60s} request(s) in 60 s of passes, {in_2h} in 2 h (cap 15 min)");
        assert_eq!(in_60s, 1, "one 403, then nothing for the rest of the minute");
        assert!(in_2h <= 2 * 3600 / 900 + 1, "{in_2h} requests in 2 h: more than one per backoff cap");
        assert!(in_2h >= 2, "still retried at the cap");
    }

    /// `rotate = true`: a machine token that expires within `rotate_within` is rotated
    /// first, before any other request, stored, and used; a fresh token is left alone.
    #[tokio::test]
    async fn machine_token_rotation_is_scheduled_before_other_requests() {
        use crate::config::Rotation;
        let soon = std::time::SystemTime::now() + Duration::from_secs(5 * 86_400);
        let old = keytally_protocol::auth::jwt::unsigned_for_test(soon);
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config { machine_token: Some(old.clone()), ..Default::default() })
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = secret_file(dir.path(), "machine-token", &old);
        let rotation = Rotation { within: Duration::from_secs(30 * 86_400), every: None };
        let c = cfg(dir.path(), &sb.devices_base(), AuthConfig::Machine { file: file.clone(), initial_env: None, rotate: Some(rotation) });
        let s = sync_once(&c, &records(3, 1)).await.unwrap();
        assert_eq!(s.remaining, 0);
        let log = sb.request_log();
        assert_eq!(log[0], "GET /auth/machine-token", "{log:?}");
        assert!(log[1..].iter().all(|l| l.starts_with("PUT ")), "{log:?}");
        let stored = std::fs::read_to_string(&file).unwrap();
        assert_ne!(stored, old);
        assert_eq!(Some(stored.clone()), sb.current_machine_token());
        // The new token is valid for a year: the next run does not rotate again.
        sync_once(&c, &records(3, 2)).await.unwrap();
        assert_eq!(sb.request_log().iter().filter(|l| l.contains("machine-token")).count(), 1);
        // A failed rotation (server down) is not retried in the same run, and the old token stays.
        let soon2 = keytally_protocol::auth::jwt::unsigned_for_test(soon);
        std::fs::write(&file, &soon2).unwrap();
        let before = sb.request_log().len();
        {
            let mut f = sb.faults();
            f.fail_next = 1;
            f.fail_status = Some(500);
        }
        let _ = sync_once(&c, &records(3, 3)).await.unwrap();
        let log = sb.request_log();
        assert_eq!(log[before..].iter().filter(|l| l.contains("machine-token")).count(), 1, "{:?}", &log[before..]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), soon2);
    }
}
