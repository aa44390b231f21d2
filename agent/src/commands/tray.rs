//! `keytally tray`: the workstation's tray icon (see [`tray`](crate::tray)), or with `--once`
//! the menu it would show, as text.

use std::process::ExitCode;

use crate::cli::TrayArgs;
use crate::tray::{self, Ended};

pub fn run(args: &TrayArgs) -> ExitCode {
    if args.once {
        return match tray::menu_text() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keytally tray: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match tray::run() {
        Ok(Ended::Quit) => ExitCode::SUCCESS,
        Ok(Ended::NoHost(why)) => {
            eprintln!("keytally tray: no StatusNotifier host on this desktop ({why}); the service runs without the tray");
            ExitCode::SUCCESS
        }
        Ok(Ended::AlreadyRunning) => {
            eprintln!("keytally tray: a keytally tray is already running in this session; not starting another");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keytally tray: {e}");
            ExitCode::FAILURE
        }
    }
}
