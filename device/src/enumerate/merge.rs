//! Merging interfaces into keys: PC/SC and HID read in the configured order, then put
//! together so that each physical key is one entry.
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
//!
//! A caller that wants keys before the whole scan is done ([`FullScanOptions::on_key`]) is
//! told of each PC/SC read the moment it ends when nothing later can change its entry
//! ([`final_entry`]): the long-running service pushes it without waiting for a stalled
//! reader or the HID reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::hid_reads::{read_devices, Attempt, DeviceRead, HidReader, HidapiReader};
use super::interfaces::{Interface, InterfaceOrder};
use super::pcsc_readers::{scan_pcsc, FoundKey, OnRead, PcscReport, ReaderProblem, ScanOptions};
use super::usb_devices::{discover, UsbKeyDevice};
use crate::error::{Error, LinkError};
use crate::caps::{Capabilities, Transport};
use crate::identify::Identified;
use crate::posture::PostureRead;
use crate::usb_ids::{Pid, UsbInterfaces};

/// A key, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedKey {
    /// The key, identified.
    pub key: Identified,
    /// The interface its record was read through.
    pub interface: Interface,
    /// The PC/SC reader, for keys read (or also seen) through CCID.
    pub reader: Option<String>,
    /// The USB port path, when known.
    pub port: Option<String>,
    /// APDUs (CCID) or HID reports (OTP, FIDO) it took, posture included.
    pub transfers: u32,
    /// Its posture, when it was asked for (`ScanOptions::posture`).
    pub posture: Option<PostureRead>,
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
    /// The USB port path (`1-2.3`).
    pub port: String,
    /// Its USB product ID.
    pub pid: Pid,
    /// Every interface tried; empty when none was usable (e.g. a CCID-only key and no pcscd).
    pub attempts: Vec<Attempt>,
}

impl UnreadableKey {
    /// True when every interface failed because the user may not open it.
    pub fn access_denied(&self) -> bool {
        !self.attempts.is_empty()
            && self.attempts.iter().all(|a| a.error == Error::Link(LinkError::AccessDenied))
    }

    /// What ykman's list says for such a key: `YubiKey [OTP+FIDO+CCID]`.
    pub fn description(&self) -> String {
        format!("{} [{}]", self.pid.key_type().family_name(), self.pid.interfaces())
    }
}

/// Everything one scan found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every key read, once each, ordered by where it was seen.
    pub keys: Vec<ScannedKey>,
    /// Keys that are plugged in but could not be read, ordered by port.
    pub unreadable: Vec<UnreadableKey>,
    /// PC/SC readers with a card that could not be read (YubiKey readers whose key was read
    /// over HID instead are not listed).
    pub reader_problems: Vec<ReaderProblem>,
    /// PC/SC could not be used at all (pcscd not running).
    pub pcsc_error: Option<LinkError>,
    /// USB could not be listed.
    pub usb_error: Option<LinkError>,
}

/// What to scan.
#[derive(Debug, Clone)]
pub struct FullScanOptions {
    /// What to read over PC/SC.
    pub pcsc: ScanOptions,
    /// The interfaces to use, in the order to try them.
    pub order: InterfaceOrder,
    /// Look at USB at all (off when the user asked for one PC/SC reader).
    pub usb: bool,
    /// How long reading one USB device over HID may take.
    pub device_timeout: Duration,
    /// Told of each key whose entry is already final the moment its PC/SC read ends, before
    /// the scan waits for slower readers and the HID reads ([`final_entry`] says which); the
    /// entry is the one the [`Report`] returns for that key. Called on the scanning thread.
    pub on_key: Option<OnKey>,
}

/// A callback for [`FullScanOptions::on_key`].
#[derive(Clone)]
pub struct OnKey(pub Arc<dyn Fn(&ScannedKey) + Send + Sync>);

impl fmt::Debug for OnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnKey(..)")
    }
}

