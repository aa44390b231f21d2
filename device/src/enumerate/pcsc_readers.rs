//! PC/SC readers: look at every reader and read the key in each, one result per reader.
//!
//! Every reader is scanned by default (kiosks use plain NFC readers); an empty reader is
//! normal. Readers are read in parallel and independently ([`read_readers`]: a thread and a
//! PC/SC context per reader), each against a deadline, so one stuck reader or hostile card
//! cannot hang the scan or hold up the key on another reader.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, LinkError};
use crate::identify::{identify_smartcard, Identified};
use crate::posture::{self, PostureRead};
use crate::smartcard::SmartCardProtocol;
use crate::transport::pcsc::{InReader, PcscContext};
use crate::usb_ids::Pid;

/// What to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Only readers whose name contains this (case-insensitive).
    pub reader_filter: Option<String>,
    /// How long one reader may take before it is reported as not answering.
    pub reader_timeout: Duration,
    /// Leave out every YubiKey's own CCID reader (external and NFC readers are still read).
    pub skip_yubikey_readers: bool,
    /// Leave out the YubiKey readers of these PIDs (their keys were read another way).
    pub skip_pids: Vec<Pid>,
    /// Which keys to read the posture of (in the same transaction, after identification).
    pub posture: PostureWanted,
    /// Told of every key read, the moment its read ends, before the scan waits for slower
    /// readers (the merge decides which of these reads are already final keys: see
    /// `FullScanOptions::on_key`).
    pub on_read: Option<OnRead>,
}

/// A callback for [`ScanOptions::on_read`], called on the scanning thread.
#[derive(Clone)]
pub struct OnRead(pub Arc<dyn Fn(&FoundKey) + Send + Sync>);

impl fmt::Debug for OnRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRead(..)")
    }
}

/// Which keys' posture ([`crate::posture`]) a read takes: none (a plain scan, the APDUs of
/// identification only), all, or those a caller picks once it knows the key.
#[derive(Clone, Default)]
pub enum PostureWanted {
    /// No posture: identification only.
    #[default]
    Never,
    /// Every key's posture.
    Always,
    /// The posture of the keys for which this returns true (e.g. not read today).
    When(Arc<dyn Fn(&Identified) -> bool + Send + Sync>),
}

impl PostureWanted {
    /// Whether `key`'s posture is to be read.
    pub fn wants(&self, key: &Identified) -> bool {
        match self {
            PostureWanted::Never => false,
            PostureWanted::Always => true,
            PostureWanted::When(pick) => pick(key),
        }
    }
}

impl fmt::Debug for PostureWanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PostureWanted::Never => "Never",
            PostureWanted::Always => "Always",
            PostureWanted::When(_) => "When(..)",
        })
    }
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            reader_filter: None,
            reader_timeout: Duration::from_secs(10),
            skip_yubikey_readers: false,
            skip_pids: Vec::new(),
            posture: PostureWanted::Never,
            on_read: None,
        }
    }
}

impl ScanOptions {
    /// Whether `reader` is to be read at all.
    pub(crate) fn wants(&self, reader: &str, filter: Option<&str>) -> bool {
        if filter.is_some_and(|f| !reader.to_lowercase().contains(f)) {
            return false;
        }
        match Pid::from_reader_name(reader) {
            Some(pid) => !self.skip_yubikey_readers && !self.skip_pids.contains(&pid),
            None => true,
        }
    }
}

/// A key found in a reader.
#[derive(Debug, Clone)]
pub struct FoundKey {
    /// The key, identified.
    pub key: Identified,
    /// The PC/SC reader's name.
    pub reader: String,
    /// The card's ATR.
    pub atr: Vec<u8>,
    /// Command APDUs sent to read it (posture included).
    pub apdus: u32,
    /// Its posture, when it was asked for ([`ScanOptions::posture`]).
    pub posture: Option<PostureRead>,
}

/// A reader whose card could not be read.
#[derive(Debug, Clone)]
pub struct ReaderProblem {
    /// The PC/SC reader's name.
    pub reader: String,
    /// Why its card could not be read.
    pub error: Error,
}

/// The outcome of one PC/SC scan.
#[derive(Debug, Clone, Default)]
pub struct PcscReport {
    /// Every reader that was looked at.
    pub readers: Vec<String>,
    /// The keys read, ordered by reader name.
    pub keys: Vec<FoundKey>,
    /// Readers whose card could not be read, ordered by reader name.
    pub problems: Vec<ReaderProblem>,
}

