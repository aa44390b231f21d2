//! What a process's access token says about who runs it: the user's SID, the session, and
//! whether a group (Administrators) is enabled in it. Used by the control channel to tell its
//! peers apart ([`super::channel`]), the counterpart of `SO_PEERCRED` on Unix.

use std::ffi::c_void;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

use windows_sys::Win32::Security::{
    GetTokenInformation, TokenGroups, TokenSessionId, TokenUser, TOKEN_GROUPS, TOKEN_INFORMATION_CLASS, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::System::SystemServices::{SE_GROUP_ENABLED, SE_GROUP_USE_FOR_DENY_ONLY};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION};

use super::user::sid_string;

/// LocalSystem.
pub const SYSTEM_SID: &str = "S-1-5-18";
/// BUILTIN\Administrators.
pub const ADMINISTRATORS_SID: &str = "S-1-5-32-544";

/// A process's access token, opened for query.
pub struct Token(OwnedHandle);

impl Token {
    /// This process's token.
    pub fn current() -> io::Result<Token> {
        // SAFETY: the pseudo handle of this process needs no closing.
        Token::open(unsafe { GetCurrentProcess() })
    }

    /// The token of process `pid` (needs PROCESS_QUERY_LIMITED_INFORMATION on it, which
    /// SYSTEM and Administrators have on every ordinary process).
    pub fn of_process(pid: u32) -> io::Result<Token> {
        // SAFETY: no pointers; the handle is owned (closed) below.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if process.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a process handle just opened, owned from here on.
        let process = unsafe { OwnedHandle::from_raw_handle(process) };
        Token::open(process.as_raw_handle())
    }

    fn open(process: *mut c_void) -> io::Result<Token> {
        let mut token = std::ptr::null_mut();
        // SAFETY: a valid process handle; `token` is an out-parameter owned below.
        if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a token handle just opened.
        Ok(Token(unsafe { OwnedHandle::from_raw_handle(token) }))
    }

    /// The token's information of `class`, in a buffer aligned for the structures it holds.
    fn information(&self, class: TOKEN_INFORMATION_CLASS) -> io::Result<Vec<u64>> {
        let mut needed = 0u32;
        // SAFETY: a size query (null buffer of length 0).
        unsafe { GetTokenInformation(self.0.as_raw_handle(), class, std::ptr::null_mut(), 0, &mut needed) };
        let mut buf = vec![0u64; (needed as usize).div_ceil(8).max(1)];
        let len = (buf.len() * 8) as u32;
        // SAFETY: `buf` is writable for `len` bytes.
        if unsafe { GetTokenInformation(self.0.as_raw_handle(), class, buf.as_mut_ptr() as *mut c_void, len, &mut needed) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(buf)
    }

    /// The user's SID string (`S-1-5-21-…`, `S-1-5-18` for SYSTEM).
    pub fn user_sid(&self) -> io::Result<String> {
        let buf = self.information(TokenUser)?;
        // SAFETY: TokenUser fills a TOKEN_USER whose Sid points into `buf`.
        let user = unsafe { &*(buf.as_ptr() as *const TOKEN_USER) };
        sid_string(user.User.Sid).ok_or_else(|| io::Error::other("the token's user SID has no string form"))
    }

    /// The Remote Desktop Services session the token belongs to (0: services).
    pub fn session_id(&self) -> io::Result<u32> {
        let buf = self.information(TokenSessionId)?;
        Ok(buf[0] as u32)
    }

    /// Whether the group `sid` is in the token and enabled (a UAC-filtered administrator's
    /// token has Administrators only for deny: not enabled).
    pub fn has_enabled_group(&self, sid: &str) -> io::Result<bool> {
        let buf = self.information(TokenGroups)?;
        // SAFETY: TokenGroups fills a TOKEN_GROUPS with GroupCount entries, all in `buf`.
        let groups = unsafe {
            let g = &*(buf.as_ptr() as *const TOKEN_GROUPS);
            std::slice::from_raw_parts(g.Groups.as_ptr(), g.GroupCount as usize)
        };
        Ok(groups.iter().any(|g| {
            let enabled = g.Attributes & SE_GROUP_ENABLED as u32 != 0 && g.Attributes & SE_GROUP_USE_FOR_DENY_ONLY as u32 == 0;
            enabled && sid_string(g.Sid).as_deref() == Some(sid)
        }))
    }
}

/// This process's user SID, once.
pub fn own_sid() -> Option<&'static str> {
    static OWN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| Token::current().and_then(|t| t.user_sid()).ok()).as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_user_and_a_session() {
        let t = Token::current().unwrap();
        let sid = t.user_sid().unwrap();
        assert!(sid.starts_with("S-1-"), "{sid}");
        assert_eq!(own_sid(), Some(sid.as_str()));
        t.session_id().unwrap();
        t.has_enabled_group(ADMINISTRATORS_SID).unwrap();
        let same = Token::of_process(std::process::id()).unwrap();
        assert_eq!(same.user_sid().unwrap(), sid);
    }
}
