//! Link options of the `keytally` binary, on Linux with glibc. `keytally scan` is a short
//! process timed against a bare PC/SC client (tests/bench/scan.sh), so what its start costs
//! counts.
//!
//! - `-no-pie`: `keytally` is linked as a position-dependent executable: its ~20,000 relative
//!   relocations are resolved by the linker instead of by the dynamic loader at every start,
//!   and the ~80 pages of relocated data are no longer copied on write (a quarter of a
//!   millisecond of a scan). The code stays position-independent (only the final link
//!   changes), the shared libraries, stack and heap are still placed at random, and RELRO and
//!   immediate binding are kept; what is given up is a random base address for keytally's own
//!   code and data.
//! - The unwinder (libgcc_eh.a) is linked in rather than loaded from libgcc_s.so.1, as
//!   `-static-libgcc` does: one shared library less to map and relocate at every start (about
//!   0.1 ms). Panics unwind as before. Where the compiler has no libgcc_eh.a, libgcc_s is used.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bin=keytally=-no-pie");
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
