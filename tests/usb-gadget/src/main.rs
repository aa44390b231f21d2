//! `keytally-gadget`: one virtual YubiKey on a USB device controller (configfs + FunctionFS).
//!
//! Signals: SIGUSR1 unplugs (unbinds the UDC), SIGUSR2 plugs it back, SIGTERM/SIGINT remove
//! the gadget and exit 0.

use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use keytally_usb_gadget::ccid::{CcidReader, HEADER};
use keytally_usb_gadget::descriptors::{self as desc, Product};
use keytally_virtual_key::ctap::CtapHid;
use keytally_virtual_key::model::{KeyModel, PRESETS};
use keytally_virtual_key::otp::OtpHid;
use keytally_virtual_key::Card;
use usb_gadget::function::custom::{
    Custom, CustomBuilder, CustomDesc, Endpoint, EndpointDirection, EndpointReceiver, EndpointSender, Event,
    Interface, TransferType,
};
use usb_gadget::{Class, Config, Gadget, Id, Strings, Udc};

const USAGE: &str =
    "usage: keytally-gadget --model NAME --pid 0xPPPP [--udc dummy_udc.0] [--serial N|none]
                       [--unplugged] [--unplug-after apdu:N|otp:N|ctap:N] [--state-file PATH]
                       [--hid-fault otp-bad-crc|ctap-wrong-cid] [--posture SPEC] [--nfc-restricted]
                       [--posture-fault NAME] [--count-file PATH]
       keytally-gadget --describe --model NAME [--serial N|none] [--pid 0xPPPP]
       keytally-gadget --list
Presents the model as a YubiKey with the PID's interfaces (OTP HID on ep0 feature reports, FIDO
HID on interrupt endpoints, CCID on bulk + interrupt) and serves it until SIGTERM/SIGINT.
SIGUSR1 unplugs (unbinds the UDC), SIGUSR2 plugs back in. --unplug-after unplugs when the N-th
APDU / OTP feature report / CTAPHID packet arrives, before answering it (a key pulled out in
the middle of a read). --count-file is rewritten with `APDUS OTP CTAP` (the running counts of APDUs,
OTP feature reports and CTAPHID packets) within 20 ms of a change. --hid-fault answers wrongly over HID: OTP responses whose CRC does not
match (one data byte flipped), or CTAPHID replies on a channel the host was never given.
--state-file is rewritten with \"plugged\" or \"unplugged\". --posture KEY=VALUE,... sets what the
applets report (as keytally-vkey's; the OTP status report carries the slot bits, FIDO HID answers
CTAP2 getInfo); --nfc-restricted sets DeviceInfo's NFC-restricted flag (over USB the key still
answers everything, as a real one does).";

static UNPLUG: AtomicBool = AtomicBool::new(false);
static PLUG: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    match sig {
        libc::SIGUSR1 => UNPLUG.store(true, Ordering::SeqCst),
        libc::SIGUSR2 => PLUG.store(true, Ordering::SeqCst),
        _ => STOP.store(true, Ordering::SeqCst),
    }
}

fn install_signals() {
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Apdu,
    Otp,
    Ctap,
}

struct Args {
    model: KeyModel,
    product: Option<Product>,
    udc: Option<String>,
    unplugged: bool,
    unplug_after: Option<(Kind, u64)>,
    hid_fault: Option<HidFault>,
    state_file: Option<PathBuf>,
    count_file: Option<PathBuf>,
    describe: bool,
}

