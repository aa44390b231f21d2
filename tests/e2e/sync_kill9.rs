//! `kill -9` of `keytally sync --once` at 20 random moments while it queues and pushes a few
//! hundred records, against the sandbox on loopback, with records changing between runs.
//! Then one undisturbed run. Checks: nothing is lost (every key's newest state is on the
//! server) and no older state of a key ever overwrote a newer one (the sandbox's log of
//! applied PUTs is non-decreasing per key), and the outbox file passes its integrity check.

#![cfg(unix)]

#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const KEYS: usize = 300;
const KILLS: usize = 20;

fn records(gens: &[u64]) -> Value {
    Value::Array(
        gens.iter()
            .enumerate()
            .map(|(i, g)| {
                json!({
                    "yubikey": {"uniqueId": format!("{}", 20_000_000 + i), "serialNumber": 20_000_000 + i, "firmwareVersion": "5.7.2"},
                    "observation": {"gen": g}
                })
            })
            .collect(),
    )
}

#[test]
fn kill9_at_20_random_moments_loses_nothing_and_never_goes_back() {
    let setup = support::setup("drain_rate = 1000\ntimeout = \"5s\"");
    let (sb, dir) = (&setup.sb, &setup.dir);
    let recs = dir.path().join("records.json");
    let run = || {
        let mut c = setup.keytally(&["sync", "--once", "--records", recs.to_str().unwrap()]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b696c6c);
    let mut gens = vec![1u64; KEYS];
    let started = Instant::now();
    // Most keys change between runs, so every run has a few hundred records to queue and
    // push. One undisturbed run first measures how long a run takes on this machine; the
    // kills land uniformly within that span.
    let churn = |gens: &mut [u64], rng: &mut rand::rngs::StdRng| {
        for g in gens.iter_mut() {
            if rng.random_bool(0.9) {
                *g += 1;
            }
        }
        std::fs::write(&recs, records(gens).to_string()).unwrap();
    };
    churn(&mut gens, &mut rng);
    let t = Instant::now();
    assert_eq!(run().status().unwrap().code(), Some(0));
    let mut span = t.elapsed().as_millis().max(50) as u64;
    let mut killed_mid_run = 0;
    for _ in 0..KILLS {
        churn(&mut gens, &mut rng);
        let mut child = run().spawn().unwrap();
        let pause = rng.random_range(5..span);
        std::thread::sleep(Duration::from_millis(pause));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        } else {
            // The run was quicker than the measured one (a busy machine made that one slow):
            // aim the next kills within what a run takes now.
            span = (pause * 4 / 5).max(50);
        }
        // SIGKILL: no destructor, no flush, no chance to finish the write in progress.
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // The undisturbed run: everything that is still queued goes out.
    let mut code = None;
    for _ in 0..3 {
        code = run().status().unwrap().code();
        if code == Some(0) {
            break;
        }
    }
    eprintln!(
        "FIGURE kill -9: {KILLS} kills ({killed_mid_run} mid-run, a run takes ~{span} ms), {KEYS} keys, {} PUTs applied, {:?}",
        sb.store().puts_applied(),
        started.elapsed()
    );
    assert_eq!(code, Some(0), "the final run empties the outbox");
    assert!(killed_mid_run >= KILLS / 2, "most kills must land while keytally runs ({killed_mid_run})");

    let store = sb.store();
    let gen_of = |v: &Value| v["observation"]["gen"].as_u64().unwrap();
    let mut regressions: HashMap<String, Vec<u64>> = HashMap::new();
    for (i, want) in gens.iter().enumerate() {
        let uid = format!("{}", 20_000_000 + i);
        let now = store.device(&uid).unwrap_or_else(|| panic!("{uid} never reached the server"));
        assert_eq!(gen_of(&now), *want, "{uid}: the server has an older state than the newest one");
        let history: Vec<u64> = store.put_history(&uid).iter().map(gen_of).collect();
        if history.windows(2).any(|w| w[1] < w[0]) {
            regressions.insert(uid, history);
        }
    }
    assert!(regressions.is_empty(), "an older state overwrote a newer one: {regressions:?}");
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("state/outbox.sqlite")).unwrap();
    let ok: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let pending: i64 = db.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0)).unwrap();
    assert_eq!(pending, 0);
}
