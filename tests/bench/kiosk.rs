//! Benchmark (`cargo bench -p keytally --bench kiosk`): kiosk taps through the real stack.
//! An isolated pcscd, the sandbox server on loopback, and the release `keytally kiosk`.
//! Prints, for a run of taps of virtual NFC keys:
//! - the latency from PC/SC reporting the card present to "accepted by the server"
//!   (measured by keytally, printed on each tap's line), p50 and p99;
//! - the end-to-end latency from the tap itself (the card connecting to the reader) to the
//!   line, which adds pcscd's own card-detection delay, and that delay on its own;
//! - the taps per minute sustained, and whether any was lost.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keytally_virtual_key::model::KeyModel;
use keytally_virtual_key::Card;

#[path = "../support/mod.rs"]
mod support;

use support::KEYTALLY;

const TAPS: usize = 40;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let Some(lab) = support::lab() else { return };
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let mut kiosk = Command::new(KEYTALLY)
        .args(["kiosk", "--merge-window", "0s"])
        .envs(lab.env())
        .envs(support::client_env(&sb))
        .env("KEYTALLY_STATE_DIR", state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(kiosk.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    let models = ["yk5nfc", "yk5cnfc", "skynfc", "yk5nano"];
    let (mut in_agent, mut end_to_end, mut detection) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0;
    let start = Instant::now();
    for i in 0..TAPS {
        let card = lab.insert(Card::new(KeyModel::preset(models[i % models.len()]).unwrap())).unwrap();
        let tapped = Instant::now();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((at, line)) if line.contains("synced") => {
                let ms: f64 = line.rsplit('(').next().and_then(|s| s.trim_end_matches(" ms)").parse().ok()).unwrap_or(f64::NAN);
                let e2e = at.duration_since(tapped).as_secs_f64() * 1000.0;
                in_agent.push(ms);
                end_to_end.push(e2e);
                detection.push(e2e - ms);
            }
            _ => lost += 1,
        }
        card.remove().unwrap();
        // The next person steps up once the reader has seen this key go.
        std::thread::sleep(Duration::from_millis(600));
    }
    let elapsed = start.elapsed();
    let _ = Command::new("kill").arg("-TERM").arg(kiosk.id().to_string()).status();
    let _ = kiosk.wait();
    for v in [&mut in_agent, &mut end_to_end, &mut detection] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let on_server = sb.store().puts_applied();
    println!("kiosk benchmark: {TAPS} taps of virtual NFC keys, isolated pcscd, sandbox on loopback");
    println!(
        "  card present (PC/SC) -> accepted by the server: p50 {:.1} ms, p99 {:.1} ms   (targets: p50 < 50 ms, p99 < 200 ms)",
        percentile(&in_agent, 0.5),
        percentile(&in_agent, 0.99)
    );
    println!(
        "  tap (card connects to the reader) -> line:      p50 {:.1} ms, p99 {:.1} ms",
        percentile(&end_to_end, 0.5),
        percentile(&end_to_end, 0.99)
    );
    println!(
        "  of which pcscd's card-detection delay:          p50 {:.1} ms, p99 {:.1} ms (pcscd polls the vpcd reader)",
        percentile(&detection, 0.5),
        percentile(&detection, 0.99)
    );
    println!(
        "  sustained: {:.0} taps/min (one reader, 600 ms between a removal and the next tap); lost: {lost}; PUTs applied on the server: {on_server}",
        TAPS as f64 / elapsed.as_secs_f64() * 60.0
    );
}
