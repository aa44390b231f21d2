//! The OS keyring as a secret source (`token_keyring`, `client_secret_keyring`).
//!
//! An entry is named by two strings, `service` and `user`. Where it lives:
//! - Linux and the BSDs: the freedesktop Secret Service (GNOME Keyring, KWallet, KeePassXC)
//!   on the D-Bus session bus, as an item with the attributes `service` and `username` (the
//!   ones `secret-tool` and the `keyring` crate use), read over an encrypted session;
//! - macOS: the login Keychain, a generic password (service, account);
//! - Windows: Credential Manager, a generic credential `user.service`.
//!
//! Every call runs on its own thread and is given up after a deadline, so a keyring that
//! hangs (a Secret Service waiting on an unlock prompt nobody sees) cannot hang the agent.
//! Errors name the entry, never the secret.

use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

use keytally_protocol::secret::Secret;

/// How long reading an entry may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long storing an entry may take (the desktop may ask to unlock the keyring first).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The service name used when an entry gives none.
pub const DEFAULT_SERVICE: &str = "keytally";

/// A keyring entry, as the config names it: `{ service = "keytally", user = "prod" }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringEntry {
    #[serde(default = "default_service")]
    pub service: String,
    pub user: String,
}

fn default_service() -> String {
    DEFAULT_SERVICE.to_owned()
}

impl fmt::Display for KeyringEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.user)
    }
}

/// Why the keyring gave no secret. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("{NO_KEYRING} ({detail}) (headless: use a 0600 secret file or systemd LoadCredential= instead)")]
    Unavailable { detail: String },
    #[error("no entry {entry} in the keyring: store it with `keytally secret set --profile NAME`")]
    NoEntry { entry: String },
    #[error("the keyring is locked (entry {entry}): unlock it first (log in to the desktop session, or unlock the login keyring)")]
    Locked { entry: String },
    #[error("the keyring did not answer within {}s (entry {entry})", .timeout.as_secs())]
    Timeout { entry: String, timeout: Duration },
    #[error("keyring entry {entry} is empty")]
    Empty { entry: String },
    #[error("the secret in keyring entry {entry} is not valid UTF-8")]
    NotUnicode { entry: String },
    #[error("keyring entry {entry}: {detail}")]
    Other { entry: String, detail: String },
}

/// What "no keyring here" means on this platform.
#[cfg(all(unix, not(target_os = "macos")))]
const NO_KEYRING: &str = "no D-Bus session / Secret Service not available";
#[cfg(target_os = "macos")]
const NO_KEYRING: &str = "the macOS Keychain is not available";
#[cfg(windows)]
const NO_KEYRING: &str = "Windows Credential Manager is not available";
#[cfg(not(any(unix, windows)))]
const NO_KEYRING: &str = "no OS keyring on this platform";

/// Reads the secret stored under `entry`.
pub fn get(entry: &KeyringEntry, timeout: Duration) -> Result<Secret, KeyringError> {
    let e = entry.clone();
    with_deadline(entry, timeout, move || imp::get(&e, timeout))
}

/// Stores `secret` under `entry` (replacing what was there), with `label` as the name a
/// keyring manager shows.
pub fn set(entry: &KeyringEntry, label: &str, secret: &Secret, timeout: Duration) -> Result<(), KeyringError> {
    let (e, label, secret) = (entry.clone(), label.to_owned(), secret.clone());
    with_deadline(entry, timeout, move || imp::set(&e, &label, &secret, timeout))
}

