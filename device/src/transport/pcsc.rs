//! PC/SC through the `pcsc` crate: list readers, connect in SHARED mode, transact.
//!
//! keytally never asks for exclusive access and never kills other programs (ykman kills
//! gpg's scdaemon; an inventory agent must not). A reader held exclusively by someone else
//! gets a short, bounded retry and then a clear error. Nor does it reset the card when it
//! lets go of it ([`PcscCard`]'s drop), as ykman does: other programs with the key open keep
//! their state.

use std::ffi::CString;
use std::thread::sleep;
use std::time::Duration;

use pcsc::{Card, Context, Protocols, ReaderState, Scope, ShareMode, State};

use crate::caps::Transport;
use crate::error::LinkError;
use crate::smartcard::SmartCardConnection;
use crate::usb_ids::is_yubikey_reader;

/// How often a sharing violation is retried, and how long to wait between tries.
const SHARING_RETRIES: u32 = 5;
const SHARING_BACKOFF: Duration = Duration::from_millis(200);

/// Maps PC/SC's error codes onto the link failures keytally acts on.
pub fn map_error(e: pcsc::Error) -> LinkError {
    use pcsc::Error as E;
    match e {
        E::NoService | E::ServiceStopped => LinkError::NoService,
        E::NoSmartcard | E::UnpoweredCard | E::UnresponsiveCard | E::UnsupportedCard => LinkError::NoCard,
        // pcsc-lite answers a transmit on a card pulled out mid-transaction with
        // SCARD_E_NOT_TRANSACTED ("an attempt was made to end a non-existent transaction").
        E::RemovedCard | E::ResetCard | E::NotTransacted => LinkError::Removed,
        E::SharingViolation => LinkError::SharingViolation,
        E::Timeout | E::WaitedTooLong => LinkError::Timeout,
        E::ReaderUnavailable | E::UnknownReader => LinkError::ReaderUnavailable,
        other => LinkError::Other(format!("PC/SC: {other}")),
    }
}

/// A PC/SC context: the connection to pcscd (or the Windows/macOS smart-card service).
pub struct PcscContext {
    ctx: Context,
}

impl PcscContext {
    /// Connects to the service; `LinkError::NoService` when pcscd is not running.
    pub fn establish() -> Result<Self, LinkError> {
        Context::establish(Scope::User).map(|ctx| Self { ctx }).map_err(map_error)
    }

    /// Every reader's name. No readers at all is an empty list, not an error.
    ///
    /// One `SCardListReaders` into a buffer that holds any usual list (each call is a round
    /// trip to pcscd with its reader states); only a longer list asks for its length first.
    pub fn readers(&self) -> Result<Vec<String>, LinkError> {
        let mut buf = [0u8; 4096];
        let listed = match self.ctx.list_readers(&mut buf) {
            Ok(names) => Ok(names.map(|n| n.to_string_lossy().into_owned()).collect()),
            Err(pcsc::Error::InsufficientBuffer) => self
                .ctx
                .list_readers_owned()
                .map(|names| names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect()),
            Err(e) => Err(e),
        };
        match listed {
            Ok(names) => Ok(names),
            Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
            Err(e) => Err(map_error(e)),
        }
    }

    /// What pcscd says is in each of `readers`, in one `SCardGetStatusChange` without waiting:
    /// [`InReader::Empty`] only where it says the reader is empty; when the call fails, every
    /// reader is [`InReader::Unknown`].
    pub fn reader_contents(&self, readers: &[String]) -> Vec<InReader> {
        let names: Option<Vec<CString>> = readers.iter().map(|r| CString::new(r.as_str()).ok()).collect();
        let Some(names) = names else { return vec![InReader::Unknown; readers.len()] };
        let mut states: Vec<ReaderState> = names.into_iter().map(|n| ReaderState::new(n, State::UNAWARE)).collect();
        if let Err(e) = self.ctx.get_status_change(Duration::ZERO, &mut states) {
            tracing::debug!("reader states: {e}");
            return vec![InReader::Unknown; readers.len()];
        }
        states
            .iter()
            .map(|s| match s.event_state() {
                st if st.contains(State::EMPTY) && !st.contains(State::PRESENT) => InReader::Empty,
                st if st.contains(State::PRESENT) && !s.atr().is_empty() => InReader::Card { atr: s.atr().to_vec() },
                _ => InReader::Unknown,
            })
            .collect()
    }

    /// Connects to the card in `reader` in SHARED mode. `Ok(None)` means the reader is empty.
    pub fn connect(&self, reader: &str) -> Result<Option<PcscCard>, LinkError> {
        self.connect_seen(reader, &InReader::Unknown)
    }

    /// [`Self::connect`] to a card whose ATR pcscd gave a moment ago ([`Self::reader_contents`]):
    /// that ATR is taken rather than asked for again, a round trip less. (A card swapped for
    /// another within that moment would be told USB or NFC by the first one's ATR; the swap
    /// itself is a PC/SC event, and the card is read again.)
    pub fn connect_seen(&self, reader: &str, seen: &InReader) -> Result<Option<PcscCard>, LinkError> {
        let name = CString::new(reader).map_err(|_| LinkError::ReaderUnavailable)?;
        let mut tries = 0;
        loop {
            match self.ctx.connect(&name, ShareMode::Shared, Protocols::ANY) {
                Ok(card) => {
                    let atr = match seen {
                        InReader::Card { atr } => atr.clone(),
                        InReader::Empty | InReader::Unknown => read_atr(&card)?,
                    };
                    return Ok(Some(PcscCard::new(card, reader, atr)));
                }
                Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => return Ok(None),
                Err(pcsc::Error::SharingViolation) if tries < SHARING_RETRIES => {
                    tries += 1;
                    tracing::debug!(reader, tries, "sharing violation, retrying");
                    sleep(SHARING_BACKOFF);
                }
                Err(e) => return Err(map_error(e)),
            }
        }
    }
}

