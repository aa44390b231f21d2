//! `keytally scan`: read every attached key once and print it, as a table or as JSON records.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use keytally_device::caps::Capabilities;
use keytally_device::error::TransportError;
use keytally_device::scan::{scan_pcsc, FoundKey, PcscReport, ScanOptions};
use keytally_protocol::mapping::{record_for, ObservationContext};
use keytally_protocol::record::DeviceRecord;

use crate::cli::ScanArgs;

/// Exit code when no transport at all could be scanned.
pub const EXIT_NO_TRANSPORT: u8 = 2;

/// The keys found, plus what went wrong on the way (already reported on stderr).
pub struct ScanResult {
    pub keys: Vec<FoundKey>,
    pub records: Vec<DeviceRecord>,
    /// Readers with a card that could not be read.
    pub unreadable: usize,
}

/// Scans every transport. Fails only when none could be scanned at all.
pub fn scan(reader: Option<&str>) -> Result<ScanResult, TransportError> {
    let opts = ScanOptions { reader_filter: reader.map(str::to_string), ..ScanOptions::default() };
    let report = scan_pcsc(&opts).inspect_err(|e| match e {
        TransportError::NoService => eprintln!(
            "keytally: PC/SC is not available (pcscd is not running): smart-card and NFC readers cannot be scanned"
        ),
        other => eprintln!("keytally: PC/SC cannot be used: {other}"),
    })?;
    warn_problems(&report);
    let ctx = ObservationContext {
        agent_id: crate::agent_id::agent_id(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        observed_at: SystemTime::now(),
    };
    let records = report.keys.iter().map(|k| record_for(&k.key, Some(&k.reader), &ctx)).collect();
    Ok(ScanResult { unreadable: report.problems.len(), keys: report.keys, records })
}

/// Scan and return just the records (used by `sync`).
pub fn collect_records(reader: Option<&str>) -> anyhow::Result<Vec<DeviceRecord>> {
    Ok(scan(reader)?.records)
}

fn warn_problems(report: &PcscReport) {
    for p in &report.problems {
        eprintln!("keytally: warning: reader \"{}\": could not read the key: {}", p.reader, p.error);
        if matches!(p.error, keytally_device::Error::Transport(TransportError::SharingViolation)) {
            eprintln!(
                "keytally: hint: another program holds the card exclusively (often gpg's scdaemon: `gpgconf --kill scdaemon`)"
            );
        }
    }
}

pub fn run(args: &ScanArgs) -> ExitCode {
    let result = match scan(args.reader.as_deref()) {
        Ok(r) => r,
        Err(_) => return ExitCode::from(EXIT_NO_TRANSPORT),
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &result.records)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_table(&mut out, &result.keys, result.unreadable)
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`keytally scan | head`) is not an error worth a message.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally: cannot write the output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn apps(c: Option<Capabilities>) -> String {
    match c {
        None => "-".into(),
        Some(c) if c.application_names().is_empty() => "none".into(),
        Some(c) => c.application_names().join(","),
    }
}

/// The human view: one line per key.
fn write_table(out: &mut impl Write, keys: &[FoundKey], unreadable: usize) -> io::Result<()> {
    if keys.is_empty() {
        return match unreadable {
            0 => writeln!(out, "No YubiKey found."),
            n => writeln!(out, "No readable YubiKey found ({n} reader(s) with a card that did not answer correctly; see the warnings)."),
        };
    }
    let header = ["NAME", "SERIAL", "FIRMWARE", "FORM FACTOR", "VIA", "READER", "USB ENABLED", "NFC ENABLED"];
    let rows: Vec<[String; 8]> = keys
        .iter()
        .map(|k| {
            let i = &k.key.info;
            [
                k.key.name.clone(),
                i.serial.map_or_else(|| "-".into(), |s| s.to_string()),
                i.version_name(),
                i.form_factor.display_name().to_string(),
                k.key.transport.as_str().to_uppercase(),
                k.reader.clone(),
                apps(i.enabled.usb),
                apps(i.enabled.nfc),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