/// Runs `f` on its own thread; gives up (leaving the thread behind) after `timeout`.
fn with_deadline<T: Send + 'static>(
    entry: &KeyringEntry,
    timeout: Duration,
    f: impl FnOnce() -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("keyring".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| other(entry, format!("cannot start the keyring thread: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(KeyringError::Timeout { entry: entry.to_string(), timeout }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(other(entry, "the keyring call failed without an answer".into())),
    }
}

fn other(entry: &KeyringEntry, detail: String) -> KeyringError {
    KeyringError::Other { entry: entry.to_string(), detail }
}

/// A secret from the bytes a keyring returned (trimmed like a secret file's content).
fn to_secret(entry: &KeyringEntry, bytes: Vec<u8>) -> Result<Secret, KeyringError> {
    use zeroize::Zeroize;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            e.into_bytes().zeroize();
            return Err(KeyringError::NotUnicode { entry: entry.to_string() });
        }
    };
    let secret = Secret::new(text.trim());
    let mut text = text;
    text.zeroize();
    if secret.is_empty() {
        return Err(KeyringError::Empty { entry: entry.to_string() });
    }
    Ok(secret)
}

/// The freedesktop Secret Service over D-Bus (zbus, on a private single-threaded runtime).
#[cfg(all(unix, not(target_os = "macos")))]
mod imp {
    use std::collections::HashMap;
    use std::future::Future;
    use std::time::Duration;

    use keytally_protocol::secret::Secret;
    use secret_service::{EncryptionType, Error as SsError, SecretService};

    use super::{other, to_secret, KeyringEntry, KeyringError};

    fn attributes(entry: &KeyringEntry) -> HashMap<&str, &str> {
        HashMap::from([("service", entry.service.as_str()), ("username", entry.user.as_str())])
    }

    /// Runs `fut` to completion within `timeout` on a runtime of its own (the caller may be
    /// inside another runtime).
    fn run<T>(entry: &KeyringEntry, timeout: Duration, fut: impl Future<Output = Result<T, KeyringError>>) -> Result<T, KeyringError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| other(entry, format!("cannot start the async runtime: {e}")))?;
        rt.block_on(async {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(KeyringError::Timeout { entry: entry.to_string(), timeout }),
            }
        })
    }

    async fn connect<'a>() -> Result<SecretService<'a>, KeyringError> {
        SecretService::connect(EncryptionType::Dh).await.map_err(|e| {
            let detail = match e {
                SsError::Unavailable => "no session bus or no Secret Service on it".to_owned(),
                e => e.to_string(),
            };
            KeyringError::Unavailable { detail }
        })
    }

    fn failed(entry: &KeyringEntry, e: SsError) -> KeyringError {
        match e {
            SsError::Locked | SsError::Prompt => KeyringError::Locked { entry: entry.to_string() },
            e => other(entry, e.to_string()),
        }
    }

    pub fn get(entry: &KeyringEntry, timeout: Duration) -> Result<Secret, KeyringError> {
        run(entry, timeout, async {
            let ss = connect().await?;
            let found = ss.search_items(attributes(entry)).await.map_err(|e| failed(entry, e))?;
            let Some(item) = found.unlocked.first() else {
                return Err(if found.locked.is_empty() {
                    KeyringError::NoEntry { entry: entry.to_string() }
                } else {
                    KeyringError::Locked { entry: entry.to_string() }
                });
            };
            let bytes = item.get_secret().await.map_err(|e| failed(entry, e))?;
            to_secret(entry, bytes)
        })
    }

    pub fn set(entry: &KeyringEntry, label: &str, secret: &Secret, timeout: Duration) -> Result<(), KeyringError> {
        run(entry, timeout, async {
            let ss = connect().await?;
            let collection = ss
                .get_default_collection()
                .await
                .map_err(|e| other(entry, format!("the keyring has no default collection ({e})")))?;
            if collection.is_locked().await.map_err(|e| failed(entry, e))? {
                // On a desktop this shows the unlock prompt; headless it fails or times out.
                collection.unlock().await.map_err(|e| failed(entry, e))?;
            }
            collection
                .create_item(label, attributes(entry), secret.expose().as_bytes(), true, "text/plain")
                .await
                .map_err(|e| failed(entry, e))?;
            Ok(())
        })
    }
}

/// macOS Keychain and Windows Credential Manager, through the `keyring` crate.
#[cfg(any(target_os = "macos", windows))]
mod imp {
    use std::time::Duration;

    use keytally_protocol::secret::Secret;

    use super::{other, to_secret, KeyringEntry, KeyringError};

