//! Running under the service manager on Unix. systemd starts `keytally run` as it is (the
//! unit in installer/debian), so there is nothing to hand over; it stops the service with
//! SIGTERM; journald stamps every line itself, so the log leaves the time (and colours) out
//! under it.

use std::process::ExitCode;

use super::super::{Advice, RunService};

/// `doctor`'s advice on a systemd machine (the .deb's units).
pub const ADVICE: Advice = Advice {
    pcsc_service: "pcscd",
    start_pcsc: "sudo apt install pcscd && sudo systemctl enable --now pcscd.socket",
    restart_pcsc: "sudo systemctl restart pcscd; check `journalctl -u pcscd`",
    start_service: "sudo systemctl enable --now keytally; see `journalctl -u keytally`",
    ask_as_admitted: "run doctor as root or as the user logged in at this machine",
};

/// Never: systemd (or launchd, or a shell) runs `keytally run` directly.
pub fn run_if_started_by_it(_run: RunService, _init_logging: fn(u8)) -> Option<ExitCode> {
    None
}

/// Whether stderr goes to journald, which stamps each line with the time.
pub fn stamps_log_lines() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Resolves when the service manager asks the process to stop: SIGTERM. Never, when the
/// handler cannot be installed. Call it inside a tokio runtime.
pub async fn asked_to_stop() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(e) => {
            tracing::warn!("cannot handle SIGTERM: {e}");
            std::future::pending::<()>().await
        }
    }
}
