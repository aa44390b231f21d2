//! `keytally completions SHELL` and `keytally manpage`: shell completions and the man page, generated from the clap definition.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "keytally", out);
}

/// Writes the roff man page to `out`.
pub fn write_manpage(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

pub fn completions(shell: Shell) -> ExitCode {
    write_completions(shell, &mut std::io::stdout().lock());
    ExitCode::SUCCESS
}

pub fn manpage() -> ExitCode {
    match write_manpage(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally manpage: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manpage_names_the_program_and_its_subcommands() {
        let mut out = Vec::new();
        write_manpage(&mut out).unwrap();
        let man = String::from_utf8(out).unwrap();
        assert!(man.contains("keytally"), "{man}");
        for sub in ["scan", "sync", "status", "run", "kiosk", "enroll", "doctor"] {
            assert!(man.contains(sub), "man page does not name `{sub}`:\n{man}");
        }
        // The hidden subcommands stay out of the page.
        assert!(!man.contains("manpage"), "{man}");
    }

    #[test]
    fn bash_completion_offers_scan() {
        let mut out = Vec::new();
        write_completions(Shell::Bash, &mut out);
        let bash = String::from_utf8(out).unwrap();
        assert!(bash.contains("scan"), "{bash}");
        assert!(bash.contains("keytally"), "{bash}");
    }
}