/// Scans the PC/SC readers. Fails only when PC/SC itself is unusable (pcscd not running);
/// a bad card is a [`ReaderProblem`] and the other readers are still read.
pub fn scan_pcsc(opts: &ScanOptions) -> Result<PcscReport, LinkError> {
    // The first reader's thread is started before the readers are listed, so that its start-up
    // overlaps the round trips to pcscd rather than following them.
    let standby = Standby::start();
    let ctx = PcscContext::establish()?;
    let filter = opts.reader_filter.as_ref().map(|f| f.to_lowercase());
    let readers: Vec<String> = ctx
        .readers()?
        .into_iter()
        .filter(|r| opts.wants(r, filter.as_deref()))
        .collect();

    let mut report = PcscReport { readers: readers.clone(), ..Default::default() };
    // Readers pcscd knows to be empty get no thread and no context of their own (asking costs
    // a round trip to pcscd, which a single reader's connect answers as well).
    // The same call gives each card's ATR, which the read then need not ask for again.
    let contents = if readers.len() > 1 { ctx.reader_contents(&readers) } else { vec![InReader::Unknown; readers.len()] };
    let (to_read, empty): (Vec<_>, Vec<_>) =
        readers.into_iter().zip(contents).partition(|(reader, seen)| *seen != InReader::Empty || reader_stalled(reader));
    for (reader, _) in empty {
        tracing::debug!(reader, "empty reader");
    }
    // The listing context goes on to read the first reader, in that reader's thread.
    for (reader, outcome) in start_reads(to_read, Some(ctx), standby, opts.reader_timeout, &opts.posture) {
        match outcome {
            Ok(Some(found)) => {
                // The moment each key's read ends (the VM lab times a USB key beside a stalled
                // reader by it).
                tracing::debug!(reader, "key read");
                if let Some(OnRead(tell)) = &opts.on_read {
                    tell(&found);
                }
                report.keys.push(found);
            }
            Ok(None) => tracing::debug!(reader, "empty reader"),
            Err(error) => report.problems.push(ReaderProblem { reader, error }),
        }
    }
    report.keys.sort_by(|a, b| a.reader.cmp(&b.reader));
    report.problems.sort_by(|a, b| a.reader.cmp(&b.reader));
    Ok(report)
}

/// Readers whose last read was given up at its deadline and has not ended yet (the card has
/// neither answered nor left). Reading such a reader again fails at once with
/// [`LinkError::StillStalled`] rather than queueing a second thread behind the first.
static STALLED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn stalled() -> MutexGuard<'static, BTreeSet<String>> {
    STALLED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// True while a read of `reader` that was given up at its deadline is still running. Until it
/// ends, anything that begins a PC/SC transaction on that reader (a read, a reader signal)
/// waits for it: pcsc-lite's `SCardBeginTransaction` polls for as long as another handle
/// holds the card's transaction.
pub fn reader_stalled(reader: &str) -> bool {
    stalled().contains(reader)
}

/// The outcome of reading one reader: its key, `None` for an empty reader, or why not.
pub type ReaderOutcome = Result<Option<FoundKey>, Error>;

/// Reads every reader in `readers` at once and independently, each against `timeout`.
///
/// Each read runs on a thread of its own with a PC/SC context of its own: pcsc-lite's client
/// library holds a context's lock for the whole of each call (`SCardTransmit` included), so
/// readers read over one shared context wait for each other, and a card that stalls one
/// reader would stall them all. A read still running at the deadline is given up (its
/// thread ends when the card answers or leaves) and its reader is named once in the log.
///
/// Outcomes come in the order the reads finish; readers past the deadline come last, as
/// [`LinkError::Timeout`]; readers whose last read is still stalled at once, as
/// [`LinkError::StillStalled`].
pub fn read_readers(readers: &[String], timeout: Duration) -> ReaderReads {
    read_readers_with(readers, timeout, &PostureWanted::Never)
}

/// [`read_readers`], reading the posture of the keys `posture` wants.
pub fn read_readers_with(readers: &[String], timeout: Duration, posture: &PostureWanted) -> ReaderReads {
    let readers = readers.iter().map(|r| (r.clone(), InReader::Unknown)).collect();
    start_reads(readers, None, None, timeout, posture)
}

/// A reader thread started before its reader is known: it runs the one read it is handed, or
/// ends unused. Starting a thread (a clone, a stack, a malloc arena, and the wait for a CPU)
/// took 0.1-0.25 ms on the two-CPU test machine, a tenth of a whole `keytally scan`.
///
/// While the readers are being listed it has nothing to do, so it loads the advisory table
/// meanwhile: every key read is matched against it to make its record, and loading it is
/// then off the scan's critical path.
struct Standby(mpsc::Sender<Box<dyn FnOnce() + Send>>);

impl Standby {
    fn start() -> Option<Standby> {
        let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let run = move || {
            let _ = crate::advisory::table();
            if let Ok(read) = rx.recv() {
                read();
            }
        };
        thread::Builder::new().name("pcsc:reader".into()).spawn(run).ok().map(|_| Standby(tx))
    }
}

