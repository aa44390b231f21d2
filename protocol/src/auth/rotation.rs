//! YubiEnterprise-style machine tokens: the token lives in a file in the state
//! directory, and `GET {server}/auth/machine-token` revokes it and returns a new one.
//!
//! Rotation is the one request that must never be retried blindly: the server revokes
//! the old token when it answers, so a lost answer locks the agent out. The protocol:
//!
//! 1. Write an intent marker (`<token file>.rotating`) durably, before the request.
//! 2. Send the request once (no redirects, the transport's timeouts).
//! 3. On a 2xx, write the new token to a temporary file (mode 0600), fsync it, rename it
//!    over the token file and fsync the directory, before any other request, then
//!    remove the marker.
//! 4. Any failure before the server answered leaves the old token in force.
//!
//! If the process dies between the server's answer and step 3 (a window of one
//! write + fsync + rename), the marker survives. At the next start keytally keeps
//! using the old token: if the server never rotated, the first 2xx proves it and the
//! marker is dropped. If the server did rotate, the old token gets a 401, and keytally
//! reports "credential rejected: an interrupted rotation revoked this token" and never
//! calls rotation again with it; an operator must issue a new token. Nothing loops.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use reqwest::Url;

use super::AuthError;
use crate::http::redact_url;
use crate::http::response::{self, read_capped, read_reason, StatusClass};
use crate::secret::{Secret, SecretError};

const ROTATION_BODY_CAP: usize = 64 * 1024;

/// A machine token kept in a file, with optional rotation.
#[derive(Debug)]
pub struct MachineToken {
    http: reqwest::Client,
    path: PathBuf,
    rotate_url: Url,
    current: Mutex<Secret>,
}

impl MachineToken {
    /// Loads the token from `path` (which must be private to its owner). When the file
    /// does not exist yet, `initial` (from the environment or config) is stored there.
    pub fn open(http: reqwest::Client, path: PathBuf, server: &Url, initial: Option<Secret>) -> Result<Self, AuthError> {
        let current = if path.exists() {
            Secret::from_file(&path).map_err(|e| AuthError::Config(e.to_string()))?
        } else if let Some(t) = initial {
            write_atomic(&path, t.expose().as_bytes())
                .map_err(|e| AuthError::Config(format!("cannot store the machine token in {}: {e}", path.display())))?;
            t
        } else {
            return Err(AuthError::Config(format!(
                "no machine token: {} does not exist and no token was given",
                path.display()
            )));
        };
        let mut rotate_url = server.clone();
        rotate_url
            .path_segments_mut()
            .map_err(|_| AuthError::Config("the server URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(["auth", "machine-token"]);
        Ok(MachineToken { http, path, rotate_url, current: Mutex::new(current) })
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rotation's intent marker beside the token file (`<token file>.rotating`).
    pub fn marker_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".rotating");
        PathBuf::from(p)
    }

    /// Whether a rotation was started and its outcome never recorded.
    pub fn rotation_interrupted(&self) -> bool {
        self.marker_path().exists()
    }

    /// The token in use.
    pub fn token(&self) -> Secret {
        self.current.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// After a 401: re-read the file, in case another keytally process rotated it.
    pub fn reload(&self, rejected: &Secret) -> Result<(), AuthError> {
        let on_disk = Secret::from_file(&self.path).map_err(|e| AuthError::Config(e.to_string()))?;
        if &on_disk == rejected {
            if self.rotation_interrupted() {
                return Err(AuthError::Rejected(
                    "the server refused the machine token, and a rotation was interrupted before its new token \
                     was stored; the rotation revoked this token, so issue a new API token"
                        .into(),
                ));
            }
            return Err(AuthError::Rejected("the server refused the machine token".into()));
        }
        self.set(on_disk);
        Ok(())
    }

    /// A request with the current token succeeded: a pending rotation never happened.
    pub fn confirm_current(&self) {
        if self.rotation_interrupted() {
            tracing::info!("the machine token still works: the interrupted rotation never took effect");
            let _ = std::fs::remove_file(self.marker_path());
        }
    }

    fn set(&self, s: Secret) {
        match self.current.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    /// Rotates the token once. See the module documentation for the crash protocol.
    /// `before_store` is a test hook called between the server's answer and the write.
    pub async fn rotate_with_hook(&self, before_store: impl FnOnce()) -> Result<(), AuthError> {
        if self.rotation_interrupted() {
            return Err(AuthError::Rejected(
                "an earlier rotation was interrupted; not rotating again until the current token is confirmed".into(),
            ));
        }
        write_atomic(&self.marker_path(), b"rotation in progress\n")
            .map_err(|e| AuthError::Config(format!("cannot write {}: {e}", self.marker_path().display())))?;
        let old = self.token();
        let sent = self
            .http
            .get(self.rotate_url.clone())
            .bearer_auth(old.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                // The request may or may not have reached the server: keep the marker.
                return Err(AuthError::Transient {
                    reason: format!("machine-token rotation at {}: {}", redact_url(&self.rotate_url), response::describe_reqwest(&e)),
                    retry_after: None,
                });
            }
        };
        let status = resp.status();
        if response::classify(status) != StatusClass::Accepted {
            let reason = read_reason(&mut resp).await;
            // The server answered and refused: nothing was rotated.
            let _ = std::fs::remove_file(self.marker_path());
            return Err(match response::classify(status) {
                StatusClass::Unauthorized | StatusClass::Forbidden => {
                    AuthError::Rejected(format!("machine-token rotation refused: HTTP {}: {reason}", status.as_u16()))
                }
                _ => AuthError::Transient {
                    reason: format!("machine-token rotation failed: HTTP {}: {reason}", status.as_u16()),
                    retry_after: None,
                },
            });
        }
        let body = read_capped(&mut resp, ROTATION_BODY_CAP).await.map_err(|e| AuthError::Transient {
            reason: format!("machine-token rotation answer: {e}"),
            retry_after: None,
        })?;
        let new = parse_token(&body).ok_or_else(|| AuthError::Transient {
            reason: "machine-token rotation answer holds no token".into(),
            retry_after: None,
        })?;
        before_store();
        write_atomic(&self.path, new.expose().as_bytes()).map_err(|e| {
            AuthError::Config(format!("rotation succeeded but the new token could not be stored in {}: {e}", self.path.display()))
        })?;
        self.set(new);
        let _ = std::fs::remove_file(self.marker_path());
        tracing::info!(path = %self.path.display(), "machine token rotated and stored");
        Ok(())
    }

    /// Rotates the token once. See the module documentation for the crash protocol.
    pub async fn rotate(&self) -> Result<(), AuthError> {
        self.rotate_with_hook(|| {}).await
    }
}

/// `{"token": ...}`, `{"machine_token": ...}`, `{"access_token": ...}` or a bare token.
fn parse_token(body: &[u8]) -> Option<Secret> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for k in ["token", "machine_token", "access_token", "api_token"] {
            if let Some(s) = v.get(k).and_then(|t| t.as_str()).filter(|s| !s.is_empty()) {
                return Some(Secret::new(s));
            }
        }
        return None;
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    (!text.is_empty() && !text.contains(char::is_whitespace)).then(|| Secret::new(text))
}

/// Writes `data` to `path` atomically and durably: a private temporary file beside it,
/// fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl From<SecretError> for AuthError {
    fn from(e: SecretError) -> Self {
        AuthError::Config(e.to_string())
    }
}
