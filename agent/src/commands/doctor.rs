//! `keytally doctor`: is this installation sound? One line per check, with a fix for each
//! one that fails: the configuration loads and names a server, pcscd answers, the udev rules
//! are installed, the service answers on its control socket, secret files are private (and
//! owned by the service user), and each server profile is reachable with a valid credential
//! (one cheap authorized `GET devices?limit=1`).
//! Exit 0 when nothing failed, 1 otherwise (warnings do not fail).

use std::path::Path;
use std::process::ExitCode;

use crate::checks::{exit_code, run_all};

pub fn run(config_path: Option<&Path>) -> ExitCode {
    let mut checks = Vec::new();
    run_all(config_path, &mut |c| {
        println!("{c}");
        checks.push(c);
    });
    ExitCode::from(exit_code(&checks))
}
