//! PIV posture: GET METADATA (`00 F7 00 slot`, firmware 5.3+) for the PIN (`80`), the PUK
//! (`81`) and the management key (`9B`): the default-value flag and the retries remaining.
//! Nothing is verified.

use super::{Posture, PostureError};
use crate::error::{Error, ParseError};
use crate::smartcard::{aid, Apdu, SmartCardProtocol};
use crate::tlv;
use crate::version::Version;

/// The first firmware with GET METADATA.
pub const MIN_METADATA_VERSION: Version = Version::new(5, 3, 0);
/// GET METADATA.
pub const INS_GET_METADATA: u8 = 0xF7;
/// The PIN's slot.
pub const SLOT_PIN: u8 = 0x80;
/// The PUK's slot.
pub const SLOT_PUK: u8 = 0x81;
/// The management key's slot.
pub const SLOT_MANAGEMENT_KEY: u8 = 0x9B;

const TAG_IS_DEFAULT: u32 = 0x05;
const TAG_RETRIES: u32 = 0x06;

/// Whether firmware `version` answers GET METADATA.
pub fn metadata_supported(version: Version) -> bool {
    version >= MIN_METADATA_VERSION
}

/// What GET METADATA says about one PIN, PUK or key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// The value is the factory default.
    pub is_default: bool,
    /// `(total, remaining)` tries, for the PIN and PUK.
    pub retries: Option<(u8, u8)>,
}

/// Parses a GET METADATA answer (TLVs). The default flag is required; a retries value must
/// be two bytes.
pub fn parse_metadata(data: &[u8]) -> Result<Metadata, ParseError> {
    let tlvs = tlv::parse_map(data)?;
    let is_default = match tlvs.get(&TAG_IS_DEFAULT).map(Vec::as_slice) {
        Some([flag]) => *flag != 0,
        Some(other) => {
            return Err(ParseError::BadValueLength {
                tag: TAG_IS_DEFAULT,
                len: other.len(),
                expected: "1 byte",
            })
        }
        None => return Err(ParseError::MissingTag(TAG_IS_DEFAULT)),
    };
    let retries = match tlvs.get(&TAG_RETRIES).map(Vec::as_slice) {
        Some([total, remaining]) => Some((*total, *remaining)),
        Some(other) => {
            return Err(ParseError::BadValueLength {
                tag: TAG_RETRIES,
                len: other.len(),
                expected: "2 bytes",
            })
        }
        None => None,
    };
    Ok(Metadata {
        is_default,
        retries,
    })
}

fn metadata(protocol: &mut SmartCardProtocol<'_>, slot: u8) -> Result<Metadata, Error> {
    let data = protocol.send(&Apdu::new(0x00, INS_GET_METADATA, 0x00, slot, &[]))?;
    Ok(parse_metadata(&data)?)
}

/// SELECTs PIV and reads the three slots' metadata into `posture`. A slot that fails leaves
/// its fields `None`; the first failure is returned after all three were tried.
pub fn read(
    protocol: &mut SmartCardProtocol<'_>,
    posture: &mut Posture,
) -> Result<(), PostureError> {
    protocol.select(aid::PIV)?;
    let mut first_error = None;
    let mut keep = |r: Result<Metadata, Error>| match r {
        Ok(m) => Some(m),
        Err(e) => {
            first_error.get_or_insert(e);
            None
        }
    };
    if let Some(pin) = keep(metadata(protocol, SLOT_PIN)) {
        posture.piv_pin_default = Some(pin.is_default);
        posture.piv_pin_retries = pin.retries.map(|(_, remaining)| remaining);
    }
    if let Some(puk) = keep(metadata(protocol, SLOT_PUK)) {
        posture.piv_puk_default = Some(puk.is_default);
        posture.piv_puk_retries = puk.retries.map(|(_, remaining)| remaining);
    }
    if let Some(key) = keep(metadata(protocol, SLOT_MANAGEMENT_KEY)) {
        posture.piv_management_key_default = Some(key.is_default);
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}