impl Default for FullScanOptions {
    fn default() -> Self {
        Self {
            pcsc: ScanOptions::default(),
            order: InterfaceOrder::default(),
            usb: true,
            device_timeout: Duration::from_secs(10),
            on_key: None,
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
    pcsc: impl FnOnce(&ScanOptions) -> Result<PcscReport, LinkError>,
    devices: Result<Vec<UsbKeyDevice>, LinkError>,
    reader: Arc<dyn HidReader>,
) -> Report {
    let mut report = Report::default();
    let devices = devices.unwrap_or_else(|e| {
        report.usb_error = Some(e);
        Vec::new()
    });
    let mut pcsc_opts = opts.pcsc.clone();
    pcsc_opts.skip_yubikey_readers |= !opts.order.uses(Interface::Ccid);
    if let Some(on_key) = &opts.on_key {
        pcsc_opts.on_read = Some(tell_final(on_key.clone(), opts.pcsc.on_read.clone(), &devices, opts.order.ccid_first()));
    }

    let (pcsc_report, reads) = if opts.order.ccid_first() {
        // Keys without a CCID interface cannot be read through PC/SC: read them meanwhile.
        let (no_ccid, with_ccid): (Vec<UsbKeyDevice>, Vec<UsbKeyDevice>) =
            devices.iter().cloned().partition(|d| !d.pid.interfaces().contains(UsbInterfaces::CCID));
        // No thread when there is nothing to read (a scan of NFC readers alone).
        let early = (!no_ccid.is_empty()).then(|| {
            let (reader, order, timeout, no_ccid, posture) =
                (Arc::clone(&reader), opts.order.clone(), opts.device_timeout, no_ccid.clone(), opts.pcsc.posture.clone());
            thread::Builder::new()
                .name("usb:hid-only".into())
                .spawn(move || read_devices(&reader, no_ccid, &order, timeout, &posture))
        });
        let pcsc_report = pcsc(&pcsc_opts);
        let covered = ccid_counts(pcsc_report.as_ref().ok());
        let group_sizes = group_sizes(&devices);
        let to_read: Vec<UsbKeyDevice> = with_ccid
            .into_iter()
            .filter(|d| covered.get(&d.pid.value()).copied().unwrap_or(0) < group_sizes[&d.pid.value()])
            .collect();
        let mut reads = read_devices(&reader, to_read, &opts.order, opts.device_timeout, &opts.pcsc.posture);
        match early {
            None => {}
            // read_devices returns by its deadline, so this join is bounded.
            Some(Ok(handle)) => reads.extend(handle.join().unwrap_or_default()),
            Some(Err(e)) => {
                tracing::debug!("cannot start the early USB reader: {e}; reading in line");
                reads.extend(read_devices(&reader, no_ccid, &opts.order, opts.device_timeout, &opts.pcsc.posture));
            }
        }
        (pcsc_report, reads)
    } else {
        let reads = read_devices(&reader, devices.clone(), &opts.order, opts.device_timeout, &opts.pcsc.posture);
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
    add_fido2_posture(&mut report, &devices, reader.as_ref());
    report
}

/// An [`OnRead`] that tells `on_key` of each PC/SC read whose entry is already final
/// ([`final_entry`]), after telling `also` (the caller's own PC/SC hook, if any) of every read.
fn tell_final(on_key: OnKey, also: Option<OnRead>, devices: &[UsbKeyDevice], ccid_first: bool) -> OnRead {
    let devices = devices.to_vec();
    OnRead(Arc::new(move |found: &FoundKey| {
        if let Some(OnRead(also)) = &also {
            also(found);
        }
        if let Some(entry) = final_entry(found, &devices, ccid_first) {
            (on_key.0)(&entry);
        }
    }))
}

/// The entry a PC/SC read will have in the [`Report`], when that is known as the read ends:
/// - a key on an NFC or contact reader: no merge changes it;
/// - a key on a YubiKey's own CCID reader, with CCID first (no HID read of its device is
///   made, or could replace it) and at most one USB device of its PID: that device's port is
///   its port, as [`merge`] sets it (none without a device: USB off or not listed);
///
/// in both cases unless its FIDO2 posture is still to be read on its FIDO HID node
/// ([`fido2_node`]). Any other read waits for the whole scan.
///
/// The USB devices are those listed before the PC/SC scan began: a second key of the same PID
/// plugged in between the two gets a reader of its own, and the Report then gives neither key
/// a port, where the key told early had one (the Report's entries are the ones to keep).
fn final_entry(found: &FoundKey, devices: &[UsbKeyDevice], ccid_first: bool) -> Option<ScannedKey> {
    let mut entry = ccid_entry(found.clone());
    if let Some(pid) = Pid::from_reader_name(&found.reader) {
        let mut group = devices.iter().filter(|d| d.pid == pid);
        match (ccid_first, group.next(), group.next()) {
            (true, Some(device), None) => entry.port = Some(device.port.clone()),
            (true, None, _) => {}
            _ => return None,
        }
    }
    fido2_node(&entry, devices).is_none().then_some(entry)
}

/// A key read through a PC/SC reader, before any merge: seen at that reader.
fn ccid_entry(found: FoundKey) -> ScannedKey {
    ScannedKey {
        key: found.key,
        interface: Interface::Ccid,
        reader: Some(found.reader),
        port: None,
        transfers: found.apdus,
        posture: found.posture,
    }
}

/// The FIDO HID node a key's FIDO2 posture is still to be read on: a USB key read through its
/// CCID reader or its OTP HID node (CCID on USB has no FIDO applet; OTP HID has none at all)
/// whose posture was read without FIDO2, with FIDO2 on over USB, at a port with a FIDO node.
fn fido2_node<'a>(k: &ScannedKey, devices: &'a [UsbKeyDevice]) -> Option<&'a str> {
    let read = k.posture.as_ref()?;
    let fido2_known = read.posture.fido2_pin_set.is_some() || read.warnings.iter().any(|w| w.applet == crate::posture::Applet::Fido2);
    let fido2_on_usb = k.key.info.enabled.usb.or(k.key.info.supported.usb).is_some_and(|c| c.contains(Capabilities::FIDO2));
    if !matches!(k.interface, Interface::Ccid | Interface::Otp) || k.key.transport != Transport::Usb || fido2_known || !fido2_on_usb {
        return None;
    }
    let port = k.port.as_deref()?;
    devices.iter().find(|d| d.port == port)?.fido.first().map(String::as_str)
}

/// Reads the FIDO2 posture of the keys that have it on their FIDO HID node ([`fido2_node`]),
/// one key after the other, each bounded by CTAPHID's deadline.
fn add_fido2_posture(report: &mut Report, devices: &[UsbKeyDevice], reader: &dyn HidReader) {
    for k in &mut report.keys {
        let Some(path) = fido2_node(k, devices) else { continue };
        let Some(read) = k.posture.as_mut() else { continue };
        let before = read.transfers;
        reader.add_fido2_posture(path, &k.key.info, read);
        k.transfers += read.transfers - before;
    }
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
        let pid = Pid::from_reader_name(&found.reader);
        let entry = ccid_entry(found);
        match pid {
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
            let (key, interface, transfers, posture) = match read.outcome {
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
                        existing.posture = posture;
                    }
                }
                None => entries.push(ScannedKey { key, interface, reader: None, port, transfers, posture }),
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
    use crate::enumerate::pcsc_readers::FoundKey;
    use crate::version::Version;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

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

    /// Answers HID reads from a table of path → result, and records what was opened. A FIDO2
    /// posture read finds a PIN set.
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
            self.answers.get(path).cloned().unwrap_or(Err(LinkError::AccessDenied.into())).map(|k| (k, 4))
        }

