//! Encodes a [`KeyModel`] into Management DeviceInfo: an ordered TLV list and READ CONFIG pages.
//!
//! The tag order follows real firmware (ykman/yubikit-android test vectors): 01 03 02 04 05 06
//! 07 08 0D 0E 0A 0F 20 21 | 10 | 11 12 13 14 15 16 17 18 19. This module is the only place that
//! builds DeviceInfo bytes, so the OTP HID (slot 0x13) and CTAPHID (0xC2) transports can reuse it.

use crate::model::{KeyModel, Paging, Version};

/// DeviceInfo tag numbers.
pub mod tag {
    pub const USB_SUPPORTED: u8 = 0x01;
    pub const SERIAL: u8 = 0x02;
    pub const USB_ENABLED: u8 = 0x03;
    pub const FORM_FACTOR: u8 = 0x04;
    pub const VERSION: u8 = 0x05;
    pub const AUTO_EJECT_TIMEOUT: u8 = 0x06;
    pub const CHALRESP_TIMEOUT: u8 = 0x07;
    pub const DEVICE_FLAGS: u8 = 0x08;
    pub const CONFIG_LOCK: u8 = 0x0A;
    pub const NFC_SUPPORTED: u8 = 0x0D;
    pub const NFC_ENABLED: u8 = 0x0E;
    pub const IAP_DETECTION: u8 = 0x0F;
    pub const MORE_DATA: u8 = 0x10;
    pub const FREE_FORM: u8 = 0x11;
    pub const HID_INIT_DELAY: u8 = 0x12;
    pub const PART_NUMBER: u8 = 0x13;
    pub const FIPS_CAPABLE: u8 = 0x14;
    pub const FIPS_APPROVED: u8 = 0x15;
    pub const PIN_COMPLEXITY: u8 = 0x16;
    pub const NFC_RESTRICTED: u8 = 0x17;
    pub const RESET_BLOCKED: u8 = 0x18;
    pub const VERSION_QUALIFIER: u8 = 0x19;
    pub const FPS_VERSION: u8 = 0x20;
    pub const STM_VERSION: u8 = 0x21;
}

/// Largest TLV body of one page (the page length is a single byte).
pub const MAX_PAGE_BODY: usize = 255;

/// One tag with its value.
pub type Tlv = (u8, Vec<u8>);

fn caps(value: u16, width: usize) -> Vec<u8> {
    if width == 1 {
        vec![value.to_be_bytes()[1]]
    } else {
        value.to_be_bytes().to_vec()
    }
}

fn flag(b: bool) -> Vec<u8> {
    vec![u8::from(b)]
}

fn ver(v: Version) -> Vec<u8> {
    v.bytes().to_vec()
}

/// All DeviceInfo TLVs of the model, in firmware order, without tag 0x10.
pub fn tlvs(m: &KeyModel) -> Vec<Tlv> {
    let w = m.capability_width;
    let mut out: Vec<Tlv> = Vec::new();
    let mut push = |t: u8, v: Option<Vec<u8>>| {
        if let Some(v) = v {
            out.push((t, v));
        }
    };
    push(tag::USB_SUPPORTED, Some(caps(m.usb_supported, w)));
    push(tag::USB_ENABLED, m.usb_enabled.map(|c| caps(c, w)));
    push(tag::SERIAL, m.serial.map(|s| s.to_be_bytes().to_vec()));
    push(tag::FORM_FACTOR, Some(vec![m.form_factor]));
    push(tag::VERSION, m.version_tag.then(|| ver(m.version)));
    push(
        tag::AUTO_EJECT_TIMEOUT,
        m.auto_eject_timeout.map(|t| t.to_be_bytes().to_vec()),
    );
    push(tag::CHALRESP_TIMEOUT, m.chalresp_timeout.map(|t| vec![t]));
    push(tag::DEVICE_FLAGS, m.device_flags.map(|f| vec![f]));
    push(tag::NFC_SUPPORTED, m.nfc_supported.map(|c| caps(c, w)));
    push(tag::NFC_ENABLED, m.nfc_enabled.map(|c| caps(c, w)));
    push(tag::CONFIG_LOCK, m.config_lock.map(flag));
    push(tag::IAP_DETECTION, m.iap_detection.map(|v| vec![v]));
    push(tag::FPS_VERSION, m.fps_version.map(ver));
    push(tag::STM_VERSION, m.stm_version.map(ver));
    push(tag::FREE_FORM, m.free_form.clone());
    push(tag::HID_INIT_DELAY, m.hid_init_delay.map(|v| vec![v]));
    push(
        tag::PART_NUMBER,
        m.part_number.as_ref().map(|p| p.as_bytes().to_vec()),
    );
    push(
        tag::FIPS_CAPABLE,
        m.fips_capable.map(|c| c.to_be_bytes().to_vec()),
    );
    push(
        tag::FIPS_APPROVED,
        m.fips_approved.map(|c| c.to_be_bytes().to_vec()),
    );
    push(tag::PIN_COMPLEXITY, m.pin_complexity.map(flag));
    push(tag::NFC_RESTRICTED, m.nfc_restricted.map(flag));
    push(
        tag::RESET_BLOCKED,
        m.reset_blocked.map(|c| c.to_be_bytes().to_vec()),
    );
    push(
        tag::VERSION_QUALIFIER,
        m.version_qualifier.map(|q| {
            let mut v = vec![0x01, 0x03];
            v.extend_from_slice(&q.version.bytes());
            v.extend_from_slice(&[0x02, 0x01, q.release as u8, 0x03, 0x04]);
            v.extend_from_slice(&q.iteration.to_be_bytes());
            v
        }),
    );
    out
}

