//! `keytally-vkey`: serves one virtual YubiKey on a vpcd reader until SIGINT/SIGTERM.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keytally_virtual_key::model::{Fault, KeyModel, PRESETS};
use keytally_virtual_key::posture;
use keytally_virtual_key::vpcd::{self, End, Session};
use keytally_virtual_key::Card;

const USAGE: &str = "usage: keytally-vkey --model NAME [--serial N|none] [--fault MODE] [--stall SECS]
                     [--posture SPEC] [--posture-fault NAME] [--nfc-restricted] [--port PORT]
                     [--count-file PATH]
       keytally-vkey --model NAME [...] --lab -- COMMAND [ARGS...]
       keytally-vkey --list-models
With --lab, starts an isolated pcscd (its own /run/pcscd and vpcd port), inserts the key,
runs COMMAND with PCSCLITE_CSOCK_NAME pointing at that pcscd (and KEYTALLY_VKEY_READER set
to the reader's name, KEYTALLY_VKEY_PORT to its vpcd port; the second reader, \"Virtual PCD
00 01\", is that port + 1: `keytally-vkey --port $((KEYTALLY_VKEY_PORT+1)) ...` puts a second key
there), and exits with COMMAND's status. Nothing of the system's pcscd is used.
Serves the model on vpcd (127.0.0.1:PORT, default 35963) until SIGINT/SIGTERM; reconnects when
the reader goes away. --count-file is rewritten with the running APDU count after each APDU.
--posture KEY=VALUE,... sets what the applets report (repeatable; `hardened` = every field
away from the factory state; keys: see --list-models). --nfc-restricted puts the key in NFC
restricted mode (only the NDEF applet answers). --posture-fault makes one posture answer wrong
(names: see --list-models). --stall sets how long --fault stall holds
READ CONFIG (default 40).";

