//! DeviceInfo: the management application's description of a key, and how its TLVs parse.

use std::collections::BTreeMap;

use crate::caps::{Capabilities, FormFactor, Transport};
use crate::error::ParseError;
use crate::tlv;
use crate::version::{ReleaseType, Version, VersionQualifier};

/// DeviceInfo tags (yubikit `management.py`).
pub mod tag {
    /// 0x01: applications the key has over USB.
    pub const USB_SUPPORTED: u32 = 0x01;
    /// 0x02: the serial number (absent or zero when hidden).
    pub const SERIAL: u32 = 0x02;
    /// 0x03: applications enabled over USB.
    pub const USB_ENABLED: u32 = 0x03;
    /// 0x04: form factor, with the FIPS and Security Key flags.
    pub const FORM_FACTOR: u32 = 0x04;
    /// 0x05: firmware version (three bytes).
    pub const VERSION: u32 = 0x05;
    /// 0x06: CCID auto-eject timeout, seconds.
    pub const AUTO_EJECT_TIMEOUT: u32 = 0x06;
    /// 0x07: challenge-response touch timeout, seconds.
    pub const CHALRESP_TIMEOUT: u32 = 0x07;
    /// 0x08: device flags (remote wakeup, eject).
    pub const DEVICE_FLAGS: u32 = 0x08;
    /// 0x09: application versions (not published; kept raw).
    pub const APP_VERSIONS: u32 = 0x09;
    /// 0x0A: whether a configuration lock code is set.
    pub const CONFIG_LOCK: u32 = 0x0A;
    /// 0x0D: applications the key has over NFC.
    pub const NFC_SUPPORTED: u32 = 0x0D;
    /// 0x0E: applications enabled over NFC.
    pub const NFC_ENABLED: u32 = 0x0E;
    /// 0x0F: IAP detection (not published; kept raw).
    pub const IAP_DETECTION: u32 = 0x0F;
    /// 0x10: the number of DeviceInfo pages still to read.
    pub const MORE_DATA: u32 = 0x10;
    /// 0x11: free-form data (not published; kept raw).
    pub const FREE_FORM: u32 = 0x11;
    /// 0x12: HID init delay (not published; kept raw).
    pub const HID_INIT_DELAY: u32 = 0x12;
    /// 0x13: part number, UTF-8.
    pub const PART_NUMBER: u32 = 0x13;
    /// 0x14: applications that can be FIPS approved (FIPS numbering).
    pub const FIPS_CAPABLE: u32 = 0x14;
    /// 0x15: applications that are FIPS approved now (FIPS numbering).
    pub const FIPS_APPROVED: u32 = 0x15;
    /// 0x16: whether PIN complexity is enforced.
    pub const PIN_COMPLEXITY: u32 = 0x16;
    /// 0x17: whether NFC is restricted until the key is plugged into USB.
    pub const NFC_RESTRICTED: u32 = 0x17;
    /// 0x18: applications whose reset is blocked.
    pub const RESET_BLOCKED: u32 = 0x18;
    /// 0x19: version qualifier (pre-release type and iteration).
    pub const VERSION_QUALIFIER: u32 = 0x19;
    /// 0x20: fingerprint sensor firmware version (Bio keys).
    pub const FPS_VERSION: u32 = 0x20;
    /// 0x21: secure element firmware version (Bio keys).
    pub const STM_VERSION: u32 = 0x21;
}

/// Form-factor flag: a FIPS series key.
pub const FORM_FACTOR_FIPS: u8 = 0x80;
/// Form-factor flag: a Security Key series key.
pub const FORM_FACTOR_SKY: u8 = 0x40;

/// Capabilities per transport. `None` means the key does not have that transport at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PerTransport {
    /// Over USB; `None` when the key has no USB.
    pub usb: Option<Capabilities>,
    /// Over NFC; `None` when the key has no NFC.
    pub nfc: Option<Capabilities>,
}

