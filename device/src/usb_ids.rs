//! Yubico's USB identifiers: the vendor ID, the product IDs (which family a PID belongs to and
//! which USB interfaces it exposes), the HID usages of the OTP and FIDO interfaces, and the
//! name that marks a YubiKey's own CCID reader.
//!
//! The bottom of the crate, as yubikit's `core` is: transports, identification and
//! enumeration may all use it, and it uses nothing of theirs.

use std::fmt;

/// Yubico's USB vendor ID.
pub const YUBICO_VID: u16 = 0x1050;

/// The HID top-level usage (usage page, usage) of a YubiKey's OTP interface: a keyboard.
pub const USAGE_OTP: (u16, u16) = (0x0001, 0x0006);
/// The HID top-level usage (usage page, usage) of a YubiKey's FIDO (CTAPHID) interface.
pub const USAGE_FIDO: (u16, u16) = (0xF1D0, 0x0001);

/// The USB interfaces a key has enabled (the PID encodes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UsbInterfaces(pub u8);

impl UsbInterfaces {
    /// No interface.
    pub const NONE: Self = Self(0);
    /// The OTP (keyboard) HID interface.
    pub const OTP: Self = Self(0x01);
    /// The FIDO (U2F/CTAPHID) HID interface.
    pub const FIDO: Self = Self(0x02);
    /// The CCID (smart-card) interface.
    pub const CCID: Self = Self(0x04);

    /// True when every interface of `other` is here (and `other` is not empty).
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// The legacy NEO/YK4 mode code (low three bits), as the OTP applet's status reports it.
    pub fn from_mode_code(code: u8) -> Option<Self> {
        const MODES: [u8; 7] = [0x01, 0x04, 0x05, 0x02, 0x03, 0x06, 0x07];
        MODES.get(usize::from(code & 0x07)).map(|m| Self(*m))
    }
}

impl fmt::Display for UsbInterfaces {
    /// `OTP+FIDO+CCID`, the form ykman and reader names use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [(Self::OTP, "OTP"), (Self::FIDO, "FIDO"), (Self::CCID, "CCID")]
            .iter()
            .filter(|(i, _)| self.contains(*i))
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&names.join("+"))
    }
}

/// The hardware family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// YubiKey 1/2 ("YubiKey Standard").
    Standard,
    /// YubiKey NEO.
    Neo,
    /// Security Key by Yubico.
    Sky,
    /// YubiKey 4 and 5.
    Yk4,
    /// YubiKey Plus.
    Plus,
}

impl KeyType {
    /// The family name ykman starts from.
    pub fn family_name(self) -> &'static str {
        match self {
            Self::Standard => "YubiKey Standard",
            Self::Neo => "YubiKey NEO",
            Self::Sky => "Security Key by Yubico",
            Self::Yk4 => "YubiKey",
            Self::Plus => "YubiKey Plus",
        }
    }
}

/// A Yubico USB product ID (vendor 0x1050).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid(u16);

/// Every PID ykman knows, with its family and interfaces.
const PIDS: &[(u16, KeyType, u8)] = &[
    (0x0010, KeyType::Standard, 0x01),
    (0x0110, KeyType::Neo, 0x01),
    (0x0111, KeyType::Neo, 0x05),
    (0x0112, KeyType::Neo, 0x04),
    (0x0113, KeyType::Neo, 0x02),
    (0x0114, KeyType::Neo, 0x03),
    (0x0115, KeyType::Neo, 0x06),
    (0x0116, KeyType::Neo, 0x07),
    (0x0120, KeyType::Sky, 0x02),
    (0x0401, KeyType::Yk4, 0x01),
    (0x0402, KeyType::Yk4, 0x02),
    (0x0403, KeyType::Yk4, 0x03),
    (0x0404, KeyType::Yk4, 0x04),
    (0x0405, KeyType::Yk4, 0x05),
    (0x0406, KeyType::Yk4, 0x06),
    (0x0407, KeyType::Yk4, 0x07),
    (0x0410, KeyType::Plus, 0x03),
];

