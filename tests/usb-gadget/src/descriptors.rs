//! What a YubiKey presents on USB, per product ID (protocol reference §1.2).

use keytally_virtual_key::model::{Atr, KeyModel};

/// Yubico's vendor ID.
pub const YUBICO_VID: u16 = 0x1050;

/// USB interface bits as ykman numbers them.
pub const OTP: u8 = 0x01;
pub const FIDO: u8 = 0x02;
pub const CCID: u8 = 0x04;

/// One product ID: its interfaces and its iProduct string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    pub pid: u16,
    pub interfaces: u8,
    pub name: &'static str,
}

/// Every PID ykman knows (YKS/NEO/SKY/YK4/YKP), with the iProduct strings real keys send.
pub const PRODUCTS: &[Product] = &[
    Product {
        pid: 0x0010,
        interfaces: OTP,
        name: "Yubikey",
    },
    Product {
        pid: 0x0110,
        interfaces: OTP,
        name: "Yubikey NEO OTP",
    },
    Product {
        pid: 0x0111,
        interfaces: OTP | CCID,
        name: "Yubikey NEO OTP+CCID",
    },
    Product {
        pid: 0x0112,
        interfaces: CCID,
        name: "Yubikey NEO CCID",
    },
    Product {
        pid: 0x0113,
        interfaces: FIDO,
        name: "Yubikey NEO U2F",
    },
    Product {
        pid: 0x0114,
        interfaces: OTP | FIDO,
        name: "Yubikey NEO OTP+U2F",
    },
    Product {
        pid: 0x0115,
        interfaces: FIDO | CCID,
        name: "Yubikey NEO U2F+CCID",
    },
    Product {
        pid: 0x0116,
        interfaces: OTP | FIDO | CCID,
        name: "Yubikey NEO OTP+U2F+CCID",
    },
    Product {
        pid: 0x0120,
        interfaces: FIDO,
        name: "Security Key by Yubico",
    },
    Product {
        pid: 0x0401,
        interfaces: OTP,
        name: "YubiKey OTP",
    },
    Product {
        pid: 0x0402,
        interfaces: FIDO,
        name: "YubiKey FIDO",
    },
    Product {
        pid: 0x0403,
        interfaces: OTP | FIDO,
        name: "YubiKey OTP+FIDO",
    },
    Product {
        pid: 0x0404,
        interfaces: CCID,
        name: "YubiKey CCID",
    },
    Product {
        pid: 0x0405,
        interfaces: OTP | CCID,
        name: "YubiKey OTP+CCID",
    },
    Product {
        pid: 0x0406,
        interfaces: FIDO | CCID,
        name: "YubiKey FIDO+CCID",
    },
    Product {
        pid: 0x0407,
        interfaces: OTP | FIDO | CCID,
        name: "YubiKey OTP+FIDO+CCID",
    },
    Product {
        pid: 0x0410,
        interfaces: OTP | FIDO,
        name: "YubiKey Plus",
    },
];

pub fn product(pid: u16) -> Option<Product> {
    PRODUCTS.iter().copied().find(|p| p.pid == pid)
}

/// The iManufacturer string.
pub const MANUFACTURER: &str = "Yubico";

/// bcdDevice: the firmware version as BCD-ish `MM.mp` (5.4.3 → 0x0543).
pub fn bcd_device(m: &KeyModel) -> u16 {
    let v = m.version;
    (u16::from(v.major) << 8) | (u16::from(v.minor & 0x0F) << 4) | u16::from(v.patch & 0x0F)
}

/// The OTP interface's report descriptor: a boot keyboard plus an 8-byte feature report.
pub const OTP_REPORT_DESCRIPTOR: &[u8] = &[
    0x05, 0x01, 0x09, 0x06, 0xA1, 0x01, 0x05, 0x07, 0x19, 0xE0, 0x29, 0xE7, 0x15, 0x00, 0x25, 0x01,
    0x75, 0x01, 0x95, 0x08, 0x81, 0x02, 0x95, 0x01, 0x75, 0x08, 0x81, 0x01, 0x95, 0x05, 0x75, 0x01,
    0x05, 0x08, 0x19, 0x01, 0x29, 0x05, 0x91, 0x02, 0x95, 0x01, 0x75, 0x03, 0x91, 0x01, 0x95, 0x06,
    0x75, 0x08, 0x15, 0x00, 0x25, 0xFF, 0x05, 0x07, 0x19, 0x00, 0x29, 0xFF, 0x81, 0x00, 0x09, 0x03,
    0x75, 0x08, 0x95, 0x08, 0xB1, 0x02, 0xC0,
];

