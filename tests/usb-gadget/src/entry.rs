//! `keytally-gadget`'s entry: the gadget is Linux only (configfs + FunctionFS, src/main.rs);
//! elsewhere the binary says so, so that `cargo check --workspace` builds for every target.

#[cfg(target_os = "linux")]
#[path = "main.rs"]
mod gadget;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    gadget::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("keytally-gadget: a Linux USB gadget (configfs + FunctionFS); not available on this platform");
    std::process::ExitCode::from(2)
}
