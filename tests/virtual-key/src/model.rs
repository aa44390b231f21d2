//! A transport-independent YubiKey model: identity, DeviceInfo contents, applets and faults.
//!
//! Every `Option` field that maps to a DeviceInfo tag is `None` when the tag is absent, so a
//! model can reproduce real devices byte for byte (see [`crate::device_info`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::posture::{Posture, PostureFault};

/// Capability bits (ykman `CAPABILITY`, normal numbering).
pub mod cap {
    pub const OTP: u16 = 0x0001;
    pub const U2F: u16 = 0x0002;
    pub const CCID: u16 = 0x0004;
    pub const OPENPGP: u16 = 0x0008;
    pub const PIV: u16 = 0x0010;
    pub const OATH: u16 = 0x0020;
    pub const HSMAUTH: u16 = 0x0100;
    pub const FIDO2: u16 = 0x0200;
    /// The YubiKey 5 "everything" value (.NET `All`).
    pub const ALL_YK5: u16 = 0x023F;
}

/// FIPS-numbered capability bits used by DeviceInfo tags 0x14/0x15.
pub mod fips_cap {
    pub const FIDO2: u16 = 0x0001;
    pub const PIV: u16 = 0x0002;
    pub const OPENPGP: u16 = 0x0004;
    pub const OATH: u16 = 0x0008;
    pub const HSMAUTH: u16 = 0x0010;
}

/// Form factor byte (tag 0x04): low nibble = form factor, plus flag bits.
pub mod form_factor {
    pub const UNKNOWN: u8 = 0x00;
    pub const USB_A_KEYCHAIN: u8 = 0x01;
    pub const USB_A_NANO: u8 = 0x02;
    pub const USB_C_KEYCHAIN: u8 = 0x03;
    pub const USB_C_NANO: u8 = 0x04;
    pub const USB_C_LIGHTNING: u8 = 0x05;
    pub const USB_A_BIO: u8 = 0x06;
    pub const USB_C_BIO: u8 = 0x07;
    /// FIPS series flag.
    pub const FIPS_FLAG: u8 = 0x80;
    /// Security Key (SKY) flag.
    pub const SKY_FLAG: u8 = 0x40;
}

/// A three-part version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl Version {
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }
    pub const fn bytes(self) -> [u8; 3] {
        [self.major, self.minor, self.patch]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Release type inside the version qualifier (tag 0x19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseType {
    Alpha = 0,
    Beta = 1,
    Final = 2,
}

/// DeviceInfo tag 0x19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionQualifier {
    pub version: Version,
    pub release: ReleaseType,
    pub iteration: u32,
}

/// How the Management applet behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Management {
    /// No Management applet: SELECT answers `6A82`.
    Absent,
    /// SELECT answers the version string, READ CONFIG is unknown (`6D00`): NEO, YK4 < 4.1.
    VersionOnly,
    /// SELECT answers the version string and READ CONFIG serves DeviceInfo (fw ≥ 4.1).
    ReadConfig,
}

/// Which ISO 7816 applications the key exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applets {
    pub management: Management,
    pub otp: bool,
    pub piv: bool,
    pub openpgp: bool,
    pub oath: bool,
    pub fido: bool,
}

/// How DeviceInfo is split into READ CONFIG pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// Everything in page 0, no tag 0x10.
    Single,
    /// A new page starts before each listed tag (when present); every page but the last ends
    /// with tag 0x10 carrying the number of pages that follow.
    SplitBefore(Vec<u8>),
}

/// Hostile-device behaviours for READ CONFIG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A TLV whose declared length runs far past the data.
    MalformedTlv,
    /// The leading LEN byte does not equal `len(data) - 1`.
    BadLength,
    /// The page is cut in the middle of a TLV (LEN matches the cut data).
    Truncated,
    /// A single response longer than 258 bytes (no response chaining).
    Oversized,
    /// READ CONFIG answers the undefined status word `6F00`.
    UnknownSw,
    /// READ CONFIG answers `61 FF` and so does every GET RESPONSE after it, for ever.
    EndlessChaining,
    /// READ CONFIG is answered only after [`KeyModel::stall`] (default 40 s), or never if the
    /// card is removed first.
    Stall,
}

