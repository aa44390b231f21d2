//! The tray↔service channel on Windows: a named pipe, `\\.\pipe\keytally-control`, that the
//! service creates and whose clients it tells apart by their process token (the counterpart
//! of `SO_PEERCRED` on Unix).
//!
//! The pipe:
//! - is created with `first_pipe_instance`, so the service fails (and says so) rather than
//!   joining a pipe someone else made first under that name;
//! - rejects remote clients (`PIPE_REJECT_REMOTE_CLIENTS`, and the DACL denies NETWORK);
//! - has a protected DACL: full control for SYSTEM, Administrators and the service's own
//!   account; the interactive user (IU) may read and write but not create instances
//!   (`FILE_CREATE_PIPE_INSTANCE` is `FILE_APPEND_DATA`, which `GENERIC_WRITE` would include):
//!   a user cannot add a server end of our pipe and receive other users' connections.
//!
//! Who is served ([`Peer::admit`]): SYSTEM, a process whose token has Administrators enabled,
//! the service's own account, and the user of the active console session from a process in
//! that session (whose tray it is). Anyone else, a user over RDP for example, is told why and
//! disconnected. The client's process comes from `GetNamedPipeClientProcessId`, its token from
//! `OpenProcess` + `OpenProcessToken` (the service runs as LocalSystem, which may open it).
//!
//! The client ([`connect`]) checks the other way too: the pipe's owner (the service sets it to
//! its own account) must be SYSTEM, Administrators or this very user (a `keytally run` of
//! one's own), or it refuses to talk,
//! so a process that squatted the name while the service was down cannot pose as it. (The
//! owner rather than the server process's token: a standard user cannot open a LocalSystem
//! process's token, and cannot make an object owned by SYSTEM or Administrators.) The client
//! opens the pipe at identification level only: the server can see who it is, not act as it.
//!
//! Client I/O is overlapped, so reads and writes have timeouts (a blocking ReadFile on a
//! pipe has none): a timed-out operation is cancelled (`CancelIoEx`) and waited for.

use std::ffi::{c_void, OsStr};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{
    GetLastError, LocalFree, ERROR_ACCESS_DENIED, ERROR_BROKEN_PIPE, ERROR_IO_PENDING, ERROR_OPERATION_ABORTED, ERROR_PIPE_BUSY,
    ERROR_PIPE_NOT_CONNECTED, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo, SDDL_REVISION_1, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, WriteFile, FILE_FLAG_OVERLAPPED, FILE_GENERIC_READ, FILE_WRITE_DATA, OPEN_EXISTING, SECURITY_IDENTIFICATION,
    SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{GetNamedPipeClientProcessId, GetNamedPipeServerProcessId, WaitNamedPipeW};
use windows_sys::Win32::System::RemoteDesktop::WTSGetActiveConsoleSessionId;
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForSingleObject, INFINITE};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::token::{own_sid, Token, ADMINISTRATORS_SID, SYSTEM_SID};
use super::user::{self, sid_string};

/// The pipe's name.
pub const PIPE: &str = r"\\.\pipe\keytally-control";
/// Overrides [`PIPE`] (tests, a second service by hand).
const PIPE_VAR: &str = "KEYTALLY_CONTROL_PIPE";
/// How long a client waits for a free instance when every instance is busy.
const BUSY_WAIT: Duration = Duration::from_secs(5);
/// What the interactive user may do with the pipe: FILE_GENERIC_READ (read data, attributes,
/// extended attributes, READ_CONTROL, SYNCHRONIZE) + FILE_WRITE_DATA + FILE_WRITE_ATTRIBUTES.
/// Not FILE_APPEND_DATA (= FILE_CREATE_PIPE_INSTANCE) nor FILE_WRITE_EA.
const USER_RIGHTS: u32 = 0x0012_018b;
/// What the client asks for: no more than [`USER_RIGHTS`] (GENERIC_WRITE would ask for
/// FILE_CREATE_PIPE_INSTANCE too, and be denied).
const CLIENT_RIGHTS: u32 = FILE_GENERIC_READ | FILE_WRITE_DATA;

