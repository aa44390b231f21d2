//! Linux and the BSDs (and macOS, but for its Keychain): logind sessions, a Unix socket for the
//! tray, systemd and journald, the freedesktop Secret Service.

pub mod channel;
#[cfg(not(target_os = "macos"))]
pub mod secrets;
pub mod service_manager;
pub mod settings;
#[cfg(not(target_os = "macos"))]
pub mod ui_loop;
pub mod user;

#[cfg(target_os = "macos")]
pub use super::native_keyring as secrets;
