//! One scan of every transport turned into device records: the keys read (PC/SC readers and
//! YubiKeys' USB HID nodes, each physical key once; see `keytally_device::enumerate`), their
//! records, and the keys and readers that could not be read (reported on stderr as found).

use std::path::Path;
use std::time::{Duration, SystemTime};

use keytally_device::error::LinkError;
use keytally_device::enumerate::{OnKey, PostureWanted, ScanOptions};
use keytally_device::enumerate::{scan_all, FullScanOptions, InterfaceOrder, Report, ScannedKey, UnreadableKey};
use keytally_protocol::mapping::{record_for, set_posture, ObservationContext};
use keytally_protocol::record::DeviceRecord;

/// How long one PC/SC reader may take in a scan before it is given up (and named). A key
/// takes milliseconds, a fallback-chain read over a slow NFC reader well under a second; a
/// person running `keytally scan` beside a stalled card should not wait the device layer's
/// 10 s default for the keys that did answer.
pub const READER_DEADLINE: Duration = Duration::from_secs(3);

/// The keys found, plus what went wrong on the way (already reported on stderr).
pub struct ScanResult {
    pub keys: Vec<ScannedKey>,
    /// One per key in `keys`, in the same order.
    pub records: Vec<DeviceRecord>,
    /// Keys that are plugged in but could not be read through any interface.
    pub unreadable_keys: Vec<UnreadableKey>,
    /// Readers with a card that could not be read (not counting the next).
    pub unreadable: usize,
    /// Readers with a YubiKey in NFC restricted mode (nothing identifying can be read).
    pub nfc_restricted: Vec<String>,
}

/// Scans every transport. Fails only when none could be scanned at all: PC/SC is unusable
/// and USB could not be listed (or was not asked for, with `--reader`), with nothing found.
pub fn scan(reader: Option<&str>, interfaces: &InterfaceOrder, state_dir: &Path) -> Result<ScanResult, LinkError> {
    scan_with_posture(reader, interfaces, state_dir, PostureWanted::Never)
}

/// [`scan`], reading the posture of the keys `posture` wants (into `observation.posture`);
/// an applet whose posture could not be read is a warning naming the reader or port.
pub fn scan_with_posture(reader: Option<&str>, interfaces: &InterfaceOrder, state_dir: &Path, posture: PostureWanted) -> Result<ScanResult, LinkError> {
    scan_telling(reader, interfaces, state_dir, posture, None)
}

/// [`scan_with_posture`], telling `on_key` of each key as soon as its read ends when its entry
/// is already final (`FullScanOptions::on_key`: a key on an NFC or contact reader, or a USB
/// key read through its own CCID reader), while slower readers are still being read; make its
/// record with [`early_record`].
pub fn scan_telling(
    reader: Option<&str>,
    interfaces: &InterfaceOrder,
    state_dir: &Path,
    posture: PostureWanted,
    on_key: Option<OnKey>,
) -> Result<ScanResult, LinkError> {
    let opts = FullScanOptions {
        pcsc: ScanOptions { reader_filter: reader.map(str::to_string), reader_timeout: READER_DEADLINE, posture, ..ScanOptions::default() },
        order: interfaces.clone(),
        usb: reader.is_none(),
        on_key,
        ..FullScanOptions::default()
    };
    let report = scan_all(&opts);
    if let Some(e) = &report.usb_error {
        tracing::info!("USB devices cannot be listed: {e}");
    }
    if let Some(e) = &report.pcsc_error {
        match e {
            LinkError::NoService => eprintln!(
                "keytally: PC/SC is not available ({} is not running): smart-card and NFC readers cannot be scanned",
                keytally_device::transport::pcsc_service::SERVICE
            ),
            other => eprintln!("keytally: PC/SC cannot be used: {other}"),
        }
        let usb_scanned = opts.usb && report.usb_error.is_none();
        if !usb_scanned && report.keys.is_empty() && report.unreadable.is_empty() {
            return Err(e.clone());
        }
    }
    warn_problems(&report, interfaces);
    crate::posture::warn(&report.keys);
    for k in &report.keys {
        tracing::info!(
            place = k.place().unwrap_or("-"),
            interface = k.interface.as_str(),
            transfers = k.transfers,
            "read {}",
            k.key.name
        );
    }
    let ctx = observation_context(state_dir);
    let records = report.keys.iter().map(|k| record_of(k, &ctx)).collect();
    let nfc_restricted: Vec<String> =
        report.reader_problems.iter().filter(|p| p.error == keytally_device::Error::NfcRestricted).map(|p| p.reader.clone()).collect();
    Ok(ScanResult {
        unreadable: report.reader_problems.len() - nfc_restricted.len(),
        nfc_restricted,
        keys: report.keys,
        records,
        unreadable_keys: report.unreadable,
    })
}

