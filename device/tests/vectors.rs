//! The test vectors of the protocol reference (§6), field by field and name by name.

use std::collections::BTreeMap;

use keytally_device::caps::{Capabilities as C, FormFactor};
use keytally_device::device_info::{parse_page, PageFraming};
use keytally_device::identify::{apply_fixups, product_name};
use keytally_device::usb_ids::{KeyType, UsbInterfaces};
use keytally_device::tlv;
use keytally_device::version::{ReleaseType, Version};
use keytally_device::{DeviceInfo, ParseError};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// ykman's test: parse merged TLVs with default version 5.3.0, name with key type YK4.
fn parse(s: &str) -> DeviceInfo {
    let mut map = tlv::parse_map(&hex(s)).unwrap();
    map.remove(&0x10);
    DeviceInfo::parse_tlvs(&map, Version::new(5, 3, 0)).unwrap()
}

fn single(tags: &[(u32, &str)]) -> Result<DeviceInfo, ParseError> {
    let mut map: BTreeMap<u32, Vec<u8>> = tags.iter().map(|(t, v)| (*t, hex(v))).collect();
    map.entry(0x01).or_insert_with(|| hex("033f"));
    DeviceInfo::parse_tlvs(&map, Version::new(2, 2, 2))
}

#[test]
fn vector_1_5c_nfc_enhanced_pin() {
    let i = parse("0102033f0302033f0204020b885b04010305030507040602000007010f0801000d02033f0e02033f0a01000f010020030000002103000000100101110400000000120100130c3738434c5546583530303050140200001502000016010117010018020000");
    assert_eq!(i.supported.usb, Some(C(0x033F)));
    assert_eq!(i.enabled.usb, Some(C(0x033F)));
    assert_eq!(i.serial, Some(34310235));
    assert_eq!(i.form_factor, FormFactor::UsbCKeychain);
    assert!(!i.is_fips && !i.is_sky);
    assert_eq!(i.version, Version::new(5, 7, 4));
    assert_eq!(i.auto_eject_timeout, 0);
    assert_eq!(i.challenge_response_timeout, 15);
    assert_eq!(i.device_flags, 0);
    assert_eq!(i.supported.nfc, Some(C(0x033F)));
    assert_eq!(i.enabled.nfc, Some(C(0x033F)));
    assert!(!i.is_locked);
    assert_eq!(i.fps_version, None);
    assert_eq!(i.stm_version, None);
    assert_eq!(i.part_number.as_deref(), Some("78CLUFX5000P"));
    assert_eq!(i.fips_capable, C(0));
    assert_eq!(i.fips_approved, C(0));
    assert!(i.pin_complexity);
    assert!(!i.nfc_restricted);
    assert_eq!(i.reset_blocked, C(0));
    assert_eq!(i.unparsed.iap_detection.as_deref(), Some(&[0u8][..]));
    assert_eq!(i.unparsed.free_form.as_deref(), Some(&[0u8, 0, 0, 0][..]));
    assert_eq!(i.unparsed.hid_init_delay.as_deref(), Some(&[0u8][..]));
    assert_eq!(i.unparsed.app_versions, None);
    assert_eq!(product_name(&i, Some(KeyType::Yk4)), "YubiKey 5C NFC - Enhanced PIN");
}

#[test]
fn vector_2_5c_nfc_fips() {
    let i = parse("0102033d0302033d020401ea505104018305030507040602000007010f0801000d02033d0e02033d0a01000f010020030000002103000000100101110400000000120100130c3738434c55465835303030501402001f1502001f16010117010018020000");
    assert_eq!(i.supported.usb, Some(C(0x033D)));
    assert_eq!(i.supported.nfc, Some(C(0x033D)));
    assert_eq!(i.serial, Some(32133201));
    assert_eq!(i.form_factor, FormFactor::UsbCKeychain);
    assert!(i.is_fips && !i.is_sky);
    assert_eq!(i.version, Version::new(5, 7, 4));
    let all_fips = C::FIDO2.union(C::PIV).union(C::OPENPGP).union(C::OATH).union(C::HSMAUTH);
    assert_eq!(i.fips_capable, all_fips);
    assert_eq!(i.fips_approved, all_fips);
    assert!(i.pin_complexity);
    assert_eq!(product_name(&i, Some(KeyType::Yk4)), "YubiKey 5C NFC FIPS");
}

