//! The process exit codes the commands share (besides 0 for success and 1 for any other error).

/// A bad configuration (or bad input named on the command line).
pub const EXIT_CONFIG: u8 = 2;
/// `sync --once`: records stay queued for the next sync.
pub const EXIT_PENDING: u8 = 3;
/// `scan`: no transport at all could be scanned.
pub const EXIT_NO_TRANSPORT: u8 = 2;
