//! The FIDO HID interface of a virtual YubiKey: CTAPHID over 64-byte reports (protocol
//! reference §4). Transport-independent: feed each output report to [`CtapHid::packet`] and
//! send back the input reports it returns.
//!
//! Served: INIT (channel allocation), PING, WINK, CBOR (CTAP2 getInfo and the read-only
//! clientPIN retries, [`crate::ctap2`]; fw 5 FIDO2 keys only), the Yubico vendor command 0xC2
//! READ_CONFIG (DeviceInfo page; fw ≥ 4.1 only), and CTAPHID_ERROR for anything else.

use crate::{ctap2, device_info};
use crate::model::{KeyModel, Management};

pub const PACKET: usize = 64;
pub const BROADCAST: u32 = 0xFFFF_FFFF;
pub const CMD_PING: u8 = 0x01;
pub const CMD_MSG: u8 = 0x03;
pub const CMD_INIT: u8 = 0x06;
pub const CMD_WINK: u8 = 0x08;
pub const CMD_CBOR: u8 = 0x10;
pub const CMD_CANCEL: u8 = 0x11;
pub const CMD_ERROR: u8 = 0x3F;
pub const CMD_READ_CONFIG: u8 = 0x42;
pub const ERR_INVALID_CMD: u8 = 0x01;
pub const ERR_INVALID_LEN: u8 = 0x03;
pub const ERR_INVALID_SEQ: u8 = 0x04;
pub const ERR_INVALID_CHANNEL: u8 = 0x0B;

/// Capability flags in the INIT response.
pub const CAP_WINK: u8 = 0x01;
pub const CAP_CBOR: u8 = 0x04;
pub const CAP_NMSG: u8 = 0x08;

#[derive(Debug)]
struct Assembly {
    cid: u32,
    cmd: u8,
    len: usize,
    data: Vec<u8>,
    next_seq: u8,
}

/// A virtual key's CTAPHID interface.
#[derive(Debug)]
pub struct CtapHid {
    model: KeyModel,
    next_cid: u32,
    channels: Vec<u32>,
    pending: Option<Assembly>,
    /// Complete requests answered.
    pub requests: u64,
}

