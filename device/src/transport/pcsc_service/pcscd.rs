//! The PC/SC service where it is pcscd (Linux, the BSDs) or the system's (macOS): no
//! "started" signal to wait on (systemd starts pcscd on the first connection), so the wait
//! for it is a bounded poll.

use std::time::Duration;

/// What the service is called, in messages.
pub const SERVICE: &str = "pcscd";

/// The started signal: none here (no value of this type exists).
pub enum Started {}

impl Started {
    /// `Ok(None)`: this OS has no started signal.
    pub fn open() -> Result<Option<Started>, String> {
        Ok(None)
    }

    /// Never called (there is no value).
    pub fn wait(&self, _: Duration) -> bool {
        match *self {}
    }
}
