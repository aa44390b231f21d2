//! PC/SC readers: look at every reader and read the key in each, one result per reader.
//!
//! Every reader is scanned by default (kiosks use plain NFC readers); an empty reader is
//! normal. Readers are read in parallel, each against a deadline, so one stuck reader or
//! hostile card cannot hang the scan.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, LinkError};
use crate::identify::{identify_smartcard, Identified};
use crate::smartcard::SmartCardProtocol;
use crate::transport::pcsc::PcscContext;
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
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            reader_filter: None,
            reader_timeout: Duration::from_secs(10),
            skip_yubikey_readers: false,
            skip_pids: Vec::new(),
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
    /// Command APDUs sent to read it.
    pub apdus: u32,
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
    let ctx = Arc::new(PcscContext::establish()?);
    let filter = opts.reader_filter.as_ref().map(|f| f.to_lowercase());
    let readers: Vec<String> = ctx
        .readers()?
        .into_iter()
        .filter(|r| opts.wants(r, filter.as_deref()))
        .collect();

    let (tx, rx) = mpsc::channel();
    for reader in &readers {
        let (ctx, tx, reader) = (Arc::clone(&ctx), tx.clone(), reader.clone());
        thread::Builder::new()
            .name(format!("pcsc:{reader}"))
            .spawn(move || {
                let outcome = read_reader(&ctx, &reader);
                let _ = tx.send((reader, outcome));
            })
            .map_err(|e| LinkError::Other(format!("cannot start a reader thread: {e}")))?;
    }
    drop(tx);

    let mut report = PcscReport { readers: readers.clone(), ..Default::default() };
    let deadline = Instant::now() + opts.reader_timeout;
    let mut pending: Vec<String> = readers;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((reader, outcome)) = rx.recv_timeout(left) else { break };
        pending.retain(|r| *r != reader);
        match outcome {
            Ok(Some(found)) => report.keys.push(found),
            Ok(None) => tracing::debug!(reader, "empty reader"),
            Err(error) => report.problems.push(ReaderProblem { reader, error }),
        }
    }
    for reader in pending {
        report.problems.push(ReaderProblem { reader, error: LinkError::Timeout.into() });
    }
    report.keys.sort_by(|a, b| a.reader.cmp(&b.reader));
    report.problems.sort_by(|a, b| a.reader.cmp(&b.reader));
    Ok(report)
}

/// Reads the card in one reader; `Ok(None)` when the reader is empty.
pub fn read_reader(ctx: &PcscContext, reader: &str) -> Result<Option<FoundKey>, Error> {
    let Some(mut card) = ctx.connect(reader)? else { return Ok(None) };
    let pid = Pid::from_reader_name(reader);
    let atr = card.atr().to_vec();
    let (key, apdus) = card.transact(|conn| {
        let mut protocol = SmartCardProtocol::new(conn);
        let key = identify_smartcard(&mut protocol, pid);
        (key, protocol.apdus_sent())
    })?;
    match key {
        Ok(key) => Ok(Some(FoundKey { key, reader: reader.to_string(), atr, apdus })),
        // No card answering at all is an empty reader; a card pulled away mid-read is reported.
        Err(Error::Link(LinkError::NoCard)) => Ok(None),
        Err(e) => Err(e),
    }
}
