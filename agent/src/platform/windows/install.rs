//! What the MSI runs at install time, without PowerShell: a deferred custom action, as SYSTEM,
//! runs `keytally.exe install-config …` with the MSI's properties (keytally.wxs). Like
//! `service`, `install-config` is not a clap subcommand: [`super::service_manager`] hands it
//! here before clap sees the command line.
//!
//! ```text
//! keytally.exe install-config --data-dir DIR --server URL
//!     [--token TOKEN | --client-id ID --token-url URL --client-secret SECRET]
//! keytally.exe install-config --data-dir DIR --purge      (uninstall with PURGE=1)
//! keytally.exe install-config --service-recovery NAME     (every install and upgrade)
//! ```
//! An empty value counts as absent (an unset MSI property expands to ""). It checks the URLs
//! (one line and exit 1, so the install rolls back), gives DIR a protected ACL (SYSTEM and
//! Administrators only, inherited by everything in it), writes the secret to `DIR\secret`
//! under that ACL, and the non-secret settings to `HKLM\SOFTWARE\keytally` (where
//! [`super::settings`] reads them): `server`, `token_file` or `client_id` + `token_url` +
//! `client_secret_file`, and `state_dir`. The secret never goes to the registry or to any
//! output. Run without a server it changes nothing.
//!
//! `--service-recovery NAME` sets the service's failure actions (`ChangeServiceConfig2W`):
//! restart after 10 s on the first, second and later failures, the count reset after a day,
//! and only on a crash (the process ending without reporting Stopped): a service that stops
//! itself with an exit code (2: no usable configuration) stays stopped, as the README says.
//! The MSI runs it for both builds (wixl cannot build WiX's `ServiceConfig` elements).

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use windows_sys::Win32::Foundation::{LocalFree, ERROR_FILE_NOT_FOUND, ERROR_SUCCESS};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW,
    SetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{GetSecurityDescriptorDacl, ACL, DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR};
use windows_sys::Win32::System::Registry::{
    RegCloseKey, RegCreateKeyExW, RegDeleteTreeW, RegDeleteValueW, RegSetValueExW, HKEY, HKEY_LOCAL_MACHINE, KEY_WOW64_64KEY, KEY_WRITE,
    REG_OPTION_NON_VOLATILE, REG_SZ,
};

/// SYSTEM and Administrators: full control, inherited by files and folders; nothing from the
/// parent (ProgramData lets Users read).
pub const PROTECTED_SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";
/// The machine key the settings go to.
const MACHINE_KEY: &str = r"SOFTWARE\keytally";

/// The command line after `install-config`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    data_dir: Option<PathBuf>,
    server: Option<String>,
    token: Option<String>,
    client_id: Option<String>,
    token_url: Option<String>,
    client_secret: Option<String>,
    purge: bool,
    service_recovery: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--purge" {
            a.purge = true;
            continue;
        }
        let slot = match flag.as_str() {
            "--server" => &mut a.server,
            "--token" => &mut a.token,
            "--client-id" => &mut a.client_id,
            "--token-url" => &mut a.token_url,
            "--client-secret" => &mut a.client_secret,
            "--service-recovery" => &mut a.service_recovery,
            "--data-dir" => {
                a.data_dir = it.next().filter(|v| !v.is_empty()).map(PathBuf::from);
                continue;
            }
            other => return Err(format!("unknown argument {other:?}")),
        };
        let Some(v) = it.next() else { return Err(format!("{flag} needs a value")) };
        *slot = Some(v.clone()).filter(|v| !v.is_empty());
    }
    Ok(a)
}

/// `keytally install-config …`: exit 0, or 1 with one line (never containing a secret).
pub fn run(args: &[String]) -> ExitCode {
    match parse(args).and_then(|a| apply(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally: install-config: {e}");
            ExitCode::FAILURE
        }
    }
}

