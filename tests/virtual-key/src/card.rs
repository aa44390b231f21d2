//! The APDU processor of a virtual YubiKey: applet selection, Management/OTP/PIV commands,
//! response chaining, fault injection and APDU counting. Transport-independent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::apdu::{self, ParseError};
use crate::device_info;
use crate::model::{Fault, KeyModel, Management};

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
}

/// Status words.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
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

/// The currently selected application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applet {
    Management,
    Otp,
    Piv,
    OpenPgp,
    Oath,
    Fido,
}

/// A virtual YubiKey answering command APDUs.
#[derive(Debug)]
pub struct Card {
    model: KeyModel,
    selected: Option<Applet>,
    pending: Vec<u8>,
    chunk: usize,
    apdus: Arc<AtomicU64>,
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
        }
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
            return self.get_response(cmd.le);
        }
        self.pending.clear();
        let (data, sw) = self.dispatch(&cmd);
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
        if cmd.cla != 0x00 {
            return (Vec::new(), sw::CLA_NOT_SUPPORTED);
        }
        match self.selected {
            Some(Applet::Management) => self.management(cmd),
            Some(Applet::Otp) => self.otp(cmd),
            Some(Applet::Piv) => self.piv(cmd),
            _ => (Vec::new(), sw::INS_NOT_SUPPORTED),
        }
    }

    fn select(&mut self, cmd: &apdu::Command<'_>) -> (Vec<u8>, u16) {
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
            Applet::Oath => vec![0x79, 0x03, v.major, v.minor, v.patch],
            Applet::Piv => vec![
                0x61, 0x11, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4F, 0x05,
                0xA0, 0x00, 0x00, 0x03, 0x08,
            ],
            Applet::OpenPgp => Vec::new(),
            Applet::Fido => b"U2F_V2".to_vec(),
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
            Some(f) => faulty_page(f, page),
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
    fn never_panics_on_garbage() {
        for p in PRESETS {
            let mut c = card(p);
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