/// The substring (lower case) that marks a YubiKey's own CCID reader.
const YUBIKEY_READER: &str = "yubico yubikey";

/// True when the PC/SC reader `name` is a YubiKey's own CCID interface, not an external
/// (NFC or contact) reader.
pub fn is_yubikey_reader(name: &str) -> bool {
    name.to_ascii_lowercase().contains(YUBIKEY_READER)
}

impl Pid {
    /// A known PID; unknown ones (0x0121, 0x0200, other vendors' numbers) are `None`.
    pub fn new(pid: u16) -> Option<Self> {
        PIDS.iter().any(|(p, _, _)| *p == pid).then_some(Self(pid))
    }

    /// The PID with this family and these interfaces, if Yubico made one.
    pub fn of(key_type: KeyType, interfaces: UsbInterfaces) -> Option<Self> {
        PIDS.iter().find(|(_, k, i)| *k == key_type && *i == interfaces.0).map(|(p, _, _)| Self(*p))
    }

    /// The number itself.
    pub fn value(self) -> u16 {
        self.0
    }

    fn entry(self) -> (u16, KeyType, u8) {
        *PIDS.iter().find(|(p, _, _)| *p == self.0).unwrap_or(&PIDS[0])
    }

    /// The family this PID belongs to.
    pub fn key_type(self) -> KeyType {
        self.entry().1
    }

    /// The USB interfaces this PID exposes.
    pub fn interfaces(self) -> UsbInterfaces {
        UsbInterfaces(self.entry().2)
    }

    /// A YubiKey's CCID reader name gives away its PID ("Yubico YubiKey OTP+FIDO+CCID 00 00").
    /// Reader names without "Yubico YubiKey" are external (NFC or contact) readers: `None`.
    pub fn from_reader_name(name: &str) -> Option<Self> {
        if !is_yubikey_reader(name) {
            return None;
        }
        let mut interfaces = UsbInterfaces::NONE;
        for (needle, iface) in [("OTP", UsbInterfaces::OTP), ("FIDO", UsbInterfaces::FIDO), ("U2F", UsbInterfaces::FIDO), ("CCID", UsbInterfaces::CCID)] {
            if name.contains(needle) {
                interfaces.0 |= iface.0;
            }
        }
        let key_type = if name.contains("NEO") { KeyType::Neo } else { KeyType::Yk4 };
        Self::of(key_type, interfaces)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_names() {
        let p = Pid::from_reader_name("Yubico YubiKey OTP+FIDO+CCID 00 00").unwrap();
        assert_eq!(p.value(), 0x0407);
        assert_eq!(p.interfaces().to_string(), "OTP+FIDO+CCID");
        assert_eq!(Pid::from_reader_name("Yubico YubiKey CCID [Yubico YubiKey CCID] 00 00").unwrap().value(), 0x0404);
        assert_eq!(Pid::from_reader_name("Yubico Yubikey 4 OTP+U2F+CCID 0").unwrap().value(), 0x0407);
        assert_eq!(Pid::from_reader_name("Yubico Yubikey NEO OTP+CCID").unwrap().value(), 0x0111);
        assert_eq!(Pid::from_reader_name("Virtual PCD 00 00"), None);
        assert_eq!(Pid::from_reader_name("ACS ACR122U PICC Interface 00 00"), None);
    }

    #[test]
    fn mode_codes() {
        assert_eq!(UsbInterfaces::from_mode_code(0x06), Some(UsbInterfaces(7)));
        assert_eq!(UsbInterfaces::from_mode_code(0x02), Some(UsbInterfaces(5)));
        assert_eq!(UsbInterfaces::from_mode_code(0x07), None);
    }

    #[test]
    fn unknown_pids() {
        assert!(Pid::new(0x0121).is_none());
        assert_eq!(Pid::new(0x0120).unwrap().key_type(), KeyType::Sky);
    }
}