impl PerTransport {
    /// The capabilities over `t`.
    pub fn get(&self, t: Transport) -> Option<Capabilities> {
        match t {
            Transport::Usb => self.usb,
            Transport::Nfc => self.nfc,
        }
    }
}

/// Everything a key says about itself through READ CONFIG, after parsing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceInfo {
    /// The serial number; `None` when the key hides it or has none.
    pub serial: Option<u32>,
    /// The behavioural version: for alpha/beta builds this is the qualifier's version.
    pub version: Version,
    /// Release type and iteration (`Final` for released firmware).
    pub version_qualifier: VersionQualifier,
    /// The physical shape.
    pub form_factor: FormFactor,
    /// A FIPS series key.
    pub is_fips: bool,
    /// A Security Key series key.
    pub is_sky: bool,
    /// The applications the key has, per transport.
    pub supported: PerTransport,
    /// The applications enabled, per transport.
    pub enabled: PerTransport,
    /// A configuration lock code is set.
    pub is_locked: bool,
    /// CCID auto-eject timeout, seconds.
    pub auto_eject_timeout: u16,
    /// Challenge-response touch timeout, seconds.
    pub challenge_response_timeout: u8,
    /// Device flags (remote wakeup, eject).
    pub device_flags: u8,
    /// Part number, when the key gives one.
    pub part_number: Option<String>,
    /// Applications that can be FIPS approved.
    pub fips_capable: Capabilities,
    /// Applications that are FIPS approved now.
    pub fips_approved: Capabilities,
    /// PIN complexity is enforced.
    pub pin_complexity: bool,
    /// NFC is restricted until the key is plugged into USB.
    pub nfc_restricted: bool,
    /// Applications whose reset is blocked.
    pub reset_blocked: Capabilities,
    /// Fingerprint sensor firmware version (Bio keys).
    pub fps_version: Option<Version>,
    /// Secure element firmware version (Bio keys).
    pub stm_version: Option<Version>,
    /// Tags yubikit leaves unparsed, kept raw: 0x09 app versions, 0x0F IAP detection,
    /// 0x11 free form, 0x12 HID init delay.
    pub unparsed: UnparsedTags,
}

/// DeviceInfo tags whose meaning Yubico does not publish; kept as the key sent them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UnparsedTags {
    /// Tag 0x09.
    pub app_versions: Option<Vec<u8>>,
    /// Tag 0x0F.
    pub iap_detection: Option<Vec<u8>>,
    /// Tag 0x11.
    pub free_form: Option<Vec<u8>>,
    /// Tag 0x12.
    pub hid_init_delay: Option<Vec<u8>>,
}

impl DeviceInfo {
    /// A bare record for keys that have no READ CONFIG; the fallback chain fills it in.
    pub fn synthesized(version: Version, serial: Option<u32>, caps: PerTransport) -> Self {
        Self {
            serial,
            version,
            version_qualifier: VersionQualifier::final_of(version),
            form_factor: FormFactor::Unknown,
            is_fips: false,
            is_sky: false,
            supported: caps,
            enabled: PerTransport::default(),
            is_locked: false,
            auto_eject_timeout: 0,
            challenge_response_timeout: 0,
            device_flags: 0,
            part_number: None,
            fips_capable: Capabilities::NONE,
            fips_approved: Capabilities::NONE,
            pin_complexity: false,
            nfc_restricted: false,
            reset_blocked: Capabilities::NONE,
            fps_version: None,
            stm_version: None,
            unparsed: UnparsedTags::default(),
        }
    }

    /// True when the key has transport `t` at all.
    pub fn has_transport(&self, t: Transport) -> bool {
        self.supported.get(t).is_some()
    }

    /// `5.4.3`, or `5.7.8.beta.233` for a pre-release build (ykman's `version_name`).
    pub fn version_name(&self) -> String {
        if self.version_qualifier.release == ReleaseType::Final {
            if self.version == Version::default() {
                "unknown".to_string()
            } else {
                self.version.to_string()
            }
        } else {
            self.version_qualifier.to_string()
        }
    }

