//! The async runtime a command (or the push worker) runs its network work on.

use std::process::ExitCode;

/// A single-threaded async runtime, or the one-line error and exit code 1.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("keytally: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}
