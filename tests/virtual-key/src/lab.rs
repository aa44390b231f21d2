//! An isolated, real `pcscd` with its own socket and vpcd virtual reader, for parallel tests.
//!
//! pcscd 1.9 always creates its client socket and pid file at `/run/pcscd/pcscd.comm` and
//! `/run/pcscd/pcscd.pid` (it ignores `PCSCLITE_CSOCK_NAME`) and refuses to start when another
//! pcscd owns that socket. The lab therefore runs pcscd in a private mount namespace
//! (`unshare --mount`, plus `--user --map-root-user` when not root) with a per-lab directory
//! bind-mounted on `/run/pcscd`. Clients outside reach it with
//! `PCSCLITE_CSOCK_NAME=<lab>/run/pcscd.comm`, which libpcsclite does honour. The reader comes
//! from a private `reader.conf.d` (`pcscd -c DIR`) whose vpcd line picks a free TCP port pair
//! (vpcd listens on PORT for `Virtual PCD 00 00` and PORT+1 for `Virtual PCD 00 01`).
//!
//! Several readers ([`PcscLab::start_readers`]): vpcd serves two slots per `reader.conf` entry,
//! so N readers are ⌈N/2⌉ entries on consecutive port pairs. Two vpcd limits are worked
//! around: the driver keeps its sockets in a static array indexed by slot only
//! (`vicc_max_slots` = 2), so a second entry loaded from the same library would take over the
//! first entry's slots; each entry after the first therefore loads its own copy of the library
//! (a separate file, so `dlopen` gives it separate statics). And pcscd numbers every entry's
//! slots `00 00` / `00 01`, so entries after the first get their own name:
//! `Virtual PCD 00 00`, `Virtual PCD 00 01`, `Virtual PCD B 00 00`, `Virtual PCD B 00 01`, …
//! Each reader takes its own card ([`PcscLab::insert_at`]), tapped and removed independently.

use std::fs;
use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::card::Card;
use crate::vpcd::{self, End, Session};

/// The environment variable libpcsclite reads for the pcscd socket path.
pub const SOCKET_ENV: &str = "PCSCLITE_CSOCK_NAME";
/// Name of the lab's first virtual reader (the one [`PcscLab::insert`] uses).
pub const READER_NAME: &str = "Virtual PCD 00 00";
/// Default time allowed for pcscd to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time after the card was powered, for pcscd to publish the reader state to clients.
pub const PRESENCE_GRACE: Duration = Duration::from_millis(100);

/// Overrides: path of `pcscd`, of the vpcd driver, and of `unshare`.
pub const PCSCD_ENV: &str = "KEYTALLY_PCSCD";
pub const VPCD_DRIVER_ENV: &str = "KEYTALLY_VPCD_DRIVER";
pub const UNSHARE_ENV: &str = "KEYTALLY_UNSHARE";
/// Set to `1` to run pcscd with `-d -a` (debug and APDU log, see [`PcscLab::log`]).
pub const DEBUG_ENV: &str = "KEYTALLY_LAB_DEBUG";

const VPCD_DRIVERS: [&str; 3] = [
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
];
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"];

/// Runs inside the new mount namespace: give pcscd a private /run/pcscd, then exec it.
const NAMESPACE_SCRIPT: &str = r#"set -e
if [ ! -d /run/pcscd ] && ! mkdir -p /run/pcscd 2>/dev/null; then
  mount -t tmpfs -o mode=0755 keytally-lab /run
  mkdir -p /run/pcscd
fi
mount --bind "$KEYTALLY_LAB_RUN" /run/pcscd
exec "$@"
"#;

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The reader the lab's vpcd reader pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaderModel {
    /// vpcd as it is ([`READER_NAME`]): no commands of its own.
    #[default]
    Plain,
    /// Named like an ACS ACR122U and answering ACS's LED/buzzer pseudo-APDU (`FF 00 40 ...`)
    /// itself with `90 xx`, as that reader does, so the card never sees it. What it was told
    /// is kept per card ([`InsertedCard::reader_commands`]).
    Acr122,
    /// Named like a USB YubiKey's own CCID reader (`Yubico YubiKey OTP+FIDO+CCID 00 00`), with
    /// no USB device behind it: keytally takes its card for a USB key of PID 0x0407.
    YubiKeyCcid,
}

