//! The management protocol: reading DeviceInfo page by page over any transport.
//!
//! The pager is transport-neutral: a backend only has to fetch one raw page
//! (`LEN || TLVs`). Three backends plug into the same [`read_device_info`]: smart card
//! (SELECT management, READ CONFIG), OTP HID (slot 0x13 with a page byte) and CTAPHID
//! (vendor command 0xC2 with a page byte).

use std::collections::BTreeMap;

use crate::device_info::{parse_page, tag, DeviceInfo, PageFraming};
use crate::error::{Error, ParseError};
use crate::smartcard::{aid, Apdu, SmartCardProtocol};
use crate::tlv;
use crate::transport::ctaphid::CtapHidDevice;
use crate::transport::otp_hid::{strip_crc, OtpProtocol};
use crate::version::Version;

/// The first firmware that answers READ CONFIG.
pub const MIN_DEVICE_INFO_VERSION: Version = Version::new(4, 1, 0);
/// Development firmware reports this version; its real one is in the version qualifier.
pub const DEV_VERSION: Version = Version::new(0, 0, 1);
/// No key has more pages than this; a count beyond it is a broken or hostile key.
pub const MAX_PAGES: u64 = 16;
/// A page is `LEN || TLVs` with a one-byte LEN.
pub const MAX_PAGE_LEN: usize = 256;

const INS_READ_CONFIG: u8 = 0x1D;
/// OTP HID slot that answers DeviceInfo pages (`YK4_CAPABILITIES`).
pub const OTP_SLOT_DEVICE_INFO: u8 = 0x13;
/// OTP HID slot that answers the serial (4 bytes, big-endian).
pub const OTP_SLOT_SERIAL: u8 = 0x10;
/// Yubico's CTAPHID vendor command READ_CONFIG (0x40 + 2; 0xC2 on the wire).
pub const CTAP_READ_CONFIG: u8 = 0x42;

/// Something that can fetch one raw DeviceInfo page.
pub trait ConfigPages {
    /// Page `page` of DeviceInfo, as raw TLV bytes (framing removed where the link adds any).
    fn read_page(&mut self, page: u8) -> Result<Vec<u8>, Error>;
}

/// Reads every page (tag 0x10 counts the pages that follow) and parses the merged TLVs.
pub fn read_device_info(
    backend: &mut dyn ConfigPages,
    framing: PageFraming,
    default_version: Version,
) -> Result<DeviceInfo, Error> {
    let mut merged: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut page: u64 = 0;
    let mut remaining: u64 = 1;
    while remaining > 0 {
        remaining -= 1;
        let raw = backend.read_page(page as u8)?;
        if raw.len() > MAX_PAGE_LEN {
            return Err(ParseError::Oversized { len: raw.len(), limit: MAX_PAGE_LEN }.into());
        }
        let mut tlvs = parse_page(&raw, framing)?;
        if let Some(more) = tlvs.remove(&tag::MORE_DATA) {
            let count = u64::from(tlv::be_u32(tag::MORE_DATA, &more)?);
            if count > MAX_PAGES - 1 - page {
                return Err(ParseError::BadPageCount(count).into());
            }
            remaining = count;
        }
        merged.extend(tlvs);
        page += 1;
    }
    Ok(DeviceInfo::parse_tlvs(&merged, default_version)?)
}

/// The management applet, selected over a smart-card connection.
pub struct SmartCardManagement<'p, 'c> {
    protocol: &'p mut SmartCardProtocol<'c>,
    /// The version the applet announced when selected.
    pub version: Version,
}

impl<'p, 'c> SmartCardManagement<'p, 'c> {
    /// SELECTs the applet and reads the version out of its answer.
    pub fn select(protocol: &'p mut SmartCardProtocol<'c>) -> Result<Self, Error> {
        let answer = protocol.select(aid::MANAGEMENT)?;
        let text = String::from_utf8_lossy(&answer);
        let version = Version::find_in_text(&text).unwrap_or_default();
        Ok(Self { protocol, version })
    }

    /// READ CONFIG for every page. Firmware before 4.1.0 has no such command.
    pub fn read_device_info(&mut self) -> Result<DeviceInfo, Error> {
        let version = self.version;
        read_if_supported(self, PageFraming::Exact, version)
    }
}

impl ConfigPages for SmartCardManagement<'_, '_> {
    fn read_page(&mut self, page: u8) -> Result<Vec<u8>, Error> {
        self.protocol.send(&Apdu::new(0x00, INS_READ_CONFIG, page, 0x00, &[]))
    }
}

/// [`read_device_info`] behind the rule every backend shares: READ CONFIG needs firmware
/// 4.1.0 (or development firmware).
fn read_if_supported(backend: &mut dyn ConfigPages, framing: PageFraming, version: Version) -> Result<DeviceInfo, Error> {
    if version < MIN_DEVICE_INFO_VERSION && version != DEV_VERSION {
        return Err(Error::NotSupported("DeviceInfo needs firmware 4.1.0 or later"));
    }
    read_device_info(backend, framing, version)
}

/// Management over the OTP HID interface.
pub struct OtpManagement<'p, 'd> {
    protocol: &'p mut OtpProtocol<'d>,
}

impl<'p, 'd> OtpManagement<'p, 'd> {
    /// The version comes from the OTP status report. Firmware 1.x and 2.x (YubiKey
    /// Standard) has no management at all.
    pub fn new(protocol: &'p mut OtpProtocol<'d>) -> Result<Self, Error> {
        let v = protocol.version;
        if Version::new(1, 0, 0) <= v && v < Version::new(3, 0, 0) {
            return Err(Error::NotSupported("no management application before firmware 3"));
        }
        Ok(Self { protocol })
    }

