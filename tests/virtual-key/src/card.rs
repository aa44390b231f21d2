//! The APDU processor of a virtual YubiKey: applet selection, Management/OTP/PIV/OpenPGP/OATH
//! and NFCCTAP commands, NFC restricted mode, response chaining, fault injection and APDU
//! counting. Independent of how the bytes travel; [`Transport`] only says whether the key is
//! tapped (NFC) or plugged in (USB CCID), which matters in NFC restricted mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::apdu::{self, ParseError};
use crate::model::{Fault, KeyModel, Management};
use crate::posture::PostureFault;
use crate::{ctap2, device_info, openpgp};

/// Application identifiers (full AIDs; SELECT may use a prefix of at least 5 bytes).
pub mod aid {
    pub const MANAGEMENT: &[u8] = &[0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17];
    pub const OTP: &[u8] = &[0xA0, 0x00, 0x00, 0x05, 0x27, 0x20, 0x01, 0x01];
    pub const OATH: &[u8] = &[0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01, 0x01];
    pub const PIV: &[u8] = &[
        0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
    ];
    pub const OPENPGP: &[u8] = &[0xD2, 0x76, 0x00, 0x01, 0x24, 0x01];
    pub const FIDO: &[u8] = &[0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];
    /// NFC Forum Type 4 Tag NDEF application.
    pub const NDEF: &[u8] = &[0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01];
}

/// The NDEF file (E104) of a key in NFC restricted mode: NLEN, then one well-known URI record
/// with prefix 0x04 ("https://") and "yubico.com/getting-started" (protocol reference §7).
pub const RESTRICTED_NDEF: &[u8] = b"\x00\x1F\xD1\x01\x1B\x55\x04yubico.com/getting-started";

/// The NDEF capability container (E103): mapping version 2.0, MLe/MLc 127, NDEF file E104 of
/// at most 128 bytes, readable, not writable.
pub const NDEF_CC: &[u8] = &[
    0x00, 0x0F, 0x20, 0x00, 0x7F, 0x00, 0x7F, 0x04, 0x06, 0xE1, 0x04, 0x00, 0x80, 0x00, 0xFF,
];

/// How the key is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Tapped on a reader (vpcd): NFC restricted mode applies.
    #[default]
    Nfc,
    /// Plugged in (the USB gadget's CCID interface).
    Usb,
}

/// Status words.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const SECURITY_STATUS_NOT_SATISFIED: u16 = 0x6982;
    pub const AUTH_METHOD_BLOCKED: u16 = 0x6983;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
    pub const REFERENCE_NOT_FOUND: u16 = 0x6A88;
    pub const MORE_DATA_FF: u16 = 0x61FF;
    pub const WRONG_P1P2: u16 = 0x6B00;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    pub const NO_PRECISE_DIAGNOSIS: u16 = 0x6F00;
}

/// Short-APDU response data limit (256 data bytes + SW = 258 bytes).
pub const SHORT_RESPONSE_MAX: usize = 256;

const INS_SELECT: u8 = 0xA4;
const INS_GET_RESPONSE: u8 = 0xC0;
const INS_READ_CONFIG: u8 = 0x1D;
const INS_OTP_CONFIG: u8 = 0x01;
const INS_OTP_STATUS: u8 = 0x03;
const OTP_SLOT_SERIAL: u8 = 0x10;
const INS_PIV_GET_SERIAL: u8 = 0xF8;
const INS_PIV_GET_VERSION: u8 = 0xFD;
const INS_PIV_GET_METADATA: u8 = 0xF7;
const INS_VERIFY: u8 = 0x20;
const INS_GET_DATA_PIV: u8 = 0xCB;
const INS_GET_DATA_OPENPGP: u8 = 0xCA;
const INS_OPENPGP_GET_VERSION: u8 = 0xF1;
const INS_READ_BINARY: u8 = 0xB0;
const CLA_NFCCTAP: u8 = 0x80;
const INS_NFCCTAP_MSG: u8 = 0x10;

/// The currently selected application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applet {
    Management,
    Otp,
    Piv,
    OpenPgp,
    Oath,
    Fido,
    /// NDEF (only in NFC restricted mode), with its selected file.
    Ndef,
}

/// A virtual YubiKey answering command APDUs.
#[derive(Debug)]
pub struct Card {
    model: KeyModel,
    selected: Option<Applet>,
    pending: Vec<u8>,
    chunk: usize,
    apdus: Arc<AtomicU64>,
    transport: Transport,
    /// NDEF file selected (E103 / E104).
    ndef_file: Option<u16>,
    /// [`Fault::EndlessChaining`] is flooding.
    endless: bool,
    /// [`Fault::Stall`]: how long the last answer must be held back.
    stall: Option<Duration>,
}

