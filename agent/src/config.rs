//! Configuration: a TOML file (the platform config directory, or `--config PATH`) with
//! one or more server profiles, overridden by `KEYTALLY_*` environment variables.
//! A bad configuration is reported as one line naming the file and the key.
//!
//! ```toml
//! state_dir = "/var/lib/keytally"        # optional
//! [sync]
//! max_pending = 100000
//! backoff_cap = "15m"
//! drain_rate = 10                        # requests per second, at most
//! heartbeat = "6h"
//! posture_every = "24h"                  # the service and kiosk re-read a key's posture at most this often
//! [profiles.eu]
//! server = "https://eu.example/api/external/ybk-management"
//! token_file = "/etc/keytally/eu.token"  # or token_env = "VAR", or
//! # token_keyring = { service = "keytally", user = "eu" }   # the OS keyring (service defaults to "keytally")
//! # or: client_id = "..."; client_secret_file = "..."; token_url = "https://.../oauth/token"
//! # (client_secret_env or client_secret_keyring = { user = "..." } instead of client_secret_file)
//! # machine_token_file = "...";  rotate = true
//! # rotate_within = "30d"              # rotate when the token expires within this (default 30d)
//! # rotate_every = "90d"               # and/or when the token file is this old
//! ca_file = "/etc/keytally/ca.pem"
//! pin_sha256 = ["base64 SHA-256 of the server's SubjectPublicKeyInfo"]   # optional
//! match = ["1234"]                       # uniqueId prefixes; default: every key
//! ```
//!
//! A keyring entry is stored with `keytally secret set --profile NAME` (the value is read
//! from standard input) or any keyring tool (`secret-tool store --label=keytally service
//! keytally username eu`); see [`crate::keyring`] for where each platform keeps it. The
//! Secret Service needs a D-Bus session and an unlocked keyring: a headless service uses
//! a 0600 `token_file` (or systemd `LoadCredential=`) instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::exit::EXIT_CONFIG;
use crate::keyring::KeyringEntry;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error in {file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    max_pending: Option<u64>,
    backoff_cap: Option<String>,
    drain_rate: Option<f64>,
    heartbeat: Option<String>,
    timeout: Option<String>,
    posture_every: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub server: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub token_keyring: Option<KeyringEntry>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    pub client_secret_keyring: Option<KeyringEntry>,
    pub token_url: Option<String>,
    pub client_auth: Option<String>,
    pub scope: Option<String>,
    pub machine_token_file: Option<PathBuf>,
    #[serde(default)]
    pub rotate: bool,
    pub rotate_within: Option<String>,
    pub rotate_every: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Pinned server keys: base64 SHA-256 of the certificate's SubjectPublicKeyInfo.
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    #[serde(default, rename = "match")]
    pub match_prefixes: Vec<String>,
}

/// How a profile authenticates (the secret itself is loaded later, by `auth_setup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// Static token from an environment variable (by name), a file or the OS keyring.
    TokenEnv(String),
    TokenFile(PathBuf),
    TokenKeyring(KeyringEntry),
    /// The client secret comes from `secret_env`, else `secret_file`, else `secret_keyring`.
    OAuth {
        client_id: String,
        secret_env: Option<String>,
        secret_file: Option<PathBuf>,
        secret_keyring: Option<KeyringEntry>,
        token_url: String,
        basic: bool,
        scope: Option<String>,
    },
    Machine { file: PathBuf, initial_env: Option<String>, rotate: Option<Rotation> },
}

/// When a machine token is rotated (only with `rotate = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate when the token's `exp` is this close.
    pub within: Duration,
    /// Also rotate when the token file is this old (for tokens without a readable `exp`).
    pub every: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub server: String,
    pub auth: AuthConfig,
    pub ca_file: Option<PathBuf>,
    /// Pinned server keys (`pin-sha256`, base64), checked besides the CA chain.
    pub pins: Vec<String>,
    pub match_prefixes: Vec<String>,
}

impl Profile {
    /// Whether a record with this uniqueId goes to this profile.
    pub fn matches(&self, unique_id: &str) -> bool {
        self.match_prefixes.is_empty() || self.match_prefixes.iter().any(|p| unique_id.starts_with(p.as_str()))
    }

