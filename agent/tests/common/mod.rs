#![allow(dead_code)] // each test binary uses its own part of this module

//! Shared setup for the sync tests that run the real `keytally` binary: the sandbox in this
//! process (on its own runtime), an API key in a private token file, and a config file.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Setup {
    /// Keeps the sandbox's runtime alive.
    pub _rt: tokio::runtime::Runtime,
    pub sb: keytally_sandbox::Sandbox,
    pub dir: tempfile::TempDir,
    pub key_id: String,
    pub key: String,
    pub config: PathBuf,
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `sync_toml`: lines for the config's `[sync]` table.
pub fn setup(sync_toml: &str) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sb = rt.block_on(keytally_sandbox::spawn(keytally_sandbox::Config::default())).unwrap();
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
    Setup { _rt: rt, sb, dir, key_id, key, config }
}

impl Setup {
    /// `keytally --config <config> ARGS`, with the `KEYTALLY_*` overrides removed.
    pub fn keytally(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keytally"));
        c.arg("--config").arg(&self.config).args(args);
        for v in ["KEYTALLY_SERVER", "KEYTALLY_TOKEN", "KEYTALLY_TOKEN_FILE", "KEYTALLY_STATE_DIR"] {
            c.env_remove(v);
        }
        c
    }
}