impl ReaderModel {
    fn friendly_name(self) -> &'static str {
        match self {
            ReaderModel::Plain => "Virtual PCD",
            ReaderModel::Acr122 => "ACS ACR122U PICC Interface",
            ReaderModel::YubiKeyCcid => "Yubico YubiKey OTP+FIDO+CCID",
        }
    }
}

/// One virtual reader of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabReader {
    /// Position in [`PcscLab::readers`] (0 = [`READER_NAME`]).
    pub index: usize,
    /// The PC/SC reader name clients see.
    pub name: String,
    /// The vpcd TCP port a card connects to (for [`InsertedCard::connect`]).
    pub port: u16,
}

/// How a lab is set up ([`PcscLab::start_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabOptions {
    /// Readers wanted; rounded up to an even number (vpcd serves slots in pairs).
    pub readers: usize,
    /// What every reader pretends to be.
    pub model: ReaderModel,
    /// Time allowed for pcscd to come up.
    pub timeout: Duration,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { readers: 2, model: ReaderModel::Plain, timeout: START_TIMEOUT }
    }
}

/// A running, isolated pcscd with one or more vpcd reader pairs. Dropping it kills pcscd and
/// removes its directory.
#[derive(Debug)]
pub struct PcscLab {
    child: Child,
    dir: PathBuf,
    port: u16,
    model: ReaderModel,
    /// reader.conf entries (each two readers).
    entries: usize,
}

impl PcscLab {
    /// Starts pcscd and waits (up to [`START_TIMEOUT`]) until its socket and reader are up.
    pub fn start() -> io::Result<PcscLab> {
        Self::start_with_timeout(START_TIMEOUT)
    }

    /// [`PcscLab::start`] with the reader pretending to be `model`.
    pub fn start_as(model: ReaderModel) -> io::Result<PcscLab> {
        Self::start_model(model, START_TIMEOUT)
    }

    /// As [`PcscLab::start`] with an explicit timeout.
    pub fn start_with_timeout(timeout: Duration) -> io::Result<PcscLab> {
        Self::start_model(ReaderModel::Plain, timeout)
    }

    /// A lab with at least `n` readers (an even number: `n` rounded up), see [`PcscLab::readers`].
    pub fn start_readers(n: usize) -> io::Result<PcscLab> {
        Self::start_with(LabOptions { readers: n, ..LabOptions::default() })
    }

    /// A lab as `options` say.
    pub fn start_with(options: LabOptions) -> io::Result<PcscLab> {
        let entries = options.readers.max(1).div_ceil(2);
        Self::start_entries(options.model, options.timeout, entries)
    }

    fn start_model(model: ReaderModel, timeout: Duration) -> io::Result<PcscLab> {
        Self::start_entries(model, timeout, 1)
    }