/// [`read_readers`] of readers whose contents pcscd may have told already, the first read over
/// `ctx` (moved into its thread: a context is never used by two threads) on the `standby`
/// thread.
fn start_reads(readers: Vec<(String, InReader)>, mut ctx: Option<PcscContext>, mut standby: Option<Standby>, timeout: Duration, posture: &PostureWanted) -> ReaderReads {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let mut reads = ReaderReads { rx, pending: Vec::new(), ready: VecDeque::new(), deadline };
    for (index, (reader, seen)) in readers.into_iter().enumerate() {
        if stalled().contains(&reader) {
            tracing::debug!(reader, "the reader's last read has not ended yet");
            reads.ready.push_back((reader.clone(), Err(LinkError::StillStalled.into())));
            continue;
        }
        let (tx, name, ctx, posture) = (tx.clone(), reader.clone(), ctx.take(), posture.clone());
        let read: Box<dyn FnOnce() + Send> = Box::new(move || {
            let outcome = ctx.map_or_else(PcscContext::establish, Ok).map_err(Error::from).and_then(|ctx| read_seen(&ctx, &name, &seen, &posture));
            // Under the lock, so that the reader cannot be marked stalled after it ended.
            let mut stalled = stalled();
            if stalled.remove(&name) {
                tracing::info!(reader = name, "the reader's stalled read has ended");
            }
            let _ = tx.send((index, outcome));
        });
        let handed = match standby.take() {
            Some(Standby(standby)) => standby.send(read).map_err(|unsent| unsent.0),
            None => Err(read),
        };
        let spawned = handed.or_else(|read| thread::Builder::new().name(format!("pcsc:{reader}")).spawn(read).map(drop));
        match spawned {
            Ok(_) => reads.pending.push((index, reader)),
            Err(e) => {
                let error = LinkError::Other(format!("cannot start a reader thread: {e}"));
                reads.ready.push_back((reader, Err(error.into())));
            }
        }
    }
    reads
}

/// Reads in flight ([`read_readers`]): an iterator of `(reader, outcome)`, each as soon as it
/// is there.
pub struct ReaderReads {
    rx: mpsc::Receiver<(usize, ReaderOutcome)>,
    /// Reads not finished yet: index in the reader list, reader name.
    pending: Vec<(usize, String)>,
    /// Outcomes known without waiting.
    ready: VecDeque<(String, ReaderOutcome)>,
    deadline: Instant,
}

impl ReaderReads {
    fn finished(&mut self, index: usize, outcome: ReaderOutcome) -> Option<(String, ReaderOutcome)> {
        let at = self.pending.iter().position(|(i, _)| *i == index)?;
        let (_, reader) = self.pending.swap_remove(at);
        Some((reader, outcome))
    }

    /// The deadline has passed: the reads still running are given up.
    fn give_up(&mut self) {
        let mut stalled = stalled();
        // Reads that ended just now are not stalled (their thread sent under this lock).
        while let Ok((index, outcome)) = self.rx.try_recv() {
            if let Some(done) = self.finished(index, outcome) {
                self.ready.push_back(done);
            }
        }
        for (_, reader) in self.pending.drain(..) {
            // The caller reports the outcome (a Timeout) to the person, once; this is the log's.
            tracing::info!(reader, "the reader did not answer in time; its read is given up");
            stalled.insert(reader.clone());
            self.ready.push_back((reader, Err(LinkError::Timeout.into())));
        }
    }
}

impl Iterator for ReaderReads {
    type Item = (String, ReaderOutcome);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(done) = self.ready.pop_front() {
                return Some(done);
            }
            if self.pending.is_empty() {
                return None;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((index, outcome)) => {
                    if let Some(done) = self.finished(index, outcome) {
                        return Some(done);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.give_up(),
                // Every thread has ended, some without an answer (a panic): not a stall.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    for (_, reader) in self.pending.drain(..) {
                        let error = LinkError::Other("the reader thread ended without an answer".into());
                        self.ready.push_back((reader, Err(error.into())));
                    }
                }
            }
        }
    }
}

/// Reads the card in one reader; `Ok(None)` when the reader is empty.
pub fn read_reader(ctx: &PcscContext, reader: &str) -> Result<Option<FoundKey>, Error> {
    read_reader_with(ctx, reader, &PostureWanted::Never)
}

/// [`read_reader`], and the key's posture when `posture` wants it, in the same transaction.
pub fn read_reader_with(ctx: &PcscContext, reader: &str, posture: &PostureWanted) -> Result<Option<FoundKey>, Error> {
    read_seen(ctx, reader, &InReader::Unknown, posture)
}

/// [`read_reader_with`] of a reader whose contents pcscd may have told already.
fn read_seen(ctx: &PcscContext, reader: &str, seen: &InReader, posture: &PostureWanted) -> Result<Option<FoundKey>, Error> {
    let Some(mut card) = ctx.connect_seen(reader, seen)? else { return Ok(None) };
    let pid = Pid::from_reader_name(reader);
    let atr = card.atr().to_vec();
    let (key, apdus, posture) = card.transact(|conn| {
        let mut protocol = SmartCardProtocol::new(conn);
        let key = identify_smartcard(&mut protocol, pid);
        let posture = match &key {
            Ok(k) if posture.wants(k) => Some(posture::read_smartcard(&mut protocol, &k.info)),
            _ => None,
        };
        (key, protocol.apdus_sent(), posture)
    })?;
    match key {
        Ok(key) => Ok(Some(FoundKey { key, reader: reader.to_string(), atr, apdus, posture })),
        // No card answering at all is an empty reader; a card pulled away mid-read is reported.
        Err(Error::Link(LinkError::NoCard)) => Ok(None),
        Err(e) => Err(e),
    }
}