/// Where and when keys are seen from this machine, now.
fn observation_context(state_dir: &Path) -> ObservationContext {
    ObservationContext {
        agent_id: crate::agent_id::agent_id(state_dir),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        observed_at: SystemTime::now(),
    }
}

fn record_of(k: &ScannedKey, ctx: &ObservationContext) -> DeviceRecord {
    let mut record = record_for(&k.key, k.place(), ctx);
    set_posture(&mut record, k.posture.as_ref().map(|p| &p.posture));
    record
}

/// The record of a key [`scan_telling`] told of: the one its scan returns for it (the device
/// layer tells the entry its report will hold).
pub fn early_record(k: &ScannedKey, state_dir: &Path) -> DeviceRecord {
    record_of(k, &observation_context(state_dir))
}

/// Scans every transport and returns just the records (`sync --once`).
pub fn collect_records(reader: Option<&str>, state_dir: &Path) -> anyhow::Result<Vec<DeviceRecord>> {
    Ok(scan(reader, &InterfaceOrder::default(), state_dir)?.records)
}

fn warn_problems(report: &Report, interfaces: &InterfaceOrder) {
    for p in &report.reader_problems {
        // The stall was named when its read was given up (a Timeout); the service rescans at
        // every change and would otherwise name it again at each, until its card leaves.
        if p.error == keytally_device::Error::Link(LinkError::StillStalled) {
            tracing::debug!(reader = p.reader, "the reader's read is still stalled");
            continue;
        }
        if p.error == keytally_device::Error::NfcRestricted {
            eprintln!("keytally: reader \"{}\": {}", p.reader, p.error);
            continue;
        }
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
pub(crate) fn unreadable_reason(u: &UnreadableKey, interfaces: &InterfaceOrder) -> String {
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


/// A minimal record for unit tests: a key with this uniqueId, name and serial, seen over USB.
#[cfg(test)]
pub(crate) fn test_record(unique_id: &str, name: &str, serial: Option<&str>) -> DeviceRecord {
    let model = serde_json::json!({"code": null, "name": name, "uniqueId": null, "prodLineCode": null, "formFactor": 1,
        "interfaces": [1], "usbCapabilities": [], "nfcCapabilities": []});
    let mut r: DeviceRecord = serde_json::from_value(serde_json::json!({
        "yubikey": {"code": null, "orgCode": null, "name": name, "description": null, "uniqueId": unique_id,
            "serialNumber": serial, "alternativeSerialNumber": null, "firmwareVersion": "5.7.2", "model": model,
            "enabledUSBCapabilities": [], "enabledNFCCapabilities": [], "lastUpdate": null, "lastUsed": null, "status": null},
    }))
    .expect("a valid record");
    r.observation = Some(keytally_protocol::record::Observation {
        transport: "usb".into(),
        reader: None,
        host: "test".into(),
        agent_id: "test".into(),
        observed_at: "2026-01-01T00:00:00.000Z".into(),
        fips_capable: vec![],
        fips_approved: vec![],
        fips_series: false,
        security_key: false,
        pin_complexity: false,
        nfc_restricted: false,
        config_locked: false,
        part_number: None,
        version_name: "5.7.2".into(),
        version_qualifier: "5.7.2.final.0".into(),
        reset_blocked: vec![],
        fps_version: None,
        stm_version: None,
        usb_pid: None,
        tapped_at: None,
        posture: None,
        advisories: Some(vec![]),
        extra: serde_json::Map::new(),
    });
    r
}
