//! FIDO2 posture: CTAP2 authenticatorGetInfo, over CTAPHID (`CTAPHID_CBOR`, a USB key's FIDO
//! HID interface) or over NFCCTAP (`80 10 00 00 04`, the FIDO applet on NFC). The answer is a
//! status byte and a CBOR map, decoded by the bounded [`super::cbor`] decoder.

use super::cbor::{self, Value};
use super::{Posture, PostureError};
use crate::smartcard::{aid, Apdu, SmartCardProtocol};
use crate::transport::ctaphid::{cmd, CtapHidDevice};

/// authenticatorGetInfo.
pub const CMD_GET_INFO: u8 = 0x04;
/// NFCCTAP_MSG's class and instruction bytes.
const CLA_NFCCTAP: u8 = 0x80;
const INS_NFCCTAP_MSG: u8 = 0x10;

/// getInfo's map keys keytally reads.
mod key {
    pub const OPTIONS: i128 = 0x04;
    pub const FORCE_PIN_CHANGE: i128 = 0x0C;
    pub const MIN_PIN_LENGTH: i128 = 0x0D;
    pub const REMAINING_DISCOVERABLE_CREDENTIALS: i128 = 0x14;
}

/// The getInfo fields that make up FIDO2 posture; `None` where the key sent none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetInfoPosture {
    /// `options.clientPin`.
    pub client_pin: Option<bool>,
    /// `options.uv`.
    pub uv: Option<bool>,
    /// `forcePINChange` (0x0C).
    pub force_pin_change: Option<bool>,
    /// `minPINLength` (0x0D).
    pub min_pin_length: Option<u32>,
    /// `remainingDiscoverableCredentials` (0x14).
    pub remaining_discoverable_credentials: Option<u32>,
}

/// Parses an authenticatorGetInfo answer (`status || CBOR map`). A non-zero status, CBOR
/// that is truncated, too deep or not a map, or a posture field of the wrong type is an error.
pub fn parse_get_info(answer: &[u8]) -> Result<GetInfoPosture, PostureError> {
    let (&status, body) = answer
        .split_first()
        .ok_or(PostureError::Malformed("empty getInfo answer"))?;
    if status != 0 {
        return Err(PostureError::Ctap2Status(status));
    }
    let info = cbor::decode(body)?;
    if !matches!(info, Value::Map(_)) {
        return Err(PostureError::Malformed("getInfo is not a CBOR map"));
    }
    let wrong = PostureError::Malformed;
    let boolean = |v: Option<&Value>, what| match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong(what)),
    };
    let uint = |v: Option<&Value>, what| match v {
        None => Ok(None),
        Some(Value::Int(n)) => u32::try_from(*n).map(Some).map_err(|_| wrong(what)),
        Some(_) => Err(wrong(what)),
    };
    let options = info.get_int_key(key::OPTIONS);
    if options.is_some_and(|o| !matches!(o, Value::Map(_))) {
        return Err(wrong("getInfo options is not a map"));
    }
    Ok(GetInfoPosture {
        client_pin: boolean(
            options.and_then(|o| o.get_text_key("clientPin")),
            "options.clientPin is not a boolean",
        )?,
        uv: boolean(
            options.and_then(|o| o.get_text_key("uv")),
            "options.uv is not a boolean",
        )?,
        force_pin_change: boolean(
            info.get_int_key(key::FORCE_PIN_CHANGE),
            "forcePINChange is not a boolean",
        )?,
        min_pin_length: uint(
            info.get_int_key(key::MIN_PIN_LENGTH),
            "minPINLength is not an unsigned integer",
        )?,
        remaining_discoverable_credentials: uint(
            info.get_int_key(key::REMAINING_DISCOVERABLE_CREDENTIALS),
            "remainingDiscoverableCredentials is not an unsigned integer",
        )?,
    })
}

/// Copies getInfo's posture into `posture`.
pub fn apply(info: &GetInfoPosture, posture: &mut Posture) {
    posture.fido2_pin_set = info.client_pin;
    posture.fido2_uv_enrolled = info.uv;
    posture.fido2_force_pin_change = info.force_pin_change;
    posture.fido2_min_pin_length = info.min_pin_length;
    posture.fido2_remaining_discoverable_credentials = info.remaining_discoverable_credentials;
}

/// getInfo over NFC: SELECT FIDO, then NFCCTAP_MSG with the getInfo command byte.
pub fn read_nfcctap(protocol: &mut SmartCardProtocol<'_>) -> Result<GetInfoPosture, PostureError> {
    protocol.select(aid::FIDO)?;
    let answer = protocol.send(&Apdu::new(
        CLA_NFCCTAP,
        INS_NFCCTAP_MSG,
        0x00,
        0x00,
        &[CMD_GET_INFO],
    ))?;
    parse_get_info(&answer)
}

/// getInfo over CTAPHID (`CTAPHID_CBOR` on an allocated channel).
pub fn read_ctaphid(ctap: &mut CtapHidDevice<'_>) -> Result<GetInfoPosture, PostureError> {
    let answer = ctap.call(cmd::CBOR, &[CMD_GET_INFO])?;
    parse_get_info(&answer)
}