    fn start_entries(model: ReaderModel, timeout: Duration, entries: usize) -> io::Result<PcscLab> {
        let pcscd = find_pcscd()?;
        let driver = find_vpcd_driver()?;
        let unshare = find_program(UNSHARE_ENV, "unshare")?;
        let deadline = Instant::now() + timeout;
        let mut last_err = io::Error::new(ErrorKind::TimedOut, "pcscd lab did not start");
        for _attempt in 0..5 {
            if Instant::now() >= deadline {
                break;
            }
            match Self::try_start(&pcscd, &driver, &unshare, deadline, model, entries) {
                Ok(lab) => return Ok(lab),
                Err(e) if e.kind() == ErrorKind::AddrInUse => last_err = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }

    fn try_start(
        pcscd: &Path,
        driver: &Path,
        unshare: &Path,
        deadline: Instant,
        model: ReaderModel,
        entries: usize,
    ) -> io::Result<PcscLab> {
        let port = free_port_run(2 * entries)?;
        let dir = std::env::temp_dir().join(format!(
            "keytally-lab-{}-{}",
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("conf"))?;
        fs::create_dir_all(dir.join("run"))?;
        let child = Self::spawn(pcscd, driver, unshare, &dir, port, model, entries).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
        let mut lab = PcscLab { child, dir, port, model, entries };
        lab.wait_ready(deadline)?;
        Ok(lab)
    }

    /// Stops pcscd the hard way (SIGKILL, as a crash would) and starts a new one on the same
    /// socket and reader port, waiting until it is up: clients must notice their context is
    /// gone and build a new one. Remove inserted cards first (their connection would hold the
    /// vpcd port).
    pub fn restart(&mut self) -> io::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(self.socket_path());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.child = Self::spawn(
                &find_pcscd()?,
                &find_vpcd_driver()?,
                &find_program(UNSHARE_ENV, "unshare")?,
                &self.dir,
                self.port,
                self.model,
                self.entries,
            )?;
            match self.wait_ready(deadline) {
                Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn spawn(
        pcscd: &Path,
        driver: &Path,
        unshare: &Path,
        dir: &Path,
        port: u16,
        model: ReaderModel,
        entries: usize,
    ) -> io::Result<Child> {
        let mut conf = String::new();
        for k in 0..entries {
            let p = port + 2 * k as u16;
            let library = match k {
                0 => driver.to_path_buf(),
                k => {
                    let copy = dir.join(format!("libifdvpcd-{k}.so"));
                    if !copy.exists() {
                        fs::copy(driver, &copy)?;
                    }
                    copy
                }
            };
            conf.push_str(&format!(
                "FRIENDLYNAME \"{}\"\nDEVICENAME   /dev/null:0x{p:X}\nLIBPATH      {}\nCHANNELID    0x{p:X}\n\n",
                entry_name(model, k),
                library.display()
            ));
        }
        fs::write(dir.join("conf").join("vpcd"), conf)?;
        let log = fs::File::create(dir.join("pcscd.log"))?;
        let mut cmd = Command::new(unshare);
        if !is_root() {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            NAMESPACE_SCRIPT,
            "keytally-lab",
        ]);
        cmd.arg(pcscd).arg("-f").arg("-c").arg(dir.join("conf"));
        if std::env::var(DEBUG_ENV).is_ok_and(|v| v == "1") {
            cmd.args(["-d", "-a"]);
        }
        cmd.env("KEYTALLY_LAB_RUN", dir.join("run"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", unshare.display())))
    }

    fn wait_ready(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            let log = self.log();
            if log.contains("Could not initialize") || log.contains("Address already in use") {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!("vpcd port {} taken", self.port),
                ));
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "pcscd lab exited ({status}) during start:\n{log}"
                )));
            }
            let ports = self.port..self.port + 2 * self.entries as u16;
            if self.socket_path().exists() && ports.clone().all(tcp_listening) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("pcscd lab not ready in time:\n{log}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Environment for client processes: `PCSCLITE_CSOCK_NAME=<lab socket>`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            SOCKET_ENV.to_string(),
            self.socket_path().to_string_lossy().into_owned(),
        )]
    }

    /// The pcscd client socket of this lab.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("run").join("pcscd.comm")
    }

    /// The reader [`PcscLab::insert`] puts cards into.
    pub fn reader_name(&self) -> &'static str {
        match self.model {
            ReaderModel::Plain => READER_NAME,
            ReaderModel::Acr122 => "ACS ACR122U PICC Interface 00 00",
            ReaderModel::YubiKeyCcid => "Yubico YubiKey OTP+FIDO+CCID 00 00",
        }
    }

    /// Every reader of the lab, in order (index 0 is [`PcscLab::reader_name`]).
    pub fn readers(&self) -> Vec<LabReader> {
        (0..2 * self.entries).map(|i| self.reader_at(i)).collect()
    }

    /// Reader `index` (panics past [`PcscLab::readers`]`.len()`, a test's own mistake).
    pub fn reader(&self, index: usize) -> LabReader {
        assert!(index < 2 * self.entries, "the lab has {} readers, not {}", 2 * self.entries, index + 1);
        self.reader_at(index)
    }

    fn reader_at(&self, index: usize) -> LabReader {
        LabReader {
            index,
            name: format!("{} 00 {:02X}", entry_name(self.model, index / 2), index % 2),
            port: self.port + index as u16,
        }
    }

    /// Inserts (taps) `card` into reader `index`, served until the handle is removed or dropped.
    pub fn insert_at(&self, index: usize, card: Card) -> io::Result<InsertedCard> {
        InsertedCard::connect_as(self.reader(index).port, card, self.model, |_| {})
    }

    /// Holds reader `index` with an exclusive PC/SC connection (`SCARD_SHARE_EXCLUSIVE`) from
    /// another process, as a program that grabbed the reader would, until the hold is dropped.
    /// A card must be on the reader. The holder is pyscard run by `python` (ykman's venv
    /// interpreter has it); returns once the connection is made.
    pub fn hold_exclusively(&self, index: usize, python: &Path) -> io::Result<ExclusiveHold> {
        use std::io::{BufRead, BufReader};
        let reader = self.reader(index).name;
        let mut child = Command::new(python)
            .args(["-c", HOLD_SCRIPT, &reader])
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        if line.trim() != "held" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("could not hold {reader:?} exclusively: {}", line.trim())));
        }
        Ok(ExclusiveHold { child, reader })
    }

    /// [`PcscLab::insert_at`], then waits until pcscd has powered the card.
    pub fn tap(&self, index: usize, card: Card, timeout: Duration) -> io::Result<InsertedCard> {
        let inserted = self.insert_at(index, card)?;
        inserted.wait_present(timeout)?;
        Ok(inserted)
    }

    /// vpcd TCP port of [`READER_NAME`] (the second reader, `Virtual PCD 00 01`, is `port + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// pcscd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// pcscd's output so far (errors only, unless [`DEBUG_ENV`]=1).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pcscd.log")).unwrap_or_default()
    }

    /// Inserts (taps) `card` into [`READER_NAME`]; it is served on a background thread until
    /// the returned handle is removed or dropped.
    pub fn insert(&self, card: Card) -> io::Result<InsertedCard> {
        InsertedCard::connect_as(self.port, card, self.model, |_| {})
    }

    /// Like [`PcscLab::insert`], calling `after_apdu` with the running count after each
    /// answer has been sent (benchmarks write it to a file).
    pub fn insert_with(&self, card: Card, after_apdu: impl FnMut(u64) + Send + 'static) -> io::Result<InsertedCard> {
        InsertedCard::connect_as(self.port, card, self.model, after_apdu)
    }
}

