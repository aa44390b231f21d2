//! keytally: finds every YubiKey attached to this machine and reports it.
//!
//! `main` only parses the command line and hands over to a command module.

mod agent_id;
mod arrivals;
mod cli;
mod commands;
mod config;
mod control;
#[cfg(unix)]
mod control_server;
mod keyring;
mod logging;
mod outbox;
mod pusher;
mod session;
mod status_board;
mod sync;
mod tray_menu;
#[cfg(windows)]
mod windows_service;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    #[cfg(windows)]
    if let Some(code) = windows_service::dispatch_if_service() {
        return code;
    }
    let cli = cli::Cli::parse();
    logging::init(cli.verbose);
    commands::run(cli)
}
