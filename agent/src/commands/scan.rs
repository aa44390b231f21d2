//! `keytally scan`: read every attached key once and print it, as a table or as JSON records.
//!
//! Keys come from PC/SC readers (USB CCID, NFC, contact readers) and from YubiKeys' USB HID
//! nodes (OTP, FIDO); each physical key is listed once (see `keytally_device::enumerate`).
//! A key that is plugged in but cannot be opened is never dropped: it gets a warning on
//! stderr and a `<access denied>` row in the table. It has no JSON record, since nothing
//! could be read from it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use keytally_device::caps::{Capabilities, Transport};
use keytally_device::error::LinkError;
use keytally_device::enumerate::ScanOptions;
use keytally_device::enumerate::{scan_all, FullScanOptions, InterfaceOrder, Report, ScannedKey, UnreadableKey};
use keytally_protocol::mapping::{record_for, ObservationContext};
use keytally_protocol::record::DeviceRecord;

use crate::cli::ScanArgs;

/// Exit code when no transport at all could be scanned.
pub const EXIT_NO_TRANSPORT: u8 = 2;

/// The keys found, plus what went wrong on the way (already reported on stderr).
pub struct ScanResult {
    pub keys: Vec<ScannedKey>,
    pub records: Vec<DeviceRecord>,
    /// Keys that are plugged in but could not be read through any interface.
    pub unreadable_keys: Vec<UnreadableKey>,
    /// Readers with a card that could not be read.
    pub unreadable: usize,
}

/// Scans every transport. Fails only when none could be scanned at all: PC/SC is unusable
/// and USB could not be listed (or was not asked for, with `--reader`), with nothing found.
pub fn scan(reader: Option<&str>, interfaces: &InterfaceOrder, state_dir: &Path) -> Result<ScanResult, LinkError> {
    let opts = FullScanOptions {
        pcsc: ScanOptions { reader_filter: reader.map(str::to_string), ..ScanOptions::default() },
        order: interfaces.clone(),
        usb: reader.is_none(),
        ..FullScanOptions::default()
    };
    let report = scan_all(&opts);
    if let Some(e) = &report.usb_error {
        tracing::info!("USB devices cannot be listed: {e}");
    }
    if let Some(e) = &report.pcsc_error {
        match e {
            LinkError::NoService => eprintln!(
                "keytally: PC/SC is not available (pcscd is not running): smart-card and NFC readers cannot be scanned"
            ),
            other => eprintln!("keytally: PC/SC cannot be used: {other}"),
        }
        let usb_scanned = opts.usb && report.usb_error.is_none();
        if !usb_scanned && report.keys.is_empty() && report.unreadable.is_empty() {
            return Err(e.clone());
        }
    }
    warn_problems(&report, interfaces);
    for k in &report.keys {
        tracing::info!(
            place = k.place().unwrap_or("-"),
            interface = k.interface.as_str(),
            transfers = k.transfers,
            "read {}",
            k.key.name
        );
    }
    let ctx = ObservationContext {
        agent_id: crate::agent_id::agent_id(state_dir),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        observed_at: SystemTime::now(),
    };
    let records = report.keys.iter().map(|k| record_for(&k.key, k.place(), &ctx)).collect();
    Ok(ScanResult {
        unreadable: report.reader_problems.len(),
        keys: report.keys,
        records,
        unreadable_keys: report.unreadable,
    })
}

/// Scan and return just the records (used by `sync`).
pub fn collect_records(reader: Option<&str>, state_dir: &Path) -> anyhow::Result<Vec<DeviceRecord>> {
    Ok(scan(reader, &InterfaceOrder::default(), state_dir)?.records)
}

fn warn_problems(report: &Report, interfaces: &InterfaceOrder) {
    for p in &report.reader_problems {
        eprintln!("keytally: warning: reader \"{}\": could not read the key: {}", p.reader, p.error);
        if matches!(p.error, keytally_device::Error::Link(LinkError::SharingViolation)) {
            eprintln!(
                "keytally: hint: another program holds the card exclusively (often gpg's scdaemon: `gpgconf --kill scdaemon`)"
            );
        }
    }
    for u in &report.unreadable {
        eprintln!("keytally: warning: {} at USB port {}: {}", u.description(), u.port, unreadable_reason(u, interfaces));
    }
    if report.unreadable.iter().any(UnreadableKey::access_denied) {
        eprintln!("keytally: hint: {}", access_hint());
    }
}

/// Why a key could not be read, in one line.
fn unreadable_reason(u: &UnreadableKey, interfaces: &InterfaceOrder) -> String {
    if u.attempts.is_empty() {
        return format!("present, but none of its interfaces could be used (allowed: {interfaces}; CCID needs pcscd)");
    }
    let nodes: Vec<String> = u.attempts.iter().map(|a| format!("{} {}", a.interface, a.path)).collect();
    if u.access_denied() {
        return format!("access denied ({})", nodes.join(", "));
    }
    let errors: Vec<String> = u.attempts.iter().map(|a| format!("{} {}: {}", a.interface, a.path, a.error)).collect();
    format!("could not be read ({})", errors.join("; "))
}