fn apply(a: &Args) -> Result<(), String> {
    if let Some(name) = &a.service_recovery {
        return set_failure_actions(name);
    }
    let dir = a.data_dir.as_deref().ok_or("--data-dir is missing")?;
    if a.purge {
        return purge(dir);
    }
    let Some(server) = &a.server else { return Ok(()) };
    keytally_protocol::http::parse_secure_url("SERVER_URL", server).map_err(|e| e.to_string())?;
    let oauth = a.client_id.is_some() || a.token_url.is_some() || a.client_secret.is_some();
    let (secret, settings): (&str, Vec<(&str, String)>) = if oauth {
        let (Some(id), Some(url), Some(secret)) = (&a.client_id, &a.token_url, &a.client_secret) else {
            return Err("CLIENT_ID, TOKEN_URL and CLIENT_SECRET go together".into());
        };
        if a.token.is_some() {
            return Err("give either API_TOKEN or CLIENT_SECRET, not both".into());
        }
        keytally_protocol::http::parse_secure_url("TOKEN_URL", url).map_err(|e| e.to_string())?;
        let file = dir.join("secret").display().to_string();
        (secret, vec![("client_id", id.clone()), ("token_url", url.clone()), ("client_secret_file", file)])
    } else {
        let Some(token) = &a.token else { return Err("SERVER_URL needs API_TOKEN, or CLIENT_ID + TOKEN_URL + CLIENT_SECRET".into()) };
        (token, vec![("token_file", dir.join("secret").display().to_string())])
    };
    std::fs::create_dir_all(dir.join("state")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    protect(dir)?;
    write_secret(&dir.join("secret"), secret)?;
    let mut values = vec![("server", server.clone()), ("state_dir", dir.join("state").display().to_string())];
    values.extend(settings);
    write_machine_settings(&values)?;
    // For whoever runs it by hand (the MSI discards it): the ACLs as they read back.
    for p in [dir.to_path_buf(), dir.join("secret")] {
        println!("{}: {}", p.display(), dacl_sddl(&p).unwrap_or_else(|e| e));
    }
    Ok(())
}

/// Gives `path` the protected SYSTEM + Administrators ACL ([`PROTECTED_SDDL`]).
pub fn protect(path: &Path) -> Result<(), String> {
    let sddl: Vec<u16> = PROTECTED_SDDL.encode_utf16().chain(Some(0)).collect();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated SDDL; `sd` is allocated by Windows and freed below.
    if unsafe { ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl.as_ptr(), SDDL_REVISION_1, &mut sd, std::ptr::null_mut()) } == 0 {
        return Err(format!("cannot build the ACL: {}", std::io::Error::last_os_error()));
    }
    let (mut present, mut defaulted) = (0, 0);
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd` is valid; `dacl` points into it.
    let got = unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) };
    let wide: Vec<u16> = path.as_os_str().to_string_lossy().encode_utf16().chain(Some(0)).collect();
    let rc = if got != 0 && present != 0 {
        // SAFETY: a NUL-terminated path and the DACL from `sd`, which lives until LocalFree.
        unsafe {
            SetNamedSecurityInfoW(
                wide.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                dacl,
                std::ptr::null(),
            )
        }
    } else {
        u32::MAX
    };
    // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
    unsafe { LocalFree(sd) };
    if rc != ERROR_SUCCESS {
        return Err(format!("cannot set the ACL of {}: error {rc}", path.display()));
    }
    Ok(())
}

/// The DACL of a file or folder as SDDL (how the installer's result is checked).
pub fn dacl_sddl(path: &Path) -> Result<String, String> {
    let wide: Vec<u16> = path.as_os_str().to_string_lossy().encode_utf16().chain(Some(0)).collect();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: out-parameters; `sd` is freed below.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(format!("cannot read the ACL of {}: error {rc}", path.display()));
    }
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sd` is valid; `text` is allocated by Windows and freed below.
    let ok = unsafe { ConvertSecurityDescriptorToStringSecurityDescriptorW(sd, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, &mut text, std::ptr::null_mut()) };
    let out = if ok != 0 && !text.is_null() {
        let mut len = 0;
        // SAFETY: NUL-terminated UTF-16 from Windows.
        while unsafe { *text.add(len) } != 0 {
            len += 1;
        }
        // SAFETY: `len` units were just read.
        Ok(String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) }))
    } else {
        Err(format!("cannot show the ACL of {}", path.display()))
    };
    // SAFETY: both allocated by Windows (LocalFree of null is a no-op).
    unsafe {
        LocalFree(text as *mut c_void);
        LocalFree(sd);
    }
    out
}

