//! Enumeration over every transport: one result per physical key.
//!
//! A YubiKey on USB shows up as up to three interfaces at once: its own CCID reader in
//! PC/SC ("Yubico YubiKey OTP+FIDO+CCID 00 00"), an OTP HID node and a FIDO HID node. As
//! in ykman, devices are grouped by PID, and a key is opened through as few interfaces as
//! possible, in a configurable order (CCID, then OTP, then FIDO by default):
//!
//! 1. With CCID first, every PC/SC reader is read. A PID group whose USB devices are all
//!    accounted for by CCID keys is done: none of its HID nodes is opened.
//! 2. The other devices are read over HID, in parallel, each against a deadline: the
//!    interfaces in order, the first that answers wins.
//! 3. HID results are merged into the CCID keys of the same PID with the same serial (or,
//!    without serials, the same DeviceInfo); the rest are keys of their own, identified by
//!    their USB port path when they have no serial (as yubikit-android does).
//! 4. A device no interface could read is reported as present but unreadable, with why
//!    (usually access denied) — never dropped.
//!
//! With CCID not first, the HID nodes are read first and the YubiKey readers of PID groups
//! they fully resolved are left out of the PC/SC scan.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, TransportError};
use crate::identify::{identify_ctap, identify_otp, Identified, Pid, Reclaim, UsbInterfaces};
use crate::scan::{scan_pcsc, PcscReport, ReaderProblem, ScanOptions};
use crate::transport::ctaphid::{CtapHidDevice, CtapTiming};
use crate::transport::hid::{self, HidNode};
use crate::transport::otp_hid::{OtpProtocol, OtpTiming};
use crate::transport::usb;

/// Yubico's USB vendor ID.
pub const YUBICO_VID: u16 = 0x1050;
/// HID top-level usages (usage page, usage): the OTP keyboard and the FIDO interface.
pub const USAGE_OTP: (u16, u16) = (0x0001, 0x0006);
pub const USAGE_FIDO: (u16, u16) = (0xF1D0, 0x0001);

/// A USB interface a key can be read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interface {
    Ccid,
    Otp,
    Fido,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ccid => "ccid",
            Self::Otp => "otp",
            Self::Fido => "fido",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The interfaces to use, in the order to try them: `ccid,otp,fido` by default. An
/// interface left out is never opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceOrder(Vec<Interface>);

impl Default for InterfaceOrder {
    fn default() -> Self {
        Self(vec![Interface::Ccid, Interface::Otp, Interface::Fido])
    }
}

impl InterfaceOrder {
    pub fn new(order: Vec<Interface>) -> Result<Self, String> {
        if order.is_empty() {
            return Err("at least one interface is needed".into());
        }
        for (i, iface) in order.iter().enumerate() {
            if order[..i].contains(iface) {
                return Err(format!("{iface} is listed twice"));
            }
        }
        Ok(Self(order))
    }

    pub fn uses(&self, iface: Interface) -> bool {
        self.0.contains(&iface)
    }

    fn rank(&self, iface: Interface) -> usize {
        self.0.iter().position(|i| *i == iface).unwrap_or(usize::MAX)
    }

    fn ccid_first(&self) -> bool {
        self.0.first() == Some(&Interface::Ccid)
    }

    /// The HID interfaces, in order.
    fn hid(&self) -> impl Iterator<Item = Interface> + '_ {
        self.0.iter().copied().filter(|i| *i != Interface::Ccid)
    }
}

impl FromStr for InterfaceOrder {
    type Err = String;

