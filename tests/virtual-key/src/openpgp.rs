//! The OpenPGP applet's read-only data objects (OpenPGP card spec 3.4, as a YubiKey with no
//! keys loaded answers them): Application Related Data (`6E`) with the PW status bytes (`C4`)
//! from the model's [`crate::posture::Posture`], the version (`INS F1`), KDF (`F9`) and UIF.

use crate::model::{KeyModel, Version};
use crate::posture::PostureFault;

/// A BER-TLV with a one- or two-byte tag and a definite length.
fn tlv(tag: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 5);
    if tag > 0xFF {
        out.extend_from_slice(&tag.to_be_bytes());
    } else {
        out.push(tag as u8);
    }
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => {
            out.push(0x82);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

/// Whether the applet implements OpenPGP card 3.4 (firmware 5.2 and later: attestation key,
/// key information `DE`, UIF inside the discretionary data).
fn v34(m: &KeyModel) -> bool {
    m.version >= Version::new(5, 2, 0)
}

/// The application version as `INS F1` answers it (BCD of the firmware on a YubiKey 4/5).
pub fn version_bcd(m: &KeyModel) -> Vec<u8> {
    let bcd = |n: u8| (n / 10) << 4 | (n % 10);
    let v = m.version;
    vec![bcd(v.major), bcd(v.minor), bcd(v.patch)]
}

/// The full AID (`4F`): RID+PIX, spec version, manufacturer 0x0006 (Yubico), serial (BCD).
pub fn aid(m: &KeyModel) -> Vec<u8> {
    let mut a = vec![0xD2, 0x76, 0x00, 0x01, 0x24, 0x01];
    a.extend_from_slice(if v34(m) { &[0x03, 0x04] } else { &[0x02, 0x01] });
    a.extend_from_slice(&[0x00, 0x06]);
    let digits = format!("{:08}", m.serial.unwrap_or(0) % 100_000_000);
    for pair in digits.as_bytes().chunks(2) {
        a.push((pair[0] - b'0') << 4 | (pair[1] - b'0'));
    }
    a.extend_from_slice(&[0x00, 0x00]);
    a
}

/// PW status bytes (`C4`): PW1 valid for one signature, max lengths 127, then the remaining
/// tries of PW1, the reset code and PW3.
pub fn pw_status(m: &KeyModel) -> Vec<u8> {
    let [pw1, rc, pw3] = m.posture.openpgp_pin_retries;
    if m.posture_fault == Some(PostureFault::OpenPgpPwStatusShort) {
        return vec![0x01, 0x7F];
    }
    vec![0x01, 0x7F, 0x7F, 0x7F, pw1, rc, pw3]
}

/// User interaction flag (`D6`–`D9`): touch off, button present.
const UIF_OFF: [u8; 2] = [0x00, 0x20];

/// Application Related Data (`6E`), as a key without keys answers it.
pub fn application_related_data(m: &KeyModel) -> Vec<u8> {
    let rsa2048 = [0x01, 0x08, 0x00, 0x00, 0x11, 0x00];
    let keys = if v34(m) { 4 } else { 3 };
    let mut disc = Vec::new();
    let ext_flags = if v34(m) { 0x7D } else { 0x7C }; // 0x01 = KDF (fw 5.2+)
    disc.extend(tlv(
        0xC0,
        &[
            ext_flags, 0x00, 0x0B, 0xFE, 0x08, 0x00, 0x00, 0xFF, 0x00, 0x00,
        ],
    ));
    disc.extend(tlv(0xC1, &rsa2048));
    disc.extend(tlv(0xC2, &rsa2048));
    disc.extend(tlv(0xC3, &rsa2048));
    if v34(m) {
        disc.extend(tlv(0xDA, &rsa2048));
    }
    disc.extend(tlv(0xC4, &pw_status(m)));
    disc.extend(tlv(0xC5, &vec![0; 20 * keys]));
    disc.extend(tlv(0xC6, &vec![0; 20 * keys]));
    disc.extend(tlv(0xCD, &vec![0; 4 * keys]));
    if v34(m) {
        disc.extend(tlv(0xDE, &[0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x81, 0x00]));
        for tag in [0xD6, 0xD7, 0xD8, 0xD9] {
            disc.extend(tlv(tag, &UIF_OFF));
        }
    }
    let mut inner = tlv(0x4F, &aid(m));
    inner.extend(tlv(
        0x5F52,
        &[0x00, 0x73, 0x00, 0x00, 0xE0, 0x05, 0x90, 0x00],
    ));
    if v34(m) {
        inner.extend(tlv(0x7F74, &[0x81, 0x01, 0x20]));
        inner.extend(tlv(
            0x7F66,
            &[0x02, 0x02, 0x0B, 0xFE, 0x02, 0x02, 0x0B, 0xFE],
        ));
    }
    inner.extend(tlv(0x73, &disc));
    tlv(0x6E, &inner)
}

/// GET DATA (`INS CA`, P1P2 = tag): the objects `ykman openpgp info` reads, or `None`
/// (the card answers "referenced data not found").
pub fn get_data(m: &KeyModel, tag: u16) -> Option<Vec<u8>> {
    match tag {
        0x006E => Some(application_related_data(m)),
        0x004F => Some(aid(m)),
        0x00C4 => Some(pw_status(m)),
        0x00F9 if v34(m) => Some(vec![0x81, 0x01, 0x00]), // KDF: none
        0x00D6..=0x00D8 => Some(UIF_OFF.to_vec()),
        0x00D9 if v34(m) => Some(UIF_OFF.to_vec()),
        0x007A => Some(tlv(0x7A, &tlv(0x93, &[0, 0, 0]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture;

    #[test]
    fn aid_is_bcd_serial() {
        let m = KeyModel::preset("yk5nfc").unwrap();
        assert_eq!(
            aid(&m),
            [0xD2, 0x76, 0, 1, 0x24, 1, 3, 4, 0, 6, 0x12, 0x34, 0x56, 0x78, 0, 0]
        );
        assert_eq!(version_bcd(&m), [5, 4, 3]);
    }

    #[test]
    fn pw_status_is_in_the_application_data() {
        let m = KeyModel::preset("yk5cnfc")
            .unwrap()
            .with_posture(posture::hardened());
        let ard = application_related_data(&m);
        assert_eq!(&ard[..2], &[0x6E, 0x82]);
        assert_eq!(
            usize::from(u16::from_be_bytes([ard[2], ard[3]])),
            ard.len() - 4
        );
        let c4 = [0xC4, 0x07, 0x01, 0x7F, 0x7F, 0x7F, 2, 1, 3];
        assert!(ard.windows(c4.len()).any(|w| w == c4));
        assert_eq!(
            get_data(&m, 0xC4),
            Some(vec![0x01, 0x7F, 0x7F, 0x7F, 2, 1, 3])
        );
        assert_eq!(get_data(&m, 0x0101), None);
    }
}