    fn failed(entry: &KeyringEntry, e: keyring::Error) -> KeyringError {
        match e {
            keyring::Error::NoEntry => KeyringError::NoEntry { entry: entry.to_string() },
            keyring::Error::BadEncoding(_) => KeyringError::NotUnicode { entry: entry.to_string() },
            keyring::Error::NoStorageAccess(e) => KeyringError::Locked { entry: format!("{entry} ({e})") },
            keyring::Error::PlatformFailure(e) => KeyringError::Unavailable { detail: e.to_string() },
            // The remaining variants describe the entry's name, never its secret.
            e => other(entry, e.to_string()),
        }
    }

    pub fn get(entry: &KeyringEntry, _timeout: Duration) -> Result<Secret, KeyringError> {
        let e = keyring::Entry::new(&entry.service, &entry.user).map_err(|e| failed(entry, e))?;
        let bytes = e.get_secret().map_err(|e| failed(entry, e))?;
        to_secret(entry, bytes)
    }

    pub fn set(entry: &KeyringEntry, _label: &str, secret: &Secret, _timeout: Duration) -> Result<(), KeyringError> {
        let e = keyring::Entry::new(&entry.service, &entry.user).map_err(|e| failed(entry, e))?;
        e.set_password(secret.expose()).map_err(|e| failed(entry, e))
    }
}

#[cfg(not(any(unix, windows)))]
mod imp {
    use std::time::Duration;

    use keytally_protocol::secret::Secret;

    use super::{KeyringEntry, KeyringError};

    pub fn get(_entry: &KeyringEntry, _timeout: Duration) -> Result<Secret, KeyringError> {
        Err(KeyringError::Unavailable { detail: "not supported".into() })
    }

    pub fn set(_entry: &KeyringEntry, _label: &str, _secret: &Secret, _timeout: Duration) -> Result<(), KeyringError> {
        Err(KeyringError::Unavailable { detail: "not supported".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> KeyringEntry {
        KeyringEntry { service: "keytally".into(), user: "prod".into() }
    }

    #[test]
    fn entry_shape_and_name() {
        #[derive(serde::Deserialize)]
        struct T {
            k: KeyringEntry,
        }
        let t: T = toml::from_str("k = { user = \"prod\" }").unwrap();
        assert_eq!(t.k, entry());
        assert_eq!(t.k.to_string(), "keytally/prod");
        assert!(toml::from_str::<T>("k = { service = \"x\" }").is_err());
        assert!(toml::from_str::<T>("k = { user = \"u\", usr = \"v\" }").is_err());
    }

    #[test]
    fn bytes_become_a_trimmed_secret_or_a_clear_error() {
        assert_eq!(to_secret(&entry(), b"tok-1\n".to_vec()).unwrap().expose(), "tok-1");
        assert_eq!(to_secret(&entry(), b" \n".to_vec()).unwrap_err(), KeyringError::Empty { entry: "keytally/prod".into() });
        let e = to_secret(&entry(), vec![0xff, 0xfe, b's']).unwrap_err();
        assert!(e.to_string().contains("not valid UTF-8") && e.to_string().contains("keytally/prod"), "{e}");
    }

    #[test]
    fn a_call_that_hangs_is_given_up_at_the_deadline() {
        let started = std::time::Instant::now();
        let r: Result<(), _> = with_deadline(&entry(), Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        });
        assert_eq!(r, Err(KeyringError::Timeout { entry: "keytally/prod".into(), timeout: Duration::from_millis(200) }));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn messages_name_the_entry_and_the_way_out() {
        let e = KeyringError::Unavailable { detail: "no bus".into() }.to_string();
        assert!(e.contains("LoadCredential=") && e.contains("0600"), "{e}");
        let e = KeyringError::NoEntry { entry: "keytally/prod".into() }.to_string();
        assert!(e.contains("no entry keytally/prod in the keyring") && e.contains("keytally secret set"), "{e}");
        assert!(KeyringError::Locked { entry: "keytally/prod".into() }.to_string().starts_with("the keyring is locked"));
    }
}
