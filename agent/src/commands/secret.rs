//! `keytally secret set|check --profile NAME`: put a profile's secret into the OS keyring
//! entry its configuration names (`token_keyring` or `client_secret_keyring`), or check that
//! the entry can be read. The value is read from standard input (typed without echo on a
//! terminal, or piped), never from the command line, and is never printed.
//! Exit 0 on success, 1 when the keyring fails, 2 for a configuration problem.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use keytally_protocol::secret::Secret;

use crate::cli::SecretCommand;
use crate::config::{load_config, Profile};
use crate::exit::EXIT_CONFIG;
use crate::keyring::{self, KeyringEntry};

/// The longest `secret set` waits for the value on standard input.
const INPUT_TIMEOUT: Duration = Duration::from_secs(300);
/// The most bytes read from standard input (a token is far shorter).
const INPUT_LIMIT: u64 = 64 * 1024;

pub fn run(config_path: Option<&Path>, cmd: &SecretCommand) -> ExitCode {
    let (SecretCommand::Set(args) | SecretCommand::Check(args)) = cmd;
    let cfg = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(p) = cfg.profiles.iter().find(|p| p.name == args.profile) else {
        let names: Vec<&str> = cfg.profiles.iter().map(|p| p.name.as_str()).collect();
        eprintln!("keytally: no profile {} in {} (profiles: {})", args.profile, cfg.file, if names.is_empty() { "none".into() } else { names.join(", ") });
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some((entry, what)) = p.keyring_entry() else {
        eprintln!(
            "keytally: profile {} does not read its secret from the keyring: add token_keyring = {{ user = \"{}\" }} (or client_secret_keyring) to [profiles.{}] in {}",
            p.name, p.name, p.name, cfg.file
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let result = match cmd {
        SecretCommand::Set(_) => set(p, entry, what),
        SecretCommand::Check(_) => keyring::get(entry, keyring::READ_TIMEOUT)
            .map(|_| format!("keyring entry {entry} holds the {what} for profile {} (value not shown)", p.name))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keytally: profile {}: {e}", p.name);
            ExitCode::FAILURE
        }
    }
}

fn set(p: &Profile, entry: &KeyringEntry, what: &str) -> Result<String, String> {
    let secret = read_value(&format!("{what} for profile {} (input not shown): ", p.name))?;
    let label = format!("keytally {what} for profile {} ({})", p.name, p.server);
    keyring::set(entry, &label, &secret, keyring::WRITE_TIMEOUT).map_err(|e| e.to_string())?;
    // Read it back: another item with the same attributes would shadow the new one.
    match keyring::get(entry, keyring::READ_TIMEOUT) {
        Ok(back) if back == secret => Ok(format!("stored the {what} for profile {} in keyring entry {entry}", p.name)),
        Ok(_) => Err(format!("stored, but keyring entry {entry} reads back a different value: remove the other items with service={} username={}", entry.service, entry.user)),
        Err(e) => Err(format!("stored, but reading it back failed: {e}")),
    }
}

/// The secret from standard input: typed without echo when it is a terminal, else everything
/// piped in (surrounding whitespace dropped). Given up after `INPUT_TIMEOUT`.
fn read_value(prompt: &str) -> Result<Secret, String> {
    let prompt = prompt.to_owned();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let text = if stdin.is_terminal() {
                rpassword::prompt_password(prompt)
            } else {
                let mut buf = String::new();
                stdin.lock().take(INPUT_LIMIT).read_to_string(&mut buf).map(|_| buf)
            };
            let _ = tx.send(text.map(|mut t| {
                let s = Secret::new(t.trim());
                zeroize::Zeroize::zeroize(&mut t);
                s
            }));
        })
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let secret = match rx.recv_timeout(INPUT_TIMEOUT) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("cannot read the value from standard input: {e}")),
        Err(_) => return Err(format!("no value on standard input within {}s", INPUT_TIMEOUT.as_secs())),
    };
    if secret.is_empty() {
        return Err("nothing on standard input: type the value, or pipe it in (keytally secret set --profile NAME < FILE)".into());
    }
    Ok(secret)
}
