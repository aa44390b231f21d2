//! `keytally sync --once`: scan, enqueue into the outbox, push every profile, exit.
//! Exit 0 when the outbox is empty afterwards, 3 when records remain queued, 2 for a
//! bad configuration, 1 for any other error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keytally_protocol::api::{build_client, parse_secure_url, DevicesClient, TransportConfig};
use keytally_protocol::auth::{Authenticator, ClientAuth, ClientCredentials, Credential, MachineToken, StaticSource, StaticToken};
use keytally_protocol::secret::Secret;
use serde_json::Value;

use crate::config::{self, AuthConfig, Config, Profile};
use crate::outbox::{unix_now, Enqueued, Outbox};
use crate::sync::{drain, Backoff, DrainLimits, DrainReport, Stopped};

pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_PENDING: u8 = 3;

/// Loads the config, printing the one-line error and returning exit code 2 on failure.
pub fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    config::load(path, &|k| std::env::var(k).ok().filter(|v| !v.is_empty())).map_err(|e| {
        eprintln!("keytally: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

pub fn outbox_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("outbox.sqlite")
}

/// The client (and its credential) for one profile. Errors name the profile.
pub fn client_for(cfg: &Config, p: &Profile) -> anyhow::Result<DevicesClient> {
    let transport = TransportConfig { timeout: cfg.timeout, extra_ca_file: p.ca_file.clone(), ..TransportConfig::default() };
    let http = build_client(&transport).with_context(|| format!("profile {}", p.name))?;
    let base = parse_secure_url("server URL", &p.server)?;
    let env_secret = |var: &str| -> anyhow::Result<Secret> {
        Secret::from_env(var)?.with_context(|| format!("profile {}: environment variable {var} is not set", p.name))
    };
    let credential = match &p.auth {
        AuthConfig::TokenEnv(var) => Credential::Static(StaticToken::new(StaticSource::Value(env_secret(var)?))?),
        AuthConfig::TokenFile(f) => Credential::Static(StaticToken::new(StaticSource::File(f.clone()))?),
        AuthConfig::OAuth { client_id, secret_env, secret_file, token_url, basic, scope } => {
            let secret = match (secret_env, secret_file) {
                (Some(v), _) => env_secret(v)?,
                (None, Some(f)) => Secret::from_file(f)?,
                (None, None) => anyhow::bail!("profile {}: no client secret", p.name),
            };
            Credential::OAuth(ClientCredentials::new(
                http.clone(),
                parse_secure_url("token URL", token_url)?,
                client_id.clone(),
                secret,
                scope.clone(),
                if *basic { ClientAuth::Basic } else { ClientAuth::Body },
            ))
        }
        AuthConfig::Machine { file, initial_env, .. } => {
            let initial = match initial_env {
                Some(v) => Secret::from_env(v)?,
                None => None,
            };
            let mut server = base.clone();
            server.set_path("");
            Credential::Machine(MachineToken::open(http.clone(), file.clone(), &server, initial)?)
        }
    };
    Ok(DevicesClient::new(http, base, Arc::new(Authenticator::new(credential)))?)
}

/// What the server should see as "the same state": the record without its volatile
/// sighting times, so an unchanged key is not re-pushed on every scan.
pub fn fingerprint(record: &Value) -> String {
    let mut v = record.clone();
    if let Some(y) = v.get_mut("yubikey").and_then(Value::as_object_mut) {
        y.remove("lastUsed");
        y.remove("lastUpdate");
    }
    if let Some(o) = v.get_mut("observation").and_then(Value::as_object_mut) {
        o.remove("observedAt");
    }
    v.to_string()
}

#[derive(Debug, Default)]
pub struct Summary {
    pub queued: u64,
    pub unchanged: u64,
    pub per_profile: Vec<(String, DrainReport)>,
    pub remaining: u64,
}

/// Enqueues `records` for every profile they match, then drains each profile once.
pub async fn sync_once(cfg: &Config, records: &[Value]) -> anyhow::Result<Summary> {
    let path = outbox_path(cfg);
    let mut outbox = Outbox::open(&path, cfg.max_pending)?;
    let mut summary = Summary::default();
    let now = unix_now();
    for r in records {
        let Some(uid) = r.pointer("/yubikey/uniqueId").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
            tracing::warn!("skipping a record without yubikey.uniqueId");
            continue;
        };
        let body = serde_json::to_vec(r)?;
        let fp = fingerprint(r);
        for p in cfg.profiles.iter().filter(|p| p.matches(uid)) {
            match outbox.enqueue(&p.name, uid, &fp, &body, Some(cfg.heartbeat), now)? {
                Enqueued::Queued { .. } => summary.queued += 1,
                Enqueued::Unchanged => summary.unchanged += 1,
            }
        }
    }
    let limits = DrainLimits { min_interval: Duration::from_secs_f64(1.0 / cfg.drain_rate), ..DrainLimits::default() };
    let backoff = Backoff { cap: cfg.backoff_cap, ..Backoff::default() };
    for p in &cfg.profiles {
        let client = match client_for(cfg, p) {
            Ok(c) => c,
            Err(e) => {
                let mut st = outbox.sync_state(&p.name)?;
                st.last_error = Some(format!("{e:#}"));
                st.last_error_at = Some(unix_now());
                outbox.set_sync_state(&p.name, &st)?;
                eprintln!("keytally: profile {}: {e:#}", p.name);
                continue;
            }
        };
        let report = drain(&client, &mut outbox, &p.name, limits, backoff).await?;
        summary.per_profile.push((p.name.clone(), report));
    }
    summary.remaining = outbox.depth(None)?;
    Ok(summary)
}

pub fn run(config_path: Option<&Path>, reader: Option<&str>) -> ExitCode {
    let cfg = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.profiles.is_empty() {
        eprintln!("keytally: configuration error in {}: profiles: no server profile (set KEYTALLY_SERVER or add [profiles.NAME])", cfg.file);
        return ExitCode::from(EXIT_CONFIG);
    }
    let records = match crate::commands::scan::collect_records(reader) {
        Ok(rs) => rs.into_iter().filter_map(|r| serde_json::to_value(r).ok()).collect::<Vec<_>>(),
        Err(e) => {
            // Nothing scanned this time: still push what is queued.
            eprintln!("keytally: scan failed: {e:#}");
            Vec::new()
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keytally: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(sync_once(&cfg, &records)) {
        Ok(s) => {
            println!("scanned {} record(s): {} queued, {} unchanged", records.len(), s.queued, s.unchanged);
            for (name, r) in &s.per_profile {
                let mut line = format!("profile {name}: pushed {}, quarantined {}, {} left", r.pushed, r.quarantined, r.remaining);
                match &r.stopped {
                    Some(Stopped::BackingOff { until, reason }) => line += &format!("; backing off until {} ({reason})", fmt_time(*until)),
                    Some(Stopped::CredentialRejected { until, reason }) => {
                        line += &format!("; {reason}; next attempt after {}", fmt_time(*until))
                    }
                    Some(Stopped::Limit) => line += "; stopped at the per-run limit",
                    None => {}
                }
                println!("{line}");
            }
            if s.remaining == 0 {
                ExitCode::SUCCESS
            } else {
                println!("{} record(s) stay queued for the next sync", s.remaining);
                ExitCode::from(EXIT_PENDING)
            }
        }
        Err(e) => {
            eprintln!("keytally: sync failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn fmt_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, Config, Profile};
    use serde_json::json;

    fn cfg(dir: &Path, server: &str, auth: AuthConfig) -> Config {
        Config {
            file: "test".into(),
            state_dir: dir.to_path_buf(),
            max_pending: 1000,
            backoff_cap: Duration::from_secs(900),
            drain_rate: 200.0,
            heartbeat: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(5),
            profiles: vec![Profile { name: "default".into(), server: server.into(), auth, ca_file: None, match_prefixes: vec![] }],
        }
    }

    fn records(n: u32, gen: u32) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"yubikey": {"uniqueId": format!("{}", 1000 + i), "firmwareVersion": "5.7.2", "lastUsed": format!("t{gen}")}, "observation": {"gen": gen}}))
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

    #[tokio::test]
    async fn sync_once_delivers_and_skips_unchanged() {
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
        let (_, key) = sb.create_api_key("t");
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &sb.devices_base(), AuthConfig::TokenFile(secret_file(dir.path(), "tok", &key)));
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
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
        let (_, key) = sb.create_api_key("t");
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &sb.devices_base(), AuthConfig::TokenFile(secret_file(dir.path(), "tok", &key)));
        {
            let mut f = sb.faults();
            f.down = true;
            f.fail_status = Some(503);
            f.retry_after = Some(2);
        }
        let s = sync_once(&c, &records(10, 1)).await.unwrap();
        assert_eq!(s.remaining, 10);
        assert_eq!(sb.device_request_count(), 0, "503 answered by the fault layer");
        assert_eq!(sb.request_count(), 1, "one request, then back off");
        let state = Outbox::open(&outbox_path(&c), 1000).unwrap().sync_state("default").unwrap();
        assert!(state.next_attempt_at.unwrap() > unix_now(), "Retry-After is the floor");
        // The server is back, but the Retry-After has not passed: no request.
        sb.faults().down = false;
        let s = sync_once(&c, &[]).await.unwrap();
        assert_eq!(s.remaining, 10);
        assert_eq!(sb.request_count(), 1);
        tokio::time::sleep(Duration::from_millis(3300)).await;
        let s = sync_once(&c, &[]).await.unwrap();
        assert_eq!(s.remaining, 0);
        assert_eq!(sb.store().device_count(), 10);
    }

    #[tokio::test]
    async fn revoked_key_stops_with_credential_rejected_and_bounded_requests() {
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
        let (id, key) = sb.create_api_key("t");
        sb.revoke_api_key(&id);
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &sb.devices_base(), AuthConfig::TokenFile(secret_file(dir.path(), "tok", &key)));
        for _ in 0..20 {
            let s = sync_once(&c, &records(5, 1)).await.unwrap();
            assert_eq!(s.remaining, 5);
        }
        assert_eq!(sb.request_count(), 1, "20 runs, one request: retried only at the cap");
        let ob = Outbox::open(&outbox_path(&c), 1000).unwrap();
        let st = ob.sync_state("default").unwrap();
        assert!(st.credential_rejected);
        assert!(st.next_attempt_at.unwrap() > unix_now() + 898);
        assert!(st.last_error.unwrap().contains("credential rejected"));
    }

    #[tokio::test]
    async fn oauth_and_quarantine_through_sync_once() {
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthConfig::OAuth {
            client_id: "keytally".into(),
            secret_env: None,
            secret_file: Some(secret_file(dir.path(), "cs", "sandbox-client-secret")),
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
        let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
        let (_, key) = sb.create_api_key("t");
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &sb.devices_base(), AuthConfig::TokenFile(secret_file(dir.path(), "tok", &key)));
        {
            let mut f = sb.faults();
            f.fail_next = 1;
            f.fail_status = Some(422);
        }
        let s = sync_once(&c, &records(3, 1)).await.unwrap();
        assert_eq!(s.remaining, 0);
        assert_eq!(sb.store().device_count(), 2);
        let q = Outbox::open(&outbox_path(&c), 1000).unwrap().quarantined().unwrap();
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].status, 422);
        assert!(q[0].reason.contains("injected fault"), "{q:?}");
    }
}
