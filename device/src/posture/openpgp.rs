//! OpenPGP posture: GET DATA `C4` (PW status bytes): the tries left for PW1 (the user PIN),
//! the reset code and PW3 (the admin PIN). Nothing is verified.

use super::PostureError;
use crate::error::ParseError;
use crate::smartcard::{aid, Apdu, SmartCardProtocol};

/// GET DATA.
const INS_GET_DATA: u8 = 0xCA;
/// The PW status bytes' data object.
pub const DO_PW_STATUS: u16 = 0x00C4;

/// The tries left `[PW1, reset code, PW3]` from the PW status bytes: validity, three maximum
/// lengths, then the three counters (OpenPGP card 3.4 §4.4.1, DO C4).
pub fn parse_pw_status(data: &[u8]) -> Result<[u8; 3], ParseError> {
    match data.get(4..7) {
        Some(&[pw1, rc, pw3]) => Ok([pw1, rc, pw3]),
        _ => Err(ParseError::TooShort(
            "OpenPGP PW status bytes (C4) need 7 bytes",
        )),
    }
}

/// SELECTs OpenPGP and reads DO C4.
pub fn read(protocol: &mut SmartCardProtocol<'_>) -> Result<Option<[u8; 3]>, PostureError> {
    protocol.select(aid::OPENPGP)?;
    let [p1, p2] = DO_PW_STATUS.to_be_bytes();
    let data = protocol.send(&Apdu::new(0x00, INS_GET_DATA, p1, p2, &[]))?;
    Ok(Some(
        parse_pw_status(&data).map_err(crate::error::Error::from)?,
    ))
}
