//! Log set-up: lines on stderr, level from `-v` or `RUST_LOG`; plain (no colours, no
//! timestamps) under systemd, where journald adds its own.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let under_journald = crate::platform::service_manager::stamps_log_lines();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && !under_journald);
    let _ = if under_journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}
