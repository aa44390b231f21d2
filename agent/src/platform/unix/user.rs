//! Who is logged in at this machine, on Unix: the local sessions systemd-logind keeps under
//! /run/systemd/sessions, and user names from the system's user database (NSS, so
//! directory users resolve too). The service uses it for the workstation owner suggestion
//! and to decide whose tray may use the control channel.

use std::path::Path;

/// A person with a local session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub uid: u32,
    pub name: String,
}

impl LocalUser {
    /// The account's id as the owner record's `sid` carries it: the uid, where Windows has
    /// a SID.
    pub fn sid(&self) -> String {
        self.uid.to_string()
    }

    /// The Microsoft Entra ID object id: a Windows notion, none here.
    pub fn entra_id(&self) -> Option<String> {
        None
    }
}

/// logind's session state files (`key=value` lines, one file per session).
const SESSIONS_DIR: &str = "/run/systemd/sessions";

/// One logind session file, the fields that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
struct Session {
    uid: Option<u32>,
    user: Option<String>,
    active: bool,
    remote: bool,
    class: String,
    seat: Option<String>,
}

fn parse_session(text: &str) -> Session {
    let mut s = Session::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k {
            "UID" => s.uid = v.parse().ok(),
            "USER" => s.user = Some(v.to_string()).filter(|u| !u.is_empty()),
            "ACTIVE" => s.active = v == "1",
            "REMOTE" => s.remote = v == "1",
            "CLASS" => s.class = v.to_string(),
            "SEAT" => s.seat = Some(v.to_string()).filter(|u| !u.is_empty()),
            _ => {}
        }
    }
    s
}

/// The users with an active, local (not SSH) user session, seat sessions first.
fn local_sessions(dir: &Path) -> Vec<LocalUser> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(bool, LocalUser)> = Vec::new();
    for e in entries.flatten() {
        // Session files are small; anything else here is not one.
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        if text.len() > 64 * 1024 {
            continue;
        }
        let s = parse_session(&text);
        let Some(uid) = s.uid else { continue };
        if !s.active || s.remote || s.class != "user" || uid < uid_min() {
            continue;
        }
        let name = s.user.or_else(|| user_name(uid)).unwrap_or_else(|| uid.to_string());
        let user = LocalUser { uid, name };
        if !found.iter().any(|(_, u)| *u == user) {
            found.push((s.seat.is_some(), user));
        }
    }
    found.sort_by_key(|(seat, u)| (!*seat, u.uid));
    found.into_iter().map(|(_, u)| u).collect()
}

/// The uids of people logged in locally now.
pub fn local_session_uids() -> Vec<u32> {
    local_sessions(Path::new(SESSIONS_DIR)).into_iter().map(|u| u.uid).collect()
}

/// The person at this machine: the user of the active local session (the seat's first),
/// else the agent's own user when that is a person rather than a system account (someone
/// running `keytally run` by hand in their desktop session).
pub fn logged_in_user() -> Option<LocalUser> {
    if let Some(u) = local_sessions(Path::new(SESSIONS_DIR)).into_iter().next() {
        return Some(u);
    }
    let uid = own_uid();
    (uid >= uid_min()).then(|| LocalUser { uid, name: user_name(uid).unwrap_or_else(|| uid.to_string()) })
}

/// The agent's own (effective) uid.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// The first uid of ordinary users (`UID_MIN` in /etc/login.defs, 1000 by default).
fn uid_min() -> u32 {
    std::fs::read_to_string("/etc/login.defs")
        .ok()
        .and_then(|t| t.lines().filter_map(|l| l.trim().strip_prefix("UID_MIN")).find_map(|v| v.trim().parse().ok()))
        .unwrap_or(1000)
}

/// The login name of `uid`, from the user database (files, LDAP, SSSD... whatever NSS has).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: pwd and result are written by getpwuid_r; buf outlives every use of the
        // pointers in pwd, and its length is what we pass.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name points into buf and is NUL-terminated (getpwuid_r succeeded).
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of a logind session file (systemd 252), trimmed.
    const SEAT_SESSION: &str = "# This is private data. Do not parse.\nUID=1000\nUSER=alice\nACTIVE=1\nIS_DISPLAY=1\nSTATE=active\nREMOTE=0\nTYPE=wayland\nCLASS=user\nSCOPE=session-2.scope\nSEAT=seat0\nVTNR=2\n";
    const SSH_SESSION: &str = "UID=1001\nUSER=bob\nACTIVE=1\nSTATE=active\nREMOTE=1\nTYPE=tty\nCLASS=user\nREMOTE_HOST=10.0.0.9\n";
    const GREETER: &str = "UID=112\nUSER=gdm\nACTIVE=1\nREMOTE=0\nCLASS=greeter\nSEAT=seat0\n";

    #[test]
    fn parses_a_logind_session_file() {
        let s = parse_session(SEAT_SESSION);
        assert_eq!(s, Session { uid: Some(1000), user: Some("alice".into()), active: true, remote: false, class: "user".into(), seat: Some("seat0".into()) });
    }

    #[test]
    fn only_active_local_people_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("2"), SEAT_SESSION).unwrap();
        std::fs::write(dir.path().join("7"), SSH_SESSION).unwrap();
        std::fs::write(dir.path().join("c1"), GREETER).unwrap();
        std::fs::write(dir.path().join("9"), SEAT_SESSION.replace("ACTIVE=1", "ACTIVE=0").replace("1000", "1002")).unwrap();
        assert_eq!(local_sessions(dir.path()), vec![LocalUser { uid: 1000, name: "alice".into() }]);
        assert!(local_sessions(&dir.path().join("missing")).is_empty());
    }

    #[cfg(unix)] // uid 0 is root only on Unix; Windows has no uids
    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_name(3_999_999_999), None);
    }
}
