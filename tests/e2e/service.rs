//! `keytally kiosk` and `keytally run` as kiosks and workstations run them: a real (isolated)
//! pcscd with virtual keys tapped on or plugged into its reader, the sandbox server on
//! loopback, and the freshly built binary. Each tap gives one line (synced, or queued during an
//! outage and delivered afterwards), repeated taps are merged, the service pushes a key as it
//! arrives, and SIGTERM ends either within seconds.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use keytally_virtual_key::model::KeyModel;
use keytally_virtual_key::{Card, PcscLab};

const KEYTALLY: &str = env!("CARGO_BIN_EXE_keytally");

fn lab() -> Option<PcscLab> {
    match PcscLab::start() {
        Ok(lab) => Some(lab),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") && e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIP: {e}");
            None
        }
        Err(e) => panic!("the pcscd lab did not start: {e}"),
    }
}

/// Taps a key: on the reader until pcscd has seen it and keytally had time to read it.
fn tap(lab: &PcscLab, preset: &str) {
    let card = lab.insert(Card::new(KeyModel::preset(preset).unwrap())).unwrap();
    card.wait_present(Duration::from_secs(10)).unwrap();
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

fn next_line(rx: &Receiver<String>, within: Duration) -> String {
    rx.recv_timeout(within).unwrap_or_else(|_| panic!("no kiosk line within {within:?}"))
}

#[test]
fn taps_are_pushed_merged_queued_and_delivered() {
    let Some(lab) = lab() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt.block_on(keytally_sandbox::spawn(keytally_sandbox::Config::default())).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut kiosk = Command::new(KEYTALLY)
        .args(["kiosk", "--merge-window", "30s", "--push-timeout", "2s", "--retry-every", "1s"])
        .envs(lab.env())
        .env("KEYTALLY_SERVER", sb.devices_base())
        .env("KEYTALLY_TOKEN_URL", sb.token_url())
        .env("KEYTALLY_CLIENT_ID", "keytally")
        .env("KEYTALLY_CLIENT_SECRET", "sandbox-client-secret")
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

/// The service: a key plugged in reaches the server without polling, and SIGTERM ends the
/// service within a few seconds.
#[test]
fn service_pushes_keys_as_they_come() {
    let Some(lab) = lab() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt.block_on(keytally_sandbox::spawn(keytally_sandbox::Config::default())).unwrap();
    let state = tempfile::tempdir().unwrap();
    let (id, key) = sb.create_api_key("service");
    let _ = id;
    let mut service = Command::new(KEYTALLY)
        .args(["run", "--retry-every", "1s"])
        .envs(lab.env())
        .env("KEYTALLY_SERVER", sb.devices_base())
        .env("KEYTALLY_TOKEN", &key)
        .env("KEYTALLY_STATE_DIR", state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.store().device_count(), 0);
    let card = lab.insert(Card::new(KeyModel::preset("yk5cnfc").unwrap())).unwrap();
    card.wait_present(Duration::from_secs(10)).unwrap();
    let t = Instant::now();
    while sb.store().device("23456789").is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "the plugged key did not reach the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    card.remove().unwrap();
    terminate_within(&mut service, Duration::from_secs(5));
}