#[test]
fn vector_3_5_nano() {
    let i = parse("0102033f0302033e020401c234c404010205030507010602000007010f0801000a01000f010020030000002103000000100101110400000000120100130c3738434c55465835303030501402000015020008160100170100");
    assert_eq!(i.supported.usb, Some(C(0x033F)));
    assert_eq!(i.enabled.usb, Some(C(0x033E)));
    assert_eq!(i.serial, Some(29504708));
    assert_eq!(i.form_factor, FormFactor::UsbANano);
    assert_eq!(i.version, Version::new(5, 7, 1));
    assert_eq!(i.supported.nfc, None);
    assert_eq!(i.fips_capable, C(0));
    assert_eq!(i.fips_approved, C::OATH);
    assert_eq!(i.reset_blocked, C(0));
    assert_eq!(product_name(&i, Some(KeyType::Yk4)), "YubiKey 5 Nano");
}

#[test]
fn vector_4_bio_fido() {
    let i = parse("0102020203020202020401afba5c04010605030507020602000007010f0801000a01000f010020030005012103030001100101110400000000120100130c3738434c5546583530303050140200001502000016010017010018020000");
    assert_eq!(i.supported.usb, Some(C(0x0202)));
    assert_eq!(i.serial, Some(28293724));
    assert_eq!(i.form_factor, FormFactor::UsbABio);
    assert_eq!(i.version, Version::new(5, 7, 2));
    assert_eq!(i.fps_version, Some(Version::new(0, 5, 1)));
    assert_eq!(i.stm_version, Some(Version::new(3, 0, 1)));
    assert_eq!(product_name(&i, Some(KeyType::Yk4)), "YubiKey Bio - FIDO Edition");
}

#[test]
fn vector_5_c_bio_multi() {
    let i = parse("0102061203020612020401afcfff04010705030507020602000007010f0801000a01000f010020030005012103030001100101110400000000120100130c3738434c5546583530303050140200001502000016010017010018020200");
    assert_eq!(i.supported.usb, Some(C(0x0612)));
    assert_eq!(i.serial, Some(28299263));
    assert_eq!(i.form_factor, FormFactor::UsbCBio);
    assert_eq!(i.reset_blocked, C::FIDO2);
    assert_eq!(i.fps_version, Some(Version::new(0, 5, 1)));
    assert_eq!(product_name(&i, Some(KeyType::Yk4)), "YubiKey C Bio - Multi-protocol Edition");
}

#[test]
fn vector_6_security_key_c_nfc_enterprise() {
    let i = parse("01020202030202020204017b306c04014305030504030602000007010f0801000d0202060e0202060a01000f0100");
    assert_eq!(i.supported.usb, Some(C(0x0202)));
    assert_eq!(i.serial, Some(24850540));
    assert_eq!(i.form_factor, FormFactor::UsbCKeychain);
    assert!(i.is_sky && !i.is_fips);
    assert_eq!(i.version, Version::new(5, 4, 3));
    assert_eq!(i.supported.nfc, Some(C(0x0206)));
    assert_eq!(i.enabled.nfc, Some(C(0x0206)));
    assert_eq!(product_name(&i, Some(KeyType::Yk4)), "Security Key C NFC - Enterprise Edition");
}