fn access_hint() -> &'static str {
    if cfg!(windows) {
        "FIDO access on Windows requires running as Administrator (or the keytally service)"
    } else {
        "install udev/70-keytally.rules (see udev/README.md) and re-plug the key; the service user needs group \"keytally\""
    }
}

/// Where the agent id lives: the configuration's state directory, or its default when the
/// configuration cannot be read (reading keys needs no server, so that is only a warning).
fn state_dir(config: Option<&Path>) -> PathBuf {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match crate::config::load(config, &env) {
        Ok(cfg) => cfg.state_dir,
        Err(e) => {
            eprintln!("keytally: warning: {e}");
            env("KEYTALLY_STATE_DIR").map_or_else(crate::config::default_state_dir, PathBuf::from)
        }
    }
}

pub fn run(config: Option<&Path>, args: &ScanArgs) -> ExitCode {
    let result = match scan(args.reader.as_deref(), &args.interfaces, &state_dir(config)) {
        Ok(r) => r,
        Err(_) => return ExitCode::from(EXIT_NO_TRANSPORT),
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &result.records)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_table(&mut out, &result)
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

/// `USB CCID`, `USB OTP`, `USB FIDO` or `NFC`.
fn via(k: &ScannedKey) -> String {
    match k.key.transport {
        Transport::Nfc => "NFC".into(),
        Transport::Usb => format!("USB {}", k.interface.as_str().to_uppercase()),
    }
}

/// The human view: one line per key, readable or not.
fn write_table(out: &mut impl Write, result: &ScanResult) -> io::Result<()> {
    if result.keys.is_empty() && result.unreadable_keys.is_empty() {
        return match result.unreadable {
            0 => writeln!(out, "No YubiKey found."),
            n => writeln!(out, "No readable YubiKey found ({n} reader(s) with a card that did not answer correctly; see the warnings)."),
        };
    }
    let header = ["NAME", "SERIAL", "FIRMWARE", "FORM FACTOR", "VIA", "READER/PORT", "USB ENABLED", "NFC ENABLED"];
    let mut rows: Vec<[String; 8]> = result
        .keys
        .iter()
        .map(|k| {
            let i = &k.key.info;
            [
                k.key.name.clone(),
                i.serial.map_or_else(|| "-".into(), |s| s.to_string()),
                i.version_name(),
                i.form_factor.display_name().to_string(),
                via(k),
                k.place().unwrap_or("-").to_string(),
                apps(i.enabled.usb),
                apps(i.enabled.nfc),
            ]
        })
        .collect();
    for u in &result.unreadable_keys {
        let status = if u.access_denied() { "<access denied>" } else { "<unreadable>" };
        let dash = || "-".to_string();
        rows.push([format!("{} {status}", u.description()), dash(), dash(), dash(), "USB".into(), u.port.clone(), dash(), dash()]);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use keytally_device::error::Error;
    use keytally_device::usb_ids::Pid;
    use keytally_device::enumerate::{Attempt, Interface};

    fn denied(port: &str) -> UnreadableKey {
        let attempt = |interface, path: &str| Attempt {
            interface,
            path: path.into(),
            error: Error::Link(LinkError::AccessDenied),
        };
        UnreadableKey {
            port: port.into(),
            pid: Pid::new(0x0407).unwrap(),
            attempts: vec![attempt(Interface::Otp, "/dev/hidraw0"), attempt(Interface::Fido, "/dev/hidraw1")],
        }
    }

    #[test]
    fn a_key_with_access_denied_is_a_table_row_and_a_warning() {
        let result = ScanResult { keys: vec![], records: vec![], unreadable_keys: vec![denied("1-4")], unreadable: 0 };
        let mut out = Vec::new();
        write_table(&mut out, &result).unwrap();
        let table = String::from_utf8(out).unwrap();
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with("YubiKey [OTP+FIDO+CCID] <access denied>"), "{table}");
        assert!(row.contains("1-4"), "{table}");
        assert_eq!(
            unreadable_reason(&denied("1-4"), &InterfaceOrder::default()),
            "access denied (otp /dev/hidraw0, fido /dev/hidraw1)"
        );
    }

    #[test]
    fn other_failures_name_each_interface() {
        let mut u = denied("1-5");
        u.attempts[1].error = Error::Link(LinkError::Unplugged);
        assert!(!u.access_denied());
        let reason = unreadable_reason(&u, &InterfaceOrder::default());
        assert!(reason.starts_with("could not be read (otp /dev/hidraw0: access denied"), "{reason}");
        assert!(reason.contains("fido /dev/hidraw1: the key was unplugged during the read"), "{reason}");
        u.attempts.clear();
        assert!(unreadable_reason(&u, &"otp".parse().unwrap()).contains("allowed: otp"));
    }
}
