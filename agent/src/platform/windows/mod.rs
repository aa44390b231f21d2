//! Windows: the Service Control Manager (its log in the Event Log), Credential Manager, the
//! console session's user, the tray's named pipe (its peers told apart by their process
//! token) and the tray's Win32 message loop.

pub mod channel;
mod event_log;
mod install;
pub mod service_manager;
pub mod settings;
mod token;
pub mod ui_loop;
pub mod user;

pub use super::native_keyring as secrets;

/// Whether this runs under Wine (ntdll exports wine_get_version there), for tests that show
/// there only what Wine does.
#[cfg(test)]
fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: NUL-terminated names; ntdll is always loaded.
    unsafe { GetProcAddress(GetModuleHandleA(c"ntdll.dll".as_ptr() as *const u8), c"wine_get_version".as_ptr() as *const u8).is_some() }
}