fn parse_pid(s: &str) -> Result<u16, String> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    u16::from_str_radix(t, 16).map_err(|e| format!("bad PID {s:?}: {e}"))
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut it = std::env::args().skip(1);
    let (mut model, mut serial, mut pid, mut udc) = (None, None, None, None);
    let (mut unplugged, mut unplug_after, mut state_file, mut describe) =
        (false, None, None, false);
    let mut hid_fault = None;
    let mut posture_specs = Vec::new();
    let mut nfc_restricted = false;
    let mut m_posture_fault = None;
    let mut count_file = None;
    while let Some(a) = it.next() {
        let mut value = |n: &str| it.next().ok_or_else(|| format!("{n} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--list" => {
                for p in PRESETS {
                    println!("model {p}");
                }
                for p in desc::PRODUCTS {
                    println!("pid 0x{:04x} {}", p.pid, p.name);
                }
                return Ok(None);
            }
            "--model" => model = Some(value("--model")?),
            "--serial" => serial = Some(value("--serial")?),
            "--pid" => pid = Some(parse_pid(&value("--pid")?)?),
            "--udc" => udc = Some(value("--udc")?),
            "--unplugged" => unplugged = true,
            "--describe" => describe = true,
            "--state-file" => state_file = Some(PathBuf::from(value("--state-file")?)),
            "--count-file" => count_file = Some(PathBuf::from(value("--count-file")?)),
            "--unplug-after" => {
                let v = value("--unplug-after")?;
                let (k, n) = v.split_once(':').ok_or("--unplug-after KIND:N")?;
                let kind = match k {
                    "apdu" => Kind::Apdu,
                    "otp" => Kind::Otp,
                    "ctap" => Kind::Ctap,
                    _ => return Err(format!("unknown kind {k:?}")),
                };
                unplug_after = Some((kind, n.parse().map_err(|e| format!("{v}: {e}"))?));
            }
            "--posture" => posture_specs.push(value("--posture")?),
            "--nfc-restricted" => nfc_restricted = true,
            "--posture-fault" => {
                m_posture_fault = Some(
                    value("--posture-fault")?
                        .parse::<keytally_virtual_key::posture::PostureFault>()?,
                )
            }
            "--hid-fault" => {
                hid_fault = Some(match value("--hid-fault")?.as_str() {
                    "otp-bad-crc" => HidFault::OtpBadCrc,
                    "ctap-wrong-cid" => HidFault::CtapWrongCid,
                    other => return Err(format!("unknown HID fault {other:?}")),
                });
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let name = model.ok_or_else(|| format!("--model is required\n{USAGE}"))?;
    let mut m = KeyModel::preset(&name)
        .ok_or_else(|| format!("unknown model {name:?}; known: {}", PRESETS.join(", ")))?;
    if let Some(s) = serial {
        m = m.with_serial(if s == "none" {
            None
        } else {
            Some(s.parse().map_err(|e| format!("--serial {s}: {e}"))?)
        });
    }
    for spec in &posture_specs {
        m.posture.apply(spec).map_err(|e| format!("--posture: {e}"))?;
    }
    if nfc_restricted {
        m = m.with_nfc_restricted(true);
    }
    m.posture_fault = m_posture_fault;
    let product = match pid {
        Some(p) => Some(desc::product(p).ok_or_else(|| format!("unknown PID 0x{p:04x}"))?),
        None if describe => None,
        None => return Err(format!("--pid is required\n{USAGE}")),
    };
    Ok(Some(Args {
        model: m,
        product,
        udc,
        unplugged,
        unplug_after,
        hid_fault,
        state_file,
        count_file,
        describe,
    }))
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The model as JSON, for the lab's checker.
fn describe(m: &KeyModel, p: Option<Product>) -> String {
    let opt = |v: Option<u16>| v.map_or("null".to_string(), |x| x.to_string());
    format!(
        "{{\"preset\":{},\"name\":{},\"serial\":{},\"firmware\":\"{}\",\"formFactor\":{},\"fips\":{},\"sky\":{},\"usbSupported\":{},\"usbEnabled\":{},\"nfcSupported\":{},\"nfcEnabled\":{},\"pid\":{},\"product\":{},\"interfaces\":{}}}",
        json_str(&m.preset),
        json_str(&m.expected_name),
        m.serial.map_or("null".to_string(), |s| format!("\"{s}\"")),
        m.version,
        m.form_factor & 0x0F,
        m.form_factor & 0x80 != 0,
        m.form_factor & 0x40 != 0,
        m.usb_supported,
        opt(m.usb_enabled),
        opt(m.nfc_supported),
        opt(m.nfc_enabled),
        p.map_or("null".to_string(), |p| p.pid.to_string()),
        p.map_or("null".to_string(), |p| json_str(p.name)),
        p.map_or("null".to_string(), |p| p.interfaces.to_string()),
    )
}

/// A key that answers over HID, but wrongly (a broken or hostile device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HidFault {
    /// OTP responses with one data byte flipped after the CRC was computed.
    OtpBadCrc,
    /// CTAPHID answers (after INIT) on a channel the host never got.
    CtapWrongCid,
}

/// Counts messages of each kind and raises the unplug flag at the configured one.
struct Trip {
    at: Option<(Kind, u64)>,
    counts: [AtomicU64; 3],
    tripped: AtomicBool,
    fault: Option<HidFault>,
}

impl Trip {
    /// Counts one message; true if the key must be pulled out instead of answering it.
    fn hit(&self, kind: Kind) -> bool {
        let n = self.counts[kind as usize].fetch_add(1, Ordering::SeqCst) + 1;
        if self.tripped.load(Ordering::SeqCst) {
            return true;
        }
        if self.at == Some((kind, n)) {
            eprintln!("keytally-gadget: unplugging at {kind:?} #{n}");
            self.tripped.store(true, Ordering::SeqCst);
            UNPLUG.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }
}

fn hid_interface(report: &[u8], protocol: u8) -> Interface {
    let (sub, proto) = if protocol == 1 { (1, 1) } else { (0, 0) };
    Interface::new(Class::new(3, sub, proto), "").with_custom_desc(CustomDesc::new(
        0x21,
        desc::hid_class_descriptor(report.len()),
    ))
}

fn interrupt(dir: EndpointDirection, size: u16, interval: u8) -> Endpoint {
    let mut ep = Endpoint::custom(dir, TransferType::Interrupt);
    ep.max_packet_size_hs = size;
    ep.max_packet_size_ss = size;
    ep.interval = interval;
    ep
}

struct Endpoints {
    fido: Option<(EndpointReceiver, EndpointSender)>,
    ccid: Option<(EndpointReceiver, EndpointSender)>,
    /// Interface number → what it is.
    map: Vec<u8>,
    _keep: Vec<EndpointSender>,
}

/// The FunctionFS function for a PID: its interfaces in Yubico's order (OTP, FIDO, CCID).
fn builder(p: Product) -> (CustomBuilder, Endpoints) {
    let mut b = Custom::builder();
    let mut eps = Endpoints {
        fido: None,
        ccid: None,
        map: Vec::new(),
        _keep: Vec::new(),
    };
    if p.interfaces & desc::OTP != 0 {
        let (tx, dir) = EndpointDirection::device_to_host();
        b = b.with_interface(
            hid_interface(desc::OTP_REPORT_DESCRIPTOR, 1).with_endpoint(interrupt(dir, 8, 7)),
        );
        eps._keep.push(tx);
        eps.map.push(desc::OTP);
    }
    if p.interfaces & desc::FIDO != 0 {
        let (rx, out_dir) = EndpointDirection::host_to_device();
        let (tx, in_dir) = EndpointDirection::device_to_host();
        b = b.with_interface(
            hid_interface(desc::FIDO_REPORT_DESCRIPTOR, 0)
                .with_endpoint(interrupt(out_dir, 64, 4))
                .with_endpoint(interrupt(in_dir, 64, 4)),
        );
        eps.fido = Some((rx, tx));
        eps.map.push(desc::FIDO);
    }
    if p.interfaces & desc::CCID != 0 {
        let (rx, out_dir) = EndpointDirection::host_to_device();
        let (tx, in_dir) = EndpointDirection::device_to_host();
        let (itx, int_dir) = EndpointDirection::device_to_host();
        b = b.with_interface(
            Interface::new(Class::new(0x0B, 0, 0), "")
                .with_custom_desc(CustomDesc::new(0x21, desc::ccid_class_descriptor()))
                .with_endpoint(Endpoint::bulk(out_dir))
                .with_endpoint(Endpoint::bulk(in_dir))
                .with_endpoint(interrupt(int_dir, 8, 7)),
        );
        eps.ccid = Some((rx, tx));
        eps._keep.push(itx);
        eps.map.push(desc::CCID);
    }
    (b, eps)
}

fn build(p: Product) -> (Custom, usb_gadget::function::Handle, Endpoints) {
    let (b, eps) = builder(p);
    let (custom, handle) = b.build();
    (custom, handle, eps)
}

fn write_state(path: &Option<PathBuf>, state: &str) {
    if let Some(p) = path {
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, format!("{state}\n")).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ESHUTDOWN) | Some(libc::ENODEV) | Some(libc::EPIPE)
    ) || e.kind() == ErrorKind::BrokenPipe
}

/// ep0: HID class requests for the OTP and FIDO interfaces.
fn ep0_loop(mut custom: Custom, map: Vec<u8>, otp: Arc<Mutex<OtpHid>>, trip: Arc<Trip>) {
    while !STOP.load(Ordering::SeqCst) {
        let ev = match custom.event_timeout(Duration::from_millis(200)) {
            Ok(Some(ev)) => ev,
            Ok(None) => continue,
            Err(e) => {
                if !is_gone(&e) {
                    eprintln!("keytally-gadget: ep0: {e}");
                }
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match ev {
            Event::Enable => eprintln!("keytally-gadget: configured by the host"),
            Event::Disable => eprintln!("keytally-gadget: disabled"),
            Event::SetupDeviceToHost(req) => {
                let r = req.ctrl_req().clone();
                let what = map.get(usize::from(r.index & 0xFF)).copied().unwrap_or(0);
                let len = usize::from(r.length);
                match (r.request_type, r.request, what) {
                    // GET_DESCRIPTOR (report descriptor).
                    (0x81, 0x06, _) if r.value >> 8 == 0x22 => {
                        let d = if what == desc::OTP {
                            desc::OTP_REPORT_DESCRIPTOR
                        } else {
                            desc::FIDO_REPORT_DESCRIPTOR
                        };
                        let _ = req.send(&d[..d.len().min(len)]);
                    }
                    (0x81, 0x06, _) if r.value >> 8 == 0x21 => {
                        let d = if what == desc::OTP {
                            desc::OTP_REPORT_DESCRIPTOR
                        } else {
                            desc::FIDO_REPORT_DESCRIPTOR
                        };
                        let mut h = vec![9, 0x21];
                        h.extend_from_slice(&desc::hid_class_descriptor(d.len()));
                        let _ = req.send(&h[..h.len().min(len)]);
                    }
                    // GET_REPORT (feature) on the OTP interface.
                    (0xA1, 0x01, desc::OTP) => {
                        if trip.hit(Kind::Otp) {
                            let _ = req.halt();
                            continue;
                        }
                        let mut rep = otp.lock().map(|mut o| o.get_report()).unwrap_or([0; 8]);
                        // The second chunk of a response (sequence 1, pending flag): never a
                        // status report, always covered by the frame's CRC.
                        if trip.fault == Some(HidFault::OtpBadCrc) && rep[7] == 0x41 {
                            rep[0] ^= 0xFF;
                        }
                        let _ = req.send(&rep[..8.min(len)]);
                    }
                    // GET_IDLE / GET_PROTOCOL.
                    (0xA1, 0x02, _) | (0xA1, 0x03, _) => {
                        let _ = req.send(&[0][..1.min(len)]);
                    }
                    _ => {
                        let _ = req.halt();
                    }
                }
            }
            Event::SetupHostToDevice(req) => {
                let r = req.ctrl_req().clone();
                let what = map.get(usize::from(r.index & 0xFF)).copied().unwrap_or(0);
                match (r.request_type, r.request, what) {
                    // SET_REPORT: feature reports go to the OTP frame protocol; output (LEDs) is ignored.
                    (0x21, 0x09, desc::OTP) => {
                        let feature = r.value >> 8 == 0x03;
                        if feature && trip.hit(Kind::Otp) {
                            let _ = req.halt();
                            continue;
                        }
                        if let Ok(data) = req.recv_all() {
                            if feature {
                                // With a report ID byte (9 bytes) drop it.
                                let d = if data.len() == 9 {
                                    &data[1..]
                                } else {
                                    &data[..]
                                };
                                if let Ok(mut o) = otp.lock() {
                                    o.set_report(d);
                                }
                            }
                        }
                    }
                    // SET_IDLE, SET_PROTOCOL, CCID ABORT: accept.
                    (0x21, 0x0A, _) | (0x21, 0x0B, _) | (0x21, 0x01, _) => {
                        let _ = req.recv_all();
                    }
                    _ => {
                        let _ = req.halt();
                    }
                }
            }
            _ => {}
        }
    }
}

fn fido_loop(
    mut rx: EndpointReceiver,
    mut tx: EndpointSender,
    ctap: Arc<Mutex<CtapHid>>,
    trip: Arc<Trip>,
) {
    while !STOP.load(Ordering::SeqCst) {
        let pkt = match rx.recv_timeout(BytesMut::with_capacity(64), Duration::from_millis(500)) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                if e.kind() != ErrorKind::TimedOut && !is_gone(&e) {
                    eprintln!("keytally-gadget: FIDO recv: {e}");
                }
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if trip.hit(Kind::Ctap) {
            continue;
        }
        let mut replies = ctap.lock().map(|mut c| c.packet(&pkt)).unwrap_or_default();
        if trip.fault == Some(HidFault::CtapWrongCid) {
            for r in replies.iter_mut().filter(|r| r.len() >= 4 && r[..4] != [0xFF; 4]) {
                r[0] ^= 0x5A;
            }
        }
        for r in replies {
            if let Err(e) =
                tx.send_timeout(bytes::Bytes::copy_from_slice(&r), Duration::from_secs(2))
            {
                eprintln!("keytally-gadget: FIDO send: {e}");
                break;
            }
        }
    }
}

fn ccid_loop(
    mut rx: EndpointReceiver,
    mut tx: EndpointSender,
    reader: Arc<Mutex<CcidReader>>,
    trip: Arc<Trip>,
) {
    let cap = 3072 + HEADER + 512;
    while !STOP.load(Ordering::SeqCst) {
        let msg = match rx.recv_timeout(BytesMut::with_capacity(cap), Duration::from_millis(500)) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                if e.kind() != ErrorKind::TimedOut && !is_gone(&e) {
                    eprintln!("keytally-gadget: CCID recv: {e}");
                }
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if CcidReader::is_apdu(&msg) && trip.hit(Kind::Apdu) {
            continue;
        }
        let resp = reader.lock().ok().and_then(|mut r| r.process(&msg));
        if let Some(resp) = resp {
            if let Err(e) = tx.send_timeout(resp.into(), Duration::from_secs(2)) {
                eprintln!("keytally-gadget: CCID send: {e}");
            }
        }
    }
}

fn find_udc(name: Option<&str>) -> io::Result<Udc> {
    let udcs = usb_gadget::udcs()?;
    match name {
        None => udcs
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no UDC")),
        Some(n) => udcs
            .into_iter()
            .find(|u| u.name() == n)
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, format!("no UDC {n}"))),
    }
}

fn run(args: Args) -> io::Result<()> {
    let p = args.product.expect("checked");
    let udc = find_udc(args.udc.as_deref())?;
    let udc_name = udc.name().to_string_lossy().to_string();
    install_signals();

    let (custom, handle, eps) = build(p);
    let mut gadget = Gadget::new(
        Class::new(0, 0, 0),
        Id::new(desc::YUBICO_VID, p.pid),
        Strings::new(desc::MANUFACTURER, p.name, ""),
    )
    .with_config({
        let mut c = Config::new("");
        c.max_power = 30;
        c.remote_wakeup = p.interfaces & desc::OTP != 0;
        c.with_function(handle)
    });
    let name = format!("keytally-{}", udc_name.replace(['.', '/'], "-"));
    // A gadget of ours left over on this UDC (a killed run) would make registration fail.
    for stale in usb_gadget::registered()? {
        if stale.name() == name.as_str() {
            eprintln!("keytally-gadget: removing the stale gadget {name}");
            let _ = stale.bind(None);
            stale.remove()?;
        }
    }
    gadget.name = Some(name);
    gadget.max_packet_size0 = 64;
    gadget.device_release = desc::bcd_device(&args.model);
    let reg = gadget.register()?;

    let trip = Arc::new(Trip {
        at: args.unplug_after,
        counts: Default::default(),
        tripped: AtomicBool::new(false),
        fault: args.hid_fault,
    });
    let otp = Arc::new(Mutex::new(OtpHid::new(args.model.clone())));
    let ctap = Arc::new(Mutex::new(CtapHid::new(args.model.clone())));
    let reader = Arc::new(Mutex::new(CcidReader::new(
        Card::usb(args.model.clone()),
        desc::usb_atr(&args.model),
    )));

    let mut threads = Vec::new();
    {
        let (otp, trip, map) = (otp.clone(), trip.clone(), eps.map.clone());
        threads.push(thread::spawn(move || ep0_loop(custom, map, otp, trip)));
    }
    if let Some((rx, tx)) = eps.fido {
        let (ctap, trip) = (ctap.clone(), trip.clone());
        threads.push(thread::spawn(move || fido_loop(rx, tx, ctap, trip)));
    }
    if let Some((rx, tx)) = eps.ccid {
        let (reader, trip) = (reader.clone(), trip.clone());
        threads.push(thread::spawn(move || ccid_loop(rx, tx, reader, trip)));
    }
    let _keep = eps._keep;

    let mut plugged = false;
    if !args.unplugged {
        reg.bind(Some(&udc))?;
        plugged = true;
    }
    eprintln!(
        "keytally-gadget: {} as 1050:{:04x} \"{}\" on {udc_name}, {}",
        args.model.preset,
        p.pid,
        p.name,
        if plugged { "plugged" } else { "unplugged" }
    );
    write_state(
        &args.state_file,
        if plugged { "plugged" } else { "unplugged" },
    );

    let started = Instant::now();
    let mut counted = None;
    while !STOP.load(Ordering::SeqCst) {
        if args.count_file.is_some() {
            let now = trip.counts.each_ref().map(|c| c.load(Ordering::SeqCst));
            if counted != Some(now) {
                write_state(&args.count_file, &format!("{} {} {}", now[0], now[1], now[2]));
                counted = Some(now);
            }
        }
        if UNPLUG.swap(false, Ordering::SeqCst) && plugged {
            reg.bind(None)?;
            plugged = false;
            eprintln!("keytally-gadget: unplugged from {udc_name}");
            write_state(&args.state_file, "unplugged");
        }
        if PLUG.swap(false, Ordering::SeqCst) && !plugged {
            trip.tripped.store(false, Ordering::SeqCst);
            reg.bind(Some(&udc))?;
            plugged = true;
            eprintln!("keytally-gadget: plugged into {udc_name}");
            write_state(&args.state_file, "plugged");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = reg.bind(None);
    // Endpoint threads notice STOP within their 0.5 s timeouts; do not wait for one that a
    // pulled-out transfer left stuck (the gadget is removed all the same).
    let deadline = Instant::now() + Duration::from_secs(2);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let stuck = threads.iter().filter(|t| !t.is_finished()).count();
    if stuck > 0 {
        eprintln!("keytally-gadget: {stuck} endpoint thread(s) still busy; removing the gadget anyway");
    }
    let counts: Vec<u64> = trip
        .counts
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    eprintln!(
        "keytally-gadget: exiting after {:.1}s: {} APDUs, {} OTP feature reports, {} CTAPHID packets",
        started.elapsed().as_secs_f64(),
        counts[0],
        counts[1],
        counts[2]
    );
    reg.remove()?;
    if stuck > 0 {
        // Their blocked I/O would keep the process alive.
        std::process::exit(0);
    }
    Ok(())
}

pub(crate) fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally-gadget: {e}");
            return ExitCode::from(2);
        }
    };
    if args.describe {
        println!("{}", describe(&args.model, args.product));
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally-gadget: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[test]
    fn functionfs_blob_of_0407_has_three_interfaces_and_class_descriptors() {
        let (b, _eps) = builder(desc::product(0x0407).unwrap());
        let (descs, _strings) = b.ffs_descriptors_and_strings().unwrap();
        // FunctionFS v2 magic.
        assert_eq!(&descs[..4], &3u32.to_le_bytes());
        // Full-, high- and super-speed sets each carry: 2 HID class descriptors, 1 CCID one.
        assert_eq!(find(&descs, &[0x09, 0x21, 0x11, 0x01]), 6);
        assert_eq!(find(&descs, &[0x36, 0x21, 0x10, 0x01]), 3);
        // Interface descriptors: OTP keyboard (3/1/1) #0, FIDO (3/0/0) #1, CCID (0B) #2.
        assert_eq!(find(&descs, &[0x09, 0x04, 0x00, 0x00, 0x01, 0x03, 0x01, 0x01]), 3);
        assert_eq!(find(&descs, &[0x09, 0x04, 0x01, 0x00, 0x02, 0x03, 0x00, 0x00]), 3);
        assert_eq!(find(&descs, &[0x09, 0x04, 0x02, 0x00, 0x03, 0x0B, 0x00, 0x00]), 3);
    }

    #[test]
    fn fido_only_pid_has_one_hid_interface() {
        let (b, eps) = builder(desc::product(0x0120).unwrap());
        let (descs, _) = b.ffs_descriptors_and_strings().unwrap();
        assert_eq!(find(&descs, &[0x09, 0x21, 0x11, 0x01]), 3);
        assert_eq!(find(&descs, &[0x36, 0x21]), 0);
        assert_eq!(eps.map, vec![desc::FIDO]);
    }
}