/// The pipe's security descriptor: owned by `own` (the service's account: SYSTEM for the
/// service; set rather than left to the default, which is the token's owner on Windows but
/// its primary group under Wine); deny NETWORK; SYSTEM, Administrators and `own` full
/// control; the interactive user [`USER_RIGHTS`]. Protected: nothing inherited.
pub fn pipe_sddl(own: &str) -> String {
    format!("O:{own}D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{own})(A;;{USER_RIGHTS:#010x};;;IU)")
}

fn pipe_name() -> PathBuf {
    std::env::var_os(PIPE_VAR).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(PIPE))
}

/// Where the service listens: `KEYTALLY_CONTROL_PIPE`, else [`PIPE`].
pub fn server_endpoint() -> Option<PathBuf> {
    Some(pipe_name())
}

/// Where a client connects: the same one pipe.
pub fn client_endpoints() -> Vec<PathBuf> {
    vec![pipe_name()]
}

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// Connects to the service's pipe at `endpoint`. No such pipe is `NotFound`; a pipe that is
/// not the service's (see the module's doc) is `PermissionDenied`, with who holds it.
pub fn connect(endpoint: &Path) -> io::Result<Stream> {
    let name = wide(endpoint.as_os_str());
    let deadline = Instant::now() + BUSY_WAIT;
    let handle = loop {
        // SAFETY: a NUL-terminated name; no security attributes or template.
        let h = unsafe {
            CreateFileW(
                name.as_ptr(),
                CLIENT_RIGHTS,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if h != INVALID_HANDLE_VALUE {
            // SAFETY: a handle just opened, owned from here on.
            break unsafe { OwnedHandle::from_raw_handle(h) };
        }
        // SAFETY: no arguments.
        let err = unsafe { GetLastError() };
        let left = deadline.saturating_duration_since(Instant::now());
        if err != ERROR_PIPE_BUSY || left.is_zero() {
            return Err(io::Error::from_raw_os_error(err as i32));
        }
        // Every instance is taken for the moment (the service makes the next one right after
        // a connection): wait for one, within the deadline.
        // SAFETY: a NUL-terminated name.
        unsafe { WaitNamedPipeW(name.as_ptr(), left.as_millis().clamp(1, 1000) as u32) };
    };
    let owner = pipe_owner(handle.as_raw_handle())?;
    if let Err(why) = trusted_server(&owner, own_sid()) {
        let mut pid = 0u32;
        // SAFETY: a pipe handle; `pid` is an out-parameter.
        let pid = if unsafe { GetNamedPipeServerProcessId(handle.as_raw_handle(), &mut pid) } != 0 { pid.to_string() } else { "?".into() };
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("not talking to it: the pipe is held by process {pid}, {why}")));
    }
    Ok(Stream { inner: Arc::new(Inner { handle, read_ms: AtomicU32::new(INFINITE), write_ms: AtomicU32::new(INFINITE) }) })
}

/// The owner of a kernel object (the pipe), as a SID string.
fn pipe_owner(handle: RawHandle) -> io::Result<String> {
    let mut owner: PSID = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: out-parameters; `owner` points into `sd`, which Windows allocates and we free.
    let rc = unsafe {
        GetSecurityInfo(
            handle,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    let sid = if owner.is_null() { None } else { sid_string(owner) };
    // SAFETY: allocated by GetSecurityInfo (LocalFree of null is a no-op).
    unsafe { LocalFree(sd) };
    sid.ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "not talking to it: the pipe has no owner"))
}

/// Whether a pipe owned by `owner` can be the keytally service's, for a client running as
/// `own`: SYSTEM (the service), Administrators (what an elevated process's objects get), or
/// the client's own account (a `keytally run` of one's own). Else why not.
fn trusted_server(owner: &str, own: Option<&str>) -> Result<(), String> {
    if owner == SYSTEM_SID || owner == ADMINISTRATORS_SID || Some(owner) == own {
        return Ok(());
    }
    Err(format!("owned by {owner}, neither the keytally service (SYSTEM or Administrators) nor this user"))
}

