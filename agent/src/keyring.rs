//! The OS keyring as a secret source (`token_keyring`, `client_secret_keyring`).
//!
//! An entry is named by two strings, `service` and `user`. Where it lives is the platform's
//! (`crate::platform::secrets`):
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

use crate::platform::{secrets, SecretStoreError};

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
const NO_KEYRING: &str = secrets::UNAVAILABLE;

/// Reads the secret stored under `entry`.
pub fn get(entry: &KeyringEntry, timeout: Duration) -> Result<Secret, KeyringError> {
    let e = entry.clone();
    with_deadline(entry, timeout, move || {
        let bytes = secrets::read(&e.service, &e.user, timeout).map_err(|err| named(&e, err, timeout))?;
        to_secret(&e, bytes)
    })
}

/// Stores `secret` under `entry` (replacing what was there), with `label` as the name a
/// keyring manager shows.
pub fn set(entry: &KeyringEntry, label: &str, secret: &Secret, timeout: Duration) -> Result<(), KeyringError> {
    let (e, label, secret) = (entry.clone(), label.to_owned(), secret.clone());
    with_deadline(entry, timeout, move || secrets::write(&e.service, &e.user, &label, secret.expose(), timeout).map_err(|err| named(&e, err, timeout)))
}

/// The store's answer, with the entry's name (and the way out) added.
fn named(entry: &KeyringEntry, e: SecretStoreError, timeout: Duration) -> KeyringError {
    match e {
        SecretStoreError::Unavailable(detail) => KeyringError::Unavailable { detail },
        SecretStoreError::NoEntry => KeyringError::NoEntry { entry: entry.to_string() },
        SecretStoreError::Locked(None) => KeyringError::Locked { entry: entry.to_string() },
        SecretStoreError::Locked(Some(detail)) => KeyringError::Locked { entry: format!("{entry} ({detail})") },
        SecretStoreError::Timeout => KeyringError::Timeout { entry: entry.to_string(), timeout },
        SecretStoreError::NotUnicode => KeyringError::NotUnicode { entry: entry.to_string() },
        SecretStoreError::Other(detail) => other(entry, detail),
    }
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

    /// What `keytally secret set` stores, a sync reads back (Windows: Credential Manager,
    /// which Wine has too).
    #[cfg(windows)]
    #[test]
    fn a_stored_secret_reads_back_the_same() {
        let e = KeyringEntry { service: "keytally-test".into(), user: format!("roundtrip-{}", std::process::id()) };
        let secret = Secret::new("tok-ü-1".to_owned());
        set(&e, "keytally test", &secret, WRITE_TIMEOUT).unwrap();
        let back = get(&e, READ_TIMEOUT);
        let _ = keyring::Entry::new(&e.service, &e.user).and_then(|k| k.delete_credential());
        assert_eq!(back.unwrap().expose(), "tok-ü-1");
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