    /// The firmware version, from the OTP status report.
    pub fn version(&self) -> Version {
        self.protocol.version
    }

    /// DeviceInfo from OTP slot 0x13, page by page. Firmware before 4.1.0 has none.
    pub fn read_device_info(&mut self) -> Result<DeviceInfo, Error> {
        let version = self.version();
        read_if_supported(self, PageFraming::IgnoreTrailing, version)
    }
}

impl ConfigPages for OtpManagement<'_, '_> {
    /// The answer is `LEN || TLVs || CRC`, padded to whole reports; the CRC covers
    /// `LEN + 1` bytes.
    fn read_page(&mut self, page: u8) -> Result<Vec<u8>, Error> {
        let response = self.protocol.send_and_receive(OTP_SLOT_DEVICE_INFO, &[page])?;
        let len = usize::from(*response.first().ok_or(ParseError::Empty)?);
        Ok(strip_crc(&response, len + 1)?.to_vec())
    }
}

/// The serial over OTP HID (slot 0x10); `None` for 0. [`Error::CommandRejected`] when the
/// key refuses (the serial is not visible over the API, or the key is in reclaim).
pub fn otp_serial(protocol: &mut OtpProtocol<'_>) -> Result<Option<u32>, Error> {
    let response = protocol.send_and_receive(OTP_SLOT_SERIAL, &[])?;
    let serial = strip_crc(&response, 4)?;
    Ok(Some(u32::from_be_bytes([serial[0], serial[1], serial[2], serial[3]])).filter(|s| *s != 0))
}

/// Management over CTAPHID.
pub struct CtapManagement<'p, 'd> {
    device: &'p mut CtapHidDevice<'d>,
    /// The firmware version: from CTAPHID INIT, or 3.0.0 for keys older than the YubiKey 4.
    pub version: Version,
}

impl<'p, 'd> CtapManagement<'p, 'd> {
    /// The version comes from CTAPHID INIT. Before the YubiKey 4 that number was not the
    /// firmware version: such keys are taken for a NEO (3.0.0), unless they speak CBOR.
    pub fn new(device: &'p mut CtapHidDevice<'d>) -> Self {
        let mut version = device.version;
        let cbor = device.capabilities & crate::transport::ctaphid::capability::CBOR != 0;
        if version.major < 4 && version != DEV_VERSION && !(version.major == 0 && cbor) {
            version = Version::new(3, 0, 0);
        }
        Self { device, version }
    }

    /// DeviceInfo through CTAPHID READ_CONFIG, page by page. Firmware before 4.1.0 has none.
    pub fn read_device_info(&mut self) -> Result<DeviceInfo, Error> {
        let version = self.version;
        read_if_supported(self, PageFraming::Exact, version)
    }
}

impl ConfigPages for CtapManagement<'_, '_> {
    fn read_page(&mut self, page: u8) -> Result<Vec<u8>, Error> {
        self.device.call(CTAP_READ_CONFIG, &[page])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pages(Vec<Vec<u8>>, u32);
    impl ConfigPages for Pages {
        fn read_page(&mut self, page: u8) -> Result<Vec<u8>, Error> {
            self.1 += 1;
            self.0.get(usize::from(page)).cloned().ok_or(Error::NotSupported("no such page"))
        }
    }

    fn page(tlvs: &[u8]) -> Vec<u8> {
        [vec![tlvs.len() as u8], tlvs.to_vec()].concat()
    }

    #[test]
    fn follows_page_count() {
        let mut pages = Pages(
            vec![
                page(&[0x01, 0x02, 0x02, 0x3F, 0x10, 0x01, 0x02]),
                page(&[0x02, 0x04, 0x00, 0x00, 0x00, 0x07]),
                page(&[0x05, 0x03, 0x05, 0x07, 0x04]),
            ],
            0,
        );
        let info = read_device_info(&mut pages, PageFraming::Exact, Version::new(5, 0, 0)).unwrap();
        assert_eq!(pages.1, 3);
        assert_eq!(info.serial, Some(7));
        assert_eq!(info.version, Version::new(5, 7, 4));
    }

    #[test]
    fn legacy_flag_reads_one_more_page() {
        let mut pages = Pages(vec![page(&[0x01, 0x01, 0x3F, 0x10, 0x01, 0x01]), page(&[0x02, 0x01, 0x09])], 0);
        let info = read_device_info(&mut pages, PageFraming::Exact, Version::new(5, 0, 0)).unwrap();
        assert_eq!(pages.1, 2);
        assert_eq!(info.serial, Some(9));
    }

    #[test]
    fn rejects_absurd_page_counts() {
        let mut pages = Pages(vec![page(&[0x01, 0x01, 0x3F, 0x10, 0x01, 0xFF])], 0);
        let err = read_device_info(&mut pages, PageFraming::Exact, Version::new(5, 0, 0)).unwrap_err();
        assert_eq!(err, Error::Parse(ParseError::BadPageCount(255)));
        let mut pages = Pages(vec![page(&[0x01, 0x01, 0x3F, 0x10, 0x05, 1, 0, 0, 0, 0])], 0);
        assert!(read_device_info(&mut pages, PageFraming::Exact, Version::new(5, 0, 0)).is_err());
    }
}
