//! Log set-up: lines on stderr, level from `-v` or `RUST_LOG`; plain (no colours, no
//! timestamps) under systemd, where journald adds its own.
//!
//! `RUST_LOG` takes a level and per-target levels (`debug`, `info,zbus=warn`), read with
//! tracing-subscriber's `Targets` rather than `EnvFilter`: keytally has no use for span and
//! field filters, and `EnvFilter` brings a regex engine into every process (a larger binary
//! and more to load at each `keytally scan`).

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

pub fn init(verbose: u8) {
    let filter = filter(verbose, std::env::var("RUST_LOG").ok().as_deref());
    let under_journald = crate::platform::service_manager::stamps_log_lines();
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && !under_journald);
    let _ = if under_journald {
        tracing_subscriber::registry().with(layer.without_time().with_filter(filter)).try_init()
    } else {
        tracing_subscriber::registry().with(layer.with_filter(filter)).try_init()
    };
}

/// The filter from `RUST_LOG` when it is set and valid, else from `-v`. A `RUST_LOG` that is
/// not a filter is said once on stderr (logging is not set up yet) and left aside.
fn filter(verbose: u8, rust_log: Option<&str>) -> Targets {
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) => spec.parse().unwrap_or_else(|e| {
            eprintln!("keytally: RUST_LOG={spec:?} is not a log filter ({e}); logging at {level}");
            Targets::new().with_default(level)
        }),
        None => Targets::new().with_default(level),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn verbosity_sets_the_level_when_rust_log_is_unset_or_empty() {
        for rust_log in [None, Some(""), Some("  ")] {
            let f = filter(0, rust_log);
            assert!(f.would_enable("keytally", &Level::WARN));
            assert!(!f.would_enable("keytally", &Level::INFO));
        }
        assert!(filter(1, None).would_enable("keytally", &Level::INFO));
        assert!(filter(2, None).would_enable("keytally_device", &Level::DEBUG));
        assert!(filter(3, None).would_enable("zbus", &Level::TRACE));
    }

    #[test]
    fn rust_log_takes_a_level_and_per_target_levels_and_wins_over_verbosity() {
        let f = filter(0, Some("debug,zbus=warn"));
        assert!(f.would_enable("keytally", &Level::DEBUG));
        assert!(f.would_enable("zbus::connection", &Level::WARN));
        assert!(!f.would_enable("zbus::connection", &Level::INFO));
        assert!(!filter(3, Some("error")).would_enable("keytally", &Level::WARN));
    }

    #[test]
    fn a_rust_log_that_is_not_a_filter_falls_back_to_verbosity() {
        let f = filter(1, Some("keytally=loud"));
        assert!(f.would_enable("keytally", &Level::INFO));
        assert!(!f.would_enable("keytally", &Level::DEBUG));
    }
}