    /// The keyring entry this profile reads its secret from, and what that secret is.
    pub fn keyring_entry(&self) -> Option<(&KeyringEntry, &'static str)> {
        match &self.auth {
            AuthConfig::TokenKeyring(e) => Some((e, "API token")),
            AuthConfig::OAuth { secret_env: None, secret_file: None, secret_keyring: Some(e), .. } => Some((e, "client secret")),
            _ => None,
        }
    }

    /// A credential's source as `status` and `doctor` show it: `base` (what the credential
    /// itself says), naming the keyring entry when the secret came from the keyring.
    pub fn shown_source(&self, base: &str) -> String {
        match (&self.auth, self.keyring_entry()) {
            (AuthConfig::TokenKeyring(_), Some((e, _))) => format!("keyring {e}"),
            (_, Some((e, what))) => format!("{base}, {what} from keyring {e}"),
            _ => base.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the file was (or would be) read from.
    pub file: String,
    pub state_dir: PathBuf,
    pub max_pending: u64,
    pub backoff_cap: Duration,
    pub drain_rate: f64,
    pub heartbeat: Duration,
    pub timeout: Duration,
    /// How often the service and the kiosk read a key's posture again (`sync.posture_every`).
    pub posture_every: Duration,
    pub profiles: Vec<Profile>,
}

impl Config {
    /// The outbox's SQLite file in the state directory.
    pub fn outbox_path(&self) -> PathBuf {
        self.state_dir.join("outbox.sqlite")
    }
}

/// Loads the config from the process environment, printing the one-line error and returning
/// exit code 2 on failure.
pub fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    load(path, &|k| std::env::var(k).ok().filter(|v| !v.is_empty())).map_err(|e| {
        eprintln!("keytally: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Loads a config that names at least one server, for the commands that push
/// (`sync`, `run`, `kiosk`, `enroll`): the one-line error and exit code 2 otherwise.
pub fn load_server_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    let cfg = load_config(path)?;
    if cfg.profiles.is_empty() {
        eprintln!("keytally: configuration error in {}: profiles: no server profile (set KEYTALLY_SERVER or add [profiles.NAME])", cfg.file);
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(cfg)
}

/// Where the agent id lives: the configuration's state directory, or its default when the
/// configuration cannot be read (reading keys needs no server, so that is only a warning).
pub fn state_dir_for_reading(config: Option<&Path>) -> PathBuf {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match load(config, &env) {
        Ok(cfg) => cfg.state_dir,
        Err(e) => {
            eprintln!("keytally: warning: {e}");
            env("KEYTALLY_STATE_DIR").map_or_else(default_state_dir, PathBuf::from)
        }
    }
}

/// The system-wide config file the packages install.
#[cfg(unix)]
pub const SYSTEM_CONFIG: &str = "/etc/keytally/config.toml";

/// The default config file: `<user config dir>/keytally/config.toml`, or the system-wide
/// `/etc/keytally/config.toml` when the user has none.
pub fn default_path() -> Option<PathBuf> {
    let user = directories::ProjectDirs::from("", "", "keytally").map(|d| d.config_dir().join("config.toml"));
    #[cfg(unix)]
    if !user.as_ref().is_some_and(|p| p.exists()) && Path::new(SYSTEM_CONFIG).exists() {
        return Some(PathBuf::from(SYSTEM_CONFIG));
    }
    user
}

/// The platform's data directory for keytally (used when neither the file nor
/// `KEYTALLY_STATE_DIR` names one).
pub fn default_state_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "keytally")
        .map(|d| d.data_local_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".keytally"))
}

/// Loads the configuration: `explicit` (must exist) or the default path (may be absent),
/// then the environment (`env` is a lookup so tests need not touch the process env), then
/// the OS's settings store ([`crate::platform::settings`]: the Windows registry).
pub fn load(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    load_with(explicit, env, &crate::platform::settings::read())
}

/// The config keys an OS setting may set: the top-level `state_dir` and these keys of the
/// profile named "default".
const OS_SETTINGS: [&str; 8] = ["state_dir", "server", "token_file", "client_id", "client_secret_file", "token_url", "scope", "ca_file"];

/// [`load`] with the OS settings given. Precedence: the file, then the environment, then
/// `HKLM\SOFTWARE\keytally`, then the policy key (a policy value wins). An unusable or
/// unknown OS setting is a configuration error naming the registry key and the value. With OS
/// settings, an absent file is no error (the registry may be the whole configuration).
pub fn load_with(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>, os: &[crate::platform::Setting]) -> Result<Config, ConfigError> {
    let path = explicit.map(Path::to_path_buf).or_else(default_path);
    let file = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<no config file>".into());
    // Which config key each OS setting sets (the policy's last, so it wins), checked first.
    let mut os_values: Vec<(String, String, &str)> = Vec::new();
    for policy in [false, true] {
        for st in os.iter().filter(|st| st.policy == policy) {
            let name = st.name.to_ascii_lowercase();
            let key = if name == "state_dir" { name.clone() } else { format!("profiles.default.{name}") };
            let unusable = |message: String| ConfigError { file: st.source.clone(), key: st.name.clone(), message };
            if !OS_SETTINGS.contains(&name.as_str()) {
                return Err(unusable(format!("unknown setting; the registry may set {}", OS_SETTINGS.join(", "))));
            }
            let value = st.value.clone().map_err(unusable)?;
            os_values.retain(|(k, _, _)| *k != key);
            os_values.push((key, value, st.source.as_str()));
        }
    }
    let from_os = |key: &str| os_values.iter().find(|(k, _, _)| k == key).map(|(_, _, source)| source.to_string());
    let bad = |key: &str, message: String| ConfigError { file: from_os(key).unwrap_or_else(|| file.clone()), key: key.to_owned(), message };
    let raw: RawFile = match &path {
        Some(p) if p.exists() || (explicit.is_some() && os_values.is_empty()) => {
            let text = std::fs::read_to_string(p).map_err(|e| bad("(file)", e.to_string()))?;
            toml::from_str(&text).map_err(|e| {
                let key = match e.span() {
                    Some(sp) => {
                        let snippet: String = text.get(sp.clone()).unwrap_or("").trim().chars().take(60).collect();
                        let line = text.get(..sp.start).map(|t| t.lines().count().max(1)).unwrap_or(1);
                        if snippet.is_empty() || snippet.contains('\n') { format!("line {line}") } else { format!("{snippet} (line {line})") }
                    }
                    None => "(file)".into(),
                };
                bad(&key, e.message().replace('\n', " "))
            })?
        }
        _ => RawFile::default(),
    };
    let dur = |key: &str, v: &Option<String>, d: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(d),
            Some(s) => humantime::parse_duration(s).map_err(|e| bad(key, format!("{s:?} is not a duration ({e}); write e.g. \"15m\""))),
        }
    };
    let backoff_cap = dur("sync.backoff_cap", &raw.sync.backoff_cap, Duration::from_secs(15 * 60))?;
    let heartbeat = dur("sync.heartbeat", &raw.sync.heartbeat, Duration::from_secs(6 * 3600))?;
    let timeout = dur("sync.timeout", &raw.sync.timeout, Duration::from_secs(30))?;
    let posture_every = dur("sync.posture_every", &raw.sync.posture_every, crate::posture::DEFAULT_EVERY)?;
    let drain_rate = raw.sync.drain_rate.unwrap_or(10.0);
    if !(drain_rate.is_finite() && drain_rate > 0.0 && drain_rate <= 1000.0) {
        return Err(bad("sync.drain_rate", format!("{drain_rate} must be between 0 and 1000 requests per second")));
    }
    let os_state_dir = os_values.iter().find(|(k, _, _)| k == "state_dir").map(|(_, v, _)| PathBuf::from(v));
    let state_dir = os_state_dir.or_else(|| env("KEYTALLY_STATE_DIR").map(PathBuf::from)).or(raw.state_dir).unwrap_or_else(default_state_dir);

