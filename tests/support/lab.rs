//! The PC/SC lab: an isolated real pcscd with the vpcd virtual reader
//! (`keytally_virtual_key::PcscLab`), virtual YubiKeys put on its reader, and Yubico's ykman
//! as the referee.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use keytally_virtual_key::lab::InsertedCard;
use keytally_virtual_key::model::KeyModel;
use keytally_virtual_key::{Card, PcscLab, ReaderModel};

use super::agent::KEYTALLY;
use super::skip::{skip, skip_part};

/// Runs the freshly built `keytally ARGS` against the lab's pcscd, with its state (the agent
/// id that serial-less keys' uniqueIds derive from) in `state_dir`.
pub fn keytally_in_lab(lab: &PcscLab, state_dir: &Path, args: &[&str]) -> Output {
    Command::new(KEYTALLY).args(args).envs(lab.env()).env("KEYTALLY_STATE_DIR", state_dir).output().expect("run keytally")
}

/// The lab with a plain reader; `None` (skipped, see [`skip`]) when pcscd or vpcd is not
/// installed.
pub fn lab() -> Option<PcscLab> {
    lab_as(ReaderModel::Plain)
}

/// The lab with its reader pretending to be `model`; `None` as for [`lab`].
pub fn lab_as(model: ReaderModel) -> Option<PcscLab> {
    match PcscLab::start_as(model) {
        Ok(lab) => Some(lab),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip(format!("the pcscd lab: {e}"));
            None
        }
        Err(e) => panic!("the pcscd lab did not start: {e}"),
    }
}

/// Puts `model` on the lab's reader and waits (10 s at most) until pcscd sees it.
pub fn insert(lab: &PcscLab, model: KeyModel) -> InsertedCard {
    let card = lab.insert(Card::new(model)).expect("insert the virtual key");
    card.wait_present(Duration::from_secs(10)).expect("pcscd sees the card");
    card
}

/// [`insert`] of one of `KeyModel`'s presets (`yk5nfc`, `skynfc`, …).
pub fn insert_preset(lab: &PcscLab, preset: &str) -> InsertedCard {
    insert(lab, KeyModel::preset(preset).unwrap_or_else(|| panic!("no preset {preset:?}")))
}

/// Yubico's ykman: `$KEYTALLY_YKMAN`, else the `.venv` that `tests/setup.sh` makes, else
/// `/tmp/ykvenv/bin/ykman`. `None` (the referee's part skipped, see [`skip_part`]) when none
/// is there.
pub fn ykman() -> Option<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = match std::env::var_os("KEYTALLY_YKMAN") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![workspace.join(".venv/bin/ykman"), PathBuf::from("/tmp/ykvenv/bin/ykman")],
    };
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Some(p.clone());
    }
    skip_part(format!("the referee: ykman not found at {candidates:?} (tests/setup.sh installs it, or set KEYTALLY_YKMAN)"));
    None
}