/// The FIDO interface's report descriptor: usage page 0xF1D0, 64-byte input and output.
pub const FIDO_REPORT_DESCRIPTOR: &[u8] = &[
    0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01, 0x09, 0x20, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08,
    0x95, 0x40, 0x81, 0x02, 0x09, 0x21, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95, 0x40, 0x91,
    0x02, 0xC0,
];

/// The HID class descriptor body (after bLength/bDescriptorType 0x21): HID 1.11, one report
/// descriptor of `report_len` bytes.
pub fn hid_class_descriptor(report_len: usize) -> Vec<u8> {
    let len = report_len as u16;
    vec![0x11, 0x01, 0x00, 0x01, 0x22, len as u8, (len >> 8) as u8]
}

/// The CCID class descriptor body (after bLength 0x36 / bDescriptorType 0x21): 52 bytes.
pub fn ccid_class_descriptor() -> Vec<u8> {
    let mut d = Vec::with_capacity(52);
    d.extend_from_slice(&0x0110u16.to_le_bytes()); // bcdCCID 1.10
    d.push(0x00); // bMaxSlotIndex
    d.push(0x07); // bVoltageSupport 5V, 3V, 1.8V
    d.extend_from_slice(&2u32.to_le_bytes()); // dwProtocols: T=1
    d.extend_from_slice(&4000u32.to_le_bytes()); // dwDefaultClock
    d.extend_from_slice(&4000u32.to_le_bytes()); // dwMaximumClock
    d.push(0); // bNumClockSupported
    d.extend_from_slice(&10752u32.to_le_bytes()); // dwDataRate
    d.extend_from_slice(&10752u32.to_le_bytes()); // dwMaxDataRate
    d.push(0); // bNumDataRatesSupported
    d.extend_from_slice(&3062u32.to_le_bytes()); // dwMaxIFSD
    d.extend_from_slice(&0u32.to_le_bytes()); // dwSynchProtocols
    d.extend_from_slice(&0u32.to_le_bytes()); // dwMechanical
    d.extend_from_slice(&0x0004_00FEu32.to_le_bytes()); // dwFeatures: automatic, short+extended APDU
    d.extend_from_slice(&3072u32.to_le_bytes()); // dwMaxCCIDMessageLength
    d.push(0xFF); // bClassGetResponse
    d.push(0xFF); // bClassEnvelope
    d.extend_from_slice(&0u16.to_le_bytes()); // wLcdLayout
    d.push(0); // bPINSupport
    d.push(1); // bMaxCCIDBusySlots
    d
}

/// The answer-to-reset a key sends over USB CCID (protocol reference §1.5).
pub fn usb_atr(m: &KeyModel) -> &'static [u8] {
    const NEO: &[u8] = &[
        0x3B, 0xFC, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x59, 0x75, 0x62, 0x69, 0x6B, 0x65,
        0x79, 0x4E, 0x45, 0x4F, 0x72, 0x33, 0xE1,
    ];
    const YK4: &[u8] = &[
        0x3B, 0xF8, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x59, 0x75, 0x62, 0x69, 0x6B, 0x65,
        0x79, 0x34, 0xD4,
    ];
    const YK5: &[u8] = &[
        0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57,
        0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
    ];
    match (m.atr, m.version.major) {
        (Atr::NeoNfc, _) => NEO,
        (_, 4) => YK4,
        _ => YK5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccid_descriptor_is_54_bytes_with_header() {
        assert_eq!(ccid_class_descriptor().len() + 2, 54);
    }

    #[test]
    fn report_descriptors_have_expected_reports() {
        assert_eq!(OTP_REPORT_DESCRIPTOR.len(), 71);
        assert_eq!(&OTP_REPORT_DESCRIPTOR[..4], &[0x05, 0x01, 0x09, 0x06]);
        assert_eq!(FIDO_REPORT_DESCRIPTOR.len(), 34);
        assert_eq!(&FIDO_REPORT_DESCRIPTOR[..3], &[0x06, 0xD0, 0xF1]);
        assert_eq!(hid_class_descriptor(34), [0x11, 0x01, 0, 1, 0x22, 34, 0]);
    }

    #[test]
    fn required_pids_exist_and_bcd() {
        for pid in [0x0407, 0x0402, 0x0405, 0x0120, 0x0116] {
            assert!(product(pid).is_some(), "{pid:04x}");
        }
        let m = KeyModel::preset("yk5nfc").unwrap();
        assert_eq!(bcd_device(&m), 0x0543);
        assert_eq!(usb_atr(&m)[1] & 0xF0, 0xF0, "a USB ATR");
        assert_eq!(
            usb_atr(&KeyModel::preset("neo").unwrap())[9..15],
            *b"Yubike"
        );
    }
}
