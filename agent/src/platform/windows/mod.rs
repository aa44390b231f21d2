//! Windows: the Service Control Manager (its log in the Event Log), Credential Manager and the
//! console session's user;
//! the tray's named pipe is still to come (issue 11), and says so.

pub mod channel;
mod event_log;
mod install;
pub mod service_manager;
pub mod settings;
pub mod user;

pub use super::native_keyring as secrets;
