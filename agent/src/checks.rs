//! The installation checks `keytally doctor` runs, one verdict each with a fix for what fails:
//! the configuration loads and names a server, pcscd answers, the udev rules are installed,
//! the service answers on its control socket, secret files are private (and owned by the
//! service user), and each server profile is reachable with a valid credential (one cheap
//! authorized `GET devices?limit=1`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keytally_protocol::http::Failure;

use crate::clients::client_for;
use crate::config::{self, AuthConfig, Config, Profile};
use crate::platform::service_manager::ADVICE;

/// The service's config file, as the packaged unit passes it.
pub const SYSTEM_CONFIG: &str = "/etc/keytally/config.toml";
/// The secret file the package ships (0600, owned by the service user).
pub const SYSTEM_SECRET: &str = "/etc/keytally/secret";
/// The account the packaged service runs as.
pub const SERVICE_USER: &str = "keytally";
/// Where udev looks for rules, in udev's own order of precedence.
pub const UDEV_RULE_DIRS: [&str; 4] = ["/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d"];
/// The longest a server check may take.
const NET_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One check's verdict: a line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub name: String,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Self {
        Check { status, name: name.into(), detail: detail.into(), fix }
    }
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Status::Ok, name, detail, None)
    }
    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Status::Fail, name, detail, Some(fix.into()))
    }
    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Status::Warn, name, detail, Some(fix.into()))
    }
    fn skip(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Status::Skip, name, detail, None)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        // One line, whatever the detail contains.
        let one = |s: &str| s.replace(['\n', '\r'], " ");
        write!(f, "{tag:<4}  {}: {}", self.name, one(&self.detail))?;
        if let Some(fix) = &self.fix {
            write!(f, "  -> fix: {}", one(fix))?;
        }
        Ok(())
    }
}

/// 0 when no check failed, 1 otherwise.
pub fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.status == Status::Fail))
}

/// Runs every check in order, handing each verdict to `emit` as soon as it is known.
pub fn run_all(config_path: Option<&Path>, emit: &mut dyn FnMut(Check)) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let loaded = config::load(config_path, &env);
    emit(check_config(&loaded, config_path.is_some(), Path::new(SYSTEM_CONFIG).exists()));
    emit(check_pcscd());
    emit(check_service());
    emit(check_udev(&UDEV_RULE_DIRS.map(Path::new), group_exists(SERVICE_USER)));
    let cfg = loaded.ok();
    let service_uid = user_id(SERVICE_USER);
    for (path, used) in secret_files(cfg.as_ref(), Path::new(SYSTEM_SECRET).exists()) {
        emit(check_secret_file(&path, used, service_uid));
    }
    if let Some(cfg) = cfg.filter(|c| !c.profiles.is_empty()) {
        match crate::runtime::runtime() {
            Ok(rt) => {
                for p in &cfg.profiles {
                    let (server, credential) = rt.block_on(check_profile(&cfg, p));
                    emit(server);
                    emit(credential);
                }
            }
            Err(_) => emit(Check::fail("servers", "not checked: cannot start the async runtime", "report this as a bug")),
        }
    }
}

/// The configuration loads and names at least one server.
pub fn check_config(loaded: &Result<Config, config::ConfigError>, explicit: bool, system_config_exists: bool) -> Check {
    let hint = if !explicit && system_config_exists {
        format!(" (the service reads {SYSTEM_CONFIG}: pass --config {SYSTEM_CONFIG})")
    } else {
        String::new()
    };
    match loaded {
        Err(e) => Check::fail("config", format!("{e}"), format!("correct that key in {}{hint}", e.file)),
        Ok(c) if c.profiles.is_empty() => Check::fail(
            "config",
            format!("{}: no server profile", c.file),
            format!("add a [profiles.NAME] table with server and a credential (or set KEYTALLY_SERVER){hint}"),
        ),
        Ok(c) => {
            let names: Vec<&str> = c.profiles.iter().map(|p| p.name.as_str()).collect();
            Check::ok("config", format!("{}: {} profile(s): {}; state in {}", c.file, names.len(), names.join(", "), c.state_dir.display()))
        }
    }
}

