//! `keytally sync --once`: scan, enqueue into the outbox, push every profile, exit.
//! Exit 0 when the outbox is empty afterwards, 3 when records remain queued, 2 for a
//! bad configuration, 1 for any other error.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::load_server_config;
use crate::exit::{EXIT_CONFIG, EXIT_PENDING};
use crate::outbox::{fmt_time, Serialized};
use crate::runtime::runtime;
use crate::sync::{sync_once, Stopped};

pub fn run(config_path: Option<&Path>, reader: Option<&str>, records_file: Option<&Path>) -> ExitCode {
    let cfg = match load_server_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let scanned = match records_file {
        Some(f) => read_records(f),
        None => crate::inventory::collect_records(reader, &cfg.state_dir).and_then(|rs| Ok((rs.len(), Serialized::all(&rs)?))),
    };
    let (count, records) = match scanned {
        Ok(rs) => rs,
        Err(e) if records_file.is_some() => {
            eprintln!("keytally: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            // Nothing scanned this time: still push what is queued.
            eprintln!("keytally: scan failed: {e:#}");
            (0, Vec::new())
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(sync_once(&cfg, &records)) {
        Ok(s) => {
            println!("scanned {count} record(s): {} queued, {} unchanged", s.queued, s.unchanged);
            for (name, r) in &s.per_profile {
                let mut line = format!("profile {name}: pushed {}, quarantined {}, {} left", r.pushed, r.quarantined, r.remaining);
                match &r.stopped {
                    Some(Stopped::BackingOff { until, reason }) => line += &format!("; backing off until {} ({reason})", fmt_time(*until)),
                    Some(Stopped::CredentialRejected { until, reason }) => {
                        line += &format!("; {reason}; next attempt after {}", fmt_time(*until))
                    }
                    Some(Stopped::Limit) => line += "; stopped at the per-run limit",
                    None => {}
                }
                println!("{line}");
            }
            if s.remaining == 0 {
                ExitCode::SUCCESS
            } else {
                println!("{} record(s) stay queued for the next sync", s.remaining);
                ExitCode::from(EXIT_PENDING)
            }
        }
        Err(e) => {
            eprintln!("keytally: sync failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The records file (the output of `keytally scan --json`), with the number of records in it.
fn read_records(path: &Path) -> anyhow::Result<(usize, Vec<Serialized>)> {
    let text = std::fs::read(path).with_context(|| format!("cannot read the records file {}", path.display()))?;
    Serialized::from_json_array(&text, &format!("records file {}", path.display())).map_err(anyhow::Error::msg)
}