    /// `ccid,otp,fido` in any order and any subset.
    fn from_str(s: &str) -> Result<Self, String> {
        let order = s
            .split(',')
            .map(|part| match part.trim().to_ascii_lowercase().as_str() {
                "ccid" => Ok(Interface::Ccid),
                "otp" => Ok(Interface::Otp),
                "fido" => Ok(Interface::Fido),
                other => Err(format!("unknown interface {other:?} (expected ccid, otp or fido)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(order)
    }
}

impl fmt::Display for InterfaceOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|i| i.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// A YubiKey on the USB bus, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbKeyDevice {
    /// The port path (`1-2.3`); the identity of a key without a serial.
    pub port: String,
    pub pid: Pid,
    /// OTP HID node paths (one per key in practice).
    pub otp: Vec<String>,
    /// FIDO HID node paths.
    pub fido: Vec<String>,
}

impl UsbKeyDevice {
    fn nodes(&self, iface: Interface) -> &[String] {
        match iface {
            Interface::Ccid => &[],
            Interface::Otp => &self.otp,
            Interface::Fido => &self.fido,
        }
    }
}

/// Lists Yubico's USB devices and their HID nodes; nothing is opened. Devices with a PID
/// ykman does not know are skipped, as ykman skips them.
pub fn discover() -> Result<Vec<UsbKeyDevice>, TransportError> {
    let nodes = hid::list_nodes(YUBICO_VID).unwrap_or_else(|e| {
        tracing::debug!("listing HID nodes: {e}");
        Vec::new()
    });
    let devices = usb::list_devices(YUBICO_VID, nodes)?;
    Ok(devices
        .into_iter()
        .filter_map(|d| {
            let Some(pid) = Pid::new(d.product_id) else {
                tracing::debug!(port = d.port, "unsupported Yubico device with PID 0x{:04X}", d.product_id);
                return None;
            };
            let with_usage = |usage: (u16, u16)| -> Vec<String> {
                d.hid_nodes.iter().filter(|n| (n.usage_page, n.usage) == usage).map(|n| n.path.clone()).collect()
            };
            Some(UsbKeyDevice { port: d.port.clone(), pid, otp: with_usage(USAGE_OTP), fido: with_usage(USAGE_FIDO) })
        })
        .collect())
}

/// Reads one HID node of a key. A trait so that tests can stand in for real devices.
pub trait HidReader: Send + Sync {
    /// The key behind `path`, and how many USB transfers (reports) that took.
    fn read(&self, iface: Interface, path: &str, pid: Pid) -> Result<(Identified, u32), Error>;
}

/// The real reader: hidapi, the OTP and CTAPHID protocols, identification.
#[derive(Debug, Clone, Copy, Default)]
pub struct HidapiReader {
    pub otp: OtpTiming,
    pub ctap: CtapTiming,
    pub reclaim: Reclaim,
}

impl HidReader for HidapiReader {
    fn read(&self, iface: Interface, path: &str, pid: Pid) -> Result<(Identified, u32), Error> {
        let mut node = HidNode::open(path)?;
        match iface {
            Interface::Otp => {
                let mut otp = OtpProtocol::new(&mut node, self.otp)?;
                let key = identify_otp(&mut otp, pid, self.reclaim)?;
                Ok((key, otp.reports()))
            }
            Interface::Fido => {
                let mut ctap = CtapHidDevice::init(&mut node, rand::random(), self.ctap)?;
                let key = identify_ctap(&mut ctap, pid)?;
                Ok((key, ctap.packets()))
            }
            Interface::Ccid => Err(Error::NotSupported("CCID is read through PC/SC")),
        }
    }
}

/// One interface that was tried and failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub interface: Interface,
    /// The HID node path.
    pub path: String,
    pub error: Error,
}

/// A key, read.
#[derive(Debug, Clone)]
pub struct ScannedKey {
    pub key: Identified,
    /// The interface its record was read through.
    pub interface: Interface,
    /// The PC/SC reader, for keys read (or also seen) through CCID.
    pub reader: Option<String>,
    /// The USB port path, when known.
    pub port: Option<String>,
    /// APDUs (CCID) or HID reports (OTP, FIDO) it took.
    pub transfers: u32,
}

impl ScannedKey {
    /// Where the key was seen: the USB port path if known, else the reader name.
    pub fn place(&self) -> Option<&str> {
        self.port.as_deref().or(self.reader.as_deref())
    }
}

/// A key that is plugged in but could not be read through any interface.
#[derive(Debug, Clone)]
pub struct UnreadableKey {
    pub port: String,
    pub pid: Pid,
    /// Every interface tried; empty when none was usable (e.g. a CCID-only key and no pcscd).
    pub attempts: Vec<Attempt>,
}

impl UnreadableKey {
    /// True when every interface failed because the user may not open it.
    pub fn access_denied(&self) -> bool {
        !self.attempts.is_empty()
            && self.attempts.iter().all(|a| a.error == Error::Transport(TransportError::AccessDenied))
    }

    /// What ykman's list says for such a key: `YubiKey [OTP+FIDO+CCID]`.
    pub fn description(&self) -> String {
        format!("{} [{}]", self.pid.key_type().family_name(), self.pid.interfaces())
    }
}

/// Everything one scan found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub keys: Vec<ScannedKey>,
    pub unreadable: Vec<UnreadableKey>,
    /// PC/SC readers with a card that could not be read (YubiKey readers whose key was read
    /// over HID instead are not listed).
    pub reader_problems: Vec<ReaderProblem>,
    /// PC/SC could not be used at all (pcscd not running).
    pub pcsc_error: Option<TransportError>,
    /// USB could not be listed.
    pub usb_error: Option<TransportError>,
}

/// What to scan.
#[derive(Debug, Clone)]
pub struct FullScanOptions {
    pub pcsc: ScanOptions,
    pub order: InterfaceOrder,
    /// Look at USB at all (off when the user asked for one PC/SC reader).
    pub usb: bool,
    /// How long reading one USB device over HID may take.
    pub device_timeout: Duration,
}

impl Default for FullScanOptions {
    fn default() -> Self {
        Self {
            pcsc: ScanOptions::default(),
            order: InterfaceOrder::default(),
            usb: true,
            device_timeout: Duration::from_secs(10),
        }
    }
}

/// Scans PC/SC and USB and returns one entry per physical key.
pub fn scan_all(opts: &FullScanOptions) -> Report {
    let devices = if opts.usb { discover() } else { Ok(Vec::new()) };
    scan_with(opts, scan_pcsc, devices, Arc::new(HidapiReader::default()))
}

/// [`scan_all`] with the PC/SC scan, the USB listing and the HID reader supplied.
pub fn scan_with(
    opts: &FullScanOptions,
    pcsc: impl FnOnce(&ScanOptions) -> Result<PcscReport, TransportError>,
    devices: Result<Vec<UsbKeyDevice>, TransportError>,
    reader: Arc<dyn HidReader>,
) -> Report {
    let mut report = Report::default();
    let devices = devices.unwrap_or_else(|e| {
        report.usb_error = Some(e);
        Vec::new()
    });
    let mut pcsc_opts = opts.pcsc.clone();
    pcsc_opts.skip_yubikey_readers |= !opts.order.uses(Interface::Ccid);

    let (pcsc_report, reads) = if opts.order.ccid_first() {
        // Keys without a CCID interface cannot be read through PC/SC: read them meanwhile.
        let (no_ccid, with_ccid): (Vec<UsbKeyDevice>, Vec<UsbKeyDevice>) =
            devices.iter().cloned().partition(|d| !d.pid.interfaces().contains(UsbInterfaces::CCID));
        let early = {
            let (reader, order, timeout, no_ccid) =
                (Arc::clone(&reader), opts.order.clone(), opts.device_timeout, no_ccid.clone());
            thread::Builder::new()
                .name("usb:hid-only".into())
                .spawn(move || read_devices(&reader, no_ccid, &order, timeout))
        };
        let pcsc_report = pcsc(&pcsc_opts);
        let covered = ccid_counts(pcsc_report.as_ref().ok());
        let group_sizes = group_sizes(&devices);
        let to_read: Vec<UsbKeyDevice> = with_ccid
            .into_iter()
            .filter(|d| covered.get(&d.pid.value()).copied().unwrap_or(0) < group_sizes[&d.pid.value()])
            .collect();
        let mut reads = read_devices(&reader, to_read, &opts.order, opts.device_timeout);
        match early {
            // read_devices returns by its deadline, so this join is bounded.
            Ok(handle) => reads.extend(handle.join().unwrap_or_default()),
            Err(e) => {
                tracing::debug!("cannot start the early USB reader: {e}; reading in line");
                reads.extend(read_devices(&reader, no_ccid, &opts.order, opts.device_timeout));
            }
        }
        (pcsc_report, reads)
    } else {
        let reads = read_devices(&reader, devices.clone(), &opts.order, opts.device_timeout);
        let group_sizes = group_sizes(&devices);
        for (pid, size) in &group_sizes {
            let ok = reads.iter().filter(|r| r.device.pid.value() == *pid && r.outcome.is_ok()).count();
            if ok >= *size {
                pcsc_opts.skip_pids.extend(Pid::new(*pid));
            }
        }
        (pcsc(&pcsc_opts), reads)
    };

    let pcsc_report = pcsc_report.unwrap_or_else(|e| {
        report.pcsc_error = Some(e);
        PcscReport::default()
    });
    merge(&mut report, pcsc_report, &devices, reads, &opts.order);
    report
}

fn group_sizes(devices: &[UsbKeyDevice]) -> BTreeMap<u16, usize> {
    let mut sizes = BTreeMap::new();
    for d in devices {
        *sizes.entry(d.pid.value()).or_insert(0) += 1;
    }
    sizes
}

/// Keys read through their own CCID reader, per PID.
fn ccid_counts(pcsc: Option<&PcscReport>) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for k in pcsc.map_or(&[][..], |r| &r.keys) {
        if let Some(pid) = Pid::from_reader_name(&k.reader) {
            *counts.entry(pid.value()).or_insert(0) += 1;
        }
    }
    counts
}