#[test]
fn vector_7_5ci() {
    let i = parse("0102023f0302023f020400a0392204010505030502030602000007010f0801000a01000f010c");
    assert_eq!(i.supported.usb, Some(C(0x023F)));
    assert_eq!(i.serial, Some(10500386));
    assert_eq!(i.form_factor, FormFactor::UsbCLightning);
    assert_eq!(i.version, Version::new(5, 2, 3));
    assert_eq!(i.unparsed.iap_detection.as_deref(), Some(&[0x0Cu8][..]));
    assert_eq!(product_name(&i, Some(KeyType::Yk4)), "YubiKey 5Ci");
}

#[test]
fn single_tags() {
    assert_eq!(single(&[(0x02, "075BCD15")]).unwrap().serial, Some(123456789));
    assert_eq!(single(&[]).unwrap().serial, None);
    assert_eq!(single(&[(0x05, "050304")]).unwrap().version, Version::new(5, 3, 4));
    for (code, ff) in [
        ("01", FormFactor::UsbAKeychain),
        ("02", FormFactor::UsbANano),
        ("03", FormFactor::UsbCKeychain),
        ("04", FormFactor::UsbCNano),
        ("05", FormFactor::UsbCLightning),
        ("06", FormFactor::UsbABio),
        ("07", FormFactor::UsbCBio),
        ("46", FormFactor::UsbABio),
        ("84", FormFactor::UsbCNano),
    ] {
        assert_eq!(single(&[(0x04, code)]).unwrap().form_factor, ff, "form factor {code}");
    }
    let f = |c| {
        let i = single(&[(0x04, c)]).unwrap();
        (i.is_fips, i.is_sky)
    };
    assert_eq!(f("80"), (true, false));
    assert_eq!(f("C0"), (true, true));
    assert_eq!(f("40"), (false, true));
    assert!(single(&[(0x0A, "01")]).unwrap().is_locked);
    assert!(!single(&[(0x0A, "00")]).unwrap().is_locked);
    for (v, caps) in [
        ("0001", C::FIDO2),
        ("0002", C::PIV),
        ("0004", C::OPENPGP),
        ("0008", C::OATH),
        ("0010", C::HSMAUTH),
        ("000A", C::PIV.union(C::OATH)),
        ("0000", C(0)),
    ] {
        assert_eq!(single(&[(0x14, v)]).unwrap().fips_capable, caps, "fips capable {v}");
        assert_eq!(single(&[(0x15, v)]).unwrap().fips_approved, caps, "fips approved {v}");
    }
    assert!(!single(&[(0x16, "00")]).unwrap().pin_complexity);
    assert!(single(&[(0x16, "01")]).unwrap().pin_complexity);
    assert_eq!(single(&[(0x18, "0420")]).unwrap().reset_blocked, C(1056));
    assert_eq!(single(&[(0x18, "0220")]).unwrap().reset_blocked, C::OATH.union(C::FIDO2));
    for t in [0x20, 0x21] {
        let get = |v| {
            let i = single(&[(t, v)]).unwrap();
            if t == 0x20 { i.fps_version } else { i.stm_version }
        };
        assert_eq!(get("000000"), None);
        assert_eq!(get("000001"), Some(Version::new(0, 0, 1)));
        assert_eq!(get("050606"), Some(Version::new(5, 6, 6)));
        assert_eq!(get("070005"), Some(Version::new(7, 0, 5)));
        assert!(single(&[(t, "000000000000000000")]).is_err(), "9-byte value is malformed");
    }
}

#[test]
fn part_numbers() {
    let pn = |v: &str| single(&[(0x13, v)]).unwrap().part_number;
    assert_eq!(
        pn("6162636465666768696a6b6c6d6e6f707172737475767778797a4142434445464748494a4b4c4d4e4f505152535455565758595a303132333435363738395f3d2b2d").as_deref(),
        Some("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_=+-")
    );
    assert_eq!(
        pn("C396C384C385C3B6C3A4C3A5C49BC5A1C48DC599C5BEC3BDC3A1C3ADC3BAC5AFC49AC5A0C48CC598C5BDC39DC381C38DC39AC5AE").as_deref(),
        Some("ÖÄÅöäåěščřžýáíúůĚŠČŘŽÝÁÍÚŮ")
    );
    assert_eq!(pn("F09F9880").as_deref(), Some("😀"));
    assert_eq!(pn("30313233343536373839414243444546").as_deref(), Some("0123456789ABCDEF"));
    for bad in ["c328", "a0a1", "e228a1", "e28228", "f0288cbc", "f09028bc", "f0288c28", ""] {
        assert_eq!(pn(bad), None, "part number {bad}");
    }
}