/// Replaces the secret file: created empty, given the protected ACL, then written.
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, b"").map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    protect(path)?;
    std::fs::write(path, format!("{secret}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes the settings to HKLM\SOFTWARE\keytally, removing the other credential style's.
fn write_machine_settings(values: &[(&str, String)]) -> Result<(), String> {
    let wide = |s: &str| -> Vec<u16> { s.encode_utf16().chain(Some(0)).collect() };
    let mut key: HKEY = std::ptr::null_mut();
    let path = wide(MACHINE_KEY);
    // SAFETY: NUL-terminated names; `key` is closed below.
    let rc = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            path.as_ptr(),
            0,
            std::ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_WRITE | KEY_WOW64_64KEY,
            std::ptr::null(),
            &mut key,
            std::ptr::null_mut(),
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(format!(r"cannot open HKLM\{MACHINE_KEY}: error {rc}"));
    }
    let mut result = Ok(());
    for stale in ["token_file", "client_id", "token_url", "client_secret_file"] {
        if !values.iter().any(|(n, _)| *n == stale) {
            let n = wide(stale);
            // SAFETY: a NUL-terminated value name.
            unsafe { RegDeleteValueW(key, n.as_ptr()) };
        }
    }
    for (name, value) in values {
        let n = wide(name);
        let v = wide(value);
        // SAFETY: REG_SZ data: the UTF-16 text with its NUL, `len` bytes.
        let rc = unsafe { RegSetValueExW(key, n.as_ptr(), 0, REG_SZ, v.as_ptr() as *const u8, (v.len() * 2) as u32) };
        if rc != ERROR_SUCCESS {
            result = Err(format!(r"cannot write HKLM\{MACHINE_KEY}\{name}: error {rc}"));
            break;
        }
    }
    // SAFETY: opened above.
    unsafe { RegCloseKey(key) };
    result
}

/// Restart after a delay, on a crash only; see the module's doc.
const RESTART_DELAY_MS: u32 = 10_000;
const RESET_PERIOD_S: u32 = 24 * 3600;

/// Sets the failure actions of service `name` (see the module's doc).
fn set_failure_actions(name: &str) -> Result<(), String> {
    use windows_sys::Win32::System::Services::{
        ChangeServiceConfig2W, CloseServiceHandle, OpenSCManagerW, OpenServiceW, SC_ACTION, SC_ACTION_RESTART, SC_MANAGER_CONNECT,
        SERVICE_CHANGE_CONFIG, SERVICE_CONFIG_FAILURE_ACTIONS, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, SERVICE_FAILURE_ACTIONSW,
        SERVICE_FAILURE_ACTIONS_FLAG, SERVICE_START,
    };
    let last = || std::io::Error::last_os_error();
    // SAFETY: the local SCM's active database.
    let scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT) };
    if scm.is_null() {
        return Err(format!("cannot open the Service Control Manager: {}", last()));
    }
    let wide_name: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
    // SAFETY: an open SCM handle and a NUL-terminated name. A restart action needs SERVICE_START.
    let service = unsafe { OpenServiceW(scm, wide_name.as_ptr(), SERVICE_CHANGE_CONFIG | SERVICE_START) };
    let result = if service.is_null() {
        Err(format!("cannot open the service {name}: {}", last()))
    } else {
        let mut actions = [SC_ACTION { Type: SC_ACTION_RESTART, Delay: RESTART_DELAY_MS }; 3];
        let failure = SERVICE_FAILURE_ACTIONSW {
            dwResetPeriod: RESET_PERIOD_S,
            lpRebootMsg: std::ptr::null_mut(),
            lpCommand: std::ptr::null_mut(),
            cActions: actions.len() as u32,
            lpsaActions: actions.as_mut_ptr(),
        };
        // Only a crash: a service that reports Stopped with an exit code is not restarted.
        let flag = SERVICE_FAILURE_ACTIONS_FLAG { fFailureActionsOnNonCrashFailures: 0 };
        // SAFETY: an open service handle and structures that outlive the calls.
        let r = if unsafe { ChangeServiceConfig2W(service, SERVICE_CONFIG_FAILURE_ACTIONS, &failure as *const _ as *const c_void) } == 0 {
            Err(format!("cannot set the failure actions of {name}: {}", last()))
        } else {
            // Off is also the default: a service manager without this level (Wine's answers
            // "not implemented") leaves it off, so its failure is said and not fatal.
            // SAFETY: as above.
            if unsafe { ChangeServiceConfig2W(service, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, &flag as *const _ as *const c_void) } == 0 {
                eprintln!("keytally: install-config: the failure actions flag of {name} was left as it was ({})", last());
            }
            Ok(())
        };
        // SAFETY: opened above.
        unsafe { CloseServiceHandle(service) };
        r
    };
    // SAFETY: opened above.
    unsafe { CloseServiceHandle(scm) };
    result
}