    /// Parses merged DeviceInfo TLVs (tag 0x10 already removed by the pager).
    ///
    /// `default_version` is used when tag 0x05 is absent (the session's version).
    pub fn parse_tlvs(data: &BTreeMap<u32, Vec<u8>>, default_version: Version) -> Result<Self, ParseError> {
        let get = |t: u32| data.get(&t).map(Vec::as_slice);
        let int = |t: u32| -> Result<u32, ParseError> { get(t).map_or(Ok(0), |v| tlv::be_u32(t, v)) };
        let flag = |t: u32| get(t) == Some(&[0x01][..]);
        let opt_version = |t: u32| -> Result<Option<Version>, ParseError> {
            match get(t) {
                None => Ok(None),
                Some(v) => {
                    let ver = Version::from_bytes(v).ok_or(ParseError::BadValueLength {
                        tag: t,
                        len: v.len(),
                        expected: "3 bytes",
                    })?;
                    Ok((ver != Version::default()).then_some(ver))
                }
            }
        };

        let mut version = match get(tag::VERSION) {
            Some(v) => Version::from_bytes(v).ok_or(ParseError::BadValueLength {
                tag: tag::VERSION,
                len: v.len(),
                expected: "3 bytes",
            })?,
            None => default_version,
        };

        let ff_raw = u8::try_from(int(tag::FORM_FACTOR)?).map_err(|_| ParseError::BadValueLength {
            tag: tag::FORM_FACTOR,
            len: get(tag::FORM_FACTOR).map_or(0, <[u8]>::len),
            expected: "1 byte",
        })?;

        let usb_supported = if version == Version::new(4, 2, 4) {
            Capabilities(0x3F)
        } else {
            Capabilities(tlv::be_u32(
                tag::USB_SUPPORTED,
                get(tag::USB_SUPPORTED).ok_or(ParseError::MissingTag(tag::USB_SUPPORTED))?,
            )?)
        };
        let mut enabled = PerTransport::default();
        let four_x = Version::new(4, 0, 0) <= version && version < Version::new(5, 0, 0);
        if get(tag::USB_ENABLED).is_some() && !four_x {
            enabled.usb = Some(Capabilities(int(tag::USB_ENABLED)?));
        }
        let mut supported = PerTransport { usb: Some(usb_supported), nfc: None };
        if get(tag::NFC_SUPPORTED).is_some() {
            supported.nfc = Some(Capabilities(int(tag::NFC_SUPPORTED)?));
            enabled.nfc = Some(Capabilities(int(tag::NFC_ENABLED)?));
        }

        let serial = match int(tag::SERIAL)? {
            0 => None,
            s => Some(s),
        };

        let qualifier = match get(tag::VERSION_QUALIFIER) {
            Some(v) => Some(parse_qualifier(v)?),
            None => None,
        };
        let version_qualifier = match qualifier {
            Some(q) => {
                if q.release != ReleaseType::Final {
                    version = q.version;
                }
                q
            }
            None => VersionQualifier::final_of(version),
        };

        let part_number = get(tag::PART_NUMBER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|s| !s.is_empty())
            .map(str::to_string);

        Ok(Self {
            serial,
            version,
            version_qualifier,
            form_factor: FormFactor::from_code(ff_raw),
            is_fips: ff_raw & FORM_FACTOR_FIPS != 0,
            is_sky: ff_raw & FORM_FACTOR_SKY != 0,
            supported,
            enabled,
            is_locked: flag(tag::CONFIG_LOCK),
            auto_eject_timeout: u16::try_from(int(tag::AUTO_EJECT_TIMEOUT)?).unwrap_or(u16::MAX),
            challenge_response_timeout: u8::try_from(int(tag::CHALRESP_TIMEOUT)?).unwrap_or(u8::MAX),
            device_flags: u8::try_from(int(tag::DEVICE_FLAGS)?).unwrap_or(u8::MAX),
            part_number,
            fips_capable: Capabilities::from_fips(int(tag::FIPS_CAPABLE)?),
            fips_approved: Capabilities::from_fips(int(tag::FIPS_APPROVED)?),
            pin_complexity: flag(tag::PIN_COMPLEXITY),
            nfc_restricted: flag(tag::NFC_RESTRICTED),
            reset_blocked: Capabilities(int(tag::RESET_BLOCKED)?),
            fps_version: opt_version(tag::FPS_VERSION)?,
            stm_version: opt_version(tag::STM_VERSION)?,
            unparsed: UnparsedTags {
                app_versions: get(tag::APP_VERSIONS).map(<[u8]>::to_vec),
                iap_detection: get(tag::IAP_DETECTION).map(<[u8]>::to_vec),
                free_form: get(tag::FREE_FORM).map(<[u8]>::to_vec),
                hid_init_delay: get(tag::HID_INIT_DELAY).map(<[u8]>::to_vec),
            },
        })
    }
}