#[test]
fn version_qualifiers() {
    let q = |v: &str, vq: Option<&str>| {
        let mut tags = vec![(0x05, v)];
        if let Some(vq) = vq {
            tags.push((0x19, vq));
        }
        single(&tags).unwrap()
    };
    let i = q("030403", None);
    assert_eq!(i.version, Version::new(3, 4, 3));
    assert_eq!(i.version_qualifier.release, ReleaseType::Final);
    assert_eq!(i.version_qualifier.iteration, 0);
    assert_eq!(i.version_name(), "3.4.3");

    let i = q("000001", Some("0103050403020100030400000000"));
    assert_eq!(i.version, Version::new(5, 4, 3));
    assert_eq!(i.version_name(), "5.4.3.alpha.0");

    let i = q("000001", Some("01030507080201010304000000e9"));
    assert_eq!(i.version, Version::new(5, 7, 8));
    assert_eq!(i.version_name(), "5.7.8.beta.233");

    let i = q("050404", Some("0103050404020102030400000005"));
    assert_eq!(i.version, Version::new(5, 4, 4));
    assert_eq!(i.version_qualifier.to_string(), "5.4.4.final.5");
    assert_eq!(i.version_name(), "5.4.4");

    let i = q("050709", Some("01030507090201020304FFFFFFFF"));
    assert_eq!(i.version_qualifier.to_string(), "5.7.9.final.4294967295");
    assert_eq!(i.version_name(), "5.7.9");

    let i = q("05070A", Some("010305070A020102030480000000"));
    assert_eq!(i.version_qualifier.to_string(), "5.7.10.final.2147483648");
    assert_eq!(i.version_name(), "5.7.10");

    let i = q("05070B", Some("010305070B02010203047FFFFFFF"));
    assert_eq!(i.version_qualifier.to_string(), "5.7.11.final.2147483647");
    assert_eq!(i.version_name(), "5.7.11");

    assert_eq!(single(&[(0x19, "0103050403")]), Err(ParseError::BadQualifier));
}

/// .NET's OTP response tests (`GetDeviceInfoResponseTests`), with the status word removed:
/// the OTP path ignores bytes after the declared length.
#[test]
fn otp_framed_pages() {
    let page = |s: &str| parse_page(&hex(s), PageFraming::IgnoreTrailing);
    let info = |s: &str| DeviceInfo::parse_tlvs(&page(s).unwrap(), Version::new(5, 0, 0)).unwrap();
    assert_eq!(info("0401 02033F".replace(' ', "").as_str()).supported.usb, Some(C(0x033F)));
    assert_eq!(info("03 01 01 3F".replace(' ', "").as_str()).supported.usb, Some(C(0x3F)));
    let with_usb = |s: &str| info(&format!("{:02x}0101ff{}", s.len() / 2 + 3, s));
    assert_eq!(with_usb("020401020304").serial, Some(0x01020304));
    assert_eq!(with_usb("06021234").auto_eject_timeout, 0x1234);
    assert_eq!(with_usb("070112").challenge_response_timeout, 0x12);
    assert_eq!(with_usb("0801C0").device_flags, 0xC0);
    assert!(with_usb("0A0101").is_locked);
    assert_eq!(with_usb("0D02033F").supported.nfc, Some(C(0x033F)));
    assert_eq!(with_usb("0D013F").supported.nfc, Some(C(0x3F)));
    assert_eq!(with_usb("0D013F0E02033F").enabled.nfc, Some(C(0x033F)));
    assert_eq!(with_usb("03013F0503050000").enabled.usb, Some(C(0x3F)));
    let ff = DeviceInfo::parse_tlvs(&page("0304010101FF3C").unwrap(), Version::new(5, 0, 0));
    // This one has no tag 0x01; .NET tolerates that, ykman (and keytally) require it.
    assert_eq!(ff, Err(ParseError::MissingTag(0x01)));
    assert_eq!(tlv::parse_map(&hex("040101")).unwrap()[&4], vec![1]);
}