fn respond(data: &[u8], status: u16) -> Vec<u8> {
    let mut r = Vec::with_capacity(data.len() + 2);
    r.extend_from_slice(data);
    r.extend_from_slice(&status.to_be_bytes());
    r
}

fn status(status: u16) -> Vec<u8> {
    respond(&[], status)
}

impl Card {
    /// A card serving `model`.
    pub fn new(model: KeyModel) -> Self {
        Card {
            model,
            selected: None,
            pending: Vec::new(),
            chunk: SHORT_RESPONSE_MAX,
            apdus: Arc::new(AtomicU64::new(0)),
            transport: Transport::Nfc,
            ndef_file: None,
            endless: false,
            stall: None,
        }
    }

    /// A card plugged in over USB (CCID): NFC restricted mode does not apply.
    pub fn usb(model: KeyModel) -> Self {
        Card { transport: Transport::Usb, ..Card::new(model) }
    }

    /// How the card is connected.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// After [`Card::process`]: how long a server must hold this answer back
    /// ([`Fault::Stall`]), taken once. Servers wait for it interruptibly (a removal ends it).
    pub fn take_stall(&mut self) -> Option<Duration> {
        self.stall.take()
    }

    /// Whether the key answers as one in NFC restricted mode (restricted and tapped).
    pub fn nfc_restricted_now(&self) -> bool {
        self.transport == Transport::Nfc && self.model.is_nfc_restricted()
    }

    /// The model served.
    pub fn model(&self) -> &KeyModel {
        &self.model
    }

