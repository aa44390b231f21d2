//! `keytally enroll`: the IT enrollment desk (see [`desk`](crate::desk)).

use std::path::Path;
use std::process::ExitCode;

use crate::cli::EnrollArgs;
use crate::config::load_server_config;

pub fn run(config_path: Option<&Path>, args: &EnrollArgs) -> ExitCode {
    let cfg = match load_server_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::desk::run(cfg, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally: {e:#}");
            ExitCode::FAILURE
        }
    }
}