/// Uninstall with PURGE=1: the data folder and the machine key go.
fn purge(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    let path: Vec<u16> = MACHINE_KEY.encode_utf16().chain(Some(0)).collect();
    // SAFETY: a NUL-terminated subkey of HKLM.
    let rc = unsafe { RegDeleteTreeW(HKEY_LOCAL_MACHINE, path.as_ptr()) };
    if rc != ERROR_SUCCESS && rc != ERROR_FILE_NOT_FOUND {
        return Err(format!(r"cannot remove HKLM\{MACHINE_KEY}: error {rc}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_properties_are_absent() {
        let a = parse(&v(&["--data-dir", "C:\\d", "--server", "https://x.example/api", "--token", "", "--client-id", "", "--token-url", "", "--client-secret", "s"])).unwrap();
        assert_eq!((a.token, a.client_id, a.client_secret.as_deref()), (None, None, Some("s")));
        assert!(parse(&v(&["--bogus"])).unwrap_err().contains("unknown"));
        assert!(parse(&v(&["--server"])).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn bad_properties_are_one_line_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let e = apply(&parse(&v(&["--data-dir", &d, "--server", "not a url", "--token", "sekrit"])).unwrap()).unwrap_err();
        assert!(e.contains("SERVER_URL") && !e.contains("sekrit") && !e.contains('\n'), "{e}");
        let e = apply(&parse(&v(&["--data-dir", &d, "--server", "https://x.example/api", "--client-secret", "sekrit"])).unwrap()).unwrap_err();
        assert!(e.contains("go together") && !e.contains("sekrit"), "{e}");
        let e = apply(&parse(&v(&["--data-dir", &d, "--server", "https://x.example/api"])).unwrap()).unwrap_err();
        assert!(e.contains("needs API_TOKEN"), "{e}");
        // Nothing was written.
        assert!(!dir.path().join("secret").exists());
        // No server: nothing to do (an upgrade without properties).
        apply(&parse(&v(&["--data-dir", &d])).unwrap()).unwrap();
    }

    /// The secret file gets the protected ACL: on Windows it reads back as SYSTEM and
    /// Administrators only. Wine accepts the ACL but does not keep it for files (it derives
    /// one from the Unix mode: SYSTEM, the user, Everyone read), so there only the write is
    /// checked.
    #[test]
    fn the_secret_file_gets_the_protected_acl() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        write_secret(&f, "sekrit").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "sekrit\n");
        let sddl = dacl_sddl(&f).unwrap();
        if !super::super::under_wine() {
            assert!(sddl.starts_with("D:P") && sddl.contains(";;;SY)") && sddl.contains(";;;BA)") && !sddl.contains(";;;BU)") && !sddl.contains(";;;WD)"), "{sddl}");
        }
    }
}
