//! Benchmark (`cargo bench -p keytally --bench kiosk`): kiosk taps through the real stack.
//! An isolated pcscd, the sandbox server on loopback, and the release `keytally kiosk`.
//! Prints, for a run of taps of virtual NFC keys on one reader:
//! - the latency from PC/SC reporting the card present to "accepted by the server"
//!   (measured by keytally, printed on each tap's line), p50 and p99;
//! - the end-to-end latency from the tap itself (the card connecting to the reader) to the
//!   line, which adds pcscd's own card-detection delay, and that delay on its own;
//! - the taps per minute sustained, and whether any was lost;
//!
//! and then the same with four readers tapped at once (issue 12 §3): the taps per minute
//! sustained with four readers next to one reader, with the taps lost (none may be).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keytally_virtual_key::model::KeyModel;
use keytally_virtual_key::{Card, PcscLab};

#[path = "../support/mod.rs"]
mod support;

use support::KEYTALLY;

/// Taps per reader.
const TAPS: usize = 40;
/// The next person steps up this long after the reader has seen the last key go.
const BETWEEN: Duration = Duration::from_millis(600);
const MODELS: [&str; 4] = ["yk5nfc", "yk5cnfc", "skynfc", "yk5nano"];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One reader's taps: latencies (ms) and the taps lost.
#[derive(Default)]
struct Taps {
    in_agent: Vec<f64>,
    end_to_end: Vec<f64>,
    detection: Vec<f64>,
    lost: usize,
}

/// What a run of taps on `readers` readers at once gave.
struct Run {
    taps: Taps,
    total: usize,
    elapsed: Duration,
    on_server: u64,
}

/// A line of the kiosk's and when it came.
type Line = (Instant, String);

/// `keytally kiosk` on `lab`, pushing to `sb`; its stdout lines, each sent (with the time it
/// came) to the reader whose name it carries.
fn start_kiosk(lab: &PcscLab, sb: &keytally_sandbox::Sandbox, state: &std::path::Path, readers: &[String]) -> (Child, Vec<mpsc::Receiver<Line>>) {
    let mut kiosk = Command::new(KEYTALLY)
        .args(["kiosk", "--merge-window", "0s"])
        .envs(lab.env())
        .envs(support::client_env(sb))
        .env("KEYTALLY_STATE_DIR", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (senders, receivers): (HashMap<String, mpsc::Sender<Line>>, Vec<_>) = readers
        .iter()
        .map(|r| {
            let (tx, rx) = mpsc::channel();
            ((format!("  {r}  "), tx), rx)
        })
        .unzip();
    let out = BufReader::new(kiosk.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let at = Instant::now();
            if let Some(tx) = senders.iter().find(|(name, _)| line.contains(name.as_str())).map(|(_, tx)| tx) {
                let _ = tx.send((at, line));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    (kiosk, receivers)
}

/// `TAPS` taps on each of the lab's first `readers` readers, all readers at once, each reader
/// tapped again `BETWEEN` after its last key left.
fn run(readers: usize) -> Option<Run> {
    let lab = match PcscLab::start_readers(readers) {
        Ok(lab) => lab,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            support::skip(format!("the pcscd lab: {e}"));
            return None;
        }
        Err(e) => panic!("the pcscd lab did not start: {e}"),
    };
    let names: Vec<String> = lab.readers().into_iter().take(readers).map(|r| r.name).collect();
    let sb = support::sandbox();
    let state = tempfile::tempdir().unwrap();
    let (mut kiosk, lines) = start_kiosk(&lab, &sb, state.path(), &names);
    let start = Instant::now();
    let per_reader: Vec<Taps> = std::thread::scope(|s| {
        let lab = &lab;
        let handles: Vec<_> = lines
            .into_iter()
            .enumerate()
            .map(|(r, rx)| {
                s.spawn(move || {
                    let mut taps = Taps::default();
                    for i in 0..TAPS {
                        let serial = 60_000_000 + (r * 1000 + i) as u32;
                        let model = KeyModel::preset(MODELS[(i + r) % MODELS.len()]).unwrap().with_serial(Some(serial));
                        let card = lab.insert_at(r, Card::new(model)).unwrap();
                        let tapped = Instant::now();
                        match rx.recv_timeout(Duration::from_secs(10)) {
                            Ok((at, line)) if line.contains("synced") && line.contains(&format!("serial {serial}")) => {
                                let ms: f64 = line.rsplit('(').next().and_then(|s| s.trim_end_matches(" ms)").parse().ok()).unwrap_or(f64::NAN);
                                let e2e = at.duration_since(tapped).as_secs_f64() * 1000.0;
                                taps.in_agent.push(ms);
                                taps.end_to_end.push(e2e);
                                taps.detection.push(e2e - ms);
                            }
                            _ => taps.lost += 1,
                        }
                        card.remove().unwrap();
                        std::thread::sleep(BETWEEN);
                    }
                    taps
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let _ = Command::new("kill").arg("-TERM").arg(kiosk.id().to_string()).status();
    let _ = kiosk.wait();
    let mut taps = Taps::default();
    for t in per_reader {
        taps.in_agent.extend(t.in_agent);
        taps.end_to_end.extend(t.end_to_end);
        taps.detection.extend(t.detection);
        taps.lost += t.lost;
    }
    for v in [&mut taps.in_agent, &mut taps.end_to_end, &mut taps.detection] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let on_server = sb.store().puts_applied();
    Some(Run { taps, total: TAPS * readers, elapsed, on_server })
}

fn per_minute(run: &Run) -> f64 {
    run.total as f64 / run.elapsed.as_secs_f64() * 60.0
}

fn main() {
    let Some(one) = run(1) else { return };
    let t = &one.taps;
    println!("kiosk benchmark: {TAPS} taps of virtual NFC keys, isolated pcscd, sandbox on loopback");
    println!(
        "  card present (PC/SC) -> accepted by the server: p50 {:.1} ms, p99 {:.1} ms   (targets: p50 < 50 ms, p99 < 200 ms)",
        percentile(&t.in_agent, 0.5),
        percentile(&t.in_agent, 0.99)
    );
    println!("  tap (card connects to the reader) -> line:      p50 {:.1} ms, p99 {:.1} ms", percentile(&t.end_to_end, 0.5), percentile(&t.end_to_end, 0.99));
    println!(
        "  of which pcscd's card-detection delay:          p50 {:.1} ms, p99 {:.1} ms (pcscd polls the vpcd reader)",
        percentile(&t.detection, 0.5),
        percentile(&t.detection, 0.99)
    );
    println!(
        "  sustained: {:.0} taps/min (one reader, {} ms between a removal and the next tap); lost: {}; PUTs applied on the server: {}",
        per_minute(&one),
        BETWEEN.as_millis(),
        t.lost,
        one.on_server
    );
    let Some(four) = run(4) else { return };
    let t = &four.taps;
    println!(
        "four readers tapped at once, {TAPS} taps each: card present -> accepted by the server p50 {:.1} ms, p99 {:.1} ms",
        percentile(&t.in_agent, 0.5),
        percentile(&t.in_agent, 0.99)
    );
    println!(
        "  sustained: {:.0} taps/min with four readers, {:.0} taps/min with one ({:.1}x); lost: {} of {}; PUTs applied on the server: {}",
        per_minute(&four),
        per_minute(&one),
        per_minute(&four) / per_minute(&one),
        t.lost,
        four.total,
        four.on_server
    );
}