        fn add_fido2_posture(&self, path: &str, _info: &DeviceInfo, read: &mut PostureRead) {
            self.opened.lock().unwrap().push(path.into());
            read.posture.fido2_pin_set = Some(true);
            read.transfers += 3;
        }
    }

    fn found(reader: &str, key: Identified) -> FoundKey {
        FoundKey { key, reader: reader.into(), atr: vec![], apdus: 2, posture: None }
    }

    /// A PC/SC scan that finds `keys` (in the readers it is asked to read) and, as
    /// `scan_pcsc` does, tells `ScanOptions::on_read` of each as its read ends.
    fn pcsc_of(keys: Vec<FoundKey>) -> impl FnOnce(&ScanOptions) -> Result<PcscReport, LinkError> {
        move |opts: &ScanOptions| {
            let keys: Vec<FoundKey> = keys.into_iter().filter(|k| opts.wants(&k.reader, None)).collect();
            if let Some(OnRead(tell)) = &opts.on_read {
                keys.iter().for_each(|k| tell(k));
            }
            Ok(PcscReport { readers: vec![], keys, problems: vec![] })
        }
    }

    fn pcsc_with(keys: Vec<(&'static str, Identified)>) -> impl FnOnce(&ScanOptions) -> Result<PcscReport, LinkError> {
        pcsc_of(keys.into_iter().map(|(reader, key)| found(reader, key)).collect())
    }

    fn run(
        order: &str,
        pcsc: impl FnOnce(&ScanOptions) -> Result<PcscReport, LinkError>,
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

    /// [`run`] with a `FullScanOptions::on_key` hook: the report, the keys told, and how many
    /// of them were told before the PC/SC scan returned (that is, before the scan waited for
    /// any other reader or read any HID node).
    fn run_telling(order: &str, keys: Vec<FoundKey>, devices: Vec<UsbKeyDevice>, reader: &Arc<FakeReader>) -> (Report, Vec<ScannedKey>, usize) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        let opts = FullScanOptions {
            order: order.parse().unwrap(),
            device_timeout: Duration::from_millis(500),
            on_key: Some(OnKey(Arc::new(move |k: &ScannedKey| sink.lock().unwrap().push(k.clone())))),
            ..FullScanOptions::default()
        };
        let mut told_in_scan = 0;
        let pcsc = |o: &ScanOptions| {
            let scanned = pcsc_of(keys)(o);
            told_in_scan = told.lock().unwrap().len();
            scanned
        };
        let report = scan_with(&opts, pcsc, Ok(devices), Arc::clone(reader) as Arc<dyn HidReader>);
        let told = told.lock().unwrap().clone();
        (report, told, told_in_scan)
    }

    const READER: &str = "Yubico YubiKey OTP+FIDO+CCID 00 00";
    const NFC: &str = "ACS ACR122U 00 00";

    #[test]
    fn a_key_on_its_own_ccid_reader_is_told_with_its_port_as_its_read_ends() {
        let reader = Arc::new(FakeReader::default());
        let keys = vec![found(READER, key(0x0407, Some(7))), found(NFC, key(0x0407, Some(9)))];
        let (report, told, told_in_scan) = run_telling("ccid,otp,fido", keys, vec![device("1-1", 0x0407, true, true)], &reader);
        assert_eq!(told_in_scan, 2, "both told before the PC/SC scan returned");
        assert_eq!(told.iter().map(|k| k.place()).collect::<Vec<_>>(), vec![Some("1-1"), Some(NFC)]);
        assert_eq!(told[0].reader.as_deref(), Some(READER));
        for k in &told {
            assert!(report.keys.contains(k), "told {k:?}, the report has {:?}", report.keys);
        }
        assert_eq!(report.keys.len(), 2);

        // With posture read, but FIDO2 off over USB: nothing is added later.
        let mut no_fido2 = found(READER, key(0x0407, Some(7)));
        no_fido2.key.info.enabled.usb = Some(Capabilities(0x003F));
        no_fido2.posture = Some(PostureRead::default());
        let (report, told, told_in_scan) = run_telling("ccid,otp,fido", vec![no_fido2], vec![device("1-1", 0x0407, true, true)], &reader);
        assert_eq!((told_in_scan, report.keys.len()), (1, 1));
        assert_eq!(told[0], report.keys[0]);
        assert!(reader.opened().is_empty(), "no HID node was opened");
    }

    #[test]
    fn a_key_on_a_yubikey_reader_without_a_usb_device_is_told_without_a_port() {
        // USB off (`--reader`) or not listed: the merge leaves the read as it is.
        let reader = Arc::new(FakeReader::default());
        let (report, told, told_in_scan) = run_telling("ccid,otp,fido", vec![found(READER, key(0x0407, Some(7)))], vec![], &reader);
        assert_eq!(told_in_scan, 1);
        assert_eq!(told[0].port, None);
        assert_eq!(report.keys, told);
    }

    #[test]
    fn keys_of_a_pid_with_two_usb_devices_wait_for_the_whole_scan() {
        let reader = Arc::new(FakeReader::default());
        let keys = vec![
            found(READER, key(0x0407, Some(7))),
            found("Yubico YubiKey OTP+FIDO+CCID 01 00", key(0x0407, Some(8))),
            found(NFC, key(0x0407, Some(9))),
        ];
        let devices = vec![device("1-1", 0x0407, true, true), device("1-2", 0x0407, true, true)];
        let (report, told, _) = run_telling("ccid,otp,fido", keys, devices, &reader);
        assert_eq!(told.iter().map(|k| k.key.info.serial).collect::<Vec<_>>(), vec![Some(9)], "only the NFC key is told");
        assert_eq!(report.keys.len(), 3);
    }

    #[test]
    fn a_key_whose_fido2_posture_is_on_its_fido_node_waits_for_the_whole_scan() {
        let reader = Arc::new(FakeReader::default());
        let mut with_posture = found(READER, key(0x0407, Some(7)));
        with_posture.posture = Some(PostureRead::default());
        let (report, told, _) = run_telling("ccid,otp,fido", vec![with_posture], vec![device("1-1", 0x0407, true, true)], &reader);
        assert!(told.is_empty(), "told {told:?}");
        assert_eq!(reader.opened(), vec!["/dev/hidraw-fido-1-1"]);
        let posture = report.keys[0].posture.as_ref().unwrap();
        assert_eq!((posture.posture.fido2_pin_set, report.keys[0].transfers), (Some(true), 5));
    }

    #[test]
    fn with_hid_first_a_key_on_its_ccid_reader_waits_for_the_whole_scan() {
        // Its HID nodes could not be read, so its CCID reader is read after them and merged.
        let reader = Arc::new(FakeReader::default());
        let keys = vec![found(READER, key(0x0407, Some(7))), found(NFC, key(0x0407, Some(9)))];
        let (report, told, _) = run_telling("otp,fido,ccid", keys, vec![device("1-1", 0x0407, true, true)], &reader);
        assert_eq!(told.iter().map(|k| k.place()).collect::<Vec<_>>(), vec![Some(NFC)], "only the NFC key is told");
        let ccid: Vec<_> = report.keys.iter().map(|k| (k.interface, k.port.as_deref(), k.key.info.serial)).collect();
        assert_eq!(ccid, vec![(Interface::Ccid, Some("1-1"), Some(7)), (Interface::Ccid, None, Some(9))]);
    }

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
                .with("/dev/hidraw-otp-1-1", Err(LinkError::Unplugged.into()))
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
            Ok(PcscReport { readers: vec![READER.into()], keys: vec![], problems: vec![ReaderProblem { reader: READER.into(), error: LinkError::Removed.into() }] })
        };
        let reader = Arc::new(FakeReader::default().with("/dev/hidraw-otp-1-1", Err(LinkError::Unplugged.into())).with("/dev/hidraw-fido-1-1", Err(LinkError::Unplugged.into())));
        let report = run("ccid,otp,fido", pcsc, vec![device("1-1", 0x0407, true, true)], &reader);
        assert_eq!(report.reader_problems.len(), 1);
        assert!(report.unreadable.is_empty(), "{:?}", report.unreadable);

        // Denied over HID: both stay (the denial carries the udev fix).
        let pcsc = |_: &ScanOptions| {
            Ok(PcscReport { readers: vec![READER.into()], keys: vec![], problems: vec![ReaderProblem { reader: READER.into(), error: LinkError::SharingViolation.into() }] })
        };
        let report = run("ccid,otp,fido", pcsc, vec![device("1-1", 0x0407, true, true)], &Arc::new(FakeReader::default()));
        assert_eq!((report.reader_problems.len(), report.unreadable.len()), (1, 1));
        assert!(report.unreadable[0].access_denied());
    }

    #[test]
    fn a_ccid_only_key_without_pcscd_is_reported_not_dropped() {
        let reader = Arc::new(FakeReader::default());
        let report = run("ccid,otp,fido", |_: &ScanOptions| Err(LinkError::NoService), vec![device("2-1", 0x0404, false, false)], &reader);
        assert_eq!(report.pcsc_error, Some(LinkError::NoService));
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
        assert_eq!(report.unreadable[0].attempts[0].error, Error::Link(LinkError::Timeout));
    }
}