    /// The answer-to-reset.
    pub fn atr(&self) -> &'static [u8] {
        self.model.atr.bytes()
    }

    /// Responses longer than this are chained with `61xx` (default [`SHORT_RESPONSE_MAX`];
    /// values outside 1..=256 are clamped).
    pub fn set_response_chunk(&mut self, chunk: usize) {
        self.chunk = chunk.clamp(1, SHORT_RESPONSE_MAX);
    }

    /// The shared counter of APDUs answered (readable while the card is served elsewhere).
    pub fn apdu_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.apdus)
    }

    /// APDUs answered so far.
    pub fn apdu_count(&self) -> u64 {
        self.apdus.load(Ordering::Relaxed)
    }

    /// Power cycle / warm reset: deselects everything and drops pending response data.
    pub fn reset(&mut self) {
        self.selected = None;
        self.pending.clear();
        self.ndef_file = None;
        self.endless = false;
        self.stall = None;
    }

    /// Processes one command APDU and returns the response APDU (data || SW1 SW2).
    pub fn process(&mut self, command: &[u8]) -> Vec<u8> {
        self.apdus.fetch_add(1, Ordering::Relaxed);
        let cmd = match apdu::parse(command) {
            Ok(c) => c,
            Err(ParseError::TooShort | ParseError::WrongLength) => {
                self.pending.clear();
                return status(sw::WRONG_LENGTH);
            }
        };
        if cmd.cla & 0xE0 != 0 && cmd.cla & 0xF0 != 0x80 {
            self.pending.clear();
            return status(sw::CLA_NOT_SUPPORTED);
        }
        if cmd.ins == INS_GET_RESPONSE {
            if self.endless {
                return respond(&vec![0u8; self.chunk.min(255)], sw::MORE_DATA_FF);
            }
            return self.get_response(cmd.le);
        }
        self.pending.clear();
        self.endless = false;
        let (data, sw) = self.dispatch(&cmd);
        if sw == sw::MORE_DATA_FF {
            self.endless = true;
            return respond(&data, sw);
        }
        if sw == sw::OK && data.len() > self.chunk && !self.oversized_exempt(&cmd) {
            return self.chain(data, cmd.le);
        }
        respond(&data, sw)
    }

    fn oversized_exempt(&self, cmd: &apdu::Command<'_>) -> bool {
        self.model.fault == Some(Fault::Oversized)
            && cmd.ins == INS_READ_CONFIG
            && self.selected == Some(Applet::Management)
    }

    fn chain(&mut self, data: Vec<u8>, le: Option<usize>) -> Vec<u8> {
        let n = le.unwrap_or(self.chunk).min(self.chunk).max(1);
        let (first, rest) = data.split_at(n.min(data.len()));
        self.pending = rest.to_vec();
        let first = first.to_vec();
        self.more_sw(&first)
    }

    fn more_sw(&self, chunk: &[u8]) -> Vec<u8> {
        if self.pending.is_empty() {
            respond(chunk, sw::OK)
        } else {
            let remaining = u8::try_from(self.pending.len()).unwrap_or(0);
            respond(chunk, 0x6100 | u16::from(remaining))
        }
    }

    fn get_response(&mut self, le: Option<usize>) -> Vec<u8> {
        if self.pending.is_empty() {
            return status(sw::CONDITIONS_NOT_SATISFIED);
        }
        let n = le
            .unwrap_or(self.chunk)
            .min(self.chunk)
            .min(self.pending.len())
            .max(1);
        let chunk: Vec<u8> = self.pending.drain(..n).collect();
        self.more_sw(&chunk)
    }

    fn dispatch(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        if cmd.ins == INS_SELECT {
            return self.select(cmd);
        }
        if cmd.cla == CLA_NFCCTAP && self.selected == Some(Applet::Fido) {
            return self.nfcctap(cmd);
        }
        if cmd.cla != 0x00 {
            return (Vec::new(), sw::CLA_NOT_SUPPORTED);
        }
        match self.selected {
            Some(Applet::Management) => self.management(cmd),
            Some(Applet::Otp) => self.otp(cmd),
            Some(Applet::Piv) => self.piv(cmd),
            Some(Applet::OpenPgp) => self.openpgp(cmd),
            Some(Applet::Ndef) => self.ndef(cmd),
            _ => (Vec::new(), sw::INS_NOT_SUPPORTED),
        }
    }

    /// NFC restricted mode: only the NDEF applet exists.
    fn select_restricted(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        if cmd.p1 == 0x00 && self.selected == Some(Applet::Ndef) {
            return self.select_ndef_file(cmd);
        }
        if cmd.p1 == 0x04 && cmd.data == aid::NDEF {
            self.selected = Some(Applet::Ndef);
            self.ndef_file = None;
            return (Vec::new(), sw::OK);
        }
        self.selected = None;
        (Vec::new(), sw::FILE_NOT_FOUND)
    }

    fn select_ndef_file(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        match cmd.data {
            [0xE1, 0x03] | [0xE1, 0x04] => {
                self.ndef_file = Some(u16::from_be_bytes([cmd.data[0], cmd.data[1]]));
                (Vec::new(), sw::OK)
            }
            _ => (Vec::new(), sw::FILE_NOT_FOUND),
        }
    }

    fn ndef(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        if cmd.ins != INS_READ_BINARY {
            return (Vec::new(), sw::INS_NOT_SUPPORTED);
        }
        let file = match self.ndef_file {
            Some(0xE103) => NDEF_CC,
            Some(0xE104) => RESTRICTED_NDEF,
            _ => return (Vec::new(), sw::CONDITIONS_NOT_SATISFIED),
        };
        let offset = usize::from(u16::from_be_bytes([cmd.p1, cmd.p2]));
        let Some(rest) = file.get(offset..) else {
            return (Vec::new(), sw::WRONG_P1P2);
        };
        let n = cmd.le.unwrap_or(rest.len()).min(rest.len());
        (rest[..n].to_vec(), sw::OK)
    }

    /// NFCCTAP_MSG (`80 10 80 00 Lc <CTAP2 request>`): the CTAP2 answer, on CTAP2 keys.
    fn nfcctap(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        if cmd.ins != INS_NFCCTAP_MSG || !self.model.has_ctap2() {
            return (Vec::new(), sw::INS_NOT_SUPPORTED);
        }
        (ctap2::process(&self.model, cmd.data), sw::OK)
    }

    fn select(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        if self.nfc_restricted_now() {
            return self.select_restricted(cmd);
        }
        if cmd.p1 != 0x04 {
            return (Vec::new(), sw::WRONG_P1P2);
        }
        let a = self.model.applets;
        let table: [(&[u8], Applet, bool); 6] = [
            (
                aid::MANAGEMENT,
                Applet::Management,
                a.management != Management::Absent,
            ),
            (aid::OTP, Applet::Otp, a.otp),
            (aid::OATH, Applet::Oath, a.oath),
            (aid::PIV, Applet::Piv, a.piv),
            (aid::OPENPGP, Applet::OpenPgp, a.openpgp),
            (aid::FIDO, Applet::Fido, a.fido),
        ];
        let wanted = cmd.data;
        let hit = table
            .iter()
            .find(|(full, _, present)| *present && wanted.len() >= 5 && full.starts_with(wanted));
        let Some(&(_, applet, _)) = hit else {
            return (Vec::new(), sw::FILE_NOT_FOUND);
        };
        self.selected = Some(applet);
        let v = self.model.version;
        let data = match applet {
            Applet::Management => v.to_string().into_bytes(),
            Applet::Otp => self.model.otp_status(),
            Applet::Oath => self.oath_select(),
            Applet::Piv => vec![
                0x61, 0x11, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4F, 0x05,
                0xA0, 0x00, 0x00, 0x03, 0x08,
            ],
            Applet::OpenPgp => Vec::new(),
            Applet::Fido => b"U2F_V2".to_vec(),
            Applet::Ndef => Vec::new(),
        };
        (data, sw::OK)
    }

    fn management(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        if cmd.ins != INS_READ_CONFIG || self.model.applets.management != Management::ReadConfig {
            return (Vec::new(), sw::INS_NOT_SUPPORTED);
        }
        if cmd.p2 != 0 {
            return (Vec::new(), sw::WRONG_P1P2);
        }
        let pages = device_info::pages(&self.model);
        let Some(page) = pages.get(usize::from(cmd.p1)) else {
            return (Vec::new(), sw::WRONG_P1P2);
        };
        match self.model.fault {
            None => (page.clone(), sw::OK),
            Some(Fault::Stall) => {
                self.stall = Some(self.model.stall);
                (page.clone(), sw::OK)
            }
            Some(f) => faulty_page(f, page),
        }
    }

    /// SELECT OATH: version, salt (name), and with a password set a challenge and algorithm.
    fn oath_select(&self) -> Vec<u8> {
        let v = self.model.version;
        if self.model.posture_fault == Some(PostureFault::OathSelectMalformed) {
            return vec![0x79, 0x03, v.major, v.minor, v.patch, 0x71, 0x40, 0x01, 0x02];
        }
        let salt = u64::from(self.model.serial.unwrap_or(0)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut r = vec![0x79, 0x03, v.major, v.minor, v.patch, 0x71, 0x08];
        r.extend_from_slice(&salt.to_be_bytes());
        if self.model.posture.oath_password_set {
            r.extend_from_slice(&[0x74, 0x08]);
            r.extend_from_slice(&salt.rotate_left(17).to_be_bytes());
            r.extend_from_slice(&[0x7B, 0x01, 0x01]); // HMAC-SHA1
        }
        r
    }

    fn openpgp(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        match cmd.ins {
            INS_OPENPGP_GET_VERSION => (openpgp::version_bcd(&self.model), sw::OK),
            INS_GET_DATA_OPENPGP
                if self.model.posture_fault == Some(PostureFault::OpenPgpUnknownSw) =>
            {
                (Vec::new(), sw::NO_PRECISE_DIAGNOSIS)
            }
            INS_GET_DATA_OPENPGP => {
                match openpgp::get_data(&self.model, u16::from_be_bytes([cmd.p1, cmd.p2])) {
                    Some(d) => (d, sw::OK),
                    None => (Vec::new(), sw::REFERENCE_NOT_FOUND),
                }
            }
            _ => (Vec::new(), sw::INS_NOT_SUPPORTED),
        }
    }

    /// PIV GET METADATA (fw 5.3+) for the PIN (80), PUK (81) and management key (9B); every
    /// key slot is empty (`6A88`).
    fn piv_metadata(&self, slot: u8) -> (Vec<u8>, u16) {
        let p = &self.model.posture;
        match (self.model.posture_fault, slot) {
            (Some(PostureFault::PivUnknownSw), 0x80 | 0x81 | 0x9B) => {
                return (Vec::new(), sw::NO_PRECISE_DIAGNOSIS)
            }
            (Some(PostureFault::PivMetadataMalformed), 0x80 | 0x81 | 0x9B) => {
                return (vec![0x01, 0x01, 0xFF, 0x05, 0x01, 0x01, 0x06, 0x09, 0x03], sw::OK)
            }
            _ => {}
        }
        let counter = |default: bool, total: u8, remaining: u8| {
            vec![0x01, 0x01, 0xFF, 0x05, 0x01, u8::from(default), 0x06, 0x02, total, remaining]
        };
        match slot {
            0x80 => (counter(p.piv_pin_default, p.piv_pin_total, p.piv_pin_retries), sw::OK),
            0x81 => (counter(p.piv_puk_default, p.piv_puk_total, p.piv_puk_retries), sw::OK),
            0x9B => {
                // 3DES before 5.7, AES-192 from 5.7 (ykman: "Management key algorithm").
                let algo = if self.model.version >= crate::model::Version::new(5, 7, 0) { 0x0A } else { 0x03 };
                let default = u8::from(p.piv_management_key_default);
                (vec![0x01, 0x01, algo, 0x02, 0x02, 0x00, 0x01, 0x05, 0x01, default], sw::OK)
            }
            _ => (Vec::new(), sw::REFERENCE_NOT_FOUND),
        }
    }

    fn otp(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        match (cmd.ins, cmd.p1) {
            (INS_OTP_CONFIG, OTP_SLOT_SERIAL) => match self.model.serial {
                Some(s) => (s.to_be_bytes().to_vec(), sw::OK),
                None => (Vec::new(), sw::CONDITIONS_NOT_SATISFIED),
            },
            (INS_OTP_CONFIG, _) => (Vec::new(), sw::WRONG_P1P2),
            (INS_OTP_STATUS, _) => (self.model.otp_status(), sw::OK),
            _ => (Vec::new(), sw::INS_NOT_SUPPORTED),
        }
    }

    fn piv(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
        match cmd.ins {
            INS_PIV_GET_VERSION => (self.model.version.bytes().to_vec(), sw::OK),
            INS_PIV_GET_METADATA if self.model.piv_metadata_supported() => self.piv_metadata(cmd.p2),
            // Every data object is empty.
            INS_GET_DATA_PIV => (Vec::new(), sw::FILE_NOT_FOUND),
            // VERIFY without data only asks for the PIN retries; a PIN is never checked.
            INS_VERIFY if cmd.p2 == 0x80 && cmd.data.is_empty() => {
                match self.model.posture.piv_pin_retries {
                    0 => (Vec::new(), sw::AUTH_METHOD_BLOCKED),
                    n => (Vec::new(), 0x63C0 | u16::from(n.min(15))),
                }
            }
            INS_VERIFY => (Vec::new(), sw::SECURITY_STATUS_NOT_SATISFIED),
            INS_PIV_GET_SERIAL if self.model.piv_serial_supported() => match self.model.serial {
                Some(s) => (s.to_be_bytes().to_vec(), sw::OK),
                None => (Vec::new(), sw::CONDITIONS_NOT_SATISFIED),
            },
            _ => (Vec::new(), sw::INS_NOT_SUPPORTED),
        }
    }
}

