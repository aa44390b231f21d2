//! Turns the advisory table (`advisories.toml`, the one hand-maintained source) into JSON in
//! `OUT_DIR`, which `src/advisory.rs` embeds and parses at first use: the same rows, read with
//! the same serde schema and checks, but a JSON parse costs a tenth of a TOML parse, and every
//! process that makes a device record (`keytally scan` among them) pays it once.
//!
//! Only the syntax changes here: no field is renamed, added or dropped, and a file that is not
//! valid TOML fails the build with the parser's message. The schema's checks (unknown fields,
//! versions, dates, URLs) stay where they were, in `advisory::parse_table`, which the crate's
//! tests run on the TOML itself and compare with the embedded table.

use std::{env, fs, path::Path};

fn main() {
    let src = Path::new("advisories.toml");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=build.rs");
    let text = fs::read_to_string(src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", src.display()));
    let json = serde_json::to_string(&value).expect("a TOML document has a JSON form");
    let out = Path::new(&env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("advisories.json");
    fs::write(&out, json).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
