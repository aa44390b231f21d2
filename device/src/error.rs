//! The crate's error types: malformed data, status words, and transport failures.

use std::fmt;

/// Bytes from a key that do not form valid DeviceInfo (or a valid TLV stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty response")]
    Empty,
    #[error("length byte says {declared} bytes but {actual} follow")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("TLV truncated at offset {offset}")]
    TruncatedTlv { offset: usize },
    #[error("TLV at offset {offset} has an unsupported length encoding")]
    BadTlvLength { offset: usize },
    #[error("tag 0x{tag:02X} has a {len}-byte value, expected {expected}")]
    BadValueLength { tag: u32, len: usize, expected: &'static str },
    #[error("required tag 0x{0:02X} is missing")]
    MissingTag(u32),
    #[error("more-data page count {0} is out of range")]
    BadPageCount(u64),
    #[error("response of {len} bytes is over the {limit}-byte limit")]
    Oversized { len: usize, limit: usize },
    #[error("invalid version qualifier (tag 0x19)")]
    BadQualifier,
    #[error("response too short: {0}")]
    TooShort(&'static str),
    #[error("CRC check failed")]
    BadCrc,
}

/// An ISO 7816 status word other than 9000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWord(pub u16);

impl StatusWord {
    pub const OK: Self = Self(0x9000);

    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

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
    Ok,
    /// 6A82, 6999, 6D00 or 6B00 on a SELECT (or an INS the applet lacks): not there.
    ApplicationNotAvailable,
    ClassNotSupported,
    SecurityConditionNotSatisfied,
    ConditionsNotSatisfied,
    InvalidRequest,
    DeviceError,
    Unknown,
}

/// A CTAPHID ERROR frame's code (CTAP 2.1 §11.2.9.1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtapHidError(pub u8);

impl CtapHidError {
    pub const INVALID_CMD: Self = Self(0x01);
    pub const INVALID_PAR: Self = Self(0x02);
    pub const INVALID_LEN: Self = Self(0x03);
    pub const INVALID_SEQ: Self = Self(0x04);
    pub const MSG_TIMEOUT: Self = Self(0x05);
    pub const CHANNEL_BUSY: Self = Self(0x06);
    pub const LOCK_REQUIRED: Self = Self(0x0A);
    pub const INVALID_CHANNEL: Self = Self(0x0B);
    pub const OTHER: Self = Self(0x7F);

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
    #[error("PC/SC service (pcscd) is not running")]
    NoService,
    #[error("no card in the reader")]
    NoCard,
    #[error("the card was removed during the read")]
    Removed,
    #[error("the card is held exclusively by another program (sharing violation)")]
    SharingViolation,
    #[error("the reader did not answer in time")]
    Timeout,
    #[error("the reader is not available any more")]
    ReaderUnavailable,
    #[error("access denied (no permission to open the device)")]
    AccessDenied,
    #[error("the key was unplugged during the read")]
    Unplugged,
    #[error("the device broke the protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Other(String),
}

/// Everything that can go wrong reading a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("malformed response: {0}")]
    Parse(#[from] ParseError),
    #[error("the key answered with status word {0}")]
    Status(StatusWord),
    #[error("{0}")]
    NotSupported(&'static str),
    #[error("the card does not seem to be a YubiKey")]
    NotAYubiKey,
    /// OTP HID: the key answered a command with a plain status report ("No data"): the
    /// command is not supported, the data is not visible, or the key is still in reclaim.
    #[error("the key rejected the command (no data)")]
    CommandRejected,
    #[error("the key answered with CTAPHID error {0}")]
    Ctap(CtapHidError),
}

impl Error {
    /// True when the answer was "that application is not on this key".
    pub fn is_application_missing(&self) -> bool {
        matches!(self, Error::Status(sw) if sw.kind() == StatusKind::ApplicationNotAvailable)
    }
}