fn check_pcscd() -> Check {
    use keytally_device::error::LinkError;
    use keytally_device::transport::pcsc::PcscContext;
    match PcscContext::establish().and_then(|ctx| ctx.readers()) {
        Ok(readers) => Check::ok(ADVICE.pcsc_service, format!("PC/SC context established, {} reader(s)", readers.len())),
        Err(LinkError::NoService) => Check::fail(ADVICE.pcsc_service, "PC/SC service not reachable", ADVICE.start_pcsc),
        Err(e) => Check::fail(ADVICE.pcsc_service, format!("PC/SC: {e}"), ADVICE.restart_pcsc),
    }
}

/// The service answers on its control socket (a warning otherwise: doctor also runs before
/// the service is started).
fn check_service() -> Check {
    use crate::control::{service_state, ClientError};
    match service_state(Duration::from_secs(2)) {
        Ok(s) => Check::ok("service", format!("running: {} key(s) attached, sync {}, {} pending", s.keys.len(), s.sync.state, s.sync.pending)),
        Err(e @ ClientError::Refused(_)) => Check::warn("service", e.to_string(), ADVICE.ask_as_admitted),
        Err(e) => Check::warn("service", e.to_string(), ADVICE.start_service),
    }
}

/// A `*keytally*.rules` file in one of `dirs`, and the group the rules grant access to.
pub fn check_udev(dirs: &[&Path], group_exists: Option<bool>) -> Check {
    if !cfg!(target_os = "linux") {
        return Check::skip("udev rules", "not Linux");
    }
    let found = dirs.iter().find_map(|d| {
        let entries = std::fs::read_dir(d).ok()?;
        entries.flatten().map(|e| e.path()).find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("keytally") && n.ends_with(".rules"))
        })
    });
    match (found, group_exists) {
        (None, _) => Check::fail(
            "udev rules",
            format!("no keytally rules in {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")),
            "install the package, or copy udev/70-keytally.rules to /etc/udev/rules.d/ and run `sudo udevadm control --reload-rules && sudo udevadm trigger`",
        ),
        (Some(p), Some(false)) => Check::warn(
            "udev rules",
            format!("{} is installed but group {SERVICE_USER} does not exist, so only the seat user gets the keys", p.display()),
            format!("sudo groupadd --system {SERVICE_USER} && sudo udevadm trigger"),
        ),
        (Some(p), _) => Check::ok("udev rules", format!("{}", p.display())),
    }
}

/// The secret files to check: those the profiles read (`true`: in use), and the packaged
/// secret file when it exists and no profile names it.
pub fn secret_files(cfg: Option<&Config>, system_secret_exists: bool) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(PathBuf, bool)> = Vec::new();
    for p in cfg.map(|c| c.profiles.as_slice()).unwrap_or_default() {
        let file = match &p.auth {
            AuthConfig::TokenFile(f) => Some(f.clone()),
            AuthConfig::OAuth { secret_env: None, secret_file: Some(f), .. } => Some(f.clone()),
            AuthConfig::Machine { file, .. } => Some(file.clone()),
            _ => None,
        };
        if let Some(f) = file {
            if !out.iter().any(|(o, _)| *o == f) {
                out.push((f, true));
            }
        }
    }
    let system = PathBuf::from(SYSTEM_SECRET);
    if system_secret_exists && !out.iter().any(|(o, _)| *o == system) {
        out.push((system, false));
    }
    out
}

/// What is wrong with a secret file's mode, if anything (the rule `Secret::from_file` applies).
#[cfg_attr(not(unix), allow(dead_code))]
pub fn mode_problem(mode: u32) -> Option<String> {
    let mode = mode & 0o7777;
    (mode & 0o077 != 0).then(|| format!("mode {mode:04o} lets other users read or change it"))
}

