//! OATH posture: the SELECT answer carries a challenge (tag `74`) only when an access
//! password is set. Nothing is validated.

use super::PostureError;
use crate::error::ParseError;
use crate::smartcard::{aid, SmartCardProtocol};
use crate::tlv;

const TAG_NAME: u32 = 0x71;
const TAG_CHALLENGE: u32 = 0x74;

/// Whether a SELECT OATH answer says a password is set. The answer must be well-formed TLVs
/// with the name (salt) tag that every OATH applet sends.
pub fn parse_select(data: &[u8]) -> Result<bool, ParseError> {
    let tlvs = tlv::parse_map(data)?;
    if !tlvs.contains_key(&TAG_NAME) {
        return Err(ParseError::MissingTag(TAG_NAME));
    }
    Ok(tlvs.contains_key(&TAG_CHALLENGE))
}

/// SELECTs OATH and reads the answer.
pub fn read(protocol: &mut SmartCardProtocol<'_>) -> Result<Option<bool>, PostureError> {
    let answer = protocol.select(aid::OATH)?;
    Ok(Some(
        parse_select(&answer).map_err(crate::error::Error::from)?,
    ))
}
