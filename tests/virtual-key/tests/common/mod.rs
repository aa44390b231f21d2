//! What the lab tests share: finding ykman and pcscd, running ykman against one reader.
//!
//! ykman is taken from `$KEYTALLY_YKMAN`, else the workspace's `.venv/bin/ykman` (what
//! tests/setup.sh installs), else `/tmp/ykvenv/bin/ykman`. Without it (or without pcscd) a test
//! is reported as skipped (and counted by tests/run.sh), except under `CI=true`, where that is a
//! failure: tests/support/skip.rs, shared with the agent's end-to-end tests.
#![allow(dead_code)]

#[path = "../../../support/skip.rs"]
mod skip;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use keytally_virtual_key::{Card, InsertedCard, KeyModel, PcscLab};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn ykman() -> Option<PathBuf> {
    let workspace_venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/ykman");
    std::env::var_os("KEYTALLY_YKMAN")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace_venv, "/tmp/ykvenv/bin/ykman".into()])
        .find(|p| p.is_file())
}

pub fn require_tools() -> Option<PathBuf> {
    let Some(ykman) = ykman() else {
        skip::skip("ykman not found at $KEYTALLY_YKMAN, .venv/bin/ykman or /tmp/ykvenv/bin/ykman (tests/setup.sh installs it)");
        return None;
    };
    Some(ykman)
}

/// The Python that runs ykman (it has pyscard, used as a raw PC/SC referee).
pub fn ykman_python(ykman: &std::path::Path) -> PathBuf {
    ykman.with_file_name("python3")
}

pub fn skip_or_panic(e: std::io::Error) -> Option<PcscLab> {
    if e.kind() == std::io::ErrorKind::NotFound {
        skip::skip(format!("the pcscd lab: {e}"));
        None
    } else {
        panic!("lab failed to start: {e}")
    }
}

pub fn start_lab() -> Option<PcscLab> {
    PcscLab::start().map_or_else(skip_or_panic, Some)
}

/// `ykman --reader READER ARGS…` against `lab`: (exit ok, stdout + stderr).
pub fn ykman_at(ykman: &PathBuf, lab: &PcscLab, reader: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(ykman)
        .args(["--reader", reader])
        .args(args)
        .envs(lab.env())
        .output()
        .expect("run ykman");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `ykman info` on the lab's first reader.
pub fn ykman_info(ykman: &PathBuf, lab: &PcscLab) -> (bool, String) {
    ykman_at(ykman, lab, lab.reader_name(), &["info"])
}

/// The value after `name` on the first line that starts with it.
pub fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
}

/// Taps `model` on the lab's first reader and waits until pcscd has powered it.
pub fn tap(lab: &PcscLab, model: KeyModel) -> InsertedCard {
    lab.tap(0, Card::new(model), Duration::from_secs(10))
        .expect("tap")
}
