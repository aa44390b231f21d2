//! The crate's error types: malformed data, status words, and link failures.

use std::fmt;

/// Bytes from a key that do not form valid DeviceInfo (or a valid TLV stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The key answered with no bytes at all.
    #[error("empty response")]
    Empty,
    /// A leading length byte that does not match the bytes after it.
    #[error("length byte says {declared} bytes but {actual} follow")]
    LengthMismatch {
        /// The length the length byte gives.
        declared: usize,
        /// The number of bytes that follow it.
        actual: usize,
    },
    /// A TLV whose tag, length or value runs past the end of the data.
    #[error("TLV truncated at offset {offset}")]
    TruncatedTlv {
        /// Where the TLV starts.
        offset: usize,
    },
    /// A TLV tag or length in a form this parser does not accept (a tag of more than four
    /// bytes, or a length byte of 0x80 or above 0x84).
    #[error("TLV at offset {offset} has an unsupported length encoding")]
    BadTlvLength {
        /// Where the TLV starts.
        offset: usize,
    },
    /// A known tag whose value has the wrong size.
    #[error("tag 0x{tag:02X} has a {len}-byte value, expected {expected}")]
    BadValueLength {
        /// The tag.
        tag: u32,
        /// The size of its value.
        len: usize,
        /// The sizes it may have, in words.
        expected: &'static str,
    },
    /// A tag the data must have is not there.
    #[error("required tag 0x{0:02X} is missing")]
    MissingTag(u32),
    /// Tag 0x10 (more data) announces more DeviceInfo pages than the reader accepts.
    #[error("more-data page count {0} is out of range")]
    BadPageCount(u64),
    /// A response larger than the reader accepts.
    #[error("response of {len} bytes is over the {limit}-byte limit")]
    Oversized {
        /// The response's size so far.
        len: usize,
        /// The largest accepted size.
        limit: usize,
    },
    /// A version qualifier (tag 0x19) that does not parse.
    #[error("invalid version qualifier (tag 0x19)")]
    BadQualifier,
    /// A response shorter than its format needs; the text says which response.
    #[error("response too short: {0}")]
    TooShort(&'static str),
    /// An OTP HID response whose CRC does not check.
    #[error("CRC check failed")]
    BadCrc,
}

/// An ISO 7816 status word other than 9000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWord(pub u16);

impl StatusWord {
    /// 9000: success.
    pub const OK: Self = Self(0x9000);

    /// The first byte (SW1).
    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// The second byte (SW2).
    pub fn sw2(self) -> u8 {
        self.0 as u8
    }

    /// What the status word means, in the classes an identifier acts on.
    pub fn kind(self) -> StatusKind {
        match self.0 {
            0x9000 => StatusKind::Ok,
            0x6A82 | 0x6999 | 0x6D00 | 0x6B00 => StatusKind::ApplicationNotAvailable,
            0x6E00 => StatusKind::ClassNotSupported,
            0x6982 => StatusKind::SecurityConditionNotSatisfied,
            0x6985 => StatusKind::ConditionsNotSatisfied,
            0x6A80 | 0x6A86 | 0x6700 => StatusKind::InvalidRequest,
            0x6581 | 0x6F00 => StatusKind::DeviceError,
            _ if self.sw1() == 0x6C || self.sw1() == 0x61 => StatusKind::InvalidRequest,
            _ => StatusKind::Unknown,
        }
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// Status-word classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// 9000.
    Ok,
    /// 6A82, 6999, 6D00 or 6B00 on a SELECT (or an INS the applet lacks): not there.
    ApplicationNotAvailable,
    /// 6E00: the CLA byte is not supported.
    ClassNotSupported,
    /// 6982: a PIN or key is needed first.
    SecurityConditionNotSatisfied,
    /// 6985: the applet is not in a state to do this.
    ConditionsNotSatisfied,
    /// 6A80, 6A86, 6700, 6Cxx or 61xx: the command itself was wrong.
    InvalidRequest,
    /// 6581 or 6F00: the card failed.
    DeviceError,
    /// Any other status word.
    Unknown,
}

/// A CTAPHID ERROR frame's code (CTAP 2.1 §11.2.9.1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtapHidError(pub u8);

impl CtapHidError {
    /// 0x01: the command is not known.
    pub const INVALID_CMD: Self = Self(0x01);
    /// 0x02: a parameter is invalid.
    pub const INVALID_PAR: Self = Self(0x02);
    /// 0x03: the message length is invalid.
    pub const INVALID_LEN: Self = Self(0x03);
    /// 0x04: a continuation packet came out of sequence.
    pub const INVALID_SEQ: Self = Self(0x04);
    /// 0x05: the message timed out.
    pub const MSG_TIMEOUT: Self = Self(0x05);
    /// 0x06: another channel is busy with a transaction.
    pub const CHANNEL_BUSY: Self = Self(0x06);
    /// 0x0A: the command needs a channel lock.
    pub const LOCK_REQUIRED: Self = Self(0x0A);
    /// 0x0B: the channel ID is not allocated.
    pub const INVALID_CHANNEL: Self = Self(0x0B);
    /// 0x7F: an unspecified error.
    pub const OTHER: Self = Self(0x7F);