/// The outcome of reading one device over HID.
struct DeviceRead {
    device: UsbKeyDevice,
    outcome: Result<(Identified, Interface, u32), Vec<Attempt>>,
}

/// Tries the device's HID interfaces in order; the first that answers wins.
fn read_device(reader: &dyn HidReader, device: &UsbKeyDevice, order: &InterfaceOrder) -> DeviceRead {
    let mut attempts = Vec::new();
    for iface in order.hid() {
        for path in device.nodes(iface) {
            match reader.read(iface, path, device.pid) {
                Ok((key, transfers)) => {
                    return DeviceRead { device: device.clone(), outcome: Ok((key, iface, transfers)) };
                }
                Err(error) => {
                    tracing::debug!(path, %iface, "reading {} failed: {error}", device.port);
                    attempts.push(Attempt { interface: iface, path: path.clone(), error });
                }
            }
        }
    }
    DeviceRead { device: device.clone(), outcome: Err(attempts) }
}

/// Reads devices in parallel, each in its own thread, against one deadline: a device that
/// hangs is reported as timed out and the others are not held up.
fn read_devices(
    reader: &Arc<dyn HidReader>,
    devices: Vec<UsbKeyDevice>,
    order: &InterfaceOrder,
    timeout: Duration,
) -> Vec<DeviceRead> {
    let (tx, rx) = mpsc::channel();
    let mut pending = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let (reader, tx, device, order) = (Arc::clone(reader), tx.clone(), device.clone(), order.clone());
        let spawned = thread::Builder::new().name(format!("usb:{}", device.port)).spawn(move || {
            let _ = tx.send((i, read_device(reader.as_ref(), &device, &order)));
        });
        match spawned {
            Ok(_) => pending.push(i),
            Err(e) => tracing::warn!("cannot start a USB reader thread: {e}"),
        }
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut reads: Vec<(usize, DeviceRead)> = Vec::new();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((i, read)) = rx.recv_timeout(left) else { break };
        pending.retain(|p| *p != i);
        reads.push((i, read));
    }
    for i in pending {
        let device = devices[i].clone();
        let attempts = order
            .hid()
            .find_map(|iface| device.nodes(iface).first().map(|p| (iface, p.clone())))
            .map(|(interface, path)| vec![Attempt { interface, path, error: TransportError::Timeout.into() }])
            .unwrap_or_default();
        reads.push((i, DeviceRead { device, outcome: Err(attempts) }));
    }
    reads.sort_by_key(|(i, _)| *i);
    reads.into_iter().map(|(_, r)| r).collect()
}