/// Applies a fault to a well-formed `LEN || TLV…` page.
fn faulty_page(fault: Fault, page: &[u8]) -> (Vec<u8>, u16) {
    match fault {
        Fault::EndlessChaining => (vec![0u8; 255], sw::MORE_DATA_FF),
        Fault::Stall => (page.to_vec(), sw::OK),
        Fault::UnknownSw => (Vec::new(), sw::NO_PRECISE_DIAGNOSIS),
        Fault::BadLength => {
            let mut p = page.to_vec();
            if let Some(len) = p.first_mut() {
                *len = len.wrapping_add(3);
            }
            (p, sw::OK)
        }
        Fault::MalformedTlv => {
            // USB supported, then a serial TLV whose 4-byte long-form length (0x00BC614E)
            // runs far past the end of the data.
            let body = [
                0x01, 0x02, 0x02, 0x3F, 0x02, 0x84, 0x00, 0xBC, 0x61, 0x4E, 0x01, 0x02,
            ];
            let mut p = vec![body.len() as u8];
            p.extend_from_slice(&body);
            (p, sw::OK)
        }
        Fault::Truncated => {
            // Keep the first TLV whole and half of the second one's value; LEN matches.
            let body = page.get(1..).unwrap_or(&[]);
            let first = 2 + usize::from(body.get(1).copied().unwrap_or(0));
            let second_len = usize::from(body.get(first + 1).copied().unwrap_or(0));
            let cut = (first + 2 + second_len / 2)
                .min(body.len().saturating_sub(1))
                .max(1);
            let mut p = vec![cut as u8];
            p.extend_from_slice(&body[..cut.min(body.len())]);
            (p, sw::OK)
        }
        Fault::Oversized => {
            let mut p = page.to_vec();
            p.resize(300, 0x00);
            (p, sw::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PRESETS;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn card(name: &str) -> Card {
        Card::new(KeyModel::preset(name).unwrap())
    }

    fn sw_of(r: &[u8]) -> u16 {
        u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
    }

    const SELECT_MGMT: &str = "00A4040008A000000527471117";
    const SELECT_OTP: &str = "00A4040007A0000005272001";

    #[test]
    fn select_management_returns_version_string() {
        let mut c = card("yk5nfc");
        assert_eq!(c.process(&hex(SELECT_MGMT)), b"5.4.3\x90\x00".to_vec());
    }

    #[test]
    fn read_config_short_and_case1_forms() {
        let mut c = card("yk5nano");
        c.process(&hex(SELECT_MGMT));
        let pages = device_info::pages(c.model());
        let short = c.process(&hex("001D000000"));
        let case1 = c.process(&hex("001D0000"));
        assert_eq!(&short[..short.len() - 2], &pages[0][..]);
        assert_eq!(short, case1);
        assert_eq!(sw_of(&short), 0x9000);
        let p1 = c.process(&hex("001D010000"));
        assert_eq!(&p1[..p1.len() - 2], &pages[1][..]);
        assert_eq!(sw_of(&c.process(&hex("001D020000"))), sw::WRONG_P1P2);
    }

    #[test]
    fn paged_device_info_reassembles_to_vector() {
        for name in ["yk5nano", "bio", "yk5cnfc"] {
            let mut c = card(name);
            c.process(&hex(SELECT_MGMT));
            let mut merged = Vec::new();
            let mut page = 0u8;
            loop {
                let r = c.process(&[0x00, 0x1D, page, 0x00, 0x00]);
                assert_eq!(sw_of(&r), 0x9000);
                let data = &r[..r.len() - 2];
                assert_eq!(usize::from(data[0]), data.len() - 1);
                let body = &data[1..];
                let more = body.windows(3).any(|w| w == [0x10, 0x01, 0x01]);
                merged.extend_from_slice(body);
                if !more {
                    break;
                }
                page += 1;
            }
            assert_eq!(merged, device_info::merged(c.model()), "{name}");
        }
    }

    #[test]
    fn otp_applet_serial_and_status() {
        let mut c = card("neo");
        let r = c.process(&hex(SELECT_OTP));
        assert_eq!(&r[..3], &[3, 4, 3]);
        assert_eq!(r[6], 0x06);
        assert_eq!(c.process(&hex("00011000")), hex("002FA9009000"));
        assert_eq!(&c.process(&hex("00030000"))[..3], &[3, 4, 3]);
        // 8-byte OTP AID (ykpers, yubico-piv-tool).
        assert_eq!(
            sw_of(&c.process(&hex("00A4040008A000000527200101"))),
            0x9000
        );
    }

    #[test]
    fn neo_management_has_no_read_config() {
        let mut c = card("neo");
        assert_eq!(c.process(&hex(SELECT_MGMT)), b"3.4.3\x90\x00".to_vec());
        assert_eq!(sw_of(&c.process(&hex("001D000000"))), sw::INS_NOT_SUPPORTED);
        // ykman's raw NEO de-select workaround is answered, not crashed on.
        assert_eq!(sw_of(&c.process(&hex("A4040008"))), sw::CLA_NOT_SUPPORTED);
    }

    #[test]
    fn piv_serial_only_from_503() {
        let mut c = card("yk5nfc");
        c.process(&hex("00A4040005A000000308"));
        assert_eq!(c.process(&hex("00F80000")), hex("00BC614E9000"));
        assert_eq!(c.process(&hex("00FD0000")), hex("0504039000"));
        let mut c = card("yk4");
        c.process(&hex("00A4040005A000000308"));
        assert_eq!(sw_of(&c.process(&hex("00F80000"))), sw::INS_NOT_SUPPORTED);
        assert_eq!(c.process(&hex("00FD0000")), hex("0403079000"));
    }

    #[test]
    fn unknown_aid_ins_cla() {
        let mut c = card("skynfc");
        assert_eq!(sw_of(&c.process(&hex(SELECT_OTP))), sw::FILE_NOT_FOUND);
        assert_eq!(
            sw_of(&c.process(&hex("00A4040005A000000308"))),
            sw::FILE_NOT_FOUND
        );
        assert_eq!(
            sw_of(&c.process(&hex("00A4040003A00000"))),
            sw::FILE_NOT_FOUND
        );
        c.process(&hex(SELECT_MGMT));
        assert_eq!(sw_of(&c.process(&hex("00770000"))), sw::INS_NOT_SUPPORTED);
        assert_eq!(sw_of(&c.process(&hex("FF1D0000"))), sw::CLA_NOT_SUPPORTED);
        assert_eq!(sw_of(&c.process(&hex("80770000"))), sw::CLA_NOT_SUPPORTED);
        assert_eq!(sw_of(&c.process(&hex("001D"))), sw::WRONG_LENGTH);
        assert_eq!(sw_of(&c.process(&[])), sw::WRONG_LENGTH);
    }

    #[test]
    fn sky_has_no_serial_tag() {
        let mut c = card("skynfc");
        c.process(&hex(SELECT_MGMT));
        let r = c.process(&hex("001D000000"));
        let tlvs = device_info::tlvs(c.model());
        assert!(tlvs.iter().all(|(t, _)| *t != 0x02));
        assert_eq!(sw_of(&r), 0x9000);
    }

    #[test]
    fn response_chaining_with_get_response() {
        let mut c = card("yk5cnfc");
        c.set_response_chunk(16);
        c.process(&hex(SELECT_MGMT));
        let expected = device_info::pages(c.model())[0].clone();
        let mut r = c.process(&hex("001D000000"));
        let mut got = Vec::new();
        let mut rounds = 0;
        while sw_of(&r) >> 8 == 0x61 {
            got.extend_from_slice(&r[..r.len() - 2]);
            r = c.process(&hex("00C0000000"));
            rounds += 1;
        }
        assert_eq!(sw_of(&r), 0x9000);
        got.extend_from_slice(&r[..r.len() - 2]);
        assert_eq!(got, expected);
        assert_eq!(rounds, (expected.len() - 1) / 16);
        assert_eq!(c.apdu_count(), 2 + rounds as u64);
        assert_eq!(
            sw_of(&c.process(&hex("00C0000000"))),
            sw::CONDITIONS_NOT_SATISFIED
        );
    }

    #[test]
    fn counts_every_apdu() {
        let mut c = card("yk5nfc");
        let counter = c.apdu_counter();
        c.process(&hex(SELECT_MGMT));
        c.process(&hex("001D000000"));
        c.process(&[0x01]);
        assert_eq!(counter.load(Ordering::Relaxed), 3);
        c.reset();
        assert_eq!(c.apdu_count(), 3);
    }

    #[test]
    fn faults() {
        let read = |f: Fault| {
            let mut c = Card::new(KeyModel::preset("yk5nfc").unwrap().with_fault(Some(f)));
            c.process(&hex(SELECT_MGMT));
            c.process(&hex("001D000000"))
        };
        assert_eq!(read(Fault::UnknownSw), hex("6F00"));
        let r = read(Fault::BadLength);
        assert_ne!(usize::from(r[0]), r.len() - 3);
        let r = read(Fault::Oversized);
        assert!(r.len() > 258);
        assert_eq!(sw_of(&r), 0x9000);
        let r = read(Fault::Truncated);
        let data = &r[..r.len() - 2];
        assert_eq!(usize::from(data[0]), data.len() - 1);
        assert!(
            data.len() - 1 < device_info::pages(&KeyModel::preset("yk5nfc").unwrap())[0].len() - 1
        );
        let r = read(Fault::MalformedTlv);
        assert_eq!(usize::from(r[0]), r.len() - 3);
        assert_eq!(&r[5..7], &[0x02, 0x84]);
    }

    #[test]
    fn nfc_restricted_answers_only_ndef() {
        let model = KeyModel::preset("yk5cnfc").unwrap().with_nfc_restricted(true);
        let mut c = Card::new(model.clone());
        for select in [SELECT_MGMT, SELECT_OTP, "00A4040005A000000308", "00A4040008A0000006472F0001"] {
            assert_eq!(c.process(&hex(select)), hex("6A82"), "{select}");
        }
        assert_eq!(c.process(&hex("00A4040007D2760000850101")), hex("9000"));
        assert_eq!(c.process(&hex("00A4000C02E104")), hex("9000"));
        let mut want = RESTRICTED_NDEF.to_vec();
        want.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(c.process(&hex("00B00000")), want);
        assert_eq!(&want[..7], &hex("001FD1011B5504")[..]);
        assert_eq!(&want[7..33], b"yubico.com/getting-started");
        assert_eq!(c.process(&hex("00B0000002")), hex("001F9000"));
        assert_eq!(c.process(&hex("00A4000C02E103")), hex("9000"));
        assert_eq!(c.process(&hex("00B000000F"))[..15], NDEF_CC[..]);
        // Over USB the same key answers everything, and DeviceInfo says it is restricted.
        let mut usb = Card::usb(model);
        assert_eq!(usb.process(&hex(SELECT_MGMT)), b"5.7.4\x90\x00".to_vec());
        let tlvs = device_info::tlvs(usb.model());
        assert!(tlvs.iter().any(|(t, v)| *t == 0x17 && v == &[1]));
    }

    #[test]
    fn piv_metadata_follows_the_posture() {
        let mut m = KeyModel::preset("yk5nfc").unwrap();
        let mut c = Card::new(m.clone());
        c.process(&hex("00A4040005A000000308"));
        assert_eq!(c.process(&hex("00F70080")), hex("0101FF050101060203039000"));
        assert_eq!(c.process(&hex("00F7009B")), hex("01010302020001050101 9000"));
        assert_eq!(sw_of(&c.process(&hex("00F7009A"))), sw::REFERENCE_NOT_FOUND);
        assert_eq!(sw_of(&c.process(&hex("00CB3FFF055C035FC102"))), sw::FILE_NOT_FOUND);
        assert_eq!(c.process(&hex("00200080")), hex("63C3"));
        assert_eq!(sw_of(&c.process(&hex("002000800831323334353600FF"))), sw::SECURITY_STATUS_NOT_SATISFIED);
        m.posture = crate::posture::hardened();
        let mut c = Card::new(m);
        c.process(&hex("00A4040005A000000308"));
        assert_eq!(c.process(&hex("00F70081")), hex("0101FF050100060203009000"));
        // No metadata before 5.3.
        let mut c = card("yk4");
        c.process(&hex("00A4040005A000000308"));
        assert_eq!(sw_of(&c.process(&hex("00F70080"))), sw::INS_NOT_SUPPORTED);
    }

    #[test]
    fn oath_select_has_a_challenge_only_with_a_password() {
        let m = KeyModel::preset("yk5nfc").unwrap();
        let select = hex("00A4040007A0000005272101");
        let plain = Card::new(m.clone()).process(&select);
        assert!(!plain.windows(2).any(|w| w == [0x74, 0x08]));
        let mut locked = m;
        locked.posture.oath_password_set = true;
        let r = Card::new(locked).process(&select);
        assert_eq!(r.len(), plain.len() + 13);
        assert_eq!(&r[plain.len() - 2..plain.len()], &[0x74, 0x08]);
    }

    #[test]
    fn nfcctap_get_info_over_iso7816() {
        let mut c = card("yk5cnfc");
        assert_eq!(c.process(&hex("00A4040008A0000006472F0001")), b"U2F_V2\x90\x00".to_vec());
        let r = c.process(&hex("80108000010400"));
        assert_eq!(sw_of(&r) >> 8, 0x61, "getInfo is longer than one short answer");
        let mut c = card("neo");
        c.process(&hex("00A4040008A0000006472F0001"));
        assert_eq!(sw_of(&c.process(&hex("801080000104"))), sw::INS_NOT_SUPPORTED);
    }

    #[test]
    fn endless_chaining_never_ends_and_stall_is_announced() {
        let m = KeyModel::preset("yk5nfc").unwrap();
        let mut c = Card::new(m.clone().with_fault(Some(Fault::EndlessChaining)));
        c.process(&hex(SELECT_MGMT));
        assert_eq!(sw_of(&c.process(&hex("001D000000"))), 0x61FF);
        for _ in 0..100 {
            assert_eq!(sw_of(&c.process(&hex("00C0000000"))), 0x61FF);
        }
        // Any other command ends the flood.
        assert_eq!(sw_of(&c.process(&hex(SELECT_MGMT))), 0x9000);
        let mut c = Card::new(m.with_fault(Some(Fault::Stall)));
        c.process(&hex(SELECT_MGMT));
        assert_eq!(c.take_stall(), None);
        assert_eq!(sw_of(&c.process(&hex("001D000000"))), 0x9000);
        assert_eq!(c.take_stall(), Some(crate::model::DEFAULT_STALL));
        assert_eq!(c.take_stall(), None);
    }

    #[test]
    fn posture_faults_spoil_only_their_applet() {
        use crate::posture::PostureFault as P;
        let answers = |f: Option<P>| {
            let mut m = KeyModel::preset("yk5cnfc").unwrap();
            m.posture_fault = f;
            let mut c = Card::new(m);
            let mut out = Vec::new();
            c.process(&hex("00A4040005A000000308"));
            out.push(c.process(&hex("00F70080")));
            c.process(&hex("00A4040006D27600012401"));
            out.push(c.process(&hex("00CA00C4")));
            out.push(c.process(&hex("00A4040007A0000005272101")));
            c.process(&hex("00A4040008A0000006472F0001"));
            let mut r = c.process(&hex("80108000010400"));
            let mut getinfo = Vec::new();
            while sw_of(&r) >> 8 == 0x61 {
                getinfo.extend_from_slice(&r[..r.len() - 2]);
                r = c.process(&hex("00C0000000"));
            }
            getinfo.extend_from_slice(&r);
            out.push(getinfo);
            out
        };
        let good = answers(None);
        let spoiled = [
            (P::PivMetadataMalformed, 0),
            (P::PivUnknownSw, 0),
            (P::OpenPgpUnknownSw, 1),
            (P::OpenPgpPwStatusShort, 1),
            (P::OathSelectMalformed, 2),
            (P::GetInfoTruncated, 3),
            (P::GetInfoTooDeep, 3),
        ];
        for (f, which) in spoiled {
            let bad = answers(Some(f));
            for i in 0..4 {
                assert_eq!(bad[i] == good[i], i != which, "{} answer {i}", f.name());
            }
        }
        let deep = &answers(Some(P::GetInfoTooDeep))[3];
        assert_eq!(
            crate::cbor::decode(&deep[1..deep.len() - 2]),
            Err(crate::cbor::DecodeError::TooDeep)
        );
        let cut = &answers(Some(P::GetInfoTruncated))[3];
        assert_eq!(
            crate::cbor::decode(&cut[1..cut.len() - 2]),
            Err(crate::cbor::DecodeError::Truncated)
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        for p in PRESETS {
            let mut c = card(p);
            c.model.posture = crate::posture::hardened();
            for len in 0..40usize {
                for seed in 0..20u8 {
                    let cmd: Vec<u8> = (0..len)
                        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                        .collect();
                    let r = c.process(&cmd);
                    assert!(r.len() >= 2);
                }
            }
        }
    }
}
