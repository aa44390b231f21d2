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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find every attached YubiKey and print what it reports.
    Scan(ScanArgs),
    /// Scan, queue the records in the outbox, push them to every server profile, exit.
    /// Exit 0: outbox empty; 3: records stay queued; 2: bad configuration.
    Sync(SyncArgs),
    /// Show the outbox, quarantined records, last success/error and the credential in use.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Run one pass and exit (the only mode so far; required).
    #[arg(long, required = true)]
    pub once: bool,

    /// Only scan PC/SC readers whose name contains this text (case-insensitive).
    #[arg(long, value_name = "SUBSTR")]
    pub reader: Option<String>,
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

    /// Only scan PC/SC readers whose name contains this text (case-insensitive).
    #[arg(long, value_name = "SUBSTR")]
    pub reader: Option<String>,
}
