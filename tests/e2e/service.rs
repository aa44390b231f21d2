//! `keytally kiosk` and `keytally run` as kiosks and workstations run them: a real (isolated)
//! pcscd with virtual keys tapped on or plugged into its reader, the sandbox server on
//! loopback, and the freshly built binary. Each tap gives one line (synced, or queued during an
//! outage and delivered afterwards), repeated taps are merged, the service pushes a key as it
//! arrives, and SIGTERM ends either within seconds.

#![cfg(unix)] // signals, the Unix control socket (the Windows service: tests/windows/msi.sh)

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use keytally_virtual_key::model::{Fault, KeyModel};
use keytally_virtual_key::PcscLab;

#[path = "../support/mod.rs"]
mod support;

use support::{insert_preset, lab, lab_as, wait_until, KEYTALLY};

/// Taps a key: on the reader until pcscd has seen it and keytally had time to read it.
fn tap(lab: &PcscLab, preset: &str) {
    let card = insert_preset(lab, preset);
    let t = Instant::now();
    while card.apdu_count() < 2 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    card.remove().unwrap();
    std::thread::sleep(Duration::from_millis(700)); // let pcscd see the card go
}

fn lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The reader commands (buzzer/LED) the card's reader got, once there are some (5 s at most).
fn reader_commands(card: &keytally_virtual_key::lab::InsertedCard) -> Vec<Vec<u8>> {
    let t = Instant::now();
    while card.reader_commands().is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    card.reader_commands()
}

fn next_line(rx: &Receiver<String>, within: Duration) -> String {
    rx.recv_timeout(within).unwrap_or_else(|_| panic!("no kiosk line within {within:?}"))
}

#[test]
fn taps_are_pushed_merged_queued_and_delivered() {
    let Some(lab) = lab() else { return };
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut kiosk = Command::new(KEYTALLY)
        .args(["kiosk", "--merge-window", "30s", "--push-timeout", "2s", "--retry-every", "1s"])
        .envs(lab.env())
        .envs(support::client_env(&sb))
        .env("KEYTALLY_STATE_DIR", state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let rx = lines(&mut kiosk);
    std::thread::sleep(Duration::from_millis(500));

    // A tap: one line naming the reader, the product, the serial, and "synced".
    tap(&lab, "yk5nfc");
    let line = next_line(&rx, Duration::from_secs(10));
    assert!(line.contains(lab.reader_name()) && line.contains("YubiKey 5 NFC") && line.contains("serial 12345678"), "{line}");
    assert!(line.contains("synced"), "{line}");
    // A 5.4.3 key: its advisories' ids, before the push state.
    assert!(line.contains("serial 12345678  advisories YSA-2024-02,YSA-2024-03,YSA-2025-02  synced"), "{line}");
    let on_server = sb.store().device("12345678").expect("the tap reached the server");
    assert!(on_server["observation"]["tappedAt"].is_string());

    // The same key again within the merge window: no second line, no second push.
    let puts = sb.store().puts_applied();
    tap(&lab, "yk5nfc");
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err(), "a repeated tap is merged");
    assert_eq!(sb.store().puts_applied(), puts);

    // The server is down: the tap is queued at once, then delivered when it is back.
    sb.faults().down = true;
    let t = Instant::now();
    tap(&lab, "skynfc");
    let line = next_line(&rx, Duration::from_secs(10));
    assert!(line.contains("Security Key NFC") && line.contains("queued"), "{line}");
    assert!(t.elapsed() < Duration::from_secs(6), "nobody waits for the server: {:?}", t.elapsed());
    assert_eq!(sb.store().device_count(), 1);
    sb.faults().down = false;
    let line = next_line(&rx, Duration::from_secs(30));
    assert!(line.contains("queued records delivered"), "{line}");
    assert_eq!(sb.store().device_count(), 2);

    // SIGTERM: a clean exit within a few seconds.
    terminate_within(&mut kiosk, Duration::from_secs(5));
}