#[test]
fn malformed_pages_are_typed_errors() {
    for framing in [PageFraming::Exact, PageFraming::IgnoreTrailing] {
        assert_eq!(parse_page(&hex("00"), framing), Err(ParseError::Empty));
        assert_eq!(parse_page(&hex(""), framing), Err(ParseError::Empty));
        assert_eq!(parse_page(&hex("00010203"), framing), Err(ParseError::Empty));
        assert_eq!(parse_page(&hex("01"), framing), Err(ParseError::LengthMismatch { declared: 1, actual: 0 }));
        assert_eq!(parse_page(&hex("0A010203"), framing), Err(ParseError::LengthMismatch { declared: 10, actual: 3 }));
        assert_eq!(parse_page(&hex("FF010203"), framing), Err(ParseError::LengthMismatch { declared: 255, actual: 3 }));
    }
    assert_eq!(parse_page(&hex("030105"), PageFraming::Exact), Err(ParseError::LengthMismatch { declared: 3, actual: 2 }));
    assert_eq!(parse_page(&hex("02010203"), PageFraming::Exact), Err(ParseError::LengthMismatch { declared: 2, actual: 3 }));
    assert_eq!(parse_page(&hex("03010501"), PageFraming::Exact), Err(ParseError::TruncatedTlv { offset: 0 }));
    let no_usb = DeviceInfo::parse_tlvs(&tlv::parse_map(&hex("020400000001")).unwrap(), Version::new(5, 0, 0));
    assert_eq!(no_usb, Err(ParseError::MissingTag(0x01)));
    let long_serial = DeviceInfo::parse_tlvs(&tlv::parse_map(&hex("0101ff02050000000001")).unwrap(), Version::new(5, 0, 0));
    assert!(matches!(long_serial, Err(ParseError::BadValueLength { tag: 2, .. })));
}