#[cfg(unix)]
fn check_secret_file(path: &Path, used: bool, service_uid: Option<u32>) -> Check {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let name = format!("secret {}", path.display());
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::fail(name, "missing", format!("create it: sudo install -m 600 -o {SERVICE_USER} -g {SERVICE_USER} /dev/null {}, then write the credential into it", path.display()))
        }
        Err(e) => return Check::warn(name, format!("cannot inspect it: {e}"), format!("run doctor as the service user: sudo -u {SERVICE_USER} keytally --config {SYSTEM_CONFIG} doctor")),
    };
    if let Some(problem) = mode_problem(meta.permissions().mode()) {
        return Check::fail(name, problem, format!("sudo chmod 600 {}", path.display()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if let Some(uid) = service_uid.filter(|uid| *uid != meta.uid()) {
        if used {
            return Check::fail(
                name,
                format!("mode {mode:04o} but owned by uid {}, so the service user {SERVICE_USER} (uid {uid}) cannot read it", meta.uid()),
                format!("sudo chown {SERVICE_USER}:{SERVICE_USER} {}", path.display()),
            );
        }
    }
    let usage = if used { "" } else { ", not used by any profile" };
    if used && meta.len() == 0 {
        return Check::fail(name, format!("mode {mode:04o} but empty"), format!("write the credential into {}", path.display()));
    }
    Check::ok(name, format!("mode {mode:04o}, owner uid {}{usage}", meta.uid()))
}

#[cfg(not(unix))]
fn check_secret_file(path: &Path, _used: bool, _service_uid: Option<u32>) -> Check {
    Check::skip(format!("secret {}", path.display()), "permissions are checked on Unix only")
}

/// Reads a colon-separated account database (`/etc/passwd`, `/etc/group`): the numeric id
/// (third field) of `name`.
pub fn lookup_id(db: &str, name: &str) -> Option<u32> {
    db.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.nth(1).and_then(|id| id.parse().ok())).flatten()
    })
}

fn user_id(name: &str) -> Option<u32> {
    lookup_id(&std::fs::read_to_string("/etc/passwd").ok()?, name)
}

fn group_exists(name: &str) -> Option<bool> {
    std::fs::read_to_string("/etc/group").ok().map(|db| lookup_id(&db, name).is_some())
}

/// The two verdicts for one profile, from the answer to `GET devices?limit=1`.
/// `credential_ok` describes the credential when the request succeeded.
pub fn judge_profile(p: &Profile, answer: Result<(), &Failure>, credential_ok: &str) -> (Check, Check) {
    let server = format!("server {}", p.name);
    let cred = format!("credential {}", p.name);
    let not_checked = |why: &str| Check::skip(cred.clone(), format!("not checked: {why}"));
    match answer {
        Ok(()) => (Check::ok(server, format!("{} answers", p.server)), Check::ok(cred, credential_ok.to_owned())),
        Err(Failure::CredentialRejected { status: Some(s), reason }) => (
            Check::ok(server, format!("{} answers", p.server)),
            Check::fail(cred, format!("rejected with HTTP {s}: {reason}"), credential_fix(p)),
        ),
        Err(Failure::CredentialRejected { status: None, reason }) => (
            Check::skip(server, "not checked: no token to ask with"),
            Check::fail(cred, reason.clone(), credential_fix(p)),
        ),
        Err(Failure::Retryable { status: None, reason, .. }) => (
            Check::fail(
                server,
                format!("{} unreachable: {reason}", p.server),
                "check the URL, DNS, the firewall and HTTPS_PROXY/NO_PROXY (`curl -v` the URL from this machine)",
            ),
            not_checked("the server did not answer"),
        ),
        Err(Failure::Retryable { status: Some(s), reason, .. }) => (
            Check::fail(server, format!("{} answered HTTP {s}: {reason}", p.server), "a server-side problem or a proxy in the way; try again later and check the server URL"),
            not_checked("the server did not answer normally"),
        ),
        Err(Failure::Rejected { status, reason }) => (
            Check::fail(
                server,
                format!("{} answered HTTP {status} to GET devices: {reason}", p.server),
                "set server to the devices API base, e.g. https://HOST/api/external/ybk-management",
            ),
            not_checked("the server URL looks wrong"),
        ),
    }
}