/// Sends SIGTERM and requires a successful exit within `limit`.
fn terminate_within(child: &mut Child, limit: Duration) {
    let t = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { kill(child.id() as i32, 15) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < limit, "did not stop within {limit:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// `keytally ARGS` on the lab's pcscd, pushing to the sandbox with a fresh API key.
fn keytally_on(lab: &PcscLab, sb: &keytally_sandbox::Sandbox, state: &std::path::Path, args: &[&str]) -> Command {
    let (_, key) = sb.create_api_key("e2e");
    let mut cmd = Command::new(KEYTALLY);
    cmd.args(args)
        .envs(lab.env())
        .env("KEYTALLY_SERVER", sb.devices_base())
        .env("KEYTALLY_TOKEN", &key)
        .env("KEYTALLY_STATE_DIR", state);
    cmd
}

/// `keytally run` against the sandbox with an API key; `socket`: where its control socket goes.
fn start_service(lab: &PcscLab, sb: &keytally_sandbox::Sandbox, state: &std::path::Path, socket: Option<&std::path::Path>) -> Child {
    let mut cmd = keytally_on(lab, sb, state, &["run", "--retry-every", "1s"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    if let Some(socket) = socket {
        cmd.env("KEYTALLY_CONTROL_SOCKET", socket);
    }
    cmd.spawn().unwrap()
}

/// The service: a key plugged in reaches the server without polling, and SIGTERM ends the
/// service within a few seconds.
#[test]
fn service_pushes_keys_as_they_come() {
    let Some(lab) = lab() else { return };
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut service = start_service(&lab, &sb, state.path(), None);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.store().device_count(), 0);
    let card = insert_preset(&lab, "yk5cnfc");
    wait_until("the plugged key reaching the server", Duration::from_secs(10), || sb.store().device("23456789").is_some());
    card.remove().unwrap();
    terminate_within(&mut service, Duration::from_secs(5));
}

/// The tray's socket: a watcher sees the key arrive, then (after "Sync now") the owner and
/// status an admin assigned on the server; the sync state is there; a user with no local
/// session is refused, by peer credentials.
#[test]
fn service_serves_the_tray_over_its_control_socket() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;

    let Some(lab) = lab() else { return };
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = run_dir.path().join("control.sock");
    let mut service = start_service(&lab, &sb, state.path(), Some(&socket));
    // A failed assertion must not leave the service running.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child's pid (a no-op error once it has been reaped).
            unsafe { kill(self.0 as i32, 9) };
        }
    }
    let _reap = Reap(service.id());
    let stream = support::wait_for(&format!("the control socket at {}", socket.display()), Duration::from_secs(10), || UnixStream::connect(&socket).ok());
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o666);
    let mut writer = stream.try_clone().unwrap();
    let (tx, states) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let m = states.recv_timeout(left).unwrap_or_else(|_| panic!("no state with {what} within 15 s"));
            if ok(&m) {
                return m;
            }
        }
    };
    writer.write_all(b"{\"op\":\"watch\"}\n").unwrap();
    let first = wait_for("the host", &|m| m["type"] == "state");
    assert!(first["host"].as_str().is_some_and(|h| !h.is_empty()), "{first}");

    // A key arrives: the watcher sees it, without an owner yet.
    let card = insert_preset(&lab, "yk5cnfc");
    let m = wait_for("the key", &|m| m["keys"][0]["serial"] == 23456789);
    let k = &m["keys"][0];
    assert_eq!((k["name"].as_str(), k["transport"].as_str(), k["owner"].is_null()), (Some("YubiKey 5C NFC"), Some("nfc"), true), "{m}");
    let m = wait_for("a last sync", &|m| m["sync"]["last_success_at"].is_string());
    assert_eq!(m["sync"]["state"], "ok");

    // An admin assigns the key on the server; "Sync now" brings it to the tray.
    let mut device = sb.store().device("23456789").expect("the key reached the server");
    // A service running as root suggests no owner (only people are suggested).
    assert_eq!(device["owners"]["items"], serde_json::json!([]), "{device}");
    device["owners"] = serde_json::json!({"count": 1, "items": [{"name": "Alice", "email": "alice@example.com"}]});
    device["status"] = serde_json::json!({"code": 1, "name": "Active"});
    device["tags"] = serde_json::json!([{"name": "finance"}]);
    sb.store().upsert("23456789", &device, None, 0).unwrap();
    writer.write_all(b"{\"op\":\"sync\"}\n").unwrap();
    wait_for("the ack", &|m| m["type"] == "ack" && m["op"] == "sync");
    let m = wait_for("the server's owner", &|m| m["keys"][0]["owner"] == "alice@example.com");
    assert_eq!((m["keys"][0]["status"].as_str(), &m["keys"][0]["tags"]), (Some("Active"), &serde_json::json!(["finance"])), "{m}");
    // `keytally status` shows the service's view too (a workstation user's first stop).
    let out = Command::new(KEYTALLY).arg("status").env("KEYTALLY_CONTROL_SOCKET", &socket).env("KEYTALLY_STATE_DIR", state.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("service:     running: sync ok"), "{text}");
    assert!(text.contains("key:       YubiKey 5C NFC · 23456789 · alice@example.com · Active"), "{text}");
    let out = Command::new(KEYTALLY).arg("doctor").env("KEYTALLY_CONTROL_SOCKET", &socket).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("ok    service: running: 1 key(s) attached, sync ok")), "{text}");
    // The service's own pushes (heartbeats, rescans) do not undo the assignment.
    assert_eq!(sb.store().device("23456789").unwrap()["owners"]["items"][0]["email"], "alice@example.com");

    // The key leaves: the watcher sees no key.
    card.remove().unwrap();
    wait_for("no key", &|m| m["type"] == "state" && m["keys"].as_array().is_some_and(|k| k.is_empty()));

    // Someone else (uid 65534, no session here) is refused with a reason, by SO_PEERCRED.
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } == 0 {
        let out = Command::new("python3")
            .args(["-c", "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\ns.connect(sys.argv[1])\ns.sendall(b'{\"op\":\"watch\"}\\n')\nprint(s.makefile().readline(), end='')", socket.to_str().unwrap()])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert_eq!(reply["type"], "refused", "{reply}");
        assert!(reply["reason"].as_str().unwrap().contains("uid 65534"), "{reply}");
    } else {
        support::skip_part_unprivileged("the refusal of another uid needs root to run a client as uid 65534");
    }
    terminate_within(&mut service, Duration::from_secs(5));
    assert!(!socket.exists() || UnixStream::connect(&socket).is_err(), "nothing serves the socket after exit");
}