/// ykman `tests/test_device.py` names: default info 5.3.0, USB caps 0xFF, key type YK4.
#[test]
fn product_names() {
    let base = || {
        let mut map = BTreeMap::new();
        map.insert(0x01, vec![0xFF]);
        DeviceInfo::parse_tlvs(&map, Version::new(5, 3, 0)).unwrap()
    };
    let name = |ff: FormFactor, nfc: bool, fips: bool, sky: bool, serial: Option<u32>, pin: bool| {
        let mut i = base();
        i.form_factor = ff;
        if nfc {
            i.supported.nfc = Some(C(0xFF));
        }
        i.is_fips = fips;
        i.is_sky = sky;
        i.serial = serial;
        i.pin_complexity = pin;
        product_name(&i, Some(KeyType::Yk4))
    };
    use FormFactor::*;
    let n = |ff, nfc| name(ff, nfc, false, false, None, false);
    assert_eq!(n(UsbAKeychain, false), "YubiKey 5A");
    assert_eq!(n(UsbAKeychain, true), "YubiKey 5 NFC");
    assert_eq!(n(UsbANano, false), "YubiKey 5 Nano");
    assert_eq!(n(UsbCKeychain, false), "YubiKey 5C");
    assert_eq!(n(UsbCKeychain, true), "YubiKey 5C NFC");
    assert_eq!(n(UsbCNano, false), "YubiKey 5C Nano");
    assert_eq!(n(UsbCLightning, false), "YubiKey 5Ci");
    assert_eq!(n(UsbABio, false), "YubiKey Bio - Multi-protocol Edition");
    assert_eq!(n(UsbCBio, false), "YubiKey C Bio - Multi-protocol Edition");
    assert_eq!(n(Unknown, false), "YubiKey 5");
    assert_eq!(n(Unknown, true), "YubiKey 5 NFC");

    let fips = |ff, nfc| name(ff, nfc, true, false, None, false);
    assert_eq!(fips(UsbAKeychain, false), "YubiKey 5A FIPS");
    assert_eq!(fips(UsbAKeychain, true), "YubiKey 5 NFC FIPS");
    assert_eq!(fips(UsbANano, false), "YubiKey 5 Nano FIPS");
    assert_eq!(fips(UsbCKeychain, false), "YubiKey 5C FIPS");
    assert_eq!(fips(UsbCKeychain, true), "YubiKey 5C NFC FIPS");
    assert_eq!(fips(UsbCNano, false), "YubiKey 5C Nano FIPS");
    assert_eq!(fips(UsbCLightning, false), "YubiKey 5Ci FIPS");
    assert_eq!(fips(Unknown, false), "YubiKey 5 FIPS");
    assert_eq!(fips(Unknown, true), "YubiKey 5 NFC FIPS");

    for serial in [None, Some(123456)] {
        let suffix = if serial.is_some() { " - Enterprise Edition" } else { "" };
        let sky = |ff, nfc| name(ff, nfc, false, true, serial, false);
        assert_eq!(sky(UsbAKeychain, false), format!("Security Key A{suffix}"));
        assert_eq!(sky(UsbAKeychain, true), format!("Security Key NFC{suffix}"));
        assert_eq!(sky(UsbANano, false), format!("Security Key Nano{suffix}"));
        assert_eq!(sky(UsbCKeychain, false), format!("Security Key C{suffix}"));
        assert_eq!(sky(UsbCKeychain, true), format!("Security Key C NFC{suffix}"));
        assert_eq!(sky(UsbCNano, false), format!("Security Key C Nano{suffix}"));
        assert_eq!(sky(UsbCLightning, false), format!("Security Key Ci{suffix}"));
        assert_eq!(sky(Unknown, false), format!("Security Key{suffix}"));
        assert_eq!(sky(Unknown, true), format!("Security Key NFC{suffix}"));
    }

    let pin = |ff, nfc| name(ff, nfc, false, false, None, true);
    assert_eq!(pin(UsbAKeychain, false), "YubiKey 5A - Enhanced PIN");
    assert_eq!(pin(UsbAKeychain, true), "YubiKey 5 NFC - Enhanced PIN");
    assert_eq!(pin(UsbCKeychain, true), "YubiKey 5C NFC - Enhanced PIN");

    let mut bio = base();
    bio.supported.usb = Some(C(0x0202));
    bio.form_factor = UsbABio;
    assert_eq!(product_name(&bio, Some(KeyType::Yk4)), "YubiKey Bio - FIDO Edition");
    bio.form_factor = UsbCBio;
    bio.supported.usb = Some(C(0x0202 | 0x0004 | 0x0400));
    assert_eq!(product_name(&bio, Some(KeyType::Yk4)), "YubiKey C Bio - FIDO Edition");
}

