//! Buzzer and LED signals on NFC readers that document a way to drive them through PC/SC.
//!
//! PC/SC has no standard command for a reader's buzzer or LEDs, so only readers with a
//! published one are driven: ACS's "Bi-color LED and Buzzer Control" pseudo-APDU
//! (`FF 00 40 P2 04 T1 T2 reps buzzer`, ACR122U API §6.2), which the ACR122U answers itself
//! while a card is present (the card never sees it) and the ACR1252U accepts through its
//! ACR122U compatibility. Everything else gets nothing, and the caller says so once.

use crate::error::LinkError;
use crate::transport::pcsc::PcscContext;

/// What to tell the person at the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The key was read and recorded: one green blink with a short beep.
    Accepted,
    /// The key could not be read: three red blinks, beeping.
    Failed,
}

/// How a reader's buzzer and LEDs are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// ACS's pseudo-APDU, sent through `SCardTransmit` while the card is present.
    AcsLedBuzzer,
}

/// The driver for a reader, from its PC/SC name; `None` when keytally knows of no documented
/// way to drive it.
pub fn driver_for(reader: &str) -> Option<Driver> {
    let name = reader.to_ascii_uppercase();
    (name.contains("ACR122") || name.contains("ACR1252")).then_some(Driver::AcsLedBuzzer)
}

// P2 of the ACS command: bit 7/6 blink green/red, bit 5/4 their initial blinking state,
// bit 3/2 update the final green/red state, bit 1/0 the final states. Durations are in
// 100 ms; the last byte links the buzzer to T1 (1), T2 (2) or both (3).
const GREEN_BLINK: u8 = 0x80 | 0x20;
const RED_BLINK: u8 = 0x40 | 0x10;

/// The command bytes for `signal`.
pub fn command(driver: Driver, signal: Signal) -> Vec<u8> {
    match (driver, signal) {
        (Driver::AcsLedBuzzer, Signal::Accepted) => vec![0xFF, 0x00, 0x40, GREEN_BLINK, 0x04, 0x01, 0x01, 0x01, 0x01],
        (Driver::AcsLedBuzzer, Signal::Failed) => vec![0xFF, 0x00, 0x40, RED_BLINK, 0x04, 0x01, 0x01, 0x03, 0x03],
    }
}

impl PcscContext {
    /// Gives `signal` on `reader` (which must still hold the card). The reader's answer must
    /// be `90 xx` (xx: its LED state); anything else is an error naming the status.
    pub fn signal(&self, reader: &str, driver: Driver, signal: Signal) -> Result<(), LinkError> {
        let mut card = self.connect(reader)?.ok_or(LinkError::NoCard)?;
        let answer = card.transact(|link| link.transmit(&command(driver, signal)))??;
        match answer.as_slice() {
            [0x90, _] => Ok(()),
            [sw1, sw2] => Err(LinkError::Other(format!("the reader refused the LED/buzzer command (status {sw1:02X}{sw2:02X})"))),
            other => Err(LinkError::Other(format!("the reader answered the LED/buzzer command with {} bytes", other.len()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acs_readers_are_driven_and_others_are_not() {
        assert_eq!(driver_for("ACS ACR122U PICC Interface 00 00"), Some(Driver::AcsLedBuzzer));
        assert_eq!(driver_for("ACS ACR1252 1S CL Reader [ACR1252 1S CL Reader(1)] 00 00"), Some(Driver::AcsLedBuzzer));
        assert_eq!(driver_for("Identiv uTrust 3700 F CL Reader 00 00"), None);
        assert_eq!(driver_for("Yubico YubiKey OTP+FIDO+CCID 00 00"), None);
        assert_eq!(driver_for("Virtual PCD 00 00"), None);
    }

    #[test]
    fn commands_follow_the_acs_layout() {
        // CLA FF, INS 00, P1 40, P2 LED control, Lc 4: T1, T2, repetitions, buzzer link.
        assert_eq!(command(Driver::AcsLedBuzzer, Signal::Accepted), [0xFF, 0x00, 0x40, 0xA0, 0x04, 0x01, 0x01, 0x01, 0x01]);
        assert_eq!(command(Driver::AcsLedBuzzer, Signal::Failed), [0xFF, 0x00, 0x40, 0x50, 0x04, 0x01, 0x01, 0x03, 0x03]);
        // Neither touches the final LED states (bits 0-3): the reader's own idle pattern stays.
        for s in [Signal::Accepted, Signal::Failed] {
            assert_eq!(command(Driver::AcsLedBuzzer, s)[3] & 0x0F, 0);
        }
    }
}
