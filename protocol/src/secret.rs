//! Secrets: a redacting wrapper type and the two places a secret is loaded from
//! (an environment variable, or a file only its owner can read).
//!
//! A [`Secret`] never prints its value: `Debug` and `Display` both show `[redacted]`,
//! and its memory is zeroed when it is dropped. The only way to see the value is
//! [`Secret::expose`], which callers use at the single point where the value goes on
//! the wire (an `Authorization` header or a token request body).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroize;

/// A secret string (an API key, a JWT, a client secret, an access token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Only for putting it on the wire; never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from the environment variable `var`. `Ok(None)` when unset or empty.
    pub fn from_env(var: &str) -> Result<Option<Secret>, SecretError> {
        match std::env::var(var) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Ok(Some(Secret(v.trim().to_owned()))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::NotUnicode {
                source_name: format!("environment variable {var}"),
            }),
        }
    }

    /// Reads a secret from a file. The file must not be readable or writable by group
    /// or others (on Unix); surrounding whitespace (a trailing newline) is dropped.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        check_private(path)?;
        let mut bytes = std::fs::read(path).map_err(|e| SecretError::Io {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t.trim().to_owned(),
            Err(_) => {
                bytes.zeroize();
                return Err(SecretError::NotUnicode {
                    source_name: format!("file {}", path.display()),
                });
            }
        };
        bytes.zeroize();
        if text.is_empty() {
            return Err(SecretError::Empty { path: path.to_owned() });
        }
        Ok(Secret(text))
    }
}

/// Reads a secret from a store only the caller knows (the OS keyring, in the agent). `what`
/// names it in messages (e.g. `keyring keytally/prod`); errors never hold the secret.
#[derive(Clone)]
pub struct SecretReader {
    what: String,
    read: Arc<dyn Fn() -> Result<Secret, String> + Send + Sync>,
}

impl SecretReader {
    /// A reader named `what` that calls `read` each time the secret is wanted.
    pub fn new(what: impl Into<String>, read: impl Fn() -> Result<Secret, String> + Send + Sync + 'static) -> Self {
        SecretReader { what: what.into(), read: Arc::new(read) }
    }

    /// What it reads, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Reads the secret now.
    pub fn read(&self) -> Result<Secret, String> {
        (self.read)()
    }
}

impl fmt::Debug for SecretReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretReader({})", self.what)
    }
}

/// Where a secret comes from, so that it can be read again when the one in use is refused
/// (an admin replaced a revoked API key or a client secret).
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Given once (an environment variable or the config file): cannot change.
    Value(Secret),
    /// A file only its owner can read.
    File(PathBuf),
    /// Some other store (the OS keyring).
    Reader(SecretReader),
}

impl SecretSource {
    /// The secret as the source holds it now.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Value(s) => Ok(s.clone()),
            SecretSource::File(p) => Secret::from_file(p).map_err(|e| e.to_string()),
            SecretSource::Reader(r) => r.read(),
        }
    }

    /// Where it comes from, for `status`: never the value.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Value(_) => "configured value".to_owned(),
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Reader(r) => r.what().to_owned(),
        }
    }

    /// Whether reading again can give another secret.
    pub fn can_change(&self) -> bool {
        !matches!(self, SecretSource::Value(_))
    }
}

/// A short one-way fingerprint of a secret (the first 8 bytes of its SHA-256, in hex): enough
/// to tell a replaced credential from the one the server refused, useless for recovering it.
pub fn fingerprint(secret: &Secret) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.expose().as_bytes());
    d.as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret could not be loaded. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Group or others may read or write the file.
    #[error(
        "secret file {path} can be read by other users (mode {mode:04o}); \
         refusing to use it: run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file cannot be read (missing, a directory, no permission...).
    #[error("cannot read secret file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error, in words.
        error: String,
    },
    /// The file holds nothing but whitespace.
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The environment variable or file is not UTF-8.
    #[error("the secret in {source_name} is not valid UTF-8")]
    NotUnicode {
        /// The variable or file.
        source_name: String,
    },
}

/// Refuses a file that group or others may read or write.
#[cfg(unix)]
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| SecretError::Io {
        path: path.to_owned(),
        error: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen { path: path.to_owned(), mode });
    }
    Ok(())
}

/// On non-Unix systems the file's ACL is left to the installer.
#[cfg(not(unix))]
pub fn check_private(_path: &Path) -> Result<(), SecretError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_again_and_fingerprints_tell_secrets_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let file = SecretSource::File(path.clone());
        let a = file.read().unwrap();
        std::fs::write(&path, "second").unwrap();
        let b = file.read().unwrap();
        assert_eq!((a.expose(), b.expose()), ("first", "second"));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), fingerprint(&Secret::new("first")));
        assert_eq!(fingerprint(&a).len(), 16);
        assert!(!fingerprint(&a).contains("first"));
        let reader = SecretSource::Reader(SecretReader::new("keyring k/u", || Ok(Secret::new("kr"))));
        assert_eq!((reader.read().unwrap().expose(), reader.describe().as_str(), reader.can_change()), ("kr", "keyring k/u", true));
        assert!(!format!("{reader:?}").contains("kr\""));
        assert!(!SecretSource::Value(Secret::new("v")).can_change());
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_group_readable_file_and_says_why() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "tok-abc\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Secret::from_file(&p).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("can be read by other users"), "{msg}");
        assert!(msg.contains("0640"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains("tok-abc"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "tok-abc");
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(Secret::from_file(&p), Err(SecretError::Empty { .. })));
    }
}