fn credential_fix(p: &Profile) -> String {
    match &p.auth {
        AuthConfig::TokenEnv(v) => format!("set {v} to a valid API token"),
        AuthConfig::TokenFile(f) => format!("write a valid API token into {}", f.display()),
        AuthConfig::TokenKeyring(e) => format!("store a valid API token in keyring entry {e}: keytally secret set --profile {}", p.name),
        AuthConfig::OAuth { client_id, secret_keyring: Some(e), secret_env: None, secret_file: None, .. } => {
            format!("check client_id {client_id:?} and the client secret in keyring entry {e} (keytally secret set --profile {})", p.name)
        }
        AuthConfig::OAuth { client_id, secret_file: Some(f), secret_env: None, .. } => {
            format!("check client_id {client_id:?} and the client secret in {}", f.display())
        }
        AuthConfig::OAuth { client_id, .. } => format!("check client_id {client_id:?} and the client secret"),
        AuthConfig::Machine { file, .. } => format!("issue a new machine token into {}", file.display()),
    }
}

async fn check_profile(cfg: &Config, p: &Profile) -> (Check, Check) {
    let mut quick = cfg.clone();
    quick.timeout = cfg.timeout.min(NET_TIMEOUT);
    let client = match client_for(&quick, p) {
        Ok(c) => c,
        Err(e) => {
            return (
                Check::skip(format!("server {}", p.name), "not checked: the credential cannot be loaded"),
                Check::fail(format!("credential {}", p.name), format!("{e:#}"), credential_fix(p)),
            )
        }
    };
    let answer = match tokio::time::timeout(NET_TIMEOUT + Duration::from_secs(2), client.list_devices(1, 0)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Failure::retryable(format!("no answer within {}s", NET_TIMEOUT.as_secs()))),
    };
    let info = client.auth().info(SystemTime::now()).await;
    let source = p.shown_source(&info.source);
    let mut ok = format!("valid ({} from {source}, {})", info.kind, info.expiry);
    if let Some(w) = info.expiry_warning {
        ok.push_str(&format!("; {w}"));
    }
    judge_profile(p, answer.as_ref().map(|_| ()), &ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(auth: AuthConfig) -> Profile {
        Profile { name: "eu".into(), server: "https://eu.example/api".into(), auth, ca_file: None, pins: vec![], match_prefixes: vec![] }
    }

    fn cfg(profiles: Vec<Profile>) -> Config {
        Config {
            file: "/etc/keytally/config.toml".into(),
            state_dir: "/var/lib/keytally".into(),
            max_pending: 10,
            backoff_cap: Duration::from_secs(1),
            drain_rate: 1.0,
            heartbeat: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            posture_every: Duration::from_secs(24 * 3600),
            profiles,
        }
    }

    #[test]
    fn lines_are_single_and_carry_the_fix() {
        let c = Check::fail("pcscd", "not\nreachable", "start it");
        assert_eq!(c.to_string(), "FAIL  pcscd: not reachable  -> fix: start it");
        assert_eq!(Check::ok("config", "fine").to_string(), "ok    config: fine");
        assert_eq!(exit_code(&[Check::ok("a", ""), Check::warn("b", "", ""), Check::skip("c", "")]), 0);
        assert_eq!(exit_code(&[Check::ok("a", ""), Check::fail("b", "", "")]), 1);
    }

    #[test]
    fn secret_modes() {
        assert_eq!(mode_problem(0o100600), None);
        assert_eq!(mode_problem(0o400), None);
        assert!(mode_problem(0o640).unwrap().contains("0640"));
        assert!(mode_problem(0o604).is_some());
        assert!(mode_problem(0o620).is_some());
    }

    #[test]
    fn account_lookup() {
        let db = "root:x:0:0:root:/root:/bin/bash\nkeytally:x:998:997:keytally:/var/lib/keytally:/usr/sbin/nologin\n";
        assert_eq!(lookup_id(db, "keytally"), Some(998));
        assert_eq!(lookup_id(db, "keytall"), None);
        assert_eq!(lookup_id("keytally:x:997:\n", "keytally"), Some(997));
    }

    #[test]
    fn secret_files_from_profiles_then_the_packaged_one() {
        let c = cfg(vec![
            profile(AuthConfig::TokenFile("/etc/keytally/eu.token".into())),
            profile(AuthConfig::TokenEnv("X".into())),
            profile(AuthConfig::OAuth {
                client_id: "a".into(),
                secret_env: None,
                secret_file: Some(SYSTEM_SECRET.into()),
                secret_keyring: None,
                token_url: "https://t".into(),
                basic: true,
                scope: None,
            }),
            profile(AuthConfig::TokenKeyring(crate::keyring::KeyringEntry { service: "keytally".into(), user: "eu".into() })),
        ]);
        assert_eq!(secret_files(Some(&c), true), vec![("/etc/keytally/eu.token".into(), true), (SYSTEM_SECRET.into(), true)]);
        assert_eq!(secret_files(None, true), vec![(SYSTEM_SECRET.into(), false)]);
        assert!(secret_files(None, false).is_empty());
    }

    #[test]
    fn config_verdicts() {
        let ok = check_config(&Ok(cfg(vec![profile(AuthConfig::TokenEnv("X".into()))])), true, true);
        assert_eq!(ok.status, Status::Ok);
        let empty = check_config(&Ok(cfg(vec![])), false, true);
        assert_eq!(empty.status, Status::Fail);
        assert!(empty.fix.unwrap().contains("--config /etc/keytally/config.toml"));
        let bad = config::ConfigError { file: "/x.toml".into(), key: "sync.heartbeat".into(), message: "nope".into() };
        let c = check_config(&Err(bad), true, false);
        assert!(c.status == Status::Fail && c.detail.contains("sync.heartbeat") && !c.fix.unwrap().contains("--config"));
    }

    #[test]
    fn udev_rules_are_found_and_the_group_matters() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = check_udev(&[dir.path()], Some(true));
        assert_eq!(missing.status, Status::Fail);
        std::fs::write(dir.path().join("70-keytally.rules"), "").unwrap();
        assert_eq!(check_udev(&[Path::new("/nonexistent"), dir.path()], Some(true)).status, Status::Ok);
        assert_eq!(check_udev(&[dir.path()], Some(false)).status, Status::Warn);
    }

    #[test]
    fn profile_answers_map_to_server_and_credential_lines() {
        let p = profile(AuthConfig::TokenFile("/etc/keytally/secret".into()));
        let (s, c) = judge_profile(&p, Ok(()), "valid");
        assert_eq!((s.status, c.status), (Status::Ok, Status::Ok));
        let rejected = Failure::CredentialRejected { status: Some(401), reason: "bad token".into() };
        let (s, c) = judge_profile(&p, Err(&rejected), "");
        assert_eq!((s.status, c.status), (Status::Ok, Status::Fail));
        assert!(c.fix.unwrap().contains("/etc/keytally/secret"));
        let down = Failure::retryable("connection refused");
        let (s, c) = judge_profile(&p, Err(&down), "");
        assert_eq!((s.status, c.status), (Status::Fail, Status::Skip));
        let wrong = Failure::Rejected { status: 404, reason: "not found".into() };
        let (s, _) = judge_profile(&p, Err(&wrong), "");
        assert!(s.status == Status::Fail && s.fix.unwrap().contains("devices API base"));
        let token_endpoint = Failure::CredentialRejected { status: None, reason: "invalid_client".into() };
        let (s, c) = judge_profile(&p, Err(&token_endpoint), "");
        assert_eq!((s.status, c.status), (Status::Skip, Status::Fail));
    }

    #[cfg(unix)]
    #[test]
    fn secret_file_checks() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        assert_eq!(check_secret_file(&f, true, None).status, Status::Fail);
        std::fs::write(&f, "token").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = check_secret_file(&f, true, None);
        assert!(c.status == Status::Fail && c.fix.unwrap().starts_with("sudo chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let me = std::fs::metadata(&f).unwrap().uid();
        assert_eq!(check_secret_file(&f, true, Some(me)).status, Status::Ok);
        let c = check_secret_file(&f, true, Some(me + 1));
        assert!(c.status == Status::Fail && c.fix.unwrap().contains("chown"));
        assert_eq!(check_secret_file(&f, false, Some(me + 1)).status, Status::Ok);
        std::fs::write(&f, "").unwrap();
        assert_eq!(check_secret_file(&f, true, None).status, Status::Fail);
        assert_eq!(check_secret_file(&f, false, None).status, Status::Ok);
    }
}
