//! The command line: every subcommand and flag keytally accepts.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "keytally", version, about = "YubiKey inventory agent")]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Configuration file (default: the platform's config directory).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

// `defer`: a subcommand's arguments are built only when it is the one run (or when help, the
// man page or the completions list them); building every subcommand's arguments was most of
// what clap did for `keytally scan`, whose start-up is timed against a bare PC/SC client
// (tests/bench/scan.sh).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Find every attached YubiKey and print what it reports.
    Scan(ScanArgs),
    /// Scan, queue the records in the outbox, push them to every server profile, exit.
    /// Exit 0: outbox empty; 3: records stay queued; 2: bad configuration.
    Sync(SyncArgs),
    /// Show the outbox, quarantined records, last success/error and the credential in use.
    Status(StatusArgs),
    /// The service: watch for keys coming and going, push every change, heartbeat.
    Run(RunArgs),
    /// Headless NFC tap station (`run --kiosk`): read, record and push every tap; one line each.
    Kiosk(RunArgs),
    /// IT enrollment desk: plug or tap keys one after another and assign owner, tags, status.
    Enroll(EnrollArgs),
    /// Workstation tray icon (run as the logged-in user): the attached keys, the last sync and
    /// warnings from the running service, "Sync now" and "Quit". `--once` prints the menu.
    Tray(TrayArgs),
    /// Check this installation: config, pcscd, udev rules, secret files, each server and
    /// credential. One line per check with a fix; exit 0 when all pass, 1 otherwise.
    Doctor,
    /// Put a profile's secret into the OS keyring (read from standard input), or check it.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print the shell completion script for SHELL on stdout.
    #[command(hide = true)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The owner's email address for every key (asked for each key when not given).
    #[arg(long, value_name = "EMAIL")]
    pub owner: Option<String>,

    /// Tags for every key, comma-separated (asked for when not given).
    #[arg(long, value_name = "LIST")]
    pub tags: Option<String>,

    /// Status for every key, e.g. Active or Shared (asked for when not given).
    #[arg(long, value_name = "NAME")]
    pub status: Option<String>,

    /// Stop after this many keys (otherwise Ctrl-C stops and prints the summary).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Append every enrolled key to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<std::path::PathBuf>,

    /// Only watch PC/SC readers whose name contains this text (case-insensitive).
    #[arg(long, value_name = "SUBSTR")]
    pub reader: Option<String>,

    /// How long a push may take before the key is reported as queued.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub push_timeout: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kiosk mode: one line per tap on stdout, taps of one key merged (see `keytally kiosk`).
    #[arg(long)]
    pub kiosk: bool,

    /// Only watch PC/SC readers whose name contains this text (case-insensitive).
    #[arg(long, value_name = "SUBSTR")]
    pub reader: Option<String>,

    /// Kiosk: taps of the same key within this window are merged into one.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub merge_window: std::time::Duration,

    /// How long a push may take before its records are reported as queued (they are
    /// retried in the background).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub push_timeout: std::time::Duration,

    /// How often queued records are retried while the outbox is not empty (the sync
    /// scheduler's backoff still applies).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_every: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Run one pass and exit (the only mode so far; required).
    #[arg(long, required = true)]
    pub once: bool,

    /// Only scan PC/SC readers whose name contains this text (case-insensitive).
    #[arg(long, value_name = "SUBSTR")]
    pub reader: Option<String>,

    /// Queue the device records in this JSON file (an array, as `scan --json` prints)
    /// instead of scanning.
    #[arg(long, value_name = "FILE", conflicts_with = "reader")]
    pub records: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Print a JSON array of device records instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Only scan PC/SC readers whose name contains this text (case-insensitive). USB HID
    /// nodes are then not scanned.
    #[arg(long, value_name = "SUBSTR")]
    pub reader: Option<String>,

    /// The USB interfaces to read keys through, in the order to try them. A key is read
    /// once, through the first interface that answers; an interface left out is never
    /// opened (`otp,fido` leaves YubiKeys' own CCID readers alone).
    #[arg(long, value_name = "LIST", default_value = "ccid,otp,fido")]
    pub interfaces: keytally_device::enumerate::InterfaceOrder,

    /// Also read each key's posture (default PINs, retries, FIDO2 PIN, OATH password, OTP
    /// slots): more APDUs, never a PIN, a touch or a write. JSON: `observation.posture`.
    #[arg(long)]
    pub posture: bool,
}

#[derive(Debug, clap::Args)]
pub struct TrayArgs {
    /// Print the menu the tray would show, as text, and exit (no GUI). Exit 1 when the
    /// service is not running or refuses this user.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Store the profile's API token or client secret in the OS keyring entry its
    /// configuration names (token_keyring or client_secret_keyring). The value is read from
    /// standard input: typed without echo on a terminal, or piped in.
    Set(SecretArgs),
    /// Read the profile's keyring entry and say whether it holds a secret (never the value).
    Check(SecretArgs),
}

#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    /// The server profile ([profiles.NAME] in the configuration).
    #[arg(long, value_name = "NAME")]
    pub profile: String,
}
