//! Capability bit fields, form factors and transports: the vocabulary of DeviceInfo.

use std::fmt;

/// A set of YubiKey applications, in the management protocol's bit numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// No application.
    pub const NONE: Self = Self(0);
    /// Yubico OTP (the keyboard slots).
    pub const OTP: Self = Self(0x0001);
    /// FIDO U2F.
    pub const U2F: Self = Self(0x0002);
    /// The generic CCID bit (not an application; .NET calls it `Ccid`).
    pub const CCID: Self = Self(0x0004);
    /// OpenPGP card.
    pub const OPENPGP: Self = Self(0x0008);
    /// PIV smart card.
    pub const PIV: Self = Self(0x0010);
    /// OATH (TOTP/HOTP) credentials.
    pub const OATH: Self = Self(0x0020);
    /// YubiHSM Auth.
    pub const HSMAUTH: Self = Self(0x0100);
    /// FIDO2 (CTAP2).
    pub const FIDO2: Self = Self(0x0200);
    /// Management over CCID.
    pub const MANAGEMENT_CCID: Self = Self(0x0400);

    /// Applications that are served by the CCID interface.
    pub const CCID_APPS: Self = Self(0x0004 | 0x0400 | 0x0020 | 0x0008 | 0x0010 | 0x0100);
    /// Applications that are served by the FIDO interface.
    pub const FIDO_APPS: Self = Self(0x0002 | 0x0200);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every bit of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when at least one bit of `other` is set here.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// True when no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bits of both.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These bits with those of `other` cleared.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Each set bit as its own integer value, lowest first: 0x023F → `[1,2,4,8,16,32,512]`.
    pub fn set_bits(self) -> Vec<u32> {
        (0..32).map(|i| 1u32 << i).filter(|b| self.0 & b != 0).collect()
    }

    /// Converts a FIPS-numbered field (tags 0x14, 0x15) into capability bits.
    ///
    /// FIPS numbering: bit 0 FIDO2, bit 1 PIV, bit 2 OpenPGP, bit 3 OATH, bit 4 HSM Auth.
    pub fn from_fips(fips: u32) -> Self {
        const ORDER: [Capabilities; 5] = [
            Capabilities::FIDO2,
            Capabilities::PIV,
            Capabilities::OPENPGP,
            Capabilities::OATH,
            Capabilities::HSMAUTH,
        ];
        ORDER
            .iter()
            .enumerate()
            .filter(|(i, _)| fips & (1 << i) != 0)
            .fold(Self::NONE, |acc, (_, c)| acc.union(*c))
    }

    /// True when only FIDO applications are present (ignoring the CCID bits), as ykman's
    /// `_fido_only` decides "FIDO Edition" and Security Keys.
    pub fn is_fido_only(self) -> bool {
        let non_fido = Self(Self::OTP.0 | Self::OATH.0 | Self::PIV.0 | Self::OPENPGP.0 | Self::HSMAUTH.0);
        !self.intersects(non_fido) && self.intersects(Self::FIDO_APPS)
    }

    /// Display names of the applications ykman lists, in ykman's order.
    pub fn application_names(self) -> Vec<&'static str> {
        const NAMES: [(Capabilities, &str); 8] = [
            (Capabilities::OTP, "Yubico OTP"),
            (Capabilities::FIDO2, "FIDO2"),
            (Capabilities::U2F, "FIDO U2F"),
            (Capabilities::OPENPGP, "OpenPGP"),
            (Capabilities::PIV, "PIV"),
            (Capabilities::OATH, "OATH"),
            (Capabilities::HSMAUTH, "YubiHSM Auth"),
            (Capabilities::CCID, "CCID"),
        ];
        NAMES.iter().filter(|(c, _)| self.contains(*c)).map(|(_, n)| *n).collect()
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

