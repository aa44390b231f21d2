//! The Windows Smart Card service (SCardSvr): `SCardAccessStartedEvent`'s event, set while
//! the service runs, released with `SCardReleaseStartedEvent` (never `CloseHandle`).
//!
//! Under Wine 10 the event exists but tells nothing: winscard creates it set when it is loaded
//! ("act as if the pcsc daemon is always started") and never resets it; the caller's
//! false-start check ([`super::ServiceWait`]) turns that into a poll.

use std::time::Duration;

use windows_sys::Win32::Foundation::{HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::Security::Credentials::{SCardAccessStartedEvent, SCardReleaseStartedEvent};
use windows_sys::Win32::System::Threading::WaitForSingleObject;

/// What the service is called, in messages.
pub const SERVICE: &str = "the Smart Card service";

/// The service's started event, held from [`Started::open`] until dropped.
pub struct Started(HANDLE);

// SAFETY: an event handle is a process-wide kernel object reference; waiting on it from any
// thread is allowed, and it is released once, on drop.
unsafe impl Send for Started {}

impl Started {
    /// The event; `Err` with the reason when winscard gives none.
    pub fn open() -> Result<Option<Started>, String> {
        // SAFETY: no arguments; a null return means no event (nothing to release).
        let handle = unsafe { SCardAccessStartedEvent() };
        if handle.is_null() {
            return Err(format!("SCardAccessStartedEvent gave no event: {}", std::io::Error::last_os_error()));
        }
        Ok(Some(Started(handle)))
    }

    /// Waits up to `d`: true when the event is set.
    pub fn wait(&self, d: Duration) -> bool {
        let ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX - 1);
        // SAFETY: the handle is valid until drop (self is borrowed).
        unsafe { WaitForSingleObject(self.0, ms) == WAIT_OBJECT_0 }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // SAFETY: balances the one SCardAccessStartedEvent of open().
        unsafe { SCardReleaseStartedEvent() };
    }
}