impl Fault {
    /// The faults that answer at once, but wrongly (every DeviceInfo reader must reject them).
    pub const ALL: [Fault; 5] = [
        Fault::MalformedTlv,
        Fault::BadLength,
        Fault::Truncated,
        Fault::Oversized,
        Fault::UnknownSw,
    ];

    /// The faults that hold a reader: a flood of `61xx` and a stall (issue 12).
    pub const HOLDING: [Fault; 2] = [Fault::EndlessChaining, Fault::Stall];

    /// Every fault: [`Fault::ALL`] then [`Fault::HOLDING`].
    pub const EVERY: [Fault; 7] = [
        Fault::MalformedTlv,
        Fault::BadLength,
        Fault::Truncated,
        Fault::Oversized,
        Fault::UnknownSw,
        Fault::EndlessChaining,
        Fault::Stall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::MalformedTlv => "malformed-tlv",
            Fault::BadLength => "bad-length",
            Fault::Truncated => "truncated",
            Fault::Oversized => "oversized",
            Fault::UnknownSw => "unknown-sw",
            Fault::EndlessChaining => "endless-chaining",
            Fault::Stall => "stall",
        }
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fault::EVERY
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault {s:?}; known: {}",
                    Fault::EVERY.map(Fault::name).join(", ")
                )
            })
    }
}

/// Which answer-to-reset the card presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atr {
    /// `3B 8D 80 01 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 F9` (YubiKey 4/5 family over NFC).
    Yk5Nfc,
    /// `3B 8C 80 01 59 75 62 69 6B 65 79 4E 45 4F 72 33 58` (NEO over NFC).
    NeoNfc,
}

impl Atr {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Atr::Yk5Nfc => &[
                0x3B, 0x8D, 0x80, 0x01, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59, 0x75, 0x62, 0x69,
                0x4B, 0x65, 0x79, 0xF9,
            ],
            Atr::NeoNfc => &[
                0x3B, 0x8C, 0x80, 0x01, 0x59, 0x75, 0x62, 0x69, 0x6B, 0x65, 0x79, 0x4E, 0x45, 0x4F,
                0x72, 0x33, 0x58,
            ],
        }
    }
}