/// What pcscd says is in a reader ([`PcscContext::reader_contents`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InReader {
    /// No card.
    Empty,
    /// A card, with its ATR.
    Card {
        /// The card's answer to reset.
        atr: Vec<u8>,
    },
    /// Not known (not asked, or pcscd could not say): there may be a card.
    Unknown,
}

/// A connected card: its ATR and whether it came over USB or NFC.
///
/// Dropped, it disconnects leaving the card as it is (`SCARD_LEAVE_CARD`), where the `pcsc`
/// crate's own drop resets it: a reset reaches every other program connected to the key
/// (they get "Card was reset" and lose what they had set up, a PIN verified for a signing
/// session among it), and an inventory agent that scans in the background must not do that.
pub struct PcscCard {
    /// `Some` until the drop takes it to disconnect.
    card: Option<Card>,
    atr: Vec<u8>,
    transport: Transport,
}

impl Drop for PcscCard {
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            // On failure the card is handed back, and dropping it disconnects it as the crate
            // does (there is nothing left to leave as it was when the card has gone).
            if let Err((_, e)) = card.disconnect(pcsc::Disposition::LeaveCard) {
                tracing::debug!("disconnecting from the card: {e}");
            }
        }
    }
}

impl PcscCard {
    fn new(card: Card, reader: &str, atr: Vec<u8>) -> Self {
        let transport = transport_of(is_yubikey_reader(reader), &atr);
        Self { card: Some(card), atr, transport }
    }

    /// The card's ATR.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// USB (a YubiKey's own reader, or a USB ATR) or NFC.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Runs `f` inside one PC/SC transaction, so no other client can switch applets under
    /// us mid-read. The card is left as it was (no reset) when the transaction ends.
    pub fn transact<T>(&mut self, f: impl FnOnce(&mut dyn SmartCardConnection) -> T) -> Result<T, LinkError> {
        let transport = self.transport;
        let Some(card) = self.card.as_mut() else {
            return Err(LinkError::Other("the card was disconnected".into()));
        };
        let mut tries = 0;
        let tx = loop {
            match card.transaction2() {
                Ok(tx) => break tx,
                Err((_, pcsc::Error::SharingViolation)) if tries < SHARING_RETRIES => {
                    tries += 1;
                    sleep(SHARING_BACKOFF);
                }
                Err((_, e)) => return Err(map_error(e)),
            }
        };
        let mut conn = CardLink { card: &tx, transport };
        let out = f(&mut conn);
        if let Err((_, e)) = tx.end(pcsc::Disposition::LeaveCard) {
            tracing::debug!("ending PC/SC transaction: {e}");
        }
        Ok(out)
    }
}

/// The ATR of a connected card. `SCardGetAttrib(SCARD_ATTR_ATR_STRING)` is one round trip
/// to pcscd; `SCardStatus` is two in pcsc-lite (it first fetches every reader's state), so
/// it is only the fallback, for a driver that does not give the attribute. Both go into
/// buffers that fit any ATR and reader name, rather than asking for the lengths first.
fn read_atr(card: &Card) -> Result<Vec<u8>, LinkError> {
    let mut atr = [0u8; pcsc::MAX_ATR_SIZE];
    match card.get_attribute(pcsc::Attribute::AtrString, &mut atr) {
        Ok(atr) if !atr.is_empty() => return Ok(atr.to_vec()),
        Ok(_) => tracing::debug!("the reader gives an empty ATR attribute; asking SCardStatus"),
        // A card that went away says so again below, with the same error.
        Err(e) => tracing::debug!("the reader gives no ATR attribute ({e}); asking SCardStatus"),
    }
    let mut names = [0u8; 1024];
    match card.status2(&mut names, &mut atr) {
        Ok(status) => Ok(status.atr().to_vec()),
        Err(pcsc::Error::InsufficientBuffer) => Ok(card.status2_owned().map_err(map_error)?.atr().to_vec()),
        Err(e) => Err(map_error(e)),
    }
}

/// USB or NFC: a YubiKey's own reader is USB; otherwise the ATR decides, as in yubikit
/// (`atr[1] & 0xF0 == 0xF0` is the USB interface's ATR).
pub fn transport_of(yubikey_reader: bool, atr: &[u8]) -> Transport {
    if yubikey_reader || atr.get(1).is_some_and(|b| b & 0xF0 == 0xF0) {
        Transport::Usb
    } else {
        Transport::Nfc
    }
}

struct CardLink<'a> {
    card: &'a Card,
    transport: Transport,
}

impl SmartCardConnection for CardLink<'_> {
    /// Sends one short APDU. Its answer is at most 256 bytes and SW1 SW2 (longer data comes in
    /// `61xx` pieces), so a card that says more is refused by PC/SC (`InsufficientBuffer`)
    /// rather than read: the buffer is the short-APDU size, not the 64 KiB extended one, whose
    /// zeroing alone touched 16 fresh stack pages of each reader's thread.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE];
        self.card.transmit(command, &mut buf).map(<[u8]>::to_vec).map_err(map_error)
    }

    fn transport(&self) -> Transport {
        self.transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_from_reader_and_atr() {
        let yk5_usb = [0x3B, 0xFD, 0x13, 0x00];
        let yk5_nfc = [0x3B, 0x8D, 0x80, 0x01];
        assert_eq!(transport_of(false, &yk5_usb), Transport::Usb);
        assert_eq!(transport_of(false, &yk5_nfc), Transport::Nfc);
        assert_eq!(transport_of(true, &yk5_nfc), Transport::Usb);
        assert_eq!(transport_of(false, &[]), Transport::Nfc);
    }
}
