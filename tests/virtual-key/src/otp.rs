//! The OTP HID interface of a virtual YubiKey: 8-byte feature reports carrying the 70-byte
//! frame protocol (protocol reference §3). Transport-independent: a USB gadget feeds it the
//! host's SET_REPORT data and answers GET_REPORT with [`OtpHid::get_report`].
//!
//! Served commands: the status report, slot 0x10 (serial, refused when the model has none)
//! and slot 0x13 (DeviceInfo page, fw ≥ 4.1 only). Everything else is refused the way a key
//! refuses it: no response data and an unchanged programming sequence ("No data").

use crate::device_info;
use crate::model::{KeyModel, Management};

/// Slot/command byte: read the serial number.
pub const SLOT_DEVICE_SERIAL: u8 = 0x10;
/// Slot/command byte: read a DeviceInfo page (payload byte 0 = page).
pub const SLOT_YK4_CAPABILITIES: u8 = 0x13;

const FRAME_LEN: usize = 70;
const PAYLOAD_LEN: usize = 64;
const SLOT_WRITE_FLAG: u8 = 0x80;
const RESP_PENDING_FLAG: u8 = 0x40;
const SEQUENCE_MASK: u8 = 0x1F;

/// CRC-16 as the OTP protocol uses it: init 0xFFFF, reflected polynomial 0x8408, no final XOR.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb != 0 {
                crc ^= 0x8408;
            }
        }
    }
    crc
}

/// `data || !crc16(data)` (little-endian): what a key appends to response data.
pub fn with_crc(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out.extend_from_slice(&(!crc16(data)).to_le_bytes());
    out
}

/// A virtual key's OTP HID interface.
#[derive(Debug)]
pub struct OtpHid {
    model: KeyModel,
    prog_seq: u8,
    frame: [u8; FRAME_LEN],
    /// Response bytes being read out, and the next chunk's sequence number.
    response: Option<(Vec<u8>, usize)>,
    /// Feature reports exchanged (GET + SET).
    pub reports: u64,
    /// Frames (commands) received with a good CRC.
    pub commands: u64,
}

impl OtpHid {
    pub fn new(model: KeyModel) -> Self {
        let prog_seq = model.otp_status_tail.first().copied().unwrap_or(0);
        OtpHid {
            model,
            prog_seq,
            frame: [0; FRAME_LEN],
            response: None,
            reports: 0,
            commands: 0,
        }
    }

    pub fn model(&self) -> &KeyModel {
        &self.model
    }

    /// The status report: version, programming sequence, touch level (whose slot bits come
    /// from the posture, see [`KeyModel::otp_status`]), flags.
    fn status(&self, flags: u8) -> [u8; 8] {
        let s = self.model.otp_status();
        let at = |i: usize| s.get(i).copied().unwrap_or(0);
        [0, at(0), at(1), at(2), self.prog_seq, at(4), at(5), flags]
    }

    /// The host reads a feature report (HID GET_REPORT).
    pub fn get_report(&mut self) -> [u8; 8] {
        self.reports += 1;
        match &mut self.response {
            Some((data, seq)) => {
                let start = *seq * 7;
                if start >= data.len() {
                    // The sequence wraps back to 0: the host knows the transfer is complete.
                    return self.status(RESP_PENDING_FLAG);
                }
                let mut r = [0u8; 8];
                let end = (start + 7).min(data.len());
                r[..end - start].copy_from_slice(&data[start..end]);
                r[7] = RESP_PENDING_FLAG | (*seq as u8 & SEQUENCE_MASK);
                *seq += 1;
                r
            }
            None => self.status(0),
        }
    }

    /// The host writes a feature report (HID SET_REPORT, 8 bytes without a report ID).
    pub fn set_report(&mut self, report: &[u8]) {
        self.reports += 1;
        if report.len() < 8 {
            return;
        }
        let ctl = report[7];
        if ctl & SLOT_WRITE_FLAG == 0 {
            return;
        }
        let seq = usize::from(ctl & SEQUENCE_MASK);
        if seq >= 10 {
            // Reset report (0x8F ykpers, 0xFF ykman): drop any pending response.
            self.response = None;
            return;
        }
        if seq == 0 {
            self.frame = [0; FRAME_LEN];
            self.response = None;
        }
        self.frame[seq * 7..seq * 7 + 7].copy_from_slice(&report[..7]);
        if seq == 9 {
            self.execute();
        }
    }

