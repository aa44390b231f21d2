//! The smart-card layer: APDUs over any connection that moves bytes (PC/SC, USB CCID, NFC).
//!
//! It knows ISO 7816 framing and status words, not YubiKeys.

pub mod aid;
pub mod apdu;
mod protocol;

pub use apdu::{Apdu, Response};
pub use protocol::SmartCardProtocol;
/// A card that answers from a script, for the unit tests of the layers above.
#[cfg(test)]
pub(crate) use protocol::tests::Scripted;

use crate::caps::Transport;
use crate::error::LinkError;

/// A link that carries one command APDU and returns one raw response (`data || SW1 SW2`).
pub trait SmartCardConnection {
    /// Sends one command APDU and returns the raw response.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError>;

    /// Whether the key sits in a USB port or on an NFC reader.
    fn transport(&self) -> Transport;
}