/// pyscard: connect exclusively to argv[1], say "held", keep it until stdin closes.
const HOLD_SCRIPT: &str = r#"
import sys
from smartcard.scard import *
hr, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
hr, card, proto = SCardConnect(ctx, sys.argv[1], SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
print("held" if hr == 0 else "error 0x%08X" % (hr & 0xFFFFFFFF), flush=True)
sys.stdin.read()
"#;

/// Another process holding a reader exclusively ([`PcscLab::hold_exclusively`]); dropping it
/// ends the process and frees the reader.
#[derive(Debug)]
pub struct ExclusiveHold {
    child: Child,
    reader: String,
}

impl ExclusiveHold {
    /// The reader held.
    pub fn reader(&self) -> &str {
        &self.reader
    }
}

impl Drop for ExclusiveHold {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PcscLab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A card being served to a vpcd reader. Dropping it (or [`InsertedCard::remove`]) removes it.
#[derive(Debug)]
pub struct InsertedCard {
    stop: Arc<AtomicBool>,
    session: Arc<Session>,
    apdus: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<End>>>,
}

impl InsertedCard {
    /// Connects `card` to vpcd on 127.0.0.1:`port` (any vpcd, not only a lab's).
    pub fn connect(port: u16, card: Card) -> io::Result<InsertedCard> {
        Self::connect_with(port, card, |_| {})
    }

    /// [`InsertedCard::connect`] with a callback after each APDU.
    pub fn connect_with(port: u16, card: Card, after_apdu: impl FnMut(u64) + Send + 'static) -> io::Result<InsertedCard> {
        Self::connect_as(port, card, ReaderModel::Plain, after_apdu)
    }

    fn connect_as(port: u16, card: Card, model: ReaderModel, mut after_apdu: impl FnMut(u64) + Send + 'static) -> io::Result<InsertedCard> {
        let mut stream = vpcd::connect(port, Duration::from_secs(5))?;
        let stop = Arc::new(AtomicBool::new(false));
        let session = Arc::new(Session::default());
        session.acs_reader.store(model == ReaderModel::Acr122, Ordering::SeqCst);
        let apdus = card.apdu_counter();
        let (st, se) = (Arc::clone(&stop), Arc::clone(&session));
        let thread = std::thread::Builder::new()
            .name("vkey-vpcd".into())
            .spawn(move || {
                let mut card = card;
                let end = vpcd::serve_with(&mut stream, &mut card, &st, &se, &mut after_apdu);
                let _ = stream.shutdown(std::net::Shutdown::Both);
                end
            })?;
        Ok(InsertedCard {
            stop,
            session,
            apdus,
            thread: Some(thread),
        })
    }

    /// Waits until pcscd has detected and powered the card (it asked for the ATR after a power
    /// on), plus [`PRESENCE_GRACE`]. pcscd polls vpcd about every 400 ms.
    pub fn wait_present(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.session.is_powered_with_atr() {
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(io::Error::new(
                    ErrorKind::NotConnected,
                    "card connection ended",
                ));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "pcscd did not power the card in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(PRESENCE_GRACE);
        Ok(())
    }

    /// APDUs the card has answered.
    pub fn apdu_count(&self) -> u64 {
        self.apdus.load(Ordering::SeqCst)
    }

    /// The card's shared APDU counter.
    pub fn apdu_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.apdus)
    }

    /// What the reader did with the card (power state, ATRs, APDUs).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The reader's own commands sent while this card was on it (see [`ReaderModel::Acr122`]).
    pub fn reader_commands(&self) -> Vec<Vec<u8>> {
        self.session.reader_commands.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Removes the card (closes the vpcd connection) and reports how serving ended.
    pub fn remove(mut self) -> io::Result<End> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<End> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("card thread panicked"))?,
            None => Ok(End::Stopped),
        }
    }
}

