//! Secrets on Linux and the BSDs: the freedesktop Secret Service (GNOME Keyring, KWallet,
//! KeePassXC) on the D-Bus session bus, an item with the attributes `service` and `username`
//! (the ones `secret-tool` and the `keyring` crate use), read over an encrypted session; zbus
//! on a private single-threaded runtime (the caller may be inside another runtime).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use secret_service::{EncryptionType, Error as SsError, SecretService};

use crate::platform::SecretStoreError;

/// What "no keyring here" means on this platform.
pub const UNAVAILABLE: &str = "no D-Bus session / Secret Service not available";

fn attributes<'a>(service: &'a str, user: &'a str) -> HashMap<&'a str, &'a str> {
    HashMap::from([("service", service), ("username", user)])
}

/// Runs `fut` to completion within `timeout` on a runtime of its own.
fn run<T>(timeout: Duration, fut: impl Future<Output = Result<T, SecretStoreError>>) -> Result<T, SecretStoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SecretStoreError::Other(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(SecretStoreError::Timeout),
        }
    })
}

async fn connect<'a>() -> Result<SecretService<'a>, SecretStoreError> {
    SecretService::connect(EncryptionType::Dh).await.map_err(|e| {
        SecretStoreError::Unavailable(match e {
            SsError::Unavailable => "no session bus or no Secret Service on it".to_owned(),
            e => e.to_string(),
        })
    })
}

fn failed(e: SsError) -> SecretStoreError {
    match e {
        SsError::Locked | SsError::Prompt => SecretStoreError::Locked(None),
        e => SecretStoreError::Other(e.to_string()),
    }
}

/// The secret stored for (`service`, `user`), as the store keeps it.
pub fn read(service: &str, user: &str, timeout: Duration) -> Result<Vec<u8>, SecretStoreError> {
    run(timeout, async {
        let ss = connect().await?;
        let found = ss.search_items(attributes(service, user)).await.map_err(failed)?;
        let Some(item) = found.unlocked.first() else {
            return Err(if found.locked.is_empty() { SecretStoreError::NoEntry } else { SecretStoreError::Locked(None) });
        };
        item.get_secret().await.map_err(failed)
    })
}

/// Stores `secret` for (`service`, `user`), replacing what was there, with `label` as the
/// name a keyring manager shows. Unlocks the default collection first (on a desktop this
/// shows the unlock prompt; headless it fails or times out).
pub fn write(service: &str, user: &str, label: &str, secret: &str, timeout: Duration) -> Result<(), SecretStoreError> {
    run(timeout, async {
        let ss = connect().await?;
        let collection = ss.get_default_collection().await.map_err(|e| SecretStoreError::Other(format!("the keyring has no default collection ({e})")))?;
        if collection.is_locked().await.map_err(failed)? {
            collection.unlock().await.map_err(failed)?;
        }
        collection.create_item(label, attributes(service, user), secret.as_bytes(), true, "text/plain").await.map_err(failed)?;
        Ok(())
    })
}