    /// The code's name in the CTAP specification (`CHANNEL_BUSY`); `OTHER` for unknown codes.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x01 => "INVALID_CMD",
            0x02 => "INVALID_PAR",
            0x03 => "INVALID_LEN",
            0x04 => "INVALID_SEQ",
            0x05 => "MSG_TIMEOUT",
            0x06 => "CHANNEL_BUSY",
            0x0A => "LOCK_REQUIRED",
            0x0B => "INVALID_CHANNEL",
            _ => "OTHER",
        }
    }
}

impl fmt::Display for CtapHidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} ({})", self.0, self.name())
    }
}

/// Failures of the link itself, independent of what is on the other end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The PC/SC service is not running (or stopped during the call): pcscd, or Windows'
    /// Smart Card service.
    #[cfg_attr(windows, error("the Smart Card service (SCardSvr) is not running"))]
    #[cfg_attr(not(windows), error("PC/SC service (pcscd) is not running"))]
    NoService,
    /// The reader is empty, or the card in it does not answer.
    #[error("no card in the reader")]
    NoCard,
    /// The card left the reader (or was reset) during the read.
    #[error("the card was removed during the read")]
    Removed,
    /// Another program holds the card exclusively.
    #[error("the card is held exclusively by another program (sharing violation)")]
    SharingViolation,
    /// The reader or device did not answer before the deadline.
    #[error("the reader did not answer in time")]
    Timeout,
    /// The reader's last read was given up at its deadline ([`LinkError::Timeout`]) and has
    /// not ended yet, so it was not read again: the same stall, already told.
    #[error("the reader did not answer in time (its last read has not ended yet)")]
    StillStalled,
    /// The reader is gone or unknown to the service.
    #[error("the reader is not available any more")]
    ReaderUnavailable,
    /// The OS refused to open the device (on Linux: the hidraw node's permissions).
    #[error("access denied (no permission to open the device)")]
    AccessDenied,
    /// The USB device went away during the read.
    #[error("the key was unplugged during the read")]
    Unplugged,
    /// The device answered with frames the link protocol does not allow; the text says how.
    #[error("the device broke the protocol: {0}")]
    Protocol(String),
    /// Anything else, in the words of the layer below.
    #[error("{0}")]
    Other(String),
}

/// Everything that can go wrong reading a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The link to the key failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The key's answer does not parse.
    #[error("malformed response: {0}")]
    Parse(#[from] ParseError),
    /// The key answered with a status word other than 9000.
    #[error("the key answered with status word {0}")]
    Status(StatusWord),
    /// The key (or its firmware) cannot do this; the text says what.
    #[error("{0}")]
    NotSupported(&'static str),
    /// The card answers, but not as any YubiKey does.
    #[error("the card does not seem to be a YubiKey")]
    NotAYubiKey,
    /// OTP HID: the key answered a command with a plain status report ("No data"): the
    /// command is not supported, the data is not visible, or the key is still in reclaim.
    #[error("the key rejected the command (no data)")]
    CommandRejected,
    /// The key answered with a CTAPHID ERROR frame.
    #[error("the key answered with CTAPHID error {0}")]
    Ctap(CtapHidError),
    /// A YubiKey in NFC restricted mode (firmware 5.7 as shipped, or `ykman config nfc
    /// --restrict`): over NFC it answers only its NDEF applet, so nothing identifying can be
    /// read until it has been plugged into USB once.
    #[error("{}", NFC_RESTRICTED_MESSAGE)]
    NfcRestricted,
}

/// What to tell a person whose key is in NFC restricted mode.
pub const NFC_RESTRICTED_MESSAGE: &str = "YubiKey in NFC restricted mode: plug it into a USB port once to enable NFC";

impl Error {
    /// True when the answer was "that application is not on this key".
    pub fn is_application_missing(&self) -> bool {
        matches!(self, Error::Status(sw) if sw.kind() == StatusKind::ApplicationNotAvailable)
    }
}
