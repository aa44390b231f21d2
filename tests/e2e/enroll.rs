//! `keytally enroll` driven as a person at the IT desk would: in a real terminal (tmux), with
//! keys typed at its prompts through send-keys and the screen read with capture-pane, while
//! virtual keys are tapped on an isolated pcscd and the sandbox server takes the records.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keytally_virtual_key::PcscLab;

#[path = "../support/mod.rs"]
mod support;

use support::{insert_preset, KEYTALLY};

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(command: &[&str], env: &[(String, String)]) -> Tmux {
        let session = format!("keytally-enroll-{}-{}", std::process::id(), rand_suffix());
        let mut cmd = Command::new("tmux");
        cmd.args(["new-session", "-d", "-s", &session, "-x", "200", "-y", "50"]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        cmd.args(command);
        assert!(cmd.status().unwrap().success(), "tmux new-session");
        let _ = Command::new("tmux").args(["set-option", "-t", &session, "remain-on-exit", "on"]).status();
        Tmux { session }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-J", "-S", "-200", "-t", &self.session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` at least `times` times.
    fn wait_for(&self, text: &str, times: usize) {
        let t = Instant::now();
        while self.screen().matches(text).count() < times {
            assert!(t.elapsed() < Duration::from_secs(15), "the screen never showed {text:?} ({times}x):\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_line(&self, text: &str) {
        if !text.is_empty() {
            assert!(Command::new("tmux").args(["send-keys", "-t", &self.session, "-l", text]).status().unwrap().success());
        }
        assert!(Command::new("tmux").args(["send-keys", "-t", &self.session, "Enter"]).status().unwrap().success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).status();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

fn env_for(lab: &PcscLab, sb: &keytally_sandbox::Sandbox, state: &Path) -> Vec<(String, String)> {
    let mut env = lab.env();
    env.extend(support::client_env(sb));
    env.push(("KEYTALLY_STATE_DIR".into(), state.display().to_string()));
    env
}

#[test]
fn an_it_desk_enrolls_keys_one_after_another() {
    if !support::require_tools(&["tmux"], "apt install tmux") {
        return;
    }
    let Some(lab) = support::lab() else { return };
    let sb = support::sandbox();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("enrolled.csv");
    let env = env_for(&lab, &sb, &dir.path().join("state"));

    // Two keys, everything asked at the prompts.
    let desk = Tmux::start(&[KEYTALLY, "enroll", "--count", "2", "--csv", csv.to_str().unwrap()], &env);
    desk.wait_for("Waiting for a key", 1);
    let card = insert_preset(&lab, "yk5nfc");
    desk.wait_for("Found: YubiKey 5 NFC  serial 12345678", 1);
    desk.wait_for("Advisories: YSA-2024-02, YSA-2024-03, YSA-2025-02", 1);
    desk.wait_for("Owner email: ", 1);
    desk.type_line("not-an-email");
    desk.wait_for("is not an email address", 1);
    desk.type_line("alice@example.com");
    desk.wait_for("Tags (comma-separated", 1);
    desk.type_line("laptop, desk");
    desk.wait_for("Status [Active]: ", 1);
    desk.type_line("");
    desk.wait_for("Enrolled YubiKey 5 NFC (12345678) to alice@example.com: synced", 1);
    desk.wait_for("Remove the key to continue.", 1);
    card.remove().unwrap();
    desk.wait_for("(1 enrolled so far)", 1);

    let card = insert_preset(&lab, "skynfc");
    desk.wait_for("Found: Security Key NFC  serial none", 1);
    desk.wait_for("Owner email: ", 2);
    desk.type_line("bob@example.com");
    desk.wait_for("Tags (comma-separated", 2);
    desk.type_line("");
    desk.wait_for("Status [Active]: ", 2);
    desk.type_line("Shared");
    desk.wait_for("to bob@example.com: synced", 1);
    card.remove().unwrap();
    desk.wait_for("Enrolled 2 key(s): 2 synced, 0 queued.", 1);
    println!("--- the desk's screen ---\n{}", desk.screen());

    let alice = sb.store().device("12345678").expect("on the server");
    assert_eq!(alice["owners"]["items"][0]["email"], "alice@example.com");
    assert_eq!(alice["tags"][0]["name"], "laptop");
    assert_eq!(alice["tags"][1]["name"], "desk");
    assert_eq!(alice["status"]["name"], "Active");
    let rows = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), 3, "header and two keys: {rows:?}");
    assert!(rows[0].starts_with("enrolled_at,unique_id,serial,name"));
    assert!(rows[1].contains(",12345678,12345678,YubiKey 5 NFC,5.4.3,alice@example.com,\"laptop, desk\",Active,synced"), "{}", rows[1]);
    assert!(rows[2].contains("Security Key NFC") && rows[2].contains("bob@example.com,,Shared,synced"), "{}", rows[2]);
    drop(desk);

    // The same key again, with everything given as flags: it is flagged as already enrolled
    // before its owner is overwritten.
    let desk = Tmux::start(&[KEYTALLY, "enroll", "--owner", "carol@example.com", "--tags", "loaner", "--status", "Shared", "--count", "1"], &env);
    desk.wait_for("Waiting for a key", 1);
    let card = insert_preset(&lab, "yk5nfc");
    desk.wait_for("! This key is already enrolled to alice@example.com.", 1);
    desk.wait_for("Overwrite its owner? [y/N]: ", 1);
    desk.type_line("y");
    desk.wait_for("to carol@example.com: synced", 1);
    card.remove().unwrap();
    desk.wait_for("Enrolled 1 key(s): 1 synced, 0 queued.", 1);
    assert_eq!(sb.store().device("12345678").unwrap()["owners"]["items"][0]["email"], "carol@example.com");
}

/// Issue 12 §1/§2 at the desk, with four readers: a card that stalls one reader (40 s READ
/// CONFIG) and a key in NFC restricted mode on another do not hold up the key tapped on a
/// third; the restricted key is named with what to do (plug it in, the desk waits for it over
/// USB), and the stalled one is given up at the desk's read deadline with one line.
#[test]
fn a_desk_reads_past_a_stalled_reader_and_names_a_restricted_key() {
    if !support::require_tools(&["tmux"], "apt install tmux") {
        return;
    }
    let lab = match PcscLab::start_readers(4) {
        Ok(lab) => lab,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return support::skip(format!("the pcscd lab: {e}")),
        Err(e) => panic!("the pcscd lab did not start: {e}"),
    };
    let names: Vec<String> = lab.readers().into_iter().map(|r| r.name).collect();
    let sb = support::sandbox();
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&lab, &sb, &dir.path().join("state"));
    let desk = Tmux::start(&[KEYTALLY, "enroll", "--owner", "dana@example.com", "--tags", "", "--status", "Active", "--count", "1"], &env);
    desk.wait_for("Waiting for a key", 1);

    let model = |preset: &str| keytally_virtual_key::model::KeyModel::preset(preset).unwrap();
    let card = keytally_virtual_key::Card::new;
    let present = Duration::from_secs(10);
    let stalled = lab.tap(0, card(model("yk5cnfc").with_fault(Some(keytally_virtual_key::Fault::Stall))), present).unwrap();
    let restricted = lab.tap(1, card(model("yk5cnfc").with_nfc_restricted(true)), present).unwrap();
    desk.wait_for(&format!("YubiKey in NFC restricted mode: plug it into a USB port once to enable NFC (reader \"{}\"). Plug it in here to enroll it: waiting for it over USB.", names[1]), 1);

    let t = Instant::now();
    let good = lab.tap(2, card(model("yk5nfc")), present).unwrap();
    desk.wait_for("Found: YubiKey 5 NFC  serial 12345678", 1);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "the good key beside a stalled reader took {took:?}");
    desk.wait_for("to dana@example.com: synced", 1);
    desk.wait_for(&format!("Could not read the key on \"{}\": the reader did not answer in time. Remove it and try again.", names[0]), 1);
    good.remove().unwrap();
    desk.wait_for("Enrolled 1 key(s): 1 synced, 0 queued.", 1);
    assert_eq!(desk.screen().matches(names[0].as_str()).count(), 1, "the stalled reader is named once:\n{}", desk.screen());
    assert_eq!(sb.store().device_count(), 1, "no record for the restricted key");
    println!("--- the desk's screen ---\n{}", desk.screen());
    stalled.remove().unwrap();
    restricted.remove().unwrap();
}
