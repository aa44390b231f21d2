//! Skipping honestly. A test that cannot find a real component it needs calls [`skip`] (the
//! whole test) or [`skip_part`] (one part; the rest still runs) with the reason and how to
//! install what is missing:
//! - under `CI=true` that panics: CI installs everything (`tests/setup.sh`), so a missing
//!   component there is a failure, with the reason;
//! - elsewhere it prints `SKIP  test|part <test binary>::<test>: <why>` on stderr (past
//!   libtest's capture, so it shows next to `ok`) and appends the same line to the file named
//!   by `$KEYTALLY_SKIP_LOG` (set by `tests/run.sh`, whose closing line counts the skips).
//!
//! [`skip_part_unprivileged`] is for a part that needs root rather than a component: it is
//! reported the same way but never fails, under CI or not.

use std::fmt::Display;
use std::io::Write;

/// `CI=true`: every component is installed, so a missing one is a failure.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The whole test cannot run without a missing component: fails under CI, else reports the
/// skip. The caller returns right after.
pub fn skip(why: impl Display) {
    missing("test", why)
}

/// One part of the test cannot run without a missing component: fails under CI, else
/// reports the skip. The caller leaves that part out and goes on.
pub fn skip_part(why: impl Display) {
    missing("part", why)
}

/// One part of the test needs root: reported as skipped, never a failure.
pub fn skip_part_unprivileged(why: impl Display) {
    report("part", &why.to_string())
}

/// `tool` is a file on `$PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// `true` when every tool is on `$PATH`; otherwise [`skip`] (naming the missing ones and
/// `install`, what to install) and `false`.
pub fn require_tools(tools: &[&str], install: &str) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    skip(format!("{} not installed ({install}, or run tests/setup.sh)", missing.join(", ")));
    false
}

fn missing(kind: &str, why: impl Display) {
    let why = why.to_string();
    assert!(!ci(), "CI=true, so every component must be installed: {why}");
    report(kind, &why)
}

/// `kind`: `test` (a whole test: run.sh takes it out of the passed ones), `part`, or `check`
/// (not a libtest test, e.g. a benchmark's `main`).
fn report(kind: &str, why: &str) {
    let thread = std::thread::current();
    // libtest runs each test on a thread named after it; a harness-less binary runs on "main".
    let (kind, name) = match thread.name() {
        Some(test) if test != "main" => (kind, format!("{}::{test}", env!("CARGO_CRATE_NAME"))),
        _ => ("check", env!("CARGO_CRATE_NAME").to_owned()),
    };
    let line = format!("SKIP  {kind:<5} {name}: {why}\n");
    // Straight to the stream: eprintln! would be captured (and hidden) for a passing test.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("KEYTALLY_SKIP_LOG") {
        // One write of one short line with O_APPEND: lines from parallel tests do not mix.
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log);
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            panic!("cannot record the skip in {}: {e}", std::path::Path::new(&log).display());
        }
    }
}
