//! The management protocol: reading DeviceInfo page by page over any transport.
//!
//! The pager is transport-neutral: a backend only has to fetch one raw page
//! (`LEN || TLVs`). The smart-card backend (SELECT management, READ CONFIG) lives here too;
//! the OTP HID and CTAPHID backends plug into the same [`read_device_info`].

use std::collections::BTreeMap;

use crate::device_info::{parse_page, tag, DeviceInfo, PageFraming};
use crate::error::{Error, ParseError};
use crate::smartcard::{aid, Apdu, SmartCardProtocol};
use crate::tlv;
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

/// Something that can fetch one raw DeviceInfo page.
pub trait ConfigPages {
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
        if self.version < MIN_DEVICE_INFO_VERSION && self.version != DEV_VERSION {
            return Err(Error::NotSupported("DeviceInfo needs firmware 4.1.0 or later"));
        }
        let version = self.version;
        read_device_info(self, PageFraming::Exact, version)
    }
}

impl ConfigPages for SmartCardManagement<'_, '_> {
    fn read_page(&mut self, page: u8) -> Result<Vec<u8>, Error> {
        self.protocol.send(&Apdu::new(0x00, INS_READ_CONFIG, page, 0x00, &[]))
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
