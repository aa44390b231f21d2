//! Secrets on macOS (the login Keychain, a generic password: service, account) and Windows
//! (Credential Manager, a generic credential `user.service`), through the `keyring` crate's
//! native stores.

use std::time::Duration;

use crate::platform::SecretStoreError;

/// What "no keyring here" means on this platform.
#[cfg(target_os = "macos")]
pub const UNAVAILABLE: &str = "the macOS Keychain is not available";
#[cfg(windows)]
pub const UNAVAILABLE: &str = "Windows Credential Manager is not available";

fn failed(e: keyring::Error) -> SecretStoreError {
    match e {
        keyring::Error::NoEntry => SecretStoreError::NoEntry,
        keyring::Error::BadEncoding(_) => SecretStoreError::NotUnicode,
        keyring::Error::NoStorageAccess(e) => SecretStoreError::Locked(Some(e.to_string())),
        keyring::Error::PlatformFailure(e) => SecretStoreError::Unavailable(e.to_string()),
        // The remaining variants describe the entry's name, never its secret.
        e => SecretStoreError::Other(e.to_string()),
    }
}

/// The secret stored for (`service`, `user`). Read as [`write`] stores it: a password, which
/// Windows keeps as UTF-16LE (as Credential Manager and `cmdkey` write it) and macOS as UTF-8.
pub fn read(service: &str, user: &str, _timeout: Duration) -> Result<Vec<u8>, SecretStoreError> {
    let e = keyring::Entry::new(service, user).map_err(failed)?;
    let password = e.get_password().map_err(failed)?;
    Ok(password.into_bytes())
}

/// Stores `secret` for (`service`, `user`), replacing what was there.
pub fn write(service: &str, user: &str, _label: &str, secret: &str, _timeout: Duration) -> Result<(), SecretStoreError> {
    let e = keyring::Entry::new(service, user).map_err(failed)?;
    e.set_password(secret).map_err(failed)
}
