//! The agent under test: the freshly built `keytally` binary, the sandbox server it pushes to
//! (in this process, on loopback), and the config files and credentials that connect them.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;

use keytally_sandbox::Sandbox;

/// The `keytally` binary cargo built for this test.
pub const KEYTALLY: &str = env!("CARGO_BIN_EXE_keytally");

/// The environment variables that override a config file (and the log filter): [`keytally`]
/// removes them, so only the test's config counts whatever the caller's environment holds.
pub const ENV_OVERRIDES: [&str; 8] = [
    "KEYTALLY_SERVER",
    "KEYTALLY_TOKEN",
    "KEYTALLY_TOKEN_FILE",
    "KEYTALLY_TOKEN_URL",
    "KEYTALLY_CLIENT_ID",
    "KEYTALLY_CLIENT_SECRET",
    "KEYTALLY_STATE_DIR",
    "RUST_LOG",
];

/// `keytally --config <config> ARGS`, with the [`ENV_OVERRIDES`] removed.
pub fn keytally(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(KEYTALLY);
    c.arg("--config").arg(config).args(args);
    for v in ENV_OVERRIDES {
        c.env_remove(v);
    }
    c
}

/// The sandbox server running on its own tokio runtime; derefs to the [`Sandbox`].
pub struct SandboxServer {
    sb: Sandbox,
    _rt: tokio::runtime::Runtime,
}

impl Deref for SandboxServer {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

/// The sandbox server with its default config, on loopback.
pub fn sandbox() -> SandboxServer {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sb = rt.block_on(keytally_sandbox::spawn(keytally_sandbox::Config::default())).expect("start the sandbox server");
    SandboxServer { sb, _rt: rt }
}

/// The sandbox's built-in OAuth2 client (`keytally` / `sandbox-client-secret`) as the
/// `KEYTALLY_*` variables that point the agent at it.
pub fn client_env(sb: &Sandbox) -> Vec<(String, String)> {
    [
        ("KEYTALLY_SERVER", sb.devices_base()),
        ("KEYTALLY_TOKEN_URL", sb.token_url()),
        ("KEYTALLY_CLIENT_ID", "keytally".to_owned()),
        ("KEYTALLY_CLIENT_SECRET", "sandbox-client-secret".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Writes `text` to `path`, readable by its owner only (as a secret file must be). On
/// Windows there is no mode to set (a secret file's ACL is the installer's job).
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The sandbox, an API key for it in a private token file, and a config file naming both.
pub struct Setup {
    pub sb: SandboxServer,
    pub dir: tempfile::TempDir,
    pub key_id: String,
    pub key: String,
    pub config: PathBuf,
}

/// A [`Setup`]; `sync_toml`: lines for the config's `[sync]` table.
pub fn setup(sync_toml: &str) -> Setup {
    let sb = sandbox();
    let (key_id, key) = sb.create_api_key("test");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_private(&token, &key);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[sync]\n{sync_toml}\n[profiles.default]\nserver = {:?}\ntoken_file = {:?}\n",
            dir.path().join("state"),
            sb.devices_base(),
            token
        ),
    )
    .unwrap();
    Setup { sb, dir, key_id, key, config }
}

impl Setup {
    /// [`keytally`] with this setup's config.
    pub fn keytally(&self, args: &[&str]) -> Command {
        keytally(&self.config, args)
    }
}