/// Tag 0x19: `01 03 <major minor patch> 02 01 <type> 03 04 <iteration>`.
fn parse_qualifier(value: &[u8]) -> Result<VersionQualifier, ParseError> {
    let inner = tlv::parse_map(value).map_err(|_| ParseError::BadQualifier)?;
    let version = inner
        .get(&0x01)
        .and_then(|v| Version::from_bytes(v))
        .ok_or(ParseError::BadQualifier)?;
    let release = match inner.get(&0x02).map(Vec::as_slice) {
        Some([code]) => ReleaseType::from_code(*code).ok_or(ParseError::BadQualifier)?,
        _ => return Err(ParseError::BadQualifier),
    };
    let iteration = match inner.get(&0x03).map(Vec::as_slice) {
        Some(b) if b.len() == 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        _ => return Err(ParseError::BadQualifier),
    };
    Ok(VersionQualifier { version, release, iteration })
}

/// How strictly a page's leading length byte is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFraming {
    /// The length byte must cover exactly the rest of the data (ykman over CCID and CTAP).
    Exact,
    /// Bytes after the declared length are ignored (the OTP path, whose reports are padded).
    IgnoreTrailing,
}

/// Checks one page `LEN || TLVs` and returns its TLVs.
pub fn parse_page(data: &[u8], framing: PageFraming) -> Result<BTreeMap<u32, Vec<u8>>, ParseError> {
    let (&len, rest) = data.split_first().ok_or(ParseError::Empty)?;
    let declared = usize::from(len);
    if declared == 0 {
        return Err(ParseError::Empty);
    }
    let body = match framing {
        PageFraming::Exact if rest.len() == declared => rest,
        PageFraming::IgnoreTrailing if rest.len() >= declared => &rest[..declared],
        _ => return Err(ParseError::LengthMismatch { declared, actual: rest.len() }),
    };
    tlv::parse_map(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_of(tlvs: &[u8]) -> Vec<u8> {
        let mut v = vec![tlvs.len() as u8];
        v.extend_from_slice(tlvs);
        v
    }

    #[test]
    fn page_framing() {
        assert!(parse_page(&page_of(&[0x01, 0x01, 0x3F]), PageFraming::Exact).is_ok());
        assert_eq!(parse_page(&[], PageFraming::Exact), Err(ParseError::Empty));
        assert_eq!(parse_page(&[0x00], PageFraming::Exact), Err(ParseError::Empty));
        assert_eq!(
            parse_page(&[0x03, 0x04, 0x01, 0x01, 0x01, 0xFF, 0x3C], PageFraming::Exact),
            Err(ParseError::LengthMismatch { declared: 3, actual: 6 })
        );
        let m = parse_page(&[0x03, 0x04, 0x01, 0x01, 0x01, 0xFF, 0x3C], PageFraming::IgnoreTrailing).unwrap();
        assert_eq!(m[&4], vec![1]);
    }
}
