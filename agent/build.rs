//! Link options of the `keytally` binary, on Linux with glibc. `keytally scan` is a short
//! process timed against a bare PC/SC client (tests/bench/scan.sh), so what its start costs
//! counts.
//!
//! - The unwinder (libgcc_eh.a) is linked in rather than loaded from libgcc_s.so.1, as
//!   `-static-libgcc` does: one shared library less to map and relocate at every start (about
//!   0.1 ms). Panics unwind as before. Where the compiler has no libgcc_eh.a, libgcc_s is used.
//!
//! keytally stays a position-independent executable. Linking it `-no-pie` saved about 0.2 ms
//! of a scan (its ~20,000 relative relocations and ~80 copied pages), and `-z
//! pack-relative-relocs` nothing measurable; a random base address for the code of a
//! long-running service that reads USB devices and parses what devices and servers
//! send is worth more than that.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let found = Command::new(cc).arg("-print-file-name=libgcc_eh.a").output().ok().and_then(|out| {
        let path = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        path.is_absolute().then_some(path)
    });
    if let Some(dir) = found.as_deref().and_then(std::path::Path::parent) {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static=gcc_eh");
    }
}