/// Splits a response into CTAPHID packets (init + continuations).
pub fn frame(cid: u32, cmd: u8, payload: &[u8]) -> Vec<[u8; PACKET]> {
    let mut out = Vec::new();
    let mut p = [0u8; PACKET];
    p[..4].copy_from_slice(&cid.to_be_bytes());
    p[4] = 0x80 | cmd;
    p[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    let first = payload.len().min(PACKET - 7);
    p[7..7 + first].copy_from_slice(&payload[..first]);
    out.push(p);
    for (seq, chunk) in payload[first..].chunks(PACKET - 5).enumerate() {
        let mut c = [0u8; PACKET];
        c[..4].copy_from_slice(&cid.to_be_bytes());
        c[4] = seq as u8 & 0x7F;
        c[5..5 + chunk.len()].copy_from_slice(chunk);
        out.push(c);
    }
    out
}

impl CtapHid {
    pub fn new(model: KeyModel) -> Self {
        CtapHid {
            model,
            next_cid: 0x0100_0001,
            channels: Vec::new(),
            pending: None,
            requests: 0,
        }
    }

    pub fn model(&self) -> &KeyModel {
        &self.model
    }

    fn capabilities(&self) -> u8 {
        if self.model.version.major >= 5 {
            CAP_WINK | CAP_CBOR
        } else {
            CAP_WINK
        }
    }

    /// Handles one output report (64 bytes, without a report ID); returns the input reports.
    pub fn packet(&mut self, pkt: &[u8]) -> Vec<[u8; PACKET]> {
        if pkt.len() < 7 {
            return Vec::new();
        }
        let cid = u32::from_be_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]);
        if pkt[4] & 0x80 != 0 {
            let cmd = pkt[4] & 0x7F;
            let len = usize::from(u16::from_be_bytes([pkt[5], pkt[6]]));
            if cid == 0 {
                return frame(cid, CMD_ERROR, &[ERR_INVALID_CHANNEL]);
            }
            if cmd == CMD_INIT {
                self.pending = None;
            }
            if len > 7609 {
                return frame(cid, CMD_ERROR, &[ERR_INVALID_LEN]);
            }
            let take = len.min(pkt.len() - 7);
            let a = Assembly {
                cid,
                cmd,
                len,
                data: pkt[7..7 + take].to_vec(),
                next_seq: 0,
            };
            if a.data.len() >= len {
                return self.dispatch(a);
            }
            self.pending = Some(a);
            Vec::new()
        } else {
            let Some(mut a) = self.pending.take() else {
                return Vec::new();
            };
            if a.cid != cid {
                self.pending = Some(a);
                return Vec::new();
            }
            if pkt[4] != a.next_seq {
                return frame(cid, CMD_ERROR, &[ERR_INVALID_SEQ]);
            }
            a.next_seq += 1;
            let take = (a.len - a.data.len()).min(pkt.len() - 5);
            a.data.extend_from_slice(&pkt[5..5 + take]);
            if a.data.len() >= a.len {
                return self.dispatch(a);
            }
            self.pending = Some(a);
            Vec::new()
        }
    }

    fn dispatch(&mut self, a: Assembly) -> Vec<[u8; PACKET]> {
        self.requests += 1;
        let cid = a.cid;
        if a.cmd == CMD_INIT {
            if a.data.len() != 8 {
                return frame(cid, CMD_ERROR, &[ERR_INVALID_LEN]);
            }
            let new_cid = if cid == BROADCAST {
                let c = self.next_cid;
                self.next_cid = self.next_cid.wrapping_add(1);
                self.channels.push(c);
                c
            } else {
                cid
            };
            let v = self.model.version.bytes();
            let mut r = a.data.clone();
            r.extend_from_slice(&new_cid.to_be_bytes());
            r.extend_from_slice(&[2, v[0], v[1], v[2], self.capabilities()]);
            return frame(cid, CMD_INIT, &r);
        }
        if cid == BROADCAST || !self.channels.contains(&cid) {
            return frame(cid, CMD_ERROR, &[ERR_INVALID_CHANNEL]);
        }
        match a.cmd {
            CMD_PING => frame(cid, CMD_PING, &a.data),
            CMD_WINK => frame(cid, CMD_WINK, &[]),
            CMD_READ_CONFIG if self.model.applets.management == Management::ReadConfig => {
                let page = usize::from(a.data.first().copied().unwrap_or(0));
                let data = device_info::pages(&self.model)
                    .get(page)
                    .cloned()
                    .unwrap_or_else(|| vec![0]);
                frame(cid, CMD_READ_CONFIG, &data)
            }
            CMD_CBOR if self.model.has_ctap2() => {
                frame(cid, CMD_CBOR, &ctap2::process(&self.model, &a.data))
            }
            // U2F APDUs: "instruction not supported".
            CMD_MSG => frame(cid, CMD_MSG, &[0x6D, 0x00]),
            _ => frame(cid, CMD_ERROR, &[ERR_INVALID_CMD]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(c: &mut CtapHid, nonce: [u8; 8]) -> u32 {
        let mut p = [0u8; 64];
        p[..4].copy_from_slice(&BROADCAST.to_be_bytes());
        p[4] = 0x86;
        p[6] = 8;
        p[7..15].copy_from_slice(&nonce);
        let r = c.packet(&p);
        assert_eq!(r.len(), 1);
        assert_eq!(&r[0][..4], &BROADCAST.to_be_bytes());
        assert_eq!(r[0][4], 0x86);
        assert_eq!(r[0][6], 17);
        assert_eq!(&r[0][7..15], &nonce, "nonce comes back unchanged");
        u32::from_be_bytes([r[0][15], r[0][16], r[0][17], r[0][18]])
    }

    #[test]
    fn init_then_read_config() {
        let m = KeyModel::preset("yk5cnfc").unwrap();
        let pages = device_info::pages(&m);
        let mut c = CtapHid::new(m);
        let cid = init(&mut c, [1, 2, 3, 4, 5, 6, 7, 8]);
        for (i, page) in pages.iter().enumerate() {
            let mut p = [0u8; 64];
            p[..4].copy_from_slice(&cid.to_be_bytes());
            p[4] = 0xC2;
            p[6] = 1;
            p[7] = i as u8;
            let r = c.packet(&p);
            let len = usize::from(u16::from_be_bytes([r[0][5], r[0][6]]));
            let mut data = r[0][7..].to_vec();
            for cont in &r[1..] {
                data.extend_from_slice(&cont[5..]);
            }
            data.truncate(len);
            assert_eq!(&data, page, "page {i}");
        }
    }

    #[test]
    fn ping_with_continuation_and_errors() {
        let mut c = CtapHid::new(KeyModel::preset("bio").unwrap());
        let cid = init(&mut c, [9; 8]);
        let payload: Vec<u8> = (0..100u8).collect();
        let pkts = frame(cid, CMD_PING, &payload);
        assert_eq!(pkts.len(), 2);
        assert!(c.packet(&pkts[0]).is_empty());
        let r = c.packet(&pkts[1]);
        assert_eq!(r, pkts, "PING echoes");
        let r = c.packet(&frame(0x1234_5678, CMD_PING, &[1])[0]);
        assert_eq!((r[0][4], r[0][7]), (0xBF, ERR_INVALID_CHANNEL));
        let r = c.packet(&frame(cid, 0x55, &[])[0]);
        assert_eq!((r[0][4], r[0][7]), (0xBF, ERR_INVALID_CMD));
    }

    fn reassemble(r: &[[u8; PACKET]]) -> Vec<u8> {
        let len = usize::from(u16::from_be_bytes([r[0][5], r[0][6]]));
        let mut data = r[0][7..].to_vec();
        for cont in &r[1..] {
            data.extend_from_slice(&cont[5..]);
        }
        data.truncate(len);
        data
    }

    #[test]
    fn cbor_get_info_over_ctaphid() {
        let m = KeyModel::preset("yk5nano").unwrap().with_posture(crate::posture::hardened());
        let mut c = CtapHid::new(m.clone());
        let cid = init(&mut c, [3; 8]);
        let r = c.packet(&frame(cid, CMD_CBOR, &[ctap2::CMD_GET_INFO])[0]);
        assert_eq!(r[0][4], 0x80 | CMD_CBOR);
        let data = reassemble(&r);
        assert_eq!(data, ctap2::process(&m, &[ctap2::CMD_GET_INFO]));
        assert_eq!(data[0], ctap2::OK);
        let mut yk4 = CtapHid::new(KeyModel::preset("yk4").unwrap());
        let cid = init(&mut yk4, [4; 8]);
        let r = yk4.packet(&frame(cid, CMD_CBOR, &[ctap2::CMD_GET_INFO])[0]);
        assert_eq!((r[0][4], r[0][7]), (0xBF, ERR_INVALID_CMD), "U2F-only key");
    }

    #[test]
    fn neo_has_no_read_config() {
        let mut c = CtapHid::new(KeyModel::preset("neo").unwrap());
        let cid = init(&mut c, [0; 8]);
        let r = c.packet(&frame(cid, CMD_READ_CONFIG, &[0])[0]);
        assert_eq!(r[0][4], 0xBF);
    }
}