extern "C" {
    fn geteuid() -> u32;
}

/// pcscd crashes and comes back while the service runs: the service builds a new PC/SC
/// context on its own and a key plugged in afterwards still reaches the server.
#[test]
fn service_survives_a_pcscd_restart() {
    let Some(mut lab) = lab() else { return };
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut service = start_service(&lab, &sb, state.path(), None);
    let first = insert_preset(&lab, "yk5nfc");
    wait_until("the first key reaching the server", Duration::from_secs(10), || sb.store().device_count() > 0);
    first.remove().unwrap();
    lab.restart().unwrap();
    let card = insert_preset(&lab, "yk5cnfc");
    wait_until("a key reaching the server after pcscd came back", Duration::from_secs(15), || sb.store().device("23456789").is_some());
    card.remove().unwrap();
    terminate_within(&mut service, Duration::from_secs(5));
}

/// A kiosk on an ACS ACR122U (the lab's reader answering ACS's LED/buzzer pseudo-APDU as
/// that reader does): a good tap gets one green blink with a beep, an unreadable key three red
/// blinks, and nothing is said about missing feedback.
#[test]
fn kiosk_signals_on_an_acs_reader() {
    let Some(lab) = lab_as(keytally_virtual_key::ReaderModel::Acr122) else { return };
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut kiosk = keytally_on(&lab, &sb, state.path(), &["kiosk", "--merge-window", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = kiosk.stderr.take().unwrap();
    let said = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let out = lines(&mut kiosk);

    let card = insert_preset(&lab, "yk5nfc");
    let line = next_line(&out, Duration::from_secs(10));
    assert!(line.contains("ACS ACR122U PICC Interface 00 00") && line.contains("serial 12345678") && line.contains("synced"), "{line}");
    assert_eq!(reader_commands(&card), vec![vec![0xFF, 0x00, 0x40, 0xA0, 0x04, 0x01, 0x01, 0x01, 0x01]], "one green blink with a beep");
    card.remove().unwrap();
    std::thread::sleep(Duration::from_millis(700));

    let broken = KeyModel::preset("yk5nfc").unwrap().with_fault(Some(keytally_virtual_key::Fault::MalformedTlv));
    let card = support::insert(&lab, broken);
    let line = next_line(&out, Duration::from_secs(10));
    assert!(line.contains("unreadable key"), "{line}");
    assert_eq!(reader_commands(&card), vec![vec![0xFF, 0x00, 0x40, 0x50, 0x04, 0x01, 0x01, 0x03, 0x03]], "three red blinks, beeping");
    card.remove().unwrap();

    terminate_within(&mut kiosk, Duration::from_secs(5));
    let said = said.join().unwrap();
    assert!(!said.contains("buzzer/LED"), "an ACS reader is driven, not excused: {said}");
}

/// A lab with `n` vpcd readers (`None`, skipped, without pcscd or vpcd).
fn lab_of(n: usize) -> Option<PcscLab> {
    match PcscLab::start_readers(n) {
        Ok(lab) => Some(lab),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            support::skip(format!("the pcscd lab: {e}"));
            None
        }
        Err(e) => panic!("the pcscd lab did not start: {e}"),
    }
}

fn key(preset: &str, serial: u32) -> keytally_virtual_key::Card {
    keytally_virtual_key::Card::new(KeyModel::preset(preset).unwrap().with_serial(Some(serial)))
}

/// The kiosk's lines until `done` says it has them all (or `within` passes: what came so far).
fn lines_until(rx: &Receiver<String>, within: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    while !done(&got) {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    got
}

/// Issue 12 §3: a kiosk with four readers, taps arriving on all four within the same second:
/// none is lost, none of different keys is merged; the same key on two readers at once is.
#[test]
fn kiosk_with_four_readers_loses_and_merges_no_taps() {
    let Some(lab) = lab_of(4) else { return };
    let names: Vec<String> = lab.readers().into_iter().map(|r| r.name).collect();
    assert_eq!(names.len(), 4);
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut kiosk = keytally_on(&lab, &sb, state.path(), &["kiosk", "--merge-window", "30s"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let out = lines(&mut kiosk);
    std::thread::sleep(Duration::from_millis(500));

    for round in 0..3u32 {
        let serials: Vec<u32> = (0..4).map(|i| 40_000_000 + round * 10 + i).collect();
        let presets = ["yk5nfc", "yk5cnfc", "skynfc", "yk5nfc"];
        let tapped = Instant::now();
        // All four at once: each inserted from its own thread.
        let cards: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|i| {
                let (lab, serial, preset) = (&lab, serials[i], presets[i]);
                s.spawn(move || lab.insert_at(i, key(preset, serial)).unwrap())
            }).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(tapped.elapsed() < Duration::from_secs(1), "the four taps took {:?}", tapped.elapsed());
        let got = lines_until(&out, Duration::from_secs(15), |l| l.len() >= 4);
        assert_eq!(got.len(), 4, "round {round}: four taps, four lines: {got:#?}");
        for (i, name) in names.iter().enumerate() {
            let who = format!("serial {}", serials[i]);
            assert!(got.iter().any(|l| l.contains(name.as_str()) && l.contains(&who) && l.contains("synced")), "round {round}: {name} {who}: {got:#?}");
        }
        for c in cards {
            c.remove().unwrap();
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(sb.store().device_count(), 12, "every tap reached the server");

    // The same key on two readers within the same second: one line (merged).
    let a = lab.insert_at(0, key("yk5nfc", 41_000_000)).unwrap();
    let b = lab.insert_at(1, key("yk5nfc", 41_000_000)).unwrap();
    let got = lines_until(&out, Duration::from_secs(4), |_| false);
    assert_eq!(got.iter().filter(|l| l.contains("serial 41000000")).count(), 1, "{got:#?}");
    a.remove().unwrap();
    b.remove().unwrap();
    terminate_within(&mut kiosk, Duration::from_secs(5));
}

/// Issue 12 §1/§4 at the kiosk: a card that stalls (40 s READ CONFIG), a reader another program
/// holds exclusively, and each hostile card, beside good keys on other readers. The good keys
/// are pushed in their normal time; the stalled tap is given up at the kiosk's deadline with
/// one line naming its reader, and that reader works again once the card has left. Every tap,
/// hostile or good, gives exactly one line.
#[test]
fn kiosk_readers_are_independent_of_stalled_held_and_hostile_cards() {
    let Some(lab) = lab_of(4) else { return };
    let names: Vec<String> = lab.readers().into_iter().map(|r| r.name).collect();
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let faulty = |fault: Fault| keytally_virtual_key::Card::new(KeyModel::preset("yk5cnfc").unwrap().with_fault(Some(fault)));

    // Before the kiosk starts: a stalling card on reader 0 and, when pyscard is there, a card
    // on reader 1 held exclusively by another process.
    let stalled = lab.tap(0, faulty(Fault::Stall), Duration::from_secs(10)).unwrap();
    let held_card = lab.tap(1, key("yk5nfc", 50_000_001), Duration::from_secs(10)).unwrap();
    let python = support::ykman().map(|y| y.with_file_name("python"));
    let hold = python.as_deref().map(|p| lab.hold_exclusively(1, p).expect("hold reader 1 exclusively"));

    let mut kiosk = keytally_on(&lab, &sb, state.path(), &["kiosk", "--merge-window", "0s"]).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let out = lines(&mut kiosk);
    let started = Instant::now();
    if hold.is_some() {
        let got = lines_until(&out, Duration::from_secs(5), |l| l.iter().any(|l| l.contains(names[1].as_str())));
        assert!(got.iter().any(|l| l.contains(names[1].as_str()) && l.contains("held exclusively")), "{got:#?}");
    }

    // While reader 0 stalls (and 1 is held): good keys on readers 2 and 3 come within their
    // normal time (well under the kiosk's 5 s read deadline).
    let t = Instant::now();
    let good = [lab.insert_at(2, key("yk5nfc", 50_000_002)).unwrap(), lab.insert_at(3, key("bio", 50_000_003)).unwrap()];
    let got = lines_until(&out, Duration::from_secs(10), |l| l.iter().filter(|l| l.contains("synced")).count() >= 2);
    let took = t.elapsed();
    assert!(got.iter().any(|l| l.contains(names[2].as_str()) && l.contains("serial 50000002") && l.contains("synced")), "{got:#?}");
    assert!(got.iter().any(|l| l.contains(names[3].as_str()) && l.contains("serial 50000003") && l.contains("synced")), "{got:#?}");
    assert!(took < Duration::from_secs(3), "good keys beside a stalled reader took {took:?}");
    eprintln!("two good keys beside a stalled and a held reader: {took:?}");
    for g in good {
        g.remove().unwrap();
    }

    // The stalled tap: given up at the deadline, one line naming reader 0.
    let got = lines_until(&out, Duration::from_secs(10), |l| l.iter().any(|l| l.contains(names[0].as_str())));
    let stall_lines: Vec<&String> = got.iter().filter(|l| l.contains(names[0].as_str())).collect();
    assert_eq!(stall_lines.len(), 1, "{got:#?}");
    assert!(stall_lines[0].contains("unreadable key") && stall_lines[0].contains("did not answer in time"), "{got:#?}");
    let at = started.elapsed();
    assert!(at >= Duration::from_secs(4) && at < Duration::from_secs(12), "the stalled read ended after {at:?}");

    // Each hostile card on reader 2 beside a good key on reader 3, tapped together: the good
    // key is pushed in its normal time, and each tap gives exactly one line, none while the
    // cards stay on the readers and none after they leave. (PC/SC once reported the truncating
    // card twice for its one tap: a wait woken by reader 3's key saw it mid-insertion. See
    // `card_change` in device's pcsc_watch.)
    std::thread::sleep(Duration::from_millis(700));
    for (n, fault) in [Fault::MalformedTlv, Fault::BadLength, Fault::Truncated, Fault::Oversized, Fault::UnknownSw, Fault::EndlessChaining].into_iter().enumerate() {
        let serial = 50_000_100 + n as u32;
        let t = Instant::now();
        let bad = lab.insert_at(2, faulty(fault)).unwrap();
        let good = lab.insert_at(3, key("yk5nfc", serial)).unwrap();
        let good_line = |l: &String| l.contains(names[3].as_str()) && l.contains(&format!("serial {serial}")) && l.contains("synced");
        let bad_line = |l: &String| l.contains(names[2].as_str()) && l.contains("unreadable key");
        let mut got = lines_until(&out, Duration::from_secs(10), |l| l.iter().any(good_line) && l.iter().any(bad_line));
        let took = t.elapsed();
        // A second line for the same tap would come within milliseconds: listen on while the
        // cards stay, then after they have left.
        got.extend(lines_until(&out, Duration::from_millis(700), |_| false));
        bad.remove().unwrap();
        good.remove().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        got.extend(out.try_iter());
        assert_eq!(got.iter().filter(|l| good_line(l)).count(), 1, "{fault:?}: {got:#?}");
        assert_eq!(got.iter().filter(|l| bad_line(l)).count(), 1, "{fault:?}: one tap, one line: {got:#?}");
        assert_eq!(got.len(), 2, "{fault:?}: two taps, two lines: {got:#?}");
        assert!(took < Duration::from_secs(3), "{fault:?}: {took:?}");
        assert!(sb.store().device(&serial.to_string()).is_some(), "{fault:?}: the good key reached the server");
    }

    // The stalled card leaves: reader 0 works again.
    stalled.remove().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let back = lab.insert_at(0, key("yk5nfc", 50_000_000)).unwrap();
    let got = lines_until(&out, Duration::from_secs(10), |l| l.iter().any(|l| l.contains("serial 50000000")));
    assert!(got.iter().any(|l| l.contains(names[0].as_str()) && l.contains("serial 50000000") && l.contains("synced")), "{got:#?}");
    back.remove().unwrap();
    drop(hold);
    held_card.remove().unwrap();
    terminate_within(&mut kiosk, Duration::from_secs(8));
}

/// Issue 12 §2 at the kiosk: a key in NFC restricted mode gets its own line (plug it into USB
/// once) and the unreadable-key feedback on an ACS reader; nothing is pushed.
#[test]
fn kiosk_names_a_key_in_nfc_restricted_mode() {
    let Some(lab) = lab_as(keytally_virtual_key::ReaderModel::Acr122) else { return };
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut kiosk = keytally_on(&lab, &sb, state.path(), &["kiosk", "--merge-window", "0s"]).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let out = lines(&mut kiosk);
    let card = support::insert(&lab, KeyModel::preset("yk5cnfc").unwrap().with_nfc_restricted(true));
    let line = next_line(&out, Duration::from_secs(10));
    assert!(line.ends_with(&format!("{}  YubiKey in NFC restricted mode: plug it into a USB port once to enable NFC", lab.reader_name())), "{line}");
    assert_eq!(reader_commands(&card), vec![vec![0xFF, 0x00, 0x40, 0x50, 0x04, 0x01, 0x01, 0x03, 0x03]], "three red blinks, beeping");
    assert_eq!(sb.store().device_count(), 0, "no record for a key nothing could be read from");
    card.remove().unwrap();
    terminate_within(&mut kiosk, Duration::from_secs(5));
}

/// Issue 12 §1 in the service: a card that stalls reader 0 is given up at scan's deadline and
/// named once on stderr, however many rescans follow while it sits there; keys arriving on
/// reader 1 meanwhile reach the server at once (the stalled reader then fails at once).
#[test]
fn service_names_a_stalled_reader_once_and_pushes_the_keys_beside_it() {
    let Some(lab) = lab() else { return };
    let (stalled_reader, good_reader) = (lab.reader(0).name, lab.reader(1).name);
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut service = keytally_on(&lab, &sb, state.path(), &["run", "--retry-every", "1s"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = service.stderr.take().unwrap();
    let said = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let stall = KeyModel::preset("yk5cnfc").unwrap().with_fault(Some(Fault::Stall));
    let stalled = lab.tap(0, keytally_virtual_key::Card::new(stall), Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(4)); // past scan's 3 s reader deadline
    for serial in [70_000_001, 70_000_002, 70_000_003] {
        let t = Instant::now();
        let good = lab.tap(1, key("yk5nfc", serial), Duration::from_secs(10)).unwrap();
        wait_until("the key beside the stalled reader reaching the server", Duration::from_secs(10), || sb.store().device(&serial.to_string()).is_some());
        assert!(t.elapsed() < Duration::from_secs(2), "{serial}: {:?}", t.elapsed());
        good.remove().unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    terminate_within(&mut service, Duration::from_secs(5));
    let said = said.join().unwrap();
    assert_eq!(said.matches(stalled_reader.as_str()).count(), 1, "the stalled reader is named once: {said}");
    assert!(said.contains("did not answer in time") && !said.contains(good_reader.as_str()), "{said}");
    stalled.remove().unwrap();
}

/// Issue 12 §1 in the service, within one rescan: a good key on reader 1 and a card that
/// stalls reader 0, both there when the service scans. The good key is on the server before
/// the stalled read is given up at scan's 3 s reader deadline (the line naming the stall comes
/// after the key has arrived), and the scan's full push that follows sends it no second time.
/// The stall is named once; when its card leaves, reader 0 works again.
#[test]
fn service_pushes_a_key_before_a_stall_in_the_same_scan_is_given_up() {
    let Some(lab) = lab() else { return };
    let on_server = pushes_a_key_before_a_stall(&lab);
    assert_eq!(on_server["observation"]["transport"], "nfc", "{on_server}");
}

/// The same with readers named like USB YubiKeys' own CCID readers (no USB device behind
/// them): a key read through its own CCID reader is pushed as its read ends too, as the USB
/// key it is, seen at that reader, and the scan's full push after the stall is the same record.
#[test]
fn service_pushes_a_usb_ccid_key_before_a_stall_in_the_same_scan_is_given_up() {
    let Some(lab) = lab_as(keytally_virtual_key::ReaderModel::YubiKeyCcid) else { return };
    let on_server = pushes_a_key_before_a_stall(&lab);
    let observation = &on_server["observation"];
    assert_eq!((&observation["transport"], &observation["reader"]), (&"usb".into(), &lab.reader(1).name.into()), "{on_server}");
}

/// The steps of the two tests above; returns the good key as the server has it.
fn pushes_a_key_before_a_stall(lab: &PcscLab) -> serde_json::Value {
    let stalled_reader = lab.reader(0).name;
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let stall = KeyModel::preset("yk5cnfc").unwrap().with_fault(Some(Fault::Stall));
    let stalled = lab.tap(0, keytally_virtual_key::Card::new(stall), Duration::from_secs(10)).unwrap();
    let good = lab.tap(1, key("yk5nfc", 70_000_011), Duration::from_secs(10)).unwrap();

    let mut service = keytally_on(lab, &sb, state.path(), &["run", "--retry-every", "1s"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Each stderr line with the moment it came.
    let stderr = BufReader::new(service.stderr.take().unwrap());
    let (tx, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let names_the_stall = |line: &str| line.contains(stalled_reader.as_str()) && line.contains("did not answer in time");

    wait_until("the good key reaching the server", Duration::from_secs(10), || sb.store().device("70000011").is_some());
    let arrived = Instant::now();
    let mut lines = Vec::new();
    let named_at = loop {
        let (at, line) = said.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("the stall was not named: {lines:#?}"));
        let named = names_the_stall(&line);
        lines.push(line);
        if named {
            break at;
        }
    };
    assert!(arrived < named_at, "the good key reached the server only {:?} after the stall was given up", arrived - named_at);
    eprintln!("good key on the server {:?} before the stall beside it was given up", named_at - arrived);
    assert_eq!(sb.store().puts_applied(), 1, "the scan's full push after the stall sent the key again");
    let on_server = sb.store().device("70000011").unwrap();
    good.remove().unwrap();

    // The stalled card leaves: reader 0 reads again (its key reaches the server).
    stalled.remove().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let back = lab.tap(0, key("yk5nfc", 70_000_012), Duration::from_secs(10)).unwrap();
    wait_until("a key on the once-stalled reader reaching the server", Duration::from_secs(10), || sb.store().device("70000012").is_some());
    back.remove().unwrap();
    terminate_within(&mut service, Duration::from_secs(5));
    lines.extend(said.try_iter().map(|(_, line)| line));
    assert_eq!(lines.iter().filter(|l| names_the_stall(l)).count(), 1, "the stall is named once: {lines:#?}");
    on_server
}