#[test]
fn names_by_family_and_guess() {
    let mut i = DeviceInfo::synthesized(Version::new(3, 4, 3), Some(1), Default::default());
    i.supported.usb = Some(C(0x3F));
    assert_eq!(product_name(&i, None), "YubiKey NEO");
    i.version = Version::new(4, 3, 7);
    assert_eq!(product_name(&i, None), "YubiKey 4");
    i.version = Version::new(4, 4, 2);
    i.is_fips = true;
    assert_eq!(product_name(&i, None), "YubiKey FIPS (4 Series)");
    i.is_fips = false;
    i.supported.usb = Some(C::OTP.union(C::U2F));
    assert_eq!(product_name(&i, None), "YubiKey Edge");
    i.version = Version::new(0, 0, 1);
    assert_eq!(product_name(&i, None), "YubiKey (0.0.1)");
    i.version = Version::new(5, 0, 2);
    assert_eq!(product_name(&i, None), "YubiKey Preview");

    // Over NFC with no serial and only FIDO: a Security Key before 5.2.8.
    let mut sky = DeviceInfo::synthesized(Version::new(5, 2, 7), None, Default::default());
    sky.supported.usb = Some(C(0x0202));
    sky.supported.nfc = Some(C(0x0202));
    assert_eq!(product_name(&sky, None), "Security Key NFC");
    sky.supported.nfc = None;
    assert_eq!(product_name(&sky, None), "Security Key by Yubico");
    sky.supported.usb = Some(C::U2F);
    assert_eq!(product_name(&sky, None), "FIDO U2F Security Key");
    assert_eq!(product_name(&sky, Some(KeyType::Neo)), "YubiKey NEO");
    assert_eq!(product_name(&sky, Some(KeyType::Plus)), "YubiKey Plus");
    // From 5.2.8 on, such a key is guessed to be a YubiKey unless its form factor says SKY.
    sky.version = Version::new(5, 4, 3);
    sky.supported.nfc = Some(C(0x0202));
    assert_eq!(product_name(&sky, None), "YubiKey 5 NFC");
    sky.is_sky = true;
    sky.form_factor = FormFactor::UsbAKeychain;
    assert_eq!(product_name(&sky, None), "Security Key NFC");
}

#[test]
fn fixups_strip_nfc_from_keys_without_an_antenna() {
    let with = |ff: FormFactor, v: Version| {
        let mut i = DeviceInfo::synthesized(v, Some(1), Default::default());
        i.form_factor = ff;
        i.supported.usb = Some(C(0x023F));
        i.enabled.usb = Some(C(0x023F));
        i.supported.nfc = Some(C(0x023F));
        apply_fixups(i, Some(KeyType::Yk4), UsbInterfaces(7))
    };
    for ff in [FormFactor::UsbANano, FormFactor::UsbCNano, FormFactor::UsbCLightning] {
        let i = with(ff, Version::new(5, 7, 0));
        assert_eq!((i.supported.nfc, i.enabled.nfc), (None, None), "{ff:?}");
    }
    let early_c = with(FormFactor::UsbCKeychain, Version::new(5, 2, 3));
    assert_eq!(early_c.supported.nfc, None);
    let late_c = with(FormFactor::UsbCKeychain, Version::new(5, 2, 4));
    assert_eq!(late_c.supported.nfc, Some(C(0x023F)));
    assert_eq!(late_c.enabled.nfc, Some(C(0x023F)), "enabled NFC defaults to supported");
}

#[test]
fn fixups_derive_usb_enabled_from_pid() {
    let mut i = DeviceInfo::synthesized(Version::new(4, 3, 7), Some(1), Default::default());
    i.supported.usb = Some(C(0x3F));
    let i = apply_fixups(i, Some(KeyType::Yk4), UsbInterfaces(0x03));
    assert_eq!(i.enabled.usb, Some(C(0x3F & !(0x04 | 0x08 | 0x10 | 0x20))));

    let mut edge = DeviceInfo::synthesized(Version::new(4, 3, 7), Some(1), Default::default());
    edge.supported.usb = Some(C(0x07));
    let edge = apply_fixups(edge, Some(KeyType::Yk4), UsbInterfaces(0x07));
    assert_eq!(edge.supported.usb, Some(C(0x03)));

    let mut fips4 = DeviceInfo::synthesized(Version::new(4, 4, 5), Some(1), Default::default());
    fips4.supported.usb = Some(C(0x3F));
    assert!(apply_fixups(fips4, Some(KeyType::Sky), UsbInterfaces(2)).is_fips);

    let mut sky = DeviceInfo::synthesized(Version::new(5, 1, 0), None, Default::default());
    sky.supported.usb = Some(C(0x0202));
    assert!(apply_fixups(sky, Some(KeyType::Sky), UsbInterfaces(2)).is_sky);
}