/// The same physical key seen twice: same serial, or — both without one — the same
/// DeviceInfo.
fn same_key(a: &Identified, b: &Identified) -> bool {
    match (a.info.serial, b.info.serial) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            a.info.version == b.info.version
                && a.info.form_factor == b.info.form_factor
                && a.info.supported == b.info.supported
        }
        _ => false,
    }
}

/// Puts the PC/SC keys and HID reads together: one entry per physical key.
fn merge(
    report: &mut Report,
    pcsc: PcscReport,
    devices: &[UsbKeyDevice],
    reads: Vec<DeviceRead>,
    order: &InterfaceOrder,
) {
    let mut by_pid: BTreeMap<u16, Vec<ScannedKey>> = BTreeMap::new();
    for found in pcsc.keys {
        let entry = ScannedKey {
            key: found.key,
            interface: Interface::Ccid,
            reader: Some(found.reader.clone()),
            port: None,
            transfers: found.apdus,
        };
        match Pid::from_reader_name(&found.reader) {
            Some(pid) => by_pid.entry(pid.value()).or_default().push(entry),
            // An external or NFC reader: not a USB device of its own.
            None => report.keys.push(entry),
        }
    }
    let mut reads_by_pid: BTreeMap<u16, Vec<DeviceRead>> = BTreeMap::new();
    for read in reads {
        reads_by_pid.entry(read.device.pid.value()).or_default().push(read);
    }
    let sizes = group_sizes(devices);
    let mut problems = pcsc.problems;

    let pids: Vec<u16> = by_pid.keys().chain(sizes.keys()).copied().collect();
    for pid in dedup_sorted(pids) {
        let mut entries = by_pid.remove(&pid).unwrap_or_default();
        let size = sizes.get(&pid).copied().unwrap_or(0);
        let mut failed = Vec::new();
        for read in reads_by_pid.remove(&pid).unwrap_or_default() {
            let (key, interface, transfers) = match read.outcome {
                Ok(ok) => ok,
                Err(attempts) => {
                    failed.push(UnreadableKey { port: read.device.port, pid: read.device.pid, attempts });
                    continue;
                }
            };
            let port = Some(read.device.port);
            match entries.iter_mut().find(|e| e.port.is_none() && same_key(&e.key, &key)) {
                Some(existing) => {
                    existing.port = port;
                    if order.rank(interface) < order.rank(existing.interface) {
                        existing.key = key;
                        existing.interface = interface;
                        existing.transfers = transfers;
                    }
                }
                None => entries.push(ScannedKey { key, interface, reader: None, port, transfers }),
            }
        }
        // One device and one key: that key sits in that port.
        if size == 1 && entries.len() == 1 && entries[0].port.is_none() {
            entries[0].port = devices.iter().find(|d| d.pid.value() == pid).map(|d| d.port.clone());
        }
        let resolved = size > 0 && entries.len() >= size;
        if resolved {
            problems.retain(|p| Pid::from_reader_name(&p.reader).map(|p| p.value()) != Some(pid));
        }
        // A key whose CCID read failed is, as a rule, the key whose HID read failed too
        // (pulled out mid-read, or broken): its reader's problem already says so, once. An
        // access-denied HID read is kept apart: it carries the fix (the udev rules).
        let mut explained = problems.iter().filter(|p| Pid::from_reader_name(&p.reader).map(|p| p.value()) == Some(pid)).count();
        failed.retain(|u| {
            let fold = explained > 0 && !u.access_denied();
            explained -= usize::from(fold);
            !fold
        });
        // Devices that could not be read and are not explained by keys read another way.
        let missing = size.saturating_sub(entries.len());
        if failed.len() > missing {
            tracing::debug!(pid, "{} HID read(s) failed on keys already read over CCID", failed.len() - missing);
        }
        report.unreadable.extend(failed.into_iter().take(missing));
        report.keys.extend(entries);
    }
    report.reader_problems = problems;
    report.keys.sort_by(|a, b| a.place().cmp(&b.place()));
    report.unreadable.sort_by(|a, b| a.port.cmp(&b.port));
}