impl Drop for InsertedCard {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn find_program(env: &str, name: &str) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::NotFound,
                format!("`{name}` not found (install it, or set {env})"),
            )
        })
}

fn find_pcscd() -> io::Result<PathBuf> {
    find_program(PCSCD_ENV, "pcscd").map_err(|_| {
        io::Error::new(
            ErrorKind::NotFound,
            format!("pcscd is not installed (Debian: apt-get install pcscd vsmartcard-vpcd), or set {PCSCD_ENV}"),
        )
    })
}

fn find_vpcd_driver() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(VPCD_DRIVER_ENV) {
        return Ok(PathBuf::from(p));
    }
    VPCD_DRIVERS.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        io::Error::new(
            ErrorKind::NotFound,
            format!("vsmartcard's vpcd driver libifdvpcd.so not found (Debian: apt-get install vsmartcard-vpcd), or set {VPCD_DRIVER_ENV}"),
        )
    })
}

/// The FRIENDLYNAME of reader.conf entry `k`: the model's name, then B, C, … after the first.
fn entry_name(model: ReaderModel, k: usize) -> String {
    match k {
        0 => model.friendly_name().to_string(),
        k => format!("{} {}", model.friendly_name(), char::from(b'A' + (k % 26) as u8)),
    }
}

/// A port P such that P … P+count-1 are all free on all interfaces (vpcd binds 0.0.0.0).
fn free_port_run(count: usize) -> io::Result<u16> {
    for _ in 0..50 {
        let a = TcpListener::bind(("0.0.0.0", 0))?;
        let port = a.local_addr()?.port();
        if usize::from(port) + count > usize::from(u16::MAX) {
            continue;
        }
        if (1..count as u16).all(|i| TcpListener::bind(("0.0.0.0", port + i)).is_ok()) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        ErrorKind::AddrInUse,
        format!("no {count} consecutive free TCP ports for vpcd"),
    ))
}

/// Whether some socket is listening on TCP `port` (from /proc/net/tcp{,6}).
fn tcp_listening(port: u16) -> bool {
    let needle = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|s| {
            s.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1).is_some_and(|local| local.ends_with(&needle))
                    && cols.get(3) == Some(&"0A")
            })
        })
    })
}
