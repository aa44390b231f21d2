//! Link options of the `keytally` binary.
//!
//! On Linux (glibc), `keytally` is linked as a position-dependent executable (`-no-pie`): its
//! ~20,000 relative relocations are then resolved by the linker instead of by the dynamic
//! loader at every start, and the ~80 pages of relocated data are no longer copied on write.
//! `keytally scan` is a short process timed against a bare PC/SC client (tests/bench/scan.sh);
//! this was a quarter of a millisecond of its start-up. The code stays position-independent
//! (only the final link changes), the shared libraries, stack and heap are still placed at
//! random, and RELRO and immediate binding are kept; what is given up is a random base address
//! for keytally's own code and data.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bin=keytally=-no-pie");
    }
}
