//! `keytally scan`: read every attached key once and print it, as a table or as JSON records.
//!
//! Keys come from PC/SC readers (USB CCID, NFC, contact readers) and from YubiKeys' USB HID
//! nodes (OTP, FIDO); each physical key is listed once (see `keytally_device::enumerate`).
//! A key that is plugged in but cannot be opened is never dropped: it gets a warning on
//! stderr and a `<access denied>` row in the table. It has no JSON record, since nothing
//! could be read from it.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use keytally_device::caps::{Capabilities, Transport};
use keytally_device::enumerate::{PostureWanted, ScannedKey};
use keytally_device::error::NFC_RESTRICTED_MESSAGE;

use crate::advisories;
use crate::cli::ScanArgs;
use crate::config::state_dir_for_reading;
use crate::exit::EXIT_NO_TRANSPORT;
use crate::inventory::{scan_with_posture, ScanResult};

pub fn run(config: Option<&Path>, args: &ScanArgs) -> ExitCode {
    let posture = if args.posture { PostureWanted::Always } else { PostureWanted::Never };
    let result = match scan_with_posture(args.reader.as_deref(), &args.interfaces, &state_dir_for_reading(config), posture) {
        Ok(r) => r,
        Err(_) => return ExitCode::from(EXIT_NO_TRANSPORT),
    };
    // One write for the whole output (stdout alone writes each line with its own syscall).
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &result.records)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_table(&mut out, &result).and_then(|()| crate::posture::write_blocks(&mut out, &result.keys))
    }
    .and_then(|()| out.flush());
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

/// The human view: one line per key, readable or not. ADVISORIES names the Yubico advisories
/// that apply (ids; `(if)` under a condition), `none`, or `not assessed` (firmware unknown).
fn write_table(out: &mut impl Write, result: &ScanResult) -> io::Result<()> {
    if result.keys.is_empty() && result.unreadable_keys.is_empty() && result.nfc_restricted.is_empty() {
        return match result.unreadable {
            0 => writeln!(out, "No YubiKey found."),
            n => writeln!(out, "No readable YubiKey found ({n} reader(s) with a card that did not answer correctly; see the warnings)."),
        };
    }
    let header = ["NAME", "SERIAL", "FIRMWARE", "FORM FACTOR", "VIA", "READER/PORT", "USB ENABLED", "NFC ENABLED", "ADVISORIES"];
    let mut rows: Vec<[String; 9]> = result
        .keys
        .iter()
        .zip(&result.records)
        .map(|(k, record)| {
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
                advisories::summary(advisories::labels(record).as_deref(), ","),
            ]
        })
        .collect();
    for u in &result.unreadable_keys {
        let status = if u.access_denied() { "<access denied>" } else { "<unreadable>" };
        let dash = || "-".to_string();
        rows.push([format!("{} {status}", u.description()), dash(), dash(), dash(), "USB".into(), u.port.clone(), dash(), dash(), dash()]);
    }
    for reader in &result.nfc_restricted {
        let mut row = header.map(|_| "-".to_string());
        (row[0], row[4], row[5]) = (NFC_RESTRICTED_MESSAGE.to_string(), "NFC".into(), reader.clone());
        rows.push(row);
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
    use crate::inventory::unreadable_reason;
    use keytally_device::enumerate::{InterfaceOrder, UnreadableKey};
    use keytally_device::error::{Error, LinkError};
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
        let result = ScanResult { keys: vec![], records: vec![], unreadable_keys: vec![denied("1-4")], unreadable: 0, nfc_restricted: vec![] };
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
