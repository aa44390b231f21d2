//! `keytally run` (the workstation service) and `keytally kiosk` (a headless NFC tap
//! station): load the config, then run the [`service`](crate::service) or the
//! [`kiosk`](crate::kiosk) until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::config::load_server_config;
use crate::pusher::PushTiming;

pub fn run(config_path: Option<&Path>, args: &RunArgs) -> ExitCode {
    let cfg = match load_server_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let timing = PushTiming { push_timeout: args.push_timeout, retry_every: args.retry_every, announce_delivery: args.kiosk };
    let ran = if args.kiosk {
        crate::kiosk::run(cfg, args.reader.as_deref(), args.merge_window, timing)
    } else {
        crate::service::run(cfg, args.reader.as_deref(), timing)
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally: {e:#}");
            ExitCode::FAILURE
        }
    }
}
