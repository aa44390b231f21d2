//! Command APDU encoding (short form) and response APDU decoding.

use crate::error::{Error, ParseError, StatusWord};

/// A command APDU. keytally only sends short APDUs: every command it needs fits in one, and
/// every reader (NFC readers included) accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apdu<'a> {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// First parameter.
    pub p1: u8,
    /// Second parameter.
    pub p2: u8,
    /// Command data (at most 255 bytes).
    pub data: &'a [u8],
}

impl<'a> Apdu<'a> {
    /// A command APDU from its parts.
    pub const fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: &'a [u8]) -> Self {
        Self { cla, ins, p1, p2, data }
    }

    /// Short encoding as ykman writes it: `CLA INS P1 P2 [Lc data]`, and a lone `Le = 00`
    /// when there is no data (so the card may answer up to 256 bytes).
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let lc = u8::try_from(self.data.len())
            .map_err(|_| Error::NotSupported("command data longer than 255 bytes"))?;
        let mut out = Vec::with_capacity(5 + self.data.len());
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if self.data.is_empty() {
            out.push(0x00);
        } else {
            out.push(lc);
            out.extend_from_slice(self.data);
        }
        Ok(out)
    }
}

/// A decoded response APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data, without the status word.
    pub data: Vec<u8>,
    /// The status word.
    pub sw: StatusWord,
}

impl Response {
    /// Splits the trailing status word off a raw response.
    pub fn decode(mut raw: Vec<u8>) -> Result<Self, ParseError> {
        if raw.len() < 2 {
            return Err(ParseError::TooShort("no status word"));
        }
        let sw2 = raw.pop().unwrap_or_default();
        let sw1 = raw.pop().unwrap_or_default();
        Ok(Self { data: raw, sw: StatusWord(u16::from_be_bytes([sw1, sw2])) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_ykman() {
        let select = Apdu::new(0, 0xA4, 4, 0, &[0xA0, 0, 0, 5, 0x27, 0x47, 0x11, 0x17]).encode().unwrap();
        assert_eq!(select, [0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17]);
        let read_config = Apdu::new(0, 0x1D, 1, 0, &[]).encode().unwrap();
        assert_eq!(read_config, [0x00, 0x1D, 0x01, 0x00, 0x00]);
        assert!(Apdu::new(0, 1, 0, 0, &[0u8; 256]).encode().is_err());
    }

    #[test]
    fn decodes_status_word() {
        let r = Response::decode(vec![0x01, 0x02, 0x90, 0x00]).unwrap();
        assert_eq!(r.data, [1, 2]);
        assert_eq!(r.sw, StatusWord::OK);
        assert!(Response::decode(vec![0x90]).is_err());
    }
}