fn dedup_sorted(mut v: Vec<u16>) -> Vec<u16> {
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{Capabilities, FormFactor, Transport};
    use crate::device_info::{DeviceInfo, PerTransport};
    use crate::scan::FoundKey;
    use crate::version::Version;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn key(pid: u16, serial: Option<u32>) -> Identified {
        let mut info = DeviceInfo::synthesized(
            Version::new(5, 7, 4),
            serial,
            PerTransport { usb: Some(Capabilities(0x023F)), nfc: None },
        );
        info.form_factor = FormFactor::UsbAKeychain;
        Identified {
            info,
            key_type: None,
            name: "YubiKey 5A".into(),
            transport: Transport::Usb,
            pid: Pid::new(pid),
        }
    }

    fn device(port: &str, pid: u16, otp: bool, fido: bool) -> UsbKeyDevice {
        UsbKeyDevice {
            port: port.into(),
            pid: Pid::new(pid).unwrap(),
            otp: if otp { vec![format!("/dev/hidraw-otp-{port}")] } else { vec![] },
            fido: if fido { vec![format!("/dev/hidraw-fido-{port}")] } else { vec![] },
        }
    }

    /// Answers HID reads from a table of path → result, and records what was opened.
    #[derive(Default)]
    struct FakeReader {
        answers: HashMap<String, Result<Identified, Error>>,
        opened: Mutex<Vec<String>>,
    }

    impl FakeReader {
        fn with(mut self, path: &str, answer: Result<Identified, Error>) -> Self {
            self.answers.insert(path.into(), answer);
            self
        }
        fn opened(&self) -> Vec<String> {
            self.opened.lock().unwrap().clone()
        }
    }

    impl HidReader for FakeReader {
        fn read(&self, _iface: Interface, path: &str, _pid: Pid) -> Result<(Identified, u32), Error> {
            self.opened.lock().unwrap().push(path.into());
            if path.contains("hang") {
                thread::sleep(Duration::from_secs(5));
            }
            self.answers.get(path).cloned().unwrap_or(Err(TransportError::AccessDenied.into())).map(|k| (k, 4))
        }
    }

    fn pcsc_with(keys: Vec<(&'static str, Identified)>) -> impl FnOnce(&ScanOptions) -> Result<PcscReport, TransportError> {
        move |opts: &ScanOptions| {
            let keys = keys
                .into_iter()
                .filter(|(r, _)| opts.wants(r, None))
                .map(|(reader, key)| FoundKey { key, reader: reader.into(), atr: vec![], apdus: 2 })
                .collect();
            Ok(PcscReport { readers: vec![], keys, problems: vec![] })
        }
    }

    fn run(
        order: &str,
        pcsc: impl FnOnce(&ScanOptions) -> Result<PcscReport, TransportError>,
        devices: Vec<UsbKeyDevice>,
        reader: &Arc<FakeReader>,
    ) -> Report {
        let opts = FullScanOptions {
            order: order.parse().unwrap(),
            device_timeout: Duration::from_millis(500),
            ..FullScanOptions::default()
        };
        scan_with(&opts, pcsc, Ok(devices), Arc::clone(reader) as Arc<dyn HidReader>)
    }

    const READER: &str = "Yubico YubiKey OTP+FIDO+CCID 00 00";

    #[test]
    fn a_ccid_reader_and_the_hid_nodes_of_the_same_key_are_one_key() {
        let reader = Arc::new(FakeReader::default());
        let report = run("ccid,otp,fido", pcsc_with(vec![(READER, key(0x0407, Some(7)))]), vec![device("1-1", 0x0407, true, true)], &reader);
        assert_eq!(report.keys.len(), 1);
        assert_eq!(report.keys[0].interface, Interface::Ccid);
        assert_eq!(report.keys[0].port.as_deref(), Some("1-1"));
        assert_eq!(report.keys[0].reader.as_deref(), Some(READER));
        assert!(report.unreadable.is_empty());
        assert!(reader.opened().is_empty(), "CCID answered: no HID node is opened");
    }

    #[test]
    fn hid_results_merge_into_ccid_keys_by_serial() {
        // Two keys of one PID; only one CCID reader answered. Both OTP nodes are read; the
        // one with the same serial merges, the other is a key of its own.
        let reader = Arc::new(
            FakeReader::default()
                .with("/dev/hidraw-otp-1-1", Ok(key(0x0407, Some(7))))
                .with("/dev/hidraw-otp-1-2", Ok(key(0x0407, Some(8)))),
        );
        let devices = vec![device("1-1", 0x0407, true, true), device("1-2", 0x0407, true, true)];
        let report = run("ccid,otp,fido", pcsc_with(vec![(READER, key(0x0407, Some(7)))]), devices, &reader);
        let serials: Vec<_> = report.keys.iter().map(|k| (k.key.info.serial, k.interface, k.port.clone())).collect();
        assert_eq!(
            serials,
            vec![(Some(7), Interface::Ccid, Some("1-1".into())), (Some(8), Interface::Otp, Some("1-2".into()))]
        );
        assert!(report.unreadable.is_empty());
    }

    #[test]
    fn identical_keys_without_serials_stay_two() {
        let reader = Arc::new(
            FakeReader::default()
                .with("/dev/hidraw-fido-3-1", Ok(key(0x0120, None)))
                .with("/dev/hidraw-fido-3-2", Ok(key(0x0120, None))),
        );
        let devices = vec![device("3-1", 0x0120, false, true), device("3-2", 0x0120, false, true)];
        let report = run("ccid,otp,fido", pcsc_with(vec![]), devices, &reader);
        let ports: Vec<_> = report.keys.iter().map(|k| k.port.clone().unwrap()).collect();
        assert_eq!(ports, vec!["3-1", "3-2"]);
        assert!(report.keys.iter().all(|k| k.interface == Interface::Fido));
    }

    #[test]
    fn otp_comes_before_fido_and_fido_is_the_fallback() {
        let reader = Arc::new(
            FakeReader::default()
                .with("/dev/hidraw-otp-1-1", Err(TransportError::Unplugged.into()))
                .with("/dev/hidraw-fido-1-1", Ok(key(0x0403, Some(5)))),
        );
        let report = run("ccid,otp,fido", pcsc_with(vec![]), vec![device("1-1", 0x0403, true, true)], &reader);
        assert_eq!(reader.opened(), vec!["/dev/hidraw-otp-1-1", "/dev/hidraw-fido-1-1"]);
        assert_eq!(report.keys[0].interface, Interface::Fido);

        let reader = Arc::new(FakeReader::default().with("/dev/hidraw-fido-1-1", Ok(key(0x0403, Some(5)))));
        let report = run("fido,otp", pcsc_with(vec![]), vec![device("1-1", 0x0403, true, true)], &reader);
        assert_eq!(reader.opened(), vec!["/dev/hidraw-fido-1-1"]);
        assert_eq!(report.keys.len(), 1);
    }

    #[test]
    fn a_key_with_every_interface_denied_is_reported() {
        let reader = Arc::new(FakeReader::default());
        let report = run("ccid,otp,fido", pcsc_with(vec![]), vec![device("1-4", 0x0407, true, true)], &reader);
        assert!(report.keys.is_empty());
        assert_eq!(report.unreadable.len(), 1);
        let u = &report.unreadable[0];
        assert!(u.access_denied());
        assert_eq!(u.port, "1-4");
        assert_eq!(u.attempts.len(), 2);
        assert_eq!(u.description(), "YubiKey [OTP+FIDO+CCID]");
    }

    #[test]
    fn a_key_pulled_out_mid_read_is_one_warning_not_two() {
        // Its CCID read failed (the reader's problem) and so did its HID fallback.
        let pcsc = |_: &ScanOptions| {
            Ok(PcscReport { readers: vec![READER.into()], keys: vec![], problems: vec![ReaderProblem { reader: READER.into(), error: TransportError::Removed.into() }] })
        };
        let reader = Arc::new(FakeReader::default().with("/dev/hidraw-otp-1-1", Err(TransportError::Unplugged.into())).with("/dev/hidraw-fido-1-1", Err(TransportError::Unplugged.into())));
        let report = run("ccid,otp,fido", pcsc, vec![device("1-1", 0x0407, true, true)], &reader);
        assert_eq!(report.reader_problems.len(), 1);
        assert!(report.unreadable.is_empty(), "{:?}", report.unreadable);

        // Denied over HID: both stay (the denial carries the udev fix).
        let pcsc = |_: &ScanOptions| {
            Ok(PcscReport { readers: vec![READER.into()], keys: vec![], problems: vec![ReaderProblem { reader: READER.into(), error: TransportError::SharingViolation.into() }] })
        };
        let report = run("ccid,otp,fido", pcsc, vec![device("1-1", 0x0407, true, true)], &Arc::new(FakeReader::default()));
        assert_eq!((report.reader_problems.len(), report.unreadable.len()), (1, 1));
        assert!(report.unreadable[0].access_denied());
    }

    #[test]
    fn a_ccid_only_key_without_pcscd_is_reported_not_dropped() {
        let reader = Arc::new(FakeReader::default());
        let report = run("ccid,otp,fido", |_: &ScanOptions| Err(TransportError::NoService), vec![device("2-1", 0x0404, false, false)], &reader);
        assert_eq!(report.pcsc_error, Some(TransportError::NoService));
        assert_eq!(report.unreadable.len(), 1);
        assert!(!report.unreadable[0].access_denied());
        assert!(report.unreadable[0].attempts.is_empty());
    }

    #[test]
    fn hid_first_skips_the_readers_of_resolved_keys() {
        let reader = Arc::new(FakeReader::default().with("/dev/hidraw-otp-1-1", Ok(key(0x0407, Some(7)))));
        let report = run("otp,ccid", pcsc_with(vec![(READER, key(0x0407, Some(7)))]), vec![device("1-1", 0x0407, true, true)], &reader);
        assert_eq!(report.keys.len(), 1);
        assert_eq!(report.keys[0].interface, Interface::Otp);
        assert_eq!(report.keys[0].reader, None, "the YubiKey reader was not read");

        // No CCID at all: YubiKey readers are skipped, external readers are not.
        let reader = Arc::new(FakeReader::default().with("/dev/hidraw-otp-1-1", Ok(key(0x0407, Some(7)))));
        let pcsc = pcsc_with(vec![(READER, key(0x0407, Some(7))), ("ACS ACR122U 00 00", key(0x0407, Some(9)))]);
        let report = run("otp,fido", pcsc, vec![device("1-1", 0x0407, true, true)], &reader);
        let serials: Vec<_> = report.keys.iter().map(|k| k.key.info.serial).collect();
        assert_eq!(serials, vec![Some(7), Some(9)]);
    }

    #[test]
    fn a_hanging_device_does_not_hold_up_the_others() {
        let reader = Arc::new(FakeReader::default().with("/dev/hidraw-otp-1-2", Ok(key(0x0405, Some(2)))));
        let mut hanging = device("1-1", 0x0405, true, false);
        hanging.otp = vec!["/dev/hidraw-hang".into()];
        let started = Instant::now();
        let report = run("ccid,otp,fido", pcsc_with(vec![]), vec![hanging, device("1-2", 0x0405, true, false)], &reader);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(report.keys.len(), 1);
        assert_eq!(report.unreadable.len(), 1);
        assert_eq!(report.unreadable[0].attempts[0].error, Error::Transport(TransportError::Timeout));
    }

    #[test]
    fn interface_orders_parse() {
        assert_eq!("ccid,otp,fido".parse::<InterfaceOrder>().unwrap(), InterfaceOrder::default());
        assert_eq!(" FIDO , ccid".parse::<InterfaceOrder>().unwrap().to_string(), "fido,ccid");
        assert!("ccid,ccid".parse::<InterfaceOrder>().is_err());
        assert!("usb".parse::<InterfaceOrder>().is_err());
        assert!("".parse::<InterfaceOrder>().is_err());
    }
}
