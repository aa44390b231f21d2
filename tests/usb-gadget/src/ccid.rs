//! CCID bulk messages (USB CCID 1.1 §6) around a virtual card: the subset libccid uses with
//! a YubiKey (IccPowerOn/Off, GetSlotStatus, XfrBlock, Get/SetParameters, Escape).

use keytally_virtual_key::Card;

pub const HEADER: usize = 10;

const PC_TO_RDR_SET_PARAMETERS: u8 = 0x61;
const PC_TO_RDR_ICC_POWER_ON: u8 = 0x62;
const PC_TO_RDR_ICC_POWER_OFF: u8 = 0x63;
const PC_TO_RDR_GET_SLOT_STATUS: u8 = 0x65;
const PC_TO_RDR_ESCAPE: u8 = 0x6B;
const PC_TO_RDR_GET_PARAMETERS: u8 = 0x6C;
const PC_TO_RDR_RESET_PARAMETERS: u8 = 0x6D;
const PC_TO_RDR_XFR_BLOCK: u8 = 0x6F;
const PC_TO_RDR_ABORT: u8 = 0x72;

const RDR_TO_PC_DATA_BLOCK: u8 = 0x80;
const RDR_TO_PC_SLOT_STATUS: u8 = 0x81;
const RDR_TO_PC_PARAMETERS: u8 = 0x82;
const RDR_TO_PC_ESCAPE: u8 = 0x83;

/// bStatus: ICC present and active / present and inactive; bit 6 = command failed.
const ICC_ACTIVE: u8 = 0x00;
const ICC_INACTIVE: u8 = 0x01;
const COMMAND_FAILED: u8 = 0x40;
/// bError for an unsupported command.
const CMD_NOT_SUPPORTED: u8 = 0x00;
/// bError for a bad slot.
const BAD_SLOT: u8 = 0x05;

/// T=1 protocol data: Fi/Di 0x11, checksum LRC, guard time 0, BWI/CWI 0x4D, clock stop 0,
/// IFSC 0xFE, NAD 0.
const T1_PARAMETERS: [u8; 7] = [0x11, 0x10, 0x00, 0x4D, 0x00, 0xFE, 0x00];

/// A CCID reader with one slot holding one always-inserted card.
pub struct CcidReader {
    pub card: Card,
    atr: Vec<u8>,
    powered: bool,
    /// Messages answered.
    pub messages: u64,
}

fn message(kind: u8, slot: u8, seq: u8, b7: u8, b8: u8, b9: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + data.len());
    m.push(kind);
    m.extend_from_slice(&(data.len() as u32).to_le_bytes());
    m.extend_from_slice(&[slot, seq, b7, b8, b9]);
    m.extend_from_slice(data);
    m
}

impl CcidReader {
    pub fn new(card: Card, atr: &[u8]) -> Self {
        CcidReader {
            card,
            atr: atr.to_vec(),
            powered: false,
            messages: 0,
        }
    }

    fn icc(&self) -> u8 {
        if self.powered {
            ICC_ACTIVE
        } else {
            ICC_INACTIVE
        }
    }

    /// The message type byte of a request (for fault injection / counting by the caller).
    pub fn kind(msg: &[u8]) -> Option<u8> {
        msg.first().copied()
    }

    /// Whether this request is an XfrBlock (an APDU).
    pub fn is_apdu(msg: &[u8]) -> bool {
        Self::kind(msg) == Some(PC_TO_RDR_XFR_BLOCK)
    }

