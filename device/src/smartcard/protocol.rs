//! Sending APDUs: response chaining (`61xx` → GET RESPONSE), size bounds, status words as errors.

use super::apdu::{Apdu, Response};
use super::SmartCardConnection;
use crate::caps::Transport;
use crate::error::{Error, ParseError, StatusWord};

const INS_SELECT: u8 = 0xA4;
const INS_GET_RESPONSE: u8 = 0xC0;
const SW1_MORE_DATA: u8 = 0x61;

/// The most response data keytally accepts for one command, chained parts included.
/// Nothing it asks for is longer; a key that sends more is broken or hostile.
pub const MAX_RESPONSE: usize = 4096;

/// ISO 7816 over one connection.
pub struct SmartCardProtocol<'c> {
    conn: &'c mut dyn SmartCardConnection,
    apdus_sent: u32,
}

impl<'c> SmartCardProtocol<'c> {
    /// Speaks ISO 7816 over `conn`; nothing is sent yet.
    pub fn new(conn: &'c mut dyn SmartCardConnection) -> Self {
        Self { conn, apdus_sent: 0 }
    }

    /// Whether the key is on USB or NFC.
    pub fn transport(&self) -> Transport {
        self.conn.transport()
    }

    /// How many command APDUs this protocol object has sent (GET RESPONSEs included).
    pub fn apdus_sent(&self) -> u32 {
        self.apdus_sent
    }

    /// Sends raw bytes and returns the raw answer, for the few commands that are not APDUs
    /// in the usual sense (the NEO de-select workaround).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        self.apdus_sent += 1;
        Ok(self.conn.transmit(bytes)?)
    }

    /// Sends a command and returns its data when the status word is 9000, following
    /// `61xx` chaining. Any other status word is `Error::Status`.
    pub fn send(&mut self, apdu: &Apdu<'_>) -> Result<Vec<u8>, Error> {
        let mut resp = self.exchange(&apdu.encode()?)?;
        let mut data = Vec::new();
        loop {
            if data.len() + resp.data.len() > MAX_RESPONSE {
                return Err(ParseError::Oversized { len: data.len() + resp.data.len(), limit: MAX_RESPONSE }.into());
            }
            data.extend_from_slice(&resp.data);
            if resp.sw.sw1() != SW1_MORE_DATA {
                break;
            }
            let get_response = [apdu.cla & 0x80, INS_GET_RESPONSE, 0x00, 0x00, resp.sw.sw2()];
            resp = self.exchange(&get_response)?;
        }
        if resp.sw == StatusWord::OK {
            Ok(data)
        } else {
            Err(Error::Status(resp.sw))
        }
    }

    /// SELECT by AID (`00 A4 04 00 Lc AID`); returns the applet's answer.
    pub fn select(&mut self, aid: &[u8]) -> Result<Vec<u8>, Error> {
        self.send(&Apdu::new(0x00, INS_SELECT, 0x04, 0x00, aid))
    }

    fn exchange(&mut self, command: &[u8]) -> Result<Response, Error> {
        self.apdus_sent += 1;
        let raw = self.conn.transmit(command)?;
        Ok(Response::decode(raw)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::LinkError;
    use std::collections::VecDeque;

    /// A scripted card: answers each command with the next canned response.
    pub struct Scripted {
        pub answers: VecDeque<Vec<u8>>,
        pub sent: Vec<Vec<u8>>,
        pub transport: Transport,
    }

    impl Scripted {
        pub fn new(answers: &[&[u8]]) -> Self {
            Self { answers: answers.iter().map(|a| a.to_vec()).collect(), sent: vec![], transport: Transport::Nfc }
        }
    }

    impl SmartCardConnection for Scripted {
        fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError> {
            self.sent.push(command.to_vec());
            self.answers.pop_front().ok_or(LinkError::Removed)
        }
        fn transport(&self) -> Transport {
            self.transport
        }
    }

    #[test]
    fn follows_response_chaining() {
        let mut card = Scripted::new(&[&[1, 2, 0x61, 0x02], &[3, 4, 0x90, 0x00]]);
        let data = SmartCardProtocol::new(&mut card).send(&Apdu::new(0, 0x1D, 0, 0, &[])).unwrap();
        assert_eq!(data, [1, 2, 3, 4]);
        assert_eq!(card.sent[1], [0x00, 0xC0, 0x00, 0x00, 0x02]);
    }

    #[test]
    fn status_words_are_typed() {
        let mut card = Scripted::new(&[&[0x6A, 0x82]]);
        let err = SmartCardProtocol::new(&mut card).select(&[1, 2, 3]).unwrap_err();
        assert!(err.is_application_missing());
        let mut card = Scripted::new(&[&[0x6F, 0x00]]);
        let err = SmartCardProtocol::new(&mut card).select(&[1]).unwrap_err();
        assert_eq!(err, Error::Status(StatusWord(0x6F00)));
    }

    #[test]
    fn endless_chaining_is_bounded() {
        let chunk: Vec<u8> = [vec![0u8; 256], vec![0x61, 0x00]].concat();
        let answers: Vec<&[u8]> = std::iter::repeat_n(chunk.as_slice(), 40).collect();
        let mut card = Scripted::new(&answers);
        let err = SmartCardProtocol::new(&mut card).send(&Apdu::new(0, 0x1D, 0, 0, &[])).unwrap_err();
        assert!(matches!(err, Error::Parse(ParseError::Oversized { .. })));
    }
}
