//! keytally: finds every YubiKey attached to this machine and reports it.
//!
//! `main` only parses the command line and hands over to a command module.

mod advisories;
mod agent_id;
mod checks;
mod cli;
mod clients;
mod commands;
mod config;
mod control;
mod desk;
mod exit;
mod inventory;
mod keyring;
mod kiosk;
mod logging;
mod outbox;
mod platform;
mod posture;
mod pusher;
mod runtime;
mod service;
mod status_report;
mod sync;
mod tray;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Started by the OS's service manager (the Windows SCM): run as its service.
    if let Some(code) = platform::service_manager::run_if_started_by_it(commands::run::run, logging::init) {
        return code;
    }
    let cli = cli::Cli::parse();
    logging::init(cli.verbose);
    commands::run(cli)
}