/// The physical shape of a key: tag 0x04's low nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FormFactor {
    /// A code Yubico has not assigned (or none given).
    #[default]
    Unknown = 0,
    /// USB-A, keychain.
    UsbAKeychain = 1,
    /// USB-A, nano.
    UsbANano = 2,
    /// USB-C, keychain.
    UsbCKeychain = 3,
    /// USB-C, nano.
    UsbCNano = 4,
    /// USB-C and Lightning (YubiKey 5Ci).
    UsbCLightning = 5,
    /// USB-A, with a fingerprint sensor.
    UsbABio = 6,
    /// USB-C, with a fingerprint sensor.
    UsbCBio = 7,
}

impl FormFactor {
    /// The low nibble of tag 0x04; values Yubico has not assigned read as `Unknown`.
    pub fn from_code(code: u8) -> Self {
        match code & 0x0F {
            1 => Self::UsbAKeychain,
            2 => Self::UsbANano,
            3 => Self::UsbCKeychain,
            4 => Self::UsbCNano,
            5 => Self::UsbCLightning,
            6 => Self::UsbABio,
            7 => Self::UsbCBio,
            _ => Self::Unknown,
        }
    }

    /// The code, as tag 0x04's low nibble carries it.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Nano shapes (USB-A or USB-C).
    pub fn is_nano(self) -> bool {
        matches!(self, Self::UsbANano | Self::UsbCNano)
    }

    /// Bio shapes (with a fingerprint sensor).
    pub fn is_bio(self) -> bool {
        matches!(self, Self::UsbABio | Self::UsbCBio)
    }

    /// USB-C shapes, not counting the 5Ci (Lightning) one.
    pub fn is_usb_c(self) -> bool {
        matches!(self, Self::UsbCKeychain | Self::UsbCNano | Self::UsbCBio)
    }

    /// ykman's display text.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::UsbAKeychain => "Keychain (USB-A)",
            Self::UsbANano => "Nano (USB-A)",
            Self::UsbCKeychain => "Keychain (USB-C)",
            Self::UsbCNano => "Nano (USB-C)",
            Self::UsbCLightning => "Keychain (USB-C, Lightning)",
            Self::UsbABio => "Bio (USB-A)",
            Self::UsbCBio => "Bio (USB-C)",
        }
    }
}

/// How the key reached the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plugged into USB.
    Usb,
    /// Tapped on an NFC reader.
    Nfc,
}

impl Transport {
    /// `usb` or `nfc`, as records and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usb => "usb",
            Self::Nfc => "nfc",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bits_ascending() {
        assert_eq!(Capabilities(0x023F).set_bits(), vec![1, 2, 4, 8, 16, 32, 512]);
        assert!(Capabilities::NONE.set_bits().is_empty());
    }

    #[test]
    fn fips_numbering() {
        assert_eq!(Capabilities::from_fips(0x0001), Capabilities::FIDO2);
        assert_eq!(Capabilities::from_fips(0x0002), Capabilities::PIV);
        assert_eq!(Capabilities::from_fips(0x0004), Capabilities::OPENPGP);
        assert_eq!(Capabilities::from_fips(0x0008), Capabilities::OATH);
        assert_eq!(Capabilities::from_fips(0x0010), Capabilities::HSMAUTH);
        assert_eq!(Capabilities::from_fips(0x000A), Capabilities::PIV.union(Capabilities::OATH));
        assert_eq!(Capabilities::from_fips(0), Capabilities::NONE);
    }

    #[test]
    fn form_factor_masks_flags() {
        assert_eq!(FormFactor::from_code(0x46), FormFactor::UsbABio);
        assert_eq!(FormFactor::from_code(0x84), FormFactor::UsbCNano);
        assert_eq!(FormFactor::from_code(0xC0), FormFactor::Unknown);
        assert_eq!(FormFactor::from_code(0x0F), FormFactor::Unknown);
    }

    #[test]
    fn fido_only_ignores_ccid_bits() {
        assert!(Capabilities(0x0202).is_fido_only());
        assert!(Capabilities(0x0202 | 0x0004 | 0x0400).is_fido_only());
        assert!(!Capabilities(0x0212).is_fido_only());
        assert!(!Capabilities(0x0004).is_fido_only());
    }
}
