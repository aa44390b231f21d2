//! `keytally-tray.exe`: what the MSI's Run value starts at logon. keytally.exe is a console
//! program, so started directly by the shell it would open a console window; this one is a
//! GUI-subsystem program (no console) that starts `keytally.exe tray` (next to it, with its own
//! arguments after `tray`) with `CREATE_NO_WINDOW` and exits at once.
//!
//! It does not wait for the tray: a waiting launcher would be a second process holding an
//! installed file, with no window the Restart Manager could close, so an MSI upgrade or
//! uninstall would have to kill it or ask for a reboot; the tray itself answers the Restart
//! Manager and the session's end, and registers for restart. Started twice, the second tray
//! exits by itself (one tray per session). Std only; nothing of the agent is linked in.
//!
//! On other systems it only says what it is for (`keytally tray` is the tray there).

#![cfg_attr(windows, windows_subsystem = "windows")]

use std::process::ExitCode;

#[cfg(windows)]
fn main() -> ExitCode {
    use std::os::windows::process::CommandExt;
    use std::process::{Command, Stdio};

    /// No console window for the console program (CreateProcess's creation flag).
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;

    let exe = match std::env::current_exe() {
        Ok(me) => me.with_file_name("keytally.exe"),
        Err(e) => {
            eprintln!("keytally-tray: cannot tell where this program is: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Standard output and error are passed on (nothing to see at logon; a test or a person
    // redirecting them sees the tray's).
    match Command::new(&exe).arg("tray").args(std::env::args_os().skip(1)).stdin(Stdio::null()).creation_flags(CREATE_NO_WINDOW).spawn() {
        Ok(_tray) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally-tray: cannot start {}: {e}", exe.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(windows))]
fn main() -> ExitCode {
    eprintln!("keytally-tray starts the Windows tray at logon; here, run `keytally tray`");
    ExitCode::from(2)
}