/// One virtual YubiKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyModel {
    /// Preset name (`yk5nfc`, …) or a free label.
    pub preset: String,
    /// The product name Yubico's tools are expected to derive (for tests; never sent).
    pub expected_name: String,
    /// Tag 0x02; `None` = no serial (tag absent, OTP serial command refused).
    pub serial: Option<u32>,
    /// Firmware version (SELECT Management string, OTP status, PIV version, tag 0x05).
    pub version: Version,
    /// Whether tag 0x05 is sent (YubiKey 4 DeviceInfo has no version tag).
    pub version_tag: bool,
    /// Tag 0x04 (low nibble form factor, plus `FIPS_FLAG`/`SKY_FLAG`).
    pub form_factor: u8,
    /// Width in bytes of capability values (1 on YubiKey 4, 2 on YubiKey 5).
    pub capability_width: usize,
    /// Tag 0x01.
    pub usb_supported: u16,
    /// Tag 0x03.
    pub usb_enabled: Option<u16>,
    /// Tag 0x0D; `Some` means the key has an NFC transport.
    pub nfc_supported: Option<u16>,
    /// Tag 0x0E.
    pub nfc_enabled: Option<u16>,
    /// Tag 0x06.
    pub auto_eject_timeout: Option<u16>,
    /// Tag 0x07.
    pub chalresp_timeout: Option<u8>,
    /// Tag 0x08.
    pub device_flags: Option<u8>,
    /// Tag 0x0A.
    pub config_lock: Option<bool>,
    /// Tag 0x0F.
    pub iap_detection: Option<u8>,
    /// Tag 0x20 (fingerprint sensor firmware; `Some(0.0.0)` is sent as zeros).
    pub fps_version: Option<Version>,
    /// Tag 0x21 (Bio MCU firmware).
    pub stm_version: Option<Version>,
    /// Tag 0x11.
    pub free_form: Option<Vec<u8>>,
    /// Tag 0x12.
    pub hid_init_delay: Option<u8>,
    /// Tag 0x13.
    pub part_number: Option<String>,
    /// Tag 0x14 (FIPS numbering, see [`fips_cap`]).
    pub fips_capable: Option<u16>,
    /// Tag 0x15 (FIPS numbering).
    pub fips_approved: Option<u16>,
    /// Tag 0x16.
    pub pin_complexity: Option<bool>,
    /// Tag 0x17. `Some(true)` also puts the key in NFC restricted mode: over NFC it then
    /// answers only the NDEF applet with Yubico's getting-started URL (see [`crate::card`]).
    pub nfc_restricted: Option<bool>,
    /// Tag 0x18 (normal capability numbering).
    pub reset_blocked: Option<u16>,
    /// Tag 0x19.
    pub version_qualifier: Option<VersionQualifier>,
    /// READ CONFIG page layout.
    pub paging: Paging,
    /// Applications present.
    pub applets: Applets,
    /// OTP applet status bytes after the version: program sequence, touch level (LE), and for
    /// NEO the legacy mode byte etc.
    pub otp_status_tail: Vec<u8>,
    /// Answer-to-reset.
    pub atr: Atr,
    /// Fault injection for READ CONFIG.
    pub fault: Option<Fault>,
    /// How long [`Fault::Stall`] holds READ CONFIG.
    pub stall: Duration,
    /// What the applets report about PINs, credentials and slots.
    pub posture: Posture,
    /// One posture answer made wrong on purpose.
    pub posture_fault: Option<PostureFault>,
}

/// How long [`Fault::Stall`] holds READ CONFIG by default (issue 12's stalled reader).
pub const DEFAULT_STALL: Duration = Duration::from_secs(40);

/// All preset names, in a stable order.
pub const PRESETS: [&str; 7] = [
    "yk5nfc", "yk5cnfc", "yk5nano", "bio", "skynfc", "yk4", "neo",
];

const ALL_APPLETS: Applets = Applets {
    management: Management::ReadConfig,
    otp: true,
    piv: true,
    openpgp: true,
    oath: true,
    fido: true,
};

const FIDO_ONLY_APPLETS: Applets = Applets {
    management: Management::ReadConfig,
    otp: false,
    piv: false,
    openpgp: false,
    oath: false,
    fido: true,
};

impl KeyModel {
    /// A YubiKey 5-style base model (fw 5.x single page DeviceInfo with the common tags).
    fn yk5_base(
        preset: &str,
        name: &str,
        serial: u32,
        version: Version,
        ff: u8,
        caps: u16,
    ) -> Self {
        KeyModel {
            preset: preset.into(),
            expected_name: name.into(),
            serial: Some(serial),
            version,
            version_tag: true,
            form_factor: ff,
            capability_width: 2,
            usb_supported: caps,
            usb_enabled: Some(caps),
            nfc_supported: None,
            nfc_enabled: None,
            auto_eject_timeout: Some(0),
            chalresp_timeout: Some(0x0F),
            device_flags: Some(0),
            config_lock: Some(false),
            iap_detection: Some(0),
            fps_version: None,
            stm_version: None,
            free_form: None,
            hid_init_delay: None,
            part_number: None,
            fips_capable: None,
            fips_approved: None,
            pin_complexity: None,
            nfc_restricted: None,
            reset_blocked: None,
            version_qualifier: None,
            paging: Paging::Single,
            applets: ALL_APPLETS,
            otp_status_tail: vec![0x00, 0x00, 0x00],
            atr: Atr::Yk5Nfc,
            fault: None,
            stall: DEFAULT_STALL,
            posture: Posture::default(),
            posture_fault: None,
        }
    }

