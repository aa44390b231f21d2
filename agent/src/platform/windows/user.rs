//! Who is logged in at this machine, on Windows: the user of the active console session (the
//! one at the keyboard and the USB ports), as `DOMAIN\name` and the account's SID string. An
//! RDP session's user is not the owner of a key plugged into the console, so only the console
//! session counts (`WTSGetActiveConsoleSessionId`).
//!
//! The SID comes from the session's token (`WTSQueryUserToken`, which needs SeTcbPrivilege:
//! the service runs as LocalSystem, which has it); without that privilege (`keytally run` in
//! an administrator's console) from `LookupAccountNameW` of `DOMAIN\name`. An Entra ID
//! account's SID (`S-1-12-1-…`) also gives its object id ([`super::super::entra_sid`]).

use std::ffi::c_void;

use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{GetTokenInformation, LookupAccountNameW, TokenUser, SID_NAME_USE, TOKEN_USER};
use windows_sys::Win32::System::RemoteDesktop::{
    WTSDomainName, WTSFreeMemory, WTSGetActiveConsoleSessionId, WTSQuerySessionInformationW, WTSQueryUserToken, WTSUserName,
    WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS,
};

use crate::platform::entra_sid::entra_object_id;

/// A person with a session at this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    /// `DOMAIN\name` (`AzureAD\name` for an Entra ID account).
    pub name: String,
    /// The account's SID string (`S-1-5-21-…`, `S-1-12-1-…`).
    pub sid: String,
}

impl LocalUser {
    /// The account's id as the owner record's `sid` carries it.
    pub fn sid(&self) -> String {
        self.sid.clone()
    }

    /// The Entra ID object id, for an Entra ID account (its SID encodes it).
    pub fn entra_id(&self) -> Option<String> {
        entra_object_id(&self.sid)
    }
}

/// No session is attached to the console (WTSGetActiveConsoleSessionId's answer).
const NO_CONSOLE_SESSION: u32 = 0xFFFF_FFFF;

/// The user of the active console session; `None` when nobody is logged on at the console
/// (the login screen, a machine used only over RDP) or Windows does not say.
pub fn logged_in_user() -> Option<LocalUser> {
    // SAFETY: no arguments; returns a session id or NO_CONSOLE_SESSION.
    let session = unsafe { WTSGetActiveConsoleSessionId() };
    if session == NO_CONSOLE_SESSION {
        return None;
    }
    let user = session_string(session, WTSUserName)?;
    if user.is_empty() {
        return None;
    }
    let domain = session_string(session, WTSDomainName).unwrap_or_default();
    let name = if domain.is_empty() { user } else { format!("{domain}\\{user}") };
    let sid = token_sid(session).or_else(|| account_sid(&name))?;
    Some(LocalUser { name, sid })
}

/// One text field of a session (`WTSUserName`, `WTSDomainName`).
fn session_string(session: u32, class: WTS_INFO_CLASS) -> Option<String> {
    let mut buf: *mut u16 = std::ptr::null_mut();
    let mut bytes = 0u32;
    // SAFETY: WTS allocates `buf` (freed below with WTSFreeMemory); `bytes` is its size.
    let ok = unsafe { WTSQuerySessionInformationW(WTS_CURRENT_SERVER_HANDLE, session, class, &mut buf, &mut bytes) };
    if ok == 0 || buf.is_null() {
        return None;
    }
    // SAFETY: `buf` holds `bytes` bytes of NUL-terminated UTF-16.
    let text = unsafe { wide_to_string(buf, bytes as usize / 2) };
    // SAFETY: allocated by WTSQuerySessionInformationW.
    unsafe { WTSFreeMemory(buf as *mut c_void) };
    Some(text)
}

/// The SID of the session's token (needs SeTcbPrivilege: LocalSystem).
fn token_sid(session: u32) -> Option<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: out-parameter; the handle is closed below.
    if unsafe { WTSQueryUserToken(session, &mut token) } == 0 {
        return None;
    }
    // TOKEN_USER plus the SID it points into; a SID is at most 68 bytes. u64s for alignment.
    let mut buf = [0u64; 16];
    let mut needed = 0u32;
    // SAFETY: `buf` is writable for its size; `needed` receives the size used.
    let ok = unsafe { GetTokenInformation(token, TokenUser, buf.as_mut_ptr() as *mut c_void, std::mem::size_of_val(&buf) as u32, &mut needed) };
    let sid = if ok != 0 {
        // SAFETY: on success the buffer starts with a TOKEN_USER whose Sid points into it.
        let user = unsafe { &*(buf.as_ptr() as *const TOKEN_USER) };
        sid_string(user.User.Sid)
    } else {
        None
    };
    // SAFETY: the token handle from WTSQueryUserToken.
    unsafe { CloseHandle(token) };
    sid
}

/// The SID of an account by name (`DOMAIN\name`).
fn account_sid(name: &str) -> Option<String> {
    let wide: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
    let mut sid = [0u64; 16];
    let mut sid_len = std::mem::size_of_val(&sid) as u32;
    let mut domain = [0u16; 256];
    let mut domain_len = domain.len() as u32;
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: every buffer is writable for the length passed with it.
    let ok = unsafe {
        LookupAccountNameW(
            std::ptr::null(),
            wide.as_ptr(),
            sid.as_mut_ptr() as *mut c_void,
            &mut sid_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return None;
    }
    sid_string(sid.as_mut_ptr() as *mut c_void)
}

/// `S-1-…` of a binary SID.
pub(super) fn sid_string(sid: *mut c_void) -> Option<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` points to a valid SID; Windows allocates `text` (freed with LocalFree).
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 || text.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated UTF-16 from ConvertSidToStringSidW; a SID string is < 200 chars.
    let s = unsafe { wide_to_string(text, 256) };
    // SAFETY: allocated by ConvertSidToStringSidW.
    unsafe { LocalFree(text as *mut c_void) };
    Some(s).filter(|s| s.starts_with("S-"))
}

/// UTF-16 up to the first NUL or `max` units.
///
/// # Safety
/// `p` must be readable up to its NUL or `max` units, whichever comes first.
unsafe fn wide_to_string(p: *const u16, max: usize) -> String {
    let mut len = 0;
    while len < max && *p.add(len) != 0 {
        len += 1;
    }
    String::from_utf16_lossy(std::slice::from_raw_parts(p, len))
}