/// Appends one TLV (single-byte tag; short or 0x81/0x82 long-form length).
pub fn encode_tlv(out: &mut Vec<u8>, t: u8, value: &[u8]) {
    out.push(t);
    match value.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n <= 0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => {
            let n = u16::try_from(n).unwrap_or(u16::MAX);
            out.push(0x82);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    out.extend_from_slice(value);
}

/// The TLV bodies of each page (no LEN byte), with tag 0x10 = number of following pages.
pub fn page_bodies(m: &KeyModel) -> Vec<Vec<u8>> {
    let all = tlvs(m);
    let mut groups: Vec<Vec<&Tlv>> = vec![Vec::new()];
    for t in &all {
        let split = matches!(&m.paging, Paging::SplitBefore(tags) if tags.contains(&t.0));
        if split && groups.last().is_some_and(|g| !g.is_empty()) {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push(t);
        }
    }
    let count = groups.len();
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut body = Vec::new();
            for (t, v) in g {
                encode_tlv(&mut body, *t, v);
            }
            let following = count - 1 - i;
            if following > 0 {
                encode_tlv(&mut body, tag::MORE_DATA, &[following.min(255) as u8]);
            }
            body
        })
        .collect()
}

/// READ CONFIG response data for each page: `LEN || TLVs`.
pub fn pages(m: &KeyModel) -> Vec<Vec<u8>> {
    page_bodies(m)
        .into_iter()
        .map(|body| {
            let mut page = Vec::with_capacity(body.len() + 1);
            page.push(body.len().min(MAX_PAGE_BODY) as u8);
            page.extend_from_slice(&body);
            page
        })
        .collect()
}

/// All pages' TLVs concatenated (the form of the ykman `DEVICE_INFO_TESTDATA` vectors).
pub fn merged(m: &KeyModel) -> Vec<u8> {
    page_bodies(m).concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const VECTOR_3_NANO: &str = "0102033f0302033e020401c234c404010205030507010602000007010f0801000a01000f010020030000002103000000100101110400000000120100130c3738434c55465835303030501402000015020008160100170100";
    const VECTOR_4_BIO: &str = "0102020203020202020401afba5c04010605030507020602000007010f0801000a01000f010020030005012103030001100101110400000000120100130c3738434c5546583530303050140200001502000016010017010018020000";

    #[test]
    fn nano_equals_reference_vector_3() {
        let m = KeyModel::preset("yk5nano").unwrap();
        assert_eq!(merged(&m), hex(VECTOR_3_NANO));
    }

    #[test]
    fn bio_equals_reference_vector_4() {
        let m = KeyModel::preset("bio").unwrap();
        assert_eq!(merged(&m), hex(VECTOR_4_BIO));
    }

    #[test]
    fn two_pages_with_more_data_count() {
        let m = KeyModel::preset("yk5cnfc").unwrap();
        let p = pages(&m);
        assert_eq!(p.len(), 2);
        for page in &p {
            assert_eq!(usize::from(page[0]), page.len() - 1);
        }
        assert!(p[0].ends_with(&[0x10, 0x01, 0x01]));
        assert_eq!(&p[1][1..3], &[0x11, 0x04]);
    }

    #[test]
    fn three_pages_count_down() {
        let mut m = KeyModel::preset("yk5cnfc").unwrap();
        m.paging = Paging::SplitBefore(vec![0x0A, 0x11]);
        let p = page_bodies(&m);
        assert_eq!(p.len(), 3);
        assert!(p[0].ends_with(&[0x10, 0x01, 0x02]));
        assert!(p[1].ends_with(&[0x10, 0x01, 0x01]));
        assert!(!p[2].windows(2).any(|w| w == [0x10, 0x01]));
    }

    #[test]
    fn single_page_models() {
        for name in ["yk5nfc", "skynfc", "yk4"] {
            let m = KeyModel::preset(name).unwrap();
            assert_eq!(pages(&m).len(), 1, "{name}");
        }
        let sky = tlvs(&KeyModel::preset("skynfc").unwrap());
        assert!(sky.iter().all(|(t, _)| *t != tag::SERIAL));
        let yk4 = merged(&KeyModel::preset("yk4").unwrap());
        assert_eq!(&yk4[..3], &[0x01, 0x01, 0x3F]);
    }
}