    /// Adds the fw 5.7 second-page tags (0x11–0x17) and splits pages before tag 0x11.
    fn with_57_pages(mut self) -> Self {
        self.fps_version = Some(Version::new(0, 0, 0));
        self.stm_version = Some(Version::new(0, 0, 0));
        self.free_form = Some(vec![0, 0, 0, 0]);
        self.hid_init_delay = Some(0);
        self.part_number = Some("78CLUFX5000P".into());
        self.fips_capable = Some(0);
        self.fips_approved = Some(0);
        self.pin_complexity = Some(false);
        self.nfc_restricted = Some(false);
        self.paging = Paging::SplitBefore(vec![0x11]);
        self
    }

    /// Looks up a preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Option<KeyModel> {
        use form_factor as ff;
        let m = match name {
            "yk5nfc" => {
                let mut m = Self::yk5_base(
                    name,
                    "YubiKey 5 NFC",
                    12345678,
                    Version::new(5, 4, 3),
                    ff::USB_A_KEYCHAIN,
                    cap::ALL_YK5,
                );
                m.nfc_supported = Some(cap::ALL_YK5);
                m.nfc_enabled = Some(cap::ALL_YK5);
                m
            }
            "yk5cnfc" => {
                let caps = 0x033F;
                let mut m = Self::yk5_base(
                    name,
                    "YubiKey 5C NFC",
                    23456789,
                    Version::new(5, 7, 4),
                    ff::USB_C_KEYCHAIN,
                    caps,
                )
                .with_57_pages();
                m.nfc_supported = Some(caps);
                m.nfc_enabled = Some(caps);
                m.reset_blocked = Some(0);
                m
            }
            "yk5nano" => {
                // Reference vector 3.
                let mut m = Self::yk5_base(
                    name,
                    "YubiKey 5 Nano",
                    29504708,
                    Version::new(5, 7, 1),
                    ff::USB_A_NANO,
                    0x033F,
                )
                .with_57_pages();
                m.usb_enabled = Some(0x033E);
                m.fips_approved = Some(fips_cap::OATH);
                m
            }
            "bio" => {
                // Reference vector 4.
                let caps = cap::U2F | cap::FIDO2;
                let mut m = Self::yk5_base(
                    name,
                    "YubiKey Bio - FIDO Edition",
                    28293724,
                    Version::new(5, 7, 2),
                    ff::USB_A_BIO,
                    caps,
                )
                .with_57_pages();
                m.fps_version = Some(Version::new(0, 5, 1));
                m.stm_version = Some(Version::new(3, 0, 1));
                m.reset_blocked = Some(0);
                m.applets = FIDO_ONLY_APPLETS;
                m
            }
            "skynfc" => {
                let caps = cap::U2F | cap::FIDO2;
                let mut m = Self::yk5_base(
                    name,
                    "Security Key NFC",
                    0,
                    Version::new(5, 4, 3),
                    ff::USB_A_KEYCHAIN | ff::SKY_FLAG,
                    caps,
                );
                m.serial = None;
                m.nfc_supported = Some(caps);
                m.nfc_enabled = Some(caps);
                m.applets = FIDO_ONLY_APPLETS;
                m
            }
            "yk4" => {
                let caps = 0x3F;
                let mut m = Self::yk5_base(
                    name,
                    "YubiKey 4",
                    7050602,
                    Version::new(4, 3, 7),
                    ff::USB_A_KEYCHAIN,
                    caps,
                );
                m.version_tag = false;
                m.capability_width = 1;
                m.config_lock = None;
                m.iap_detection = None;
                // Status bytes from Yubico.NET.SDK docs: 04 03 07 | 03 07 00 06 0F 00 00.
                m.otp_status_tail = vec![0x03, 0x07, 0x00, 0x06, 0x0F, 0x00, 0x00];
                m
            }
            "neo" => {
                let caps = cap::OTP | cap::U2F | cap::OPENPGP | cap::PIV | cap::OATH;
                let mut m = Self::yk5_base(
                    name,
                    "YubiKey NEO",
                    3123456,
                    Version::new(3, 4, 3),
                    ff::UNKNOWN,
                    caps,
                );
                m.applets.management = Management::VersionOnly;
                // pgm_seq, touch level (LE), legacy mode byte 0x06 = OTP+FIDO+CCID, …
                m.otp_status_tail = vec![0x01, 0x00, 0x00, 0x06, 0x0F, 0x00, 0x00];
                m.atr = Atr::NeoNfc;
                m
            }
            _ => return None,
        };
        let mut m = m;
        // The OTP slots the preset's status bytes already say are configured.
        let bits = m.otp_status_tail.get(1).copied().unwrap_or(0);
        m.posture.otp_slots_configured = [bits & 0x01 != 0, bits & 0x02 != 0];
        Some(m)
    }

    /// Replaces the serial number (also makes the OTP serial command answer it).
    pub fn with_serial(mut self, serial: Option<u32>) -> Self {
        self.serial = serial;
        self
    }

    /// Sets a fault mode.
    pub fn with_fault(mut self, fault: Option<Fault>) -> Self {
        self.fault = fault;
        self
    }

    /// Replaces the posture.
    pub fn with_posture(mut self, posture: Posture) -> Self {
        self.posture = posture;
        self
    }

    /// Puts the key in (or out of) NFC restricted mode: DeviceInfo tag 0x17 says so, and over
    /// NFC only the NDEF applet answers.
    pub fn with_nfc_restricted(mut self, restricted: bool) -> Self {
        self.nfc_restricted = Some(restricted);
        self
    }

    /// Whether the key is in NFC restricted mode.
    pub fn is_nfc_restricted(&self) -> bool {
        self.nfc_restricted == Some(true)
    }

    /// Whether the FIDO applet speaks CTAP2 (authenticatorGetInfo): FIDO2 capable, fw 5+.
    pub fn has_ctap2(&self) -> bool {
        self.applets.fido && self.version.major >= 5 && self.usb_supported & cap::FIDO2 != 0
    }

    /// A YubiKey Bio (fingerprint sensor): reports `uv` / `bioEnroll` in getInfo.
    pub fn is_bio(&self) -> bool {
        matches!(self.form_factor & 0x0F, form_factor::USB_A_BIO | form_factor::USB_C_BIO)
    }

    /// Whether PIV answers GET METADATA (`INS F7`): fw 5.3 and later.
    pub fn piv_metadata_supported(&self) -> bool {
        self.version >= Version::new(5, 3, 0)
    }

    /// Whether PIV answers GET SERIAL (`00 F8 00 00`): fw ≥ 5.0.3, as ykman requires.
    pub fn piv_serial_supported(&self) -> bool {
        self.version >= Version::new(5, 0, 3)
    }

    /// The OTP applet's SELECT response / status: version bytes then [`Self::otp_status_tail`].
    /// The touch-level byte's slot bits come from [`Posture::otp_slots_configured`].
    pub fn otp_status(&self) -> Vec<u8> {
        let mut s = self.version.bytes().to_vec();
        s.extend_from_slice(&self.otp_status_tail);
        if let Some(touch_lo) = s.get_mut(4) {
            *touch_lo = (*touch_lo & !0x03) | self.posture.otp_slot_bits();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_presets_exist() {
        for p in PRESETS {
            let m = KeyModel::preset(p).unwrap();
            assert_eq!(m.preset, p);
        }
        assert!(KeyModel::preset("nope").is_none());
    }

    #[test]
    fn fault_names_roundtrip() {
        for f in Fault::EVERY {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
        }
        assert!("x".parse::<Fault>().is_err());
    }
}
