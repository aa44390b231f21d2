//! Dispatch from a parsed command line to the command that runs it.

pub mod docs;
pub mod doctor;
pub mod enroll;
pub mod run;
pub mod scan;
pub mod secret;
pub mod status;
pub mod sync;
#[cfg(any(windows, all(unix, not(target_os = "macos"))))]
pub mod tray;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Scan(args) => scan::run(cli.config.as_deref(), &args),
        Command::Sync(args) => sync::run(cli.config.as_deref(), args.reader.as_deref(), args.records.as_deref()),
        Command::Status(args) => status::run(cli.config.as_deref(), args.json),
        Command::Doctor => doctor::run(cli.config.as_deref()),
        Command::Secret(cmd) => secret::run(cli.config.as_deref(), &cmd),
        Command::Completions { shell } => docs::completions(shell),
        Command::Manpage => docs::manpage(),
        Command::Enroll(args) => enroll::run(cli.config.as_deref(), &args),
        #[cfg(any(windows, all(unix, not(target_os = "macos"))))]
        Command::Tray(args) => tray::run(&args),
        #[cfg(not(any(windows, all(unix, not(target_os = "macos")))))]
        Command::Tray(_) => {
            eprintln!("keytally tray: not available on this platform yet (the tray is a freedesktop StatusNotifierItem or a Windows notification-area icon)");
            ExitCode::from(2)
        }
        Command::Run(args) => run::run(cli.config.as_deref(), &args),
        Command::Kiosk(mut args) => {
            args.kiosk = true;
            run::run(cli.config.as_deref(), &args)
        }
    }
}
