//! NFC restricted mode: a YubiKey that, over NFC, answers only its NDEF applet with Yubico's
//! "getting started" URL (firmware 5.7 as shipped, or `ykman config nfc --restrict`).
//!
//! The check is ykman's `is_nfc_restricted` (`ykman/util.py`): SELECT the NDEF applet, SELECT
//! its NDEF file E104, READ BINARY, and compare with the one record such a key holds.

use crate::error::Error;
use crate::smartcard::{aid, Apdu, SmartCardProtocol};

/// The NDEF file of a key in NFC restricted mode: NLEN 0x001F, then one well-known URI record
/// (`D1 01 1B 55`), prefix 04 ("https://"), "yubico.com/getting-started".
pub const RESTRICTED_NDEF: &[u8] = b"\x00\x1F\xD1\x01\x1B\x55\x04yubico.com/getting-started";

/// SELECT FILE E104 (the NDEF file) by identifier, no answer wanted.
const SELECT_NDEF_FILE: Apdu<'static> = Apdu::new(0x00, 0xA4, 0x00, 0x0C, &[0xE1, 0x04]);
/// READ BINARY from offset 0.
const READ_BINARY: Apdu<'static> = Apdu::new(0x00, 0xB0, 0x00, 0x00, &[]);

/// Whether the card is a YubiKey in NFC restricted mode. A card without the NDEF applet, or
/// with another NDEF message, is not; only a broken link is an error.
pub fn is_nfc_restricted(protocol: &mut SmartCardProtocol<'_>) -> Result<bool, Error> {
    let ndef = protocol
        .select(aid::NDEF)
        .and_then(|_| protocol.send(&SELECT_NDEF_FILE))
        .and_then(|_| protocol.send(&READ_BINARY));
    match ndef {
        Ok(data) => Ok(data == RESTRICTED_NDEF),
        Err(Error::Link(e)) => Err(e.into()),
        Err(e) => {
            tracing::debug!("no NDEF message: {e}");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smartcard::Scripted;

    #[test]
    fn the_getting_started_url_is_restricted_mode() {
        let mut answer = RESTRICTED_NDEF.to_vec();
        answer.extend_from_slice(&[0x90, 0x00]);
        let mut card = Scripted::new(&[&[0x90, 0x00][..], &[0x90, 0x00], &answer]);
        assert!(is_nfc_restricted(&mut SmartCardProtocol::new(&mut card)).unwrap());
        assert_eq!(
            card.sent,
            vec![
                vec![0x00, 0xA4, 0x04, 0x00, 0x07, 0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01],
                vec![0x00, 0xA4, 0x00, 0x0C, 0x02, 0xE1, 0x04],
                vec![0x00, 0xB0, 0x00, 0x00, 0x00],
            ]
        );
    }

    #[test]
    fn no_ndef_applet_or_another_url_is_not() {
        let mut card = Scripted::new(&[&[0x6A, 0x82]]);
        assert!(!is_nfc_restricted(&mut SmartCardProtocol::new(&mut card)).unwrap());
        let other = b"\x00\x0F\xD1\x01\x0B\x55\x04example.com\x90\x00";
        let mut card = Scripted::new(&[&[0x90, 0x00][..], &[0x90, 0x00], other]);
        assert!(!is_nfc_restricted(&mut SmartCardProtocol::new(&mut card)).unwrap());
    }

    #[test]
    fn identification_names_restricted_mode() {
        let mut answer = RESTRICTED_NDEF.to_vec();
        answer.extend_from_slice(&[0x90, 0x00]);
        // SELECT management: 6A82; then the NDEF check.
        let mut card = Scripted::new(&[&[0x6A, 0x82][..], &[0x90, 0x00], &[0x90, 0x00], &answer]);
        let err = crate::identify::identify_smartcard(&mut SmartCardProtocol::new(&mut card), None)
            .unwrap_err();
        assert_eq!(err, Error::NfcRestricted);
        assert_eq!(
            err.to_string(),
            "YubiKey in NFC restricted mode: plug it into a USB port once to enable NFC"
        );
    }
}