struct Args {
    model: KeyModel,
    port: u16,
    count_file: Option<PathBuf>,
    /// `--lab -- COMMAND...`: run this inside an isolated lab instead of serving forever.
    lab_command: Option<Vec<String>>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut it = std::env::args().skip(1);
    let (mut model, mut serial, mut fault, mut port, mut count_file) =
        (None, None, None, vpcd::DEFAULT_PORT, None);
    let mut lab = false;
    let mut posture_specs: Vec<String> = Vec::new();
    let mut nfc_restricted = false;
    let mut posture_fault = None;
    let mut stall = None;
    let mut lab_command = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--list-models" => {
                for p in PRESETS {
                    if let Some(m) = KeyModel::preset(p) {
                        let serial = m.serial.map_or("none".to_string(), |s| s.to_string());
                        println!(
                            "{p:8} {:28} fw {}  serial {serial}",
                            m.expected_name, m.version
                        );
                    }
                }
                println!("faults: {}", Fault::EVERY.map(Fault::name).join(", "));
                println!("posture keys: hardened, factory, {}", posture::KEYS.join(", "));
                println!("factory posture: {}", posture::Posture::default());
                println!(
                    "posture faults: {}",
                    posture::PostureFault::ALL.map(posture::PostureFault::name).join(", ")
                );
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--model" => model = Some(value("--model")?),
            "--serial" => serial = Some(value("--serial")?),
            "--fault" => fault = Some(value("--fault")?.parse::<Fault>()?),
            "--posture" => posture_specs.push(value("--posture")?),
            "--nfc-restricted" => nfc_restricted = true,
            "--posture-fault" => {
                posture_fault = Some(value("--posture-fault")?.parse::<posture::PostureFault>()?)
            }
            "--stall" => {
                let secs: f64 = value("--stall")?
                    .parse()
                    .map_err(|e| format!("--stall: {e}"))?;
                stall = Some(
                    Duration::try_from_secs_f64(secs).map_err(|e| format!("--stall: {e}"))?,
                );
            }
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--count-file" => count_file = Some(PathBuf::from(value("--count-file")?)),
            "--lab" => lab = true,
            "--" => {
                lab_command = Some(it.by_ref().collect::<Vec<_>>());
                break;
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let name = model.ok_or_else(|| format!("--model is required\n{USAGE}"))?;
    let mut model = KeyModel::preset(&name)
        .ok_or_else(|| format!("unknown model {name:?}; known: {}", PRESETS.join(", ")))?;
    if let Some(s) = serial {
        let s = if s == "none" {
            None
        } else {
            Some(s.parse::<u32>().map_err(|e| format!("--serial: {e}"))?)
        };
        model = model.with_serial(s);
    }
    for spec in &posture_specs {
        model.posture.apply(spec).map_err(|e| format!("--posture: {e}"))?;
    }
    if nfc_restricted {
        model = model.with_nfc_restricted(true);
    }
    model.posture_fault = posture_fault;
    if let Some(d) = stall {
        model.stall = d;
    }
    let lab_command = match (lab, lab_command) {
        (true, Some(cmd)) if !cmd.is_empty() => Some(cmd),
        (true, _) => return Err(format!("--lab needs `-- COMMAND`\n{USAGE}")),
        (false, Some(_)) => return Err(format!("`-- COMMAND` goes with --lab\n{USAGE}")),
        (false, None) => None,
    };
    Ok(Some(Args {
        model: model.with_fault(fault),
        port,
        count_file,
        lab_command,
    }))
}

fn write_count(path: &PathBuf, n: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{n}")?;
    std::fs::rename(tmp, path)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytally-vkey: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(command) = &args.lab_command {
        return run_in_lab(&args, command);
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = signals::install(Arc::clone(&stop)) {
        eprintln!("keytally-vkey: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let mut card = Card::new(args.model);
    let counter = card.apdu_counter();
    eprintln!(
        "keytally-vkey: serving {} on vpcd port {}",
        card.model().preset,
        args.port
    );

    while !stop.load(Ordering::SeqCst) {
        let mut stream = match vpcd::connect(args.port, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "keytally-vkey: vpcd on port {} not reachable ({e}); retrying",
                    args.port
                );
                sleep_unless(&stop, Duration::from_secs(1));
                continue;
            }
        };
        let mut after_apdu = |n: u64| {
            if let Some(path) = &args.count_file {
                if let Err(e) = write_count(path, n) {
                    eprintln!("keytally-vkey: count file {}: {e}", path.display());
                }
            }
        };
        match vpcd::serve_with(
            &mut stream,
            &mut card,
            &stop,
            &Session::default(),
            &mut after_apdu,
        ) {
            Ok(End::Stopped) => break,
            Ok(End::ReaderClosed) => eprintln!("keytally-vkey: reader closed; reconnecting"),
            Err(e) => {
                // A protocol error from the reader side is reported but not fatal: serve on.
                eprintln!("keytally-vkey: vpcd error: {e}; reconnecting");
            }
        }
        card.reset();
        sleep_unless(&stop, Duration::from_millis(500));
    }
    eprintln!(
        "keytally-vkey: stopped after {} APDUs",
        counter.load(Ordering::SeqCst)
    );
    ExitCode::SUCCESS
}

/// `--lab`: an isolated pcscd with the key inserted, for the duration of one command.
fn run_in_lab(args: &Args, command: &[String]) -> ExitCode {
    let fail = |what: &str, e: io::Error| {
        eprintln!("keytally-vkey: {what}: {e}");
        ExitCode::FAILURE
    };
    let lab = match keytally_virtual_key::PcscLab::start() {
        Ok(lab) => lab,
        Err(e) => return fail("cannot start the pcscd lab", e),
    };
    let count_file = args.count_file.clone();
    let card = match lab.insert_with(Card::new(args.model.clone()), move |n| {
        if let Some(path) = &count_file {
            let _ = write_count(path, n);
        }
    }) {
        Ok(c) => c,
        Err(e) => return fail("cannot insert the key", e),
    };
    if let Err(e) = card.wait_present(Duration::from_secs(10)) {
        return fail("pcscd did not see the key", e);
    }
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(lab.env())
        .env("KEYTALLY_VKEY_READER", lab.reader_name())
        .env("KEYTALLY_VKEY_PORT", lab.port().to_string())
        .status();
    let _ = card.remove();
    match status {
        Ok(s) => ExitCode::from(s.code().map_or(1, |c| u8::try_from(c).unwrap_or(1))),
        Err(e) => fail(&format!("cannot run {:?}", command[0]), e),
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGINT/SIGTERM → stop flag, via a self-contained `signal(2)` binding (no libc crate).
mod signals {
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
    use std::sync::Arc;

    static FLAG: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());

    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    const SIG_ERR: usize = usize::MAX;

    extern "C" fn on_signal(_: i32) {
        let p = FLAG.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` comes from `Arc::into_raw` in `install` and is never freed.
            unsafe { (*p).store(true, Ordering::SeqCst) };
        }
    }

    pub fn install(flag: Arc<AtomicBool>) -> std::io::Result<()> {
        FLAG.store(Arc::into_raw(flag) as *mut AtomicBool, Ordering::SeqCst);
        for sig in [SIGINT, SIGTERM] {
            // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
            if unsafe { signal(sig, on_signal) } == SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