    let mut raws = raw.profiles;
    // Environment overrides apply to the profile named "default" (created when needed).
    let env_keys = ["KEYTALLY_SERVER", "KEYTALLY_TOKEN", "KEYTALLY_TOKEN_FILE", "KEYTALLY_CLIENT_ID", "KEYTALLY_CLIENT_SECRET", "KEYTALLY_TOKEN_URL"];
    if env_keys.iter().any(|k| env(k).is_some()) {
        let p = raws.entry("default".into()).or_default();
        if let Some(v) = env("KEYTALLY_SERVER") {
            p.server = Some(v);
        }
        if env("KEYTALLY_TOKEN").is_some() {
            p.token_env = Some("KEYTALLY_TOKEN".into());
            p.token_file = None;
            p.token_keyring = None;
        }
        if let Some(v) = env("KEYTALLY_TOKEN_FILE") {
            p.token_file = Some(v.into());
            p.token_env = None;
            p.token_keyring = None;
        }
        if let Some(v) = env("KEYTALLY_CLIENT_ID") {
            p.client_id = Some(v);
        }
        if env("KEYTALLY_CLIENT_SECRET").is_some() {
            p.client_secret_env = Some("KEYTALLY_CLIENT_SECRET".into());
            p.client_secret_file = None;
            p.client_secret_keyring = None;
        }
        if let Some(v) = env("KEYTALLY_TOKEN_URL") {
            p.token_url = Some(v);
        }
    }
    // The registry's settings apply to the profile named "default", after the environment.
    for (key, value, _) in &os_values {
        let Some(field) = key.strip_prefix("profiles.default.") else { continue };
        let p = raws.entry("default".into()).or_default();
        match field {
            "server" => p.server = Some(value.clone()),
            "token_file" => {
                p.token_file = Some(value.into());
                p.token_env = None;
                p.token_keyring = None;
            }
            "client_id" => p.client_id = Some(value.clone()),
            "client_secret_file" => {
                p.client_secret_file = Some(value.into());
                p.client_secret_env = None;
                p.client_secret_keyring = None;
            }
            "token_url" => p.token_url = Some(value.clone()),
            "scope" => p.scope = Some(value.clone()),
            "ca_file" => p.ca_file = Some(value.into()),
            _ => {}
        }
    }
    let mut profiles = Vec::new();
    for (name, p) in raws {
        let k = |f: &str| format!("profiles.{name}.{f}");
        let server = p.server.clone().ok_or_else(|| bad(&k("server"), "missing: the devices API base URL".into()))?;
        keytally_protocol::http::parse_secure_url("server URL", &server).map_err(|e| bad(&k("server"), e.to_string()))?;
        let client_secrets = p.client_secret_env.is_some() as u8 + p.client_secret_file.is_some() as u8 + p.client_secret_keyring.is_some() as u8;
        let oauth = p.client_id.is_some() || p.token_url.is_some() || client_secrets > 0;
        let statics = p.token_env.is_some() as u8 + p.token_file.is_some() as u8 + p.token_keyring.is_some() as u8;
        let auth = if oauth {
            if statics > 0 || p.machine_token_file.is_some() {
                return Err(bad(&k("client_id"), "choose one credential style: a token, client credentials, or a machine token".into()));
            }
            let client_id = p.client_id.clone().ok_or_else(|| bad(&k("client_id"), "missing (needed with token_url)".into()))?;
            let token_url = p.token_url.clone().ok_or_else(|| bad(&k("token_url"), "missing (needed with client_id)".into()))?;
            keytally_protocol::http::parse_secure_url("token URL", &token_url).map_err(|e| bad(&k("token_url"), e.to_string()))?;
            if client_secrets == 0 {
                return Err(bad(&k("client_secret_file"), "missing: set client_secret_file, client_secret_env, client_secret_keyring or KEYTALLY_CLIENT_SECRET".into()));
            }
            if p.client_secret_keyring.is_some() && client_secrets > 1 {
                return Err(bad(&k("client_secret_keyring"), "set one of client_secret_file, client_secret_env and client_secret_keyring".into()));
            }
            let basic = match p.client_auth.as_deref() {
                None | Some("basic") => true,
                Some("body") => false,
                Some(o) => return Err(bad(&k("client_auth"), format!("{o:?}: expected \"basic\" or \"body\""))),
            };
            AuthConfig::OAuth {
                client_id,
                secret_env: p.client_secret_env.clone(),
                secret_file: p.client_secret_file.clone(),
                secret_keyring: p.client_secret_keyring.clone(),
                token_url,
                basic,
                scope: p.scope.clone(),
            }
        } else if let Some(file) = p.machine_token_file.clone() {
            if p.token_file.is_some() || p.token_keyring.is_some() {
                return Err(bad(&k("token_file"), "use machine_token_file alone (token_env may seed it)".into()));
            }
            let rotate = if p.rotate {
                let within = dur(&k("rotate_within"), &p.rotate_within, Duration::from_secs(30 * 86_400))?;
                let every = match &p.rotate_every {
                    None => None,
                    some => Some(dur(&k("rotate_every"), some, Duration::ZERO)?),
                };
                Some(Rotation { within, every })
            } else {
                if p.rotate_within.is_some() || p.rotate_every.is_some() {
                    return Err(bad(&k("rotate"), "rotate_within/rotate_every need rotate = true".into()));
                }
                None
            };
            AuthConfig::Machine { file, initial_env: p.token_env.clone(), rotate }
        } else if statics > 1 {
            return Err(bad(&k("token_file"), "set one of token_file, token_env and token_keyring".into()));
        } else if let Some(v) = p.token_env.clone() {
            AuthConfig::TokenEnv(v)
        } else if let Some(f) = p.token_file.clone() {
            AuthConfig::TokenFile(f)
        } else if let Some(e) = p.token_keyring.clone() {
            AuthConfig::TokenKeyring(e)
        } else {
            return Err(bad(&k("token_file"), "no credential: set token_file, token_env, token_keyring, client_id + token_url, or machine_token_file".into()));
        };
        for pin in &p.pin_sha256 {
            keytally_protocol::http::pin::check_pin(pin).map_err(|e| bad(&k("pin_sha256"), e))?;
        }
        profiles.push(Profile { name, server, auth, ca_file: p.ca_file, pins: p.pin_sha256, match_prefixes: p.match_prefixes });
    }
    // Where each setting came from, for doctor and status: the file, and the registry values.
    let file = if os_values.is_empty() {
        file
    } else {
        let from: Vec<String> = os_values.iter().map(|(k, _, source)| format!("{} from {source}", k.trim_start_matches("profiles.default."))).collect();
        format!("{file} (if present), {}", from.join(", "))
    };
    Ok(Config { file, state_dir, max_pending: raw.sync.max_pending.unwrap_or(crate::outbox::DEFAULT_MAX_PENDING), backoff_cap, drain_rate, heartbeat, timeout, posture_every, profiles })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn several_profiles_and_styles() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            r#"
            state_dir = "/tmp/kt"
            [sync]
            backoff_cap = "10m"
            [profiles.eu]
            server = "https://eu.example/api"
            token_file = "/etc/keytally/eu.token"
            [profiles.us]
            server = "https://us.example/api"
            client_id = "abc"
            client_secret_file = "/etc/keytally/us.secret"
            token_url = "https://us.example/oauth/token"
            match = ["99"]
            "#,
        );
        let c = load(Some(&p), &no_env).unwrap();
        assert_eq!(c.profiles.len(), 2);
        assert_eq!(c.backoff_cap, Duration::from_secs(600));
        assert_eq!(c.profiles[0].auth, AuthConfig::TokenFile("/etc/keytally/eu.token".into()));
        assert!(matches!(c.profiles[1].auth, AuthConfig::OAuth { basic: true, .. }));
        assert!(c.profiles[1].matches("9912") && !c.profiles[1].matches("1234"));
        assert!(c.profiles[0].matches("anything"));
    }

    #[test]
    fn env_overrides_make_a_default_profile() {
        let env = |k: &str| match k {
            "KEYTALLY_SERVER" => Some("http://127.0.0.1:9/api".to_owned()),
            "KEYTALLY_TOKEN" => Some("secret".to_owned()),
            "KEYTALLY_STATE_DIR" => Some("/tmp/st".to_owned()),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let c = load(Some(&write(&dir, "")), &env).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/st"));
        assert_eq!(c.profiles[0].name, "default");
        assert_eq!(c.profiles[0].auth, AuthConfig::TokenEnv("KEYTALLY_TOKEN".into()));
    }

    #[test]
    fn keyring_entries_for_token_and_client_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            r#"
            [profiles.eu]
            server = "https://eu.example/api"
            token_keyring = { user = "eu" }
            [profiles.us]
            server = "https://us.example/api"
            client_id = "abc"
            client_secret_keyring = { service = "corp", user = "us" }
            token_url = "https://us.example/oauth/token"
            "#,
        );
        let c = load(Some(&p), &no_env).unwrap();
        assert_eq!(c.profiles[0].auth, AuthConfig::TokenKeyring(KeyringEntry { service: "keytally".into(), user: "eu".into() }));
        let AuthConfig::OAuth { secret_keyring: Some(e), secret_file: None, secret_env: None, .. } = &c.profiles[1].auth else {
            panic!("{:?}", c.profiles[1].auth)
        };
        assert_eq!(e.to_string(), "corp/us");
        // KEYTALLY_TOKEN replaces the profile's keyring entry, as it replaces a token file.
        let env = |k: &str| (k == "KEYTALLY_TOKEN").then(|| "t".to_owned());
        let p = write(&dir, "[profiles.default]\nserver = \"https://e/api\"\ntoken_keyring = { user = \"d\" }\n");
        assert_eq!(load(Some(&p), &env).unwrap().profiles[0].auth, AuthConfig::TokenEnv("KEYTALLY_TOKEN".into()));
    }

    #[test]
    fn bad_config_is_one_line_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("[profiles.a]\nserver = \"http://example.com/api\"\ntoken_env = \"X\"\n", "profiles.a.server", "https://"),
            ("[profiles.a]\nserver = \"https://e/api\"\n", "profiles.a.token_file", "no credential"),
            ("[sync]\nbackoff_cap = \"soon\"\n", "sync.backoff_cap", "not a duration"),
            ("[profiles.a]\nserver = \"https://e/api\"\ntoken_file = \"f\"\ntoken_keyring = { user = \"a\" }\n", "profiles.a.token_file", "one of"),
            ("[profiles.a]\nserver = \"https://e/api\"\ntoken_keyring = { service = \"x\" }\n", "(line 3)", "missing field `user`"),
            (
                "[profiles.a]\nserver = \"https://e/api\"\nclient_id = \"c\"\ntoken_url = \"https://e/t\"\nclient_secret_env = \"V\"\nclient_secret_keyring = { user = \"a\" }\n",
                "profiles.a.client_secret_keyring",
                "one of",
            ),
            ("[profiles.a]\nserver = \"https://e/api\"\ntokn_file = \"x\"\n", "tokn_file", "unknown field"),
            ("[sync\n", "line 1", "unclosed"),
        ];
        for (text, key, what) in cases {
            let p = write(&dir, text);
            let e = load(Some(&p), &no_env).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains(key) && e.to_lowercase().contains(what), "{text:?} gave {e}");
        }
        let e = load(Some(&dir.path().join("missing.toml")), &no_env).unwrap_err();
        assert!(e.to_string().contains("missing.toml"));
    }

    fn profile(auth: AuthConfig) -> Profile {
        Profile { name: "prod".into(), server: "https://e/api".into(), auth, ca_file: None, pins: vec![], match_prefixes: vec![] }
    }

    #[test]
    fn sources_name_the_keyring_entry() {
        let e = KeyringEntry { service: "keytally".into(), user: "prod".into() };
        let p = profile(AuthConfig::TokenKeyring(e.clone()));
        assert_eq!(p.keyring_entry().map(|(e, w)| (e.to_string(), w)), Some(("keytally/prod".into(), "API token")));
        assert_eq!(p.shown_source("configured value"), "keyring keytally/prod");
        let oauth = profile(AuthConfig::OAuth {
            client_id: "c".into(),
            secret_env: None,
            secret_file: None,
            secret_keyring: Some(e),
            token_url: "https://e/t".into(),
            basic: true,
            scope: None,
        });
        assert_eq!(oauth.shown_source("client \"c\" at https://e/t"), "client \"c\" at https://e/t, client secret from keyring keytally/prod");
        let file = profile(AuthConfig::TokenFile("/etc/keytally/secret".into()));
        assert!(file.keyring_entry().is_none());
        assert_eq!(file.shown_source("file /etc/keytally/secret"), "file /etc/keytally/secret");
    }

    fn os(source: &str, policy: bool, name: &str, value: Result<&str, &str>) -> crate::platform::Setting {
        crate::platform::Setting { source: source.into(), policy, name: name.into(), value: value.map(str::to_owned).map_err(str::to_owned) }
    }
    const MACHINE: &str = r"HKLM\SOFTWARE\keytally";
    const POLICY: &str = r"HKLM\SOFTWARE\Policies\keytally";

    #[test]
    fn registry_settings_merge_and_the_policy_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[profiles.default]\nserver = \"https://file.example/api\"\ntoken_file = \"/file/token\"\n");
        let settings = [
            os(POLICY, true, "server", Ok("https://policy.example/api")),
            os(MACHINE, false, "server", Ok("https://machine.example/api")),
            os(MACHINE, false, "Token_File", Ok("C:\\ProgramData\\keytally\\secret")),
            os(MACHINE, false, "state_dir", Ok("C:\\ProgramData\\keytally\\state")),
        ];
        let env = |k: &str| (k == "KEYTALLY_SERVER").then(|| "https://env.example/api".to_string());
        let c = load_with(Some(&p), &env, &settings).unwrap();
        assert_eq!(c.profiles[0].server, "https://policy.example/api");
        assert_eq!(c.profiles[0].auth, AuthConfig::TokenFile("C:\\ProgramData\\keytally\\secret".into()));
        assert_eq!(c.state_dir, PathBuf::from("C:\\ProgramData\\keytally\\state"));
        // doctor and status show where each registry setting came from.
        assert!(c.file.starts_with(&p.display().to_string()), "{}", c.file);
        assert!(c.file.contains(&format!("server from {POLICY}")), "{}", c.file);
        assert!(c.file.contains(&format!("token_file from {MACHINE}")), "{}", c.file);
        assert!(c.file.contains(&format!("state_dir from {MACHINE}")), "{}", c.file);
        // Without registry settings nothing changes.
        let c = load_with(Some(&p), &no_env, &[]).unwrap();
        assert_eq!((c.profiles[0].server.as_str(), c.file), ("https://file.example/api", p.display().to_string()));
    }

    #[test]
    fn the_registry_alone_is_a_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("config.toml");
        let settings = [os(MACHINE, false, "server", Ok("https://machine.example/api")), os(MACHINE, false, "token_file", Ok("/t"))];
        let c = load_with(Some(&absent), &no_env, &settings).unwrap();
        assert_eq!(c.profiles.len(), 1);
        // Without any, an explicit file that is absent is still an error.
        assert_eq!(load_with(Some(&absent), &no_env, &[]).unwrap_err().key, "(file)");
    }

    #[test]
    fn a_bad_registry_value_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "");
        let wrong_type = [os(POLICY, true, "server", Err("is a number (REG_DWORD); keytally reads text values (REG_SZ)"))];
        let e = load_with(Some(&p), &no_env, &wrong_type).unwrap_err();
        assert_eq!(e.to_string(), format!("configuration error in {POLICY}: server: is a number (REG_DWORD); keytally reads text values (REG_SZ)"));
        let unknown = [os(MACHINE, false, "sever", Ok("https://x.example"))];
        let e = load_with(Some(&p), &no_env, &unknown).unwrap_err();
        assert_eq!((e.file.as_str(), e.key.as_str()), (MACHINE, "sever"));
        assert!(e.message.contains("unknown setting"), "{e}");
        // A value of the right type that is no URL: the error names the policy key, not the file.
        let not_url = [os(POLICY, true, "server", Ok("not a url")), os(MACHINE, false, "token_file", Ok("/t"))];
        let e = load_with(Some(&p), &no_env, &not_url).unwrap_err();
        assert_eq!((e.file.as_str(), e.key.as_str()), (POLICY, "profiles.default.server"), "{e}");
    }
}
