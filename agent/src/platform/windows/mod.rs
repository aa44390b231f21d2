//! Windows: the Service Control Manager, Credential Manager and the console session's user;
//! the tray's named pipe is still to come (issue 11), and says so.

pub mod channel;
pub mod service_manager;
pub mod user;

pub use super::native_keyring as secrets;
