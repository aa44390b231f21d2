//! What every test of the `keytally` binary shares: the end-to-end tests (`tests/e2e/*.rs`)
//! and the kiosk benchmark (`tests/bench/kiosk.rs`) include it as
//! `#[path = "../support/mod.rs"] mod support;`.
//!
//! - [`skip`]: a test whose real component (pcscd, vpcd, tmux, Xvfb, gnome-keyring, ykman…)
//!   is missing fails with the reason under `CI=true`, and elsewhere says it was skipped and
//!   is counted by `tests/run.sh`.
//! - [`lab`]: the isolated pcscd with the virtual reader, virtual keys on it, ykman the referee.
//! - [`agent`]: the freshly built `keytally` binary, the sandbox server, config files.
//! - [`wait`]: waiting for something with a deadline.

#![allow(dead_code, unused_imports)] // each test binary uses its own part of this module

pub mod agent;
pub mod lab;
pub mod skip;
pub mod wait;

pub use agent::*;
pub use lab::*;
pub use skip::*;
pub use wait::*;