    /// Answers one PC_to_RDR message; `None` for something too short to have a header.
    pub fn process(&mut self, msg: &[u8]) -> Option<Vec<u8>> {
        if msg.len() < HEADER {
            return None;
        }
        self.messages += 1;
        let (kind, slot, seq) = (msg[0], msg[5], msg[6]);
        let len = u32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
        let data = &msg[HEADER..HEADER + len.min(msg.len() - HEADER)];
        let fail = |this: &Self, kind_out: u8, err: u8| {
            message(
                kind_out,
                slot,
                seq,
                COMMAND_FAILED | this.icc(),
                err,
                0,
                &[],
            )
        };
        if slot != 0 {
            let out = match kind {
                PC_TO_RDR_XFR_BLOCK | PC_TO_RDR_ICC_POWER_ON => RDR_TO_PC_DATA_BLOCK,
                PC_TO_RDR_GET_PARAMETERS
                | PC_TO_RDR_SET_PARAMETERS
                | PC_TO_RDR_RESET_PARAMETERS => RDR_TO_PC_PARAMETERS,
                PC_TO_RDR_ESCAPE => RDR_TO_PC_ESCAPE,
                _ => RDR_TO_PC_SLOT_STATUS,
            };
            return Some(message(
                out,
                slot,
                seq,
                COMMAND_FAILED | 0x02,
                BAD_SLOT,
                0,
                &[],
            ));
        }
        Some(match kind {
            PC_TO_RDR_ICC_POWER_ON => {
                self.card.reset();
                self.powered = true;
                let atr = self.atr.clone();
                message(RDR_TO_PC_DATA_BLOCK, slot, seq, ICC_ACTIVE, 0, 0, &atr)
            }
            PC_TO_RDR_ICC_POWER_OFF => {
                self.powered = false;
                self.card.reset();
                message(RDR_TO_PC_SLOT_STATUS, slot, seq, ICC_INACTIVE, 0, 0, &[])
            }
            PC_TO_RDR_GET_SLOT_STATUS | PC_TO_RDR_ABORT => {
                message(RDR_TO_PC_SLOT_STATUS, slot, seq, self.icc(), 0, 0, &[])
            }
            PC_TO_RDR_GET_PARAMETERS | PC_TO_RDR_SET_PARAMETERS | PC_TO_RDR_RESET_PARAMETERS => {
                message(
                    RDR_TO_PC_PARAMETERS,
                    slot,
                    seq,
                    self.icc(),
                    0,
                    1,
                    &T1_PARAMETERS,
                )
            }
            PC_TO_RDR_XFR_BLOCK if self.powered => {
                let r = self.card.process(data);
                message(RDR_TO_PC_DATA_BLOCK, slot, seq, ICC_ACTIVE, 0, 0, &r)
            }
            PC_TO_RDR_XFR_BLOCK => fail(self, RDR_TO_PC_DATA_BLOCK, 0xFE), // ICC_MUTE
            PC_TO_RDR_ESCAPE => fail(self, RDR_TO_PC_ESCAPE, CMD_NOT_SUPPORTED),
            _ => fail(self, RDR_TO_PC_SLOT_STATUS, CMD_NOT_SUPPORTED),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keytally_virtual_key::KeyModel;

    #[test]
    fn power_on_then_select_management() {
        let model = KeyModel::preset("yk5nfc").unwrap();
        let atr = crate::descriptors::usb_atr(&model).to_vec();
        let mut r = CcidReader::new(Card::usb(model), &atr);
        let on = r.process(&[0x62, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(on[0], 0x80);
        assert_eq!(on[6], 1, "sequence echoed");
        assert_eq!(&on[10..], &atr[..]);
        let select = [
            0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17,
        ];
        let mut xfr = vec![0x6F, select.len() as u8, 0, 0, 0, 0, 2, 0, 0, 0];
        xfr.extend_from_slice(&select);
        let resp = r.process(&xfr).unwrap();
        assert_eq!(resp[0], 0x80);
        assert!(resp.ends_with(&[0x90, 0x00]));
        assert!(resp[10..].starts_with(b"5.4.3"));
        let params = r.process(&[0x6C, 0, 0, 0, 0, 0, 3, 0, 0, 0]).unwrap();
        assert_eq!((params[0], params[9], params.len()), (0x82, 1, 17));
        let off = r.process(&[0x63, 0, 0, 0, 0, 0, 4, 0, 0, 0]).unwrap();
        assert_eq!((off[0], off[7]), (0x81, 0x01));
        let xfr_off = r.process(&xfr).unwrap();
        assert_eq!(
            xfr_off[7] & 0x40,
            0x40,
            "XfrBlock to an unpowered card fails"
        );
    }
}