    fn execute(&mut self) {
        let payload = &self.frame[..PAYLOAD_LEN];
        let slot = self.frame[PAYLOAD_LEN];
        let crc = u16::from_le_bytes([self.frame[65], self.frame[66]]);
        if crc16(payload) != crc {
            return;
        }
        self.commands += 1;
        let data = match slot {
            SLOT_DEVICE_SERIAL => self.model.serial.map(|s| s.to_be_bytes().to_vec()),
            SLOT_YK4_CAPABILITIES if self.model.applets.management == Management::ReadConfig => {
                device_info::pages(&self.model)
                    .get(usize::from(payload[0]))
                    .cloned()
                    .or_else(|| Some(vec![0]))
            }
            _ => None,
        };
        self.response = data.map(|d| (with_crc(&d), 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host side, as protocol reference §3 describes ykman's `OtpProtocol`.
    fn send(otp: &mut OtpHid, slot: u8, payload: &[u8]) -> Option<Vec<u8>> {
        let mut p = [0u8; 64];
        p[..payload.len()].copy_from_slice(payload);
        let mut frame = p.to_vec();
        frame.push(slot);
        frame.extend_from_slice(&crc16(&p).to_le_bytes());
        frame.extend_from_slice(&[0, 0, 0]);
        for (seq, chunk) in frame.chunks(7).enumerate() {
            if seq == 0 || seq == 9 || chunk.iter().any(|&b| b != 0) {
                let mut r = chunk.to_vec();
                r.push(0x80 | seq as u8);
                otp.set_report(&r);
            }
        }
        let mut out = Vec::new();
        let mut expected = 0u8;
        loop {
            let r = otp.get_report();
            let s = r[7];
            if s & 0x40 != 0 {
                if s & 0x1F == expected {
                    out.extend_from_slice(&r[..7]);
                    expected += 1;
                } else if s & 0x1F == 0 {
                    otp.set_report(&[0, 0, 0, 0, 0, 0, 0, 0xFF]);
                    return Some(out);
                }
            } else if s == 0 {
                assert!(out.is_empty(), "incomplete transfer");
                return None;
            }
        }
    }

    #[test]
    fn crc_matches_reference_examples() {
        assert_eq!(crc16(&[0u8; 64]), 0x5B6B);
        let mut p = [0u8; 64];
        p[0] = 1;
        assert_eq!(crc16(&p), 0xC946);
        assert_eq!(
            with_crc(&[0x00, 0x6B, 0x95, 0x6A]),
            [0x00, 0x6B, 0x95, 0x6A, 0x8C, 0x7B]
        );
        assert_eq!(crc16(&with_crc(&[0x00, 0x6B, 0x95, 0x6A])), 0xF0B8);
    }

    #[test]
    fn status_report_carries_version_and_prog_seq() {
        let mut otp = OtpHid::new(KeyModel::preset("yk4").unwrap());
        assert_eq!(otp.get_report(), [0, 4, 3, 7, 3, 7, 0, 0]);
    }

    #[test]
    fn status_report_carries_the_configured_slots() {
        let mut m = KeyModel::preset("yk5nfc").unwrap();
        assert_eq!(OtpHid::new(m.clone()).get_report()[5], 0x00);
        m.posture.otp_slots_configured = [true, false];
        assert_eq!(OtpHid::new(m.clone()).get_report()[5], 0x01);
        m.posture.otp_slots_configured = [false, true];
        assert_eq!(OtpHid::new(m).get_report()[5], 0x02);
    }

    #[test]
    fn serial_over_slot_0x10() {
        let mut otp = OtpHid::new(KeyModel::preset("yk4").unwrap());
        let r = send(&mut otp, SLOT_DEVICE_SERIAL, &[]).unwrap();
        assert_eq!(crc16(&r[..6]), 0xF0B8);
        assert_eq!(&r[..4], &7050602u32.to_be_bytes());
        assert_eq!(otp.get_report()[7], 0, "reset report clears the response");
        let mut sky = OtpHid::new(KeyModel::preset("skynfc").unwrap());
        assert_eq!(send(&mut sky, SLOT_DEVICE_SERIAL, &[]), None);
    }

    #[test]
    fn device_info_pages_over_slot_0x13() {
        let m = KeyModel::preset("yk5cnfc").unwrap();
        let pages = device_info::pages(&m);
        let mut otp = OtpHid::new(m);
        for (i, page) in pages.iter().enumerate() {
            let r = send(&mut otp, SLOT_YK4_CAPABILITIES, &[i as u8]).unwrap();
            let n = usize::from(r[0]) + 1;
            assert_eq!(crc16(&r[..n + 2]), 0xF0B8, "page {i}");
            assert_eq!(&r[..n], &page[..], "page {i}");
        }
        let mut neo = OtpHid::new(KeyModel::preset("neo").unwrap());
        assert_eq!(
            send(&mut neo, SLOT_YK4_CAPABILITIES, &[0]),
            None,
            "NEO has no DeviceInfo"
        );
        assert!(send(&mut neo, SLOT_DEVICE_SERIAL, &[]).is_some());
    }

    #[test]
    fn bad_crc_is_ignored() {
        let mut otp = OtpHid::new(KeyModel::preset("yk5nfc").unwrap());
        otp.set_report(&[0, 0, 0, 0, 0, 0, 0, 0x80]);
        otp.set_report(&[0, 0x10, 0x00, 0x00, 0, 0, 0, 0x89]);
        assert_eq!(otp.get_report()[7], 0);
        assert_eq!(otp.commands, 0);
    }
}