/// A client's end of the channel: blocking, with read and write timeouts (shared by its
/// clones, as a socket's are).
pub struct Stream {
    inner: Arc<Inner>,
}

struct Inner {
    handle: OwnedHandle,
    read_ms: AtomicU32,
    write_ms: AtomicU32,
}

fn timeout_ms(timeout: Option<Duration>) -> io::Result<u32> {
    match timeout {
        None => Ok(INFINITE),
        Some(d) if d.is_zero() => Err(io::Error::new(io::ErrorKind::InvalidInput, "a zero timeout")),
        Some(d) => Ok(d.as_millis().clamp(1, u128::from(INFINITE - 1)) as u32),
    }
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream { inner: Arc::clone(&self.inner) })
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.read_ms.store(timeout_ms(timeout)?, Ordering::Relaxed);
        Ok(())
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.write_ms.store(timeout_ms(timeout)?, Ordering::Relaxed);
        Ok(())
    }
}

/// One overlapped operation, started by `start` with the OVERLAPPED to use, waited for at
/// most `ms`; on timeout it is cancelled and waited for (the OVERLAPPED and the buffer must
/// outlive it), then `TimedOut`. The number of bytes moved otherwise.
fn overlapped(handle: RawHandle, ms: u32, start: impl FnOnce(*mut OVERLAPPED) -> i32) -> io::Result<u32> {
    // SAFETY: a manual-reset event without a name, owned below.
    let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if event.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an event just created.
    let event = unsafe { OwnedHandle::from_raw_handle(event) };
    // SAFETY: OVERLAPPED is plain data; all zero is its initial state.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.hEvent = event.as_raw_handle();
    if start(&mut ov) == 0 {
        // SAFETY: no arguments.
        let err = unsafe { GetLastError() };
        if err != ERROR_IO_PENDING {
            return Err(io::Error::from_raw_os_error(err as i32));
        }
        // SAFETY: a valid event handle.
        if unsafe { WaitForSingleObject(event.as_raw_handle(), ms) } != WAIT_OBJECT_0 {
            // Timed out (or the wait failed): cancel, then wait for the operation to end,
            // which it does at once once cancelled, or it completed meanwhile.
            // SAFETY: the operation started on `handle` with `ov`.
            unsafe { CancelIoEx(handle, &ov) };
            let mut n = 0u32;
            // SAFETY: as above; waits (bWait = TRUE) for the operation's end.
            if unsafe { GetOverlappedResult(handle, &ov, &mut n, 1) } != 0 {
                return Ok(n);
            }
            // SAFETY: no arguments.
            let err = unsafe { GetLastError() };
            return Err(if err == ERROR_OPERATION_ABORTED {
                io::Error::new(io::ErrorKind::TimedOut, "the keytally service did not answer in time")
            } else {
                io::Error::from_raw_os_error(err as i32)
            });
        }
    }
    let mut n = 0u32;
    // SAFETY: the operation on `handle` with `ov` has completed (its event is set).
    if unsafe { GetOverlappedResult(handle, &ov, &mut n, 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.inner.handle.as_raw_handle();
        let len = buf.len().min(u32::MAX as usize) as u32;
        let ms = self.inner.read_ms.load(Ordering::Relaxed);
        // SAFETY: `buf` is writable for `len` bytes and outlives the operation (overlapped
        // waits for its end).
        match overlapped(h, ms, |ov| unsafe { ReadFile(h, buf.as_mut_ptr(), len, std::ptr::null_mut(), ov) }) {
            Ok(n) => Ok(n as usize),
            // The service closed its end: end of stream, as a socket says it.
            Err(e) if matches!(e.raw_os_error(), Some(c) if c as u32 == ERROR_BROKEN_PIPE || c as u32 == ERROR_PIPE_NOT_CONNECTED) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.inner.handle.as_raw_handle();
        let len = buf.len().min(u32::MAX as usize) as u32;
        let ms = self.inner.write_ms.load(Ordering::Relaxed);
        // SAFETY: `buf` is readable for `len` bytes and outlives the operation.
        overlapped(h, ms, |ov| unsafe { WriteFile(h, buf.as_ptr(), len, std::ptr::null_mut(), ov) }).map(|n| n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The service's end of one connection (a named pipe's server end).
pub type Connection = NamedPipeServer;

/// A security descriptor made from SDDL (LocalAlloc'd by Windows, freed on drop).
struct SecurityDescriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is only read after it is made, and freed once.
unsafe impl Send for SecurityDescriptor {}
// SAFETY: as above.
unsafe impl Sync for SecurityDescriptor {}

impl SecurityDescriptor {
    fn from_sddl(sddl: &str) -> io::Result<SecurityDescriptor> {
        let text = wide(OsStr::new(sddl));
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: a NUL-terminated SDDL; `sd` is allocated by Windows and freed on drop.
        if unsafe { ConvertStringSecurityDescriptorToSecurityDescriptorW(text.as_ptr(), SDDL_REVISION_1, &mut sd, std::ptr::null_mut()) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SecurityDescriptor(sd))
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
        unsafe { LocalFree(self.0) };
    }
}

/// The service's listening end: the pipe's next free instance. An instance is connected by
/// [`Listener::accept`], which makes the next one before returning, so the service holds
/// the name for as long as it runs.
pub struct Listener {
    name: PathBuf,
    sd: SecurityDescriptor,
    next: tokio::sync::Mutex<Option<NamedPipeServer>>,
}

impl Listener {
    /// Creates the pipe's first instance. Fails if the name is taken (another keytally
    /// service, or someone squatting it). Call it inside a tokio runtime.
    pub fn bind(endpoint: &Path) -> io::Result<Listener> {
        let own = own_sid().ok_or_else(|| io::Error::other("cannot read this process's user"))?;
        let sd = SecurityDescriptor::from_sddl(&pipe_sddl(own))?;
        let listener = Listener { name: endpoint.to_owned(), sd, next: tokio::sync::Mutex::new(None) };
        let first = listener.instance(true).map_err(|e| {
            if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
                io::Error::new(e.kind(), "the pipe exists already: another keytally service (or something else) holds the name")
            } else {
                e
            }
        })?;
        *listener.next.try_lock().expect("not shared yet") = Some(first);
        Ok(listener)
    }

    fn instance(&self, first: bool) -> io::Result<NamedPipeServer> {
        let mut sa = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.sd.0,
            bInheritHandle: 0,
        };
        let mut options = ServerOptions::new();
        options.first_pipe_instance(first).reject_remote_clients(true).access_inbound(true).access_outbound(true);
        // SAFETY: `sa` is a valid SECURITY_ATTRIBUTES whose descriptor outlives the call.
        unsafe { options.create_with_security_attributes_raw(&self.name, &mut sa as *mut SECURITY_ATTRIBUTES as *mut c_void) }
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Connection> {
        let mut slot = self.next.lock().await;
        let server = match slot.take() {
            Some(s) => s,
            None => self.instance(false)?,
        };
        let connected = server.connect().await;
        // The next instance, made while this one still holds the name.
        *slot = self.instance(false).ok();
        connected.map(|()| server)
    }
}

/// Who is on the other end of a connection: the client process and its token's user,
/// session and whether Administrators is enabled in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pid: u32,
    sid: String,
    session: u32,
    admin: bool,
}

/// The client's process and token.
pub fn peer(conn: &Connection) -> io::Result<Peer> {
    let mut pid = 0u32;
    // SAFETY: a pipe server handle; `pid` is an out-parameter.
    if unsafe { GetNamedPipeClientProcessId(conn.as_raw_handle(), &mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = Token::of_process(pid).map_err(|e| io::Error::new(e.kind(), format!("process {pid}'s token: {e}")))?;
    Ok(Peer { pid, sid: token.user_sid()?, session: token.session_id()?, admin: token.has_enabled_group(ADMINISTRATORS_SID)? })
}

/// No session is attached to the console.
const NO_CONSOLE_SESSION: u32 = 0xFFFF_FFFF;

impl Peer {
    /// Whether this peer is served; the reason when not.
    pub fn admit(&self) -> Result<(), String> {
        // SAFETY: no arguments.
        let session = unsafe { WTSGetActiveConsoleSessionId() };
        let console = (session != NO_CONSOLE_SESSION).then(|| (session, user::logged_in_user().map(|u| u.sid)));
        admit(self, own_sid(), console.as_ref().map(|(s, u)| (*s, u.as_deref())))
    }
}

/// The decision: SYSTEM, an enabled Administrators group, the service's own account, or the
/// console session's user from a process in the console session. `console` is the active
/// console session and its user's SID (when someone is logged on there).
fn admit(p: &Peer, own: Option<&str>, console: Option<(u32, Option<&str>)>) -> Result<(), String> {
    if p.sid == SYSTEM_SID || p.admin || Some(p.sid.as_str()) == own {
        return Ok(());
    }
    match console {
        Some((session, Some(user))) if p.session == session && p.sid == user => Ok(()),
        Some((session, Some(user))) if p.sid == user => Err(format!(
            "{} is the console's user but this process is in session {}, not the console's session {session}; only the console session, administrators and SYSTEM are served",
            p.sid, p.session
        )),
        _ => Err(format!(
            "{} (session {}) is not the user at this machine's console; only that user, administrators and SYSTEM are served",
            p.sid, p.session
        )),
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({}, session {}{})", self.pid, self.sid, self.session, if self.admin { ", administrator" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "S-1-5-21-1-2-3-1001";
    const BOB: &str = "S-1-5-21-1-2-3-1002";

    fn p(sid: &str, session: u32, admin: bool) -> Peer {
        Peer { pid: 42, sid: sid.into(), session, admin }
    }

    /// The admission rule on SIDs and sessions (Wine runs every process as one administrator,
    /// so a refused user cannot be shown there end to end).
    #[test]
    fn admits_system_admins_own_account_and_the_console_user_only() {
        let console = Some((1, Some(ALICE)));
        assert!(admit(&p(SYSTEM_SID, 0, false), Some(SYSTEM_SID), console).is_ok());
        assert!(admit(&p(BOB, 2, true), Some(SYSTEM_SID), console).is_ok(), "an elevated administrator");
        assert!(admit(&p(ALICE, 1, false), Some(SYSTEM_SID), console).is_ok(), "the console's user in the console session");
        assert!(admit(&p(BOB, 2, false), Some(BOB), console).is_ok(), "the service's own account (a run by hand)");
        let rdp = admit(&p(BOB, 2, false), Some(SYSTEM_SID), console).unwrap_err();
        assert!(rdp.contains(BOB) && rdp.contains("session 2") && rdp.contains("console"), "{rdp}");
        let elsewhere = admit(&p(ALICE, 3, false), Some(SYSTEM_SID), console).unwrap_err();
        assert!(elsewhere.contains("session 3") && elsewhere.contains("session 1"), "{elsewhere}");
        // Nobody at the console (the login screen), or the console's user unknown.
        assert!(admit(&p(ALICE, 1, false), Some(SYSTEM_SID), None).is_err());
        assert!(admit(&p(ALICE, 1, false), Some(SYSTEM_SID), Some((1, None))).is_err());
        assert!(admit(&p(ALICE, 1, false), None, None).is_err());
    }

    #[test]
    fn a_client_trusts_only_a_pipe_owned_by_system_admins_or_itself() {
        assert!(trusted_server(SYSTEM_SID, Some(ALICE)).is_ok());
        assert!(trusted_server(ADMINISTRATORS_SID, Some(ALICE)).is_ok());
        assert!(trusted_server(ALICE, Some(ALICE)).is_ok());
        let why = trusted_server(BOB, Some(ALICE)).unwrap_err();
        assert!(why.contains(BOB), "{why}");
        assert!(trusted_server(BOB, None).is_err());
    }

    #[test]
    fn the_pipe_grants_users_no_instance_creation() {
        let sddl = pipe_sddl(ALICE);
        assert_eq!(sddl, "O:S-1-5-21-1-2-3-1001D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;S-1-5-21-1-2-3-1001)(A;;0x0012018b;;;IU)");
        const FILE_CREATE_PIPE_INSTANCE: u32 = 0x4;
        assert_eq!(USER_RIGHTS & FILE_CREATE_PIPE_INSTANCE, 0);
        assert_eq!(CLIENT_RIGHTS & !USER_RIGHTS, 0, "the client asks for no more than a user has");
        SecurityDescriptor::from_sddl(&sddl).expect("Windows parses it");
    }

    fn unique_pipe() -> PathBuf {
        PathBuf::from(format!(r"\\.\pipe\keytally-test-{}-{}", std::process::id(), uuid::Uuid::new_v4()))
    }

    /// Through a real pipe: the client's lines reach the service and back, the peer is this
    /// process, a second service on the same name is refused, a read without an answer times
    /// out, and the service closing its end is the end of the stream.
    #[test]
    fn a_pipe_round_trip_with_timeouts_and_no_second_server() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let name = unique_pipe();
        let listener = rt.block_on(async { Listener::bind(&name) }).unwrap();
        let second = rt.block_on(async { Listener::bind(&name) });
        // Wine 10 ignores FILE_FLAG_FIRST_PIPE_INSTANCE (a second first instance is made);
        // Windows refuses it. Dropped at once either way, before a client could pick it.
        assert!(super::super::under_wine() || second.is_err(), "the name is taken");
        drop(second);
        let client_name = name.clone();
        let client = std::thread::spawn(move || {
            let mut s = connect(&client_name).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = s.try_clone().unwrap();
            let t = Instant::now();
            let mut buf = [0u8; 16];
            let e = r.read(&mut buf).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
            assert!(t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            s.write_all(b"ping\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        let peer = rt.block_on(async {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
            let conn = listener.accept().await.unwrap();
            let peer = peer(&conn).unwrap();
            let (read, mut write) = tokio::io::split(conn);
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await.unwrap();
            assert_eq!(line, "ping\n");
            write.write_all(b"pong\n").await.unwrap();
            // Closing: the runtime must run on a little for the pipe's handle to be closed
            // (tokio cancels its pending read and closes on completion), as the service's does.
            drop(write);
            tokio::time::sleep(Duration::from_millis(300)).await;
            peer
        });
        assert_eq!(client.join().unwrap(), b"pong\n");
        assert_eq!(peer.pid, std::process::id());
        assert_eq!(Some(peer.sid.as_str()), own_sid());
        assert!(peer.admit().is_ok(), "this process is the service's own account: {peer}");
        // No pipe: not running.
        let e = connect(&unique_pipe()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    /// A pipe owned by someone else (BUILTIN\Users here) is not the service's: the client
    /// refuses it, naming the owner. Windows lets no ordinary process give an object such an
    /// owner (ERROR_INVALID_OWNER), so there this is shown by the rule's unit test alone;
    /// Wine does not check owners, which makes the squatter possible to stage.
    #[test]
    fn a_client_refuses_a_pipe_someone_else_owns() {
        const ERROR_INVALID_OWNER: i32 = 1307;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let name = unique_pipe();
        let sd = SecurityDescriptor::from_sddl("O:BUD:(A;;GA;;;WD)").unwrap();
        let squatter = Listener { name: name.clone(), sd, next: tokio::sync::Mutex::new(None) };
        let _held = match rt.block_on(async { squatter.instance(true) }) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(ERROR_INVALID_OWNER) => return,
            Err(e) => panic!("{e}"),
        };
        let e = connect(&name).err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("owned by S-1-5-32-545"), "{e}");
        // And the service will not join it (Windows; Wine 10 ignores FILE_FLAG_FIRST_PIPE_INSTANCE).
        if !super::super::under_wine() {
            let e = rt.block_on(async { Listener::bind(&name) }).err().expect("the name is taken");
            assert!(e.to_string().contains("holds the name"), "{e}");
        }
    }
}
