//! OTP posture: the status bytes (`version(3) sequence touch-level(2, little-endian)`), whose
//! touch level carries "slot 1 configured" (0x01) and "slot 2 configured" (0x02). Over a smart
//! card they are SELECT OTP's answer; over OTP HID, the status report.

use super::PostureError;
use crate::error::ParseError;
use crate::smartcard::{aid, SmartCardProtocol};
use crate::version::Version;

const SLOT1_VALID: u8 = 0x01;
const SLOT2_VALID: u8 = 0x02;

/// Whether firmware `version` reports which slots are configured (yubikit: 2.1 and later).
pub fn status_supported(version: Version) -> bool {
    version >= Version::new(2, 1, 0)
}

/// `[slot 1, slot 2]` configured, from six status bytes.
pub fn slots_configured(status: &[u8; 6]) -> [bool; 2] {
    [status[4] & SLOT1_VALID != 0, status[4] & SLOT2_VALID != 0]
}

/// The six status bytes at the start of a SELECT OTP answer.
pub fn parse_select(data: &[u8]) -> Result<[u8; 6], ParseError> {
    data.get(..6)
        .and_then(|s| <[u8; 6]>::try_from(s).ok())
        .ok_or(ParseError::TooShort("OTP status needs 6 bytes"))
}

/// SELECTs OTP and reads the slots from its answer.
pub fn read_smartcard(
    protocol: &mut SmartCardProtocol<'_>,
) -> Result<Option<[bool; 2]>, PostureError> {
    let answer = protocol.select(aid::OTP)?;
    let status = parse_select(&answer).map_err(crate::error::Error::from)?;
    Ok(Some(slots_configured(&status)))
}
