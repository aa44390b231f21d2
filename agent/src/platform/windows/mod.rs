//! Windows: the Service Control Manager and Credential Manager today; the console session's
//! user and the tray's named pipe are still to come (issue 11), and say so.

pub mod channel;
pub mod service_manager;
pub mod user;

pub use super::native_keyring as secrets;
