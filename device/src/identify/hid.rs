//! Identification over the HID interfaces: yubikit's `_read_info_otp` and `_read_info_ctap`,
//! each with its synthesized fallback for keys that have no READ CONFIG.

use std::thread::sleep;
use std::time::Duration;

use crate::caps::{Capabilities, FormFactor, Transport};
use crate::device_info::{DeviceInfo, PerTransport};
use crate::error::Error;
use crate::management::{otp_serial, CtapManagement, OtpManagement};
use crate::transport::ctaphid::CtapHidDevice;
use crate::transport::otp_hid::OtpProtocol;
use crate::version::Version;

use crate::usb_ids::{KeyType, Pid, UsbInterfaces};
use super::{finish, Identified};

/// The NEO's applications, as yubikit assumes them when it cannot ask.
const BASE_NEO_APPS: Capabilities =
    Capabilities(Capabilities::OTP.0 | Capabilities::OATH.0 | Capabilities::PIV.0 | Capabilities::OPENPGP.0);

/// After another interface was used, the OTP interface rejects commands for a moment
/// ("reclaim"). ykman retries its first command 6 × 0.5 s; so do we, and only then.
#[derive(Debug, Clone, Copy)]
pub struct Reclaim {
    /// How many times the first command is tried in all.
    pub tries: u32,
    /// The pause between tries.
    pub wait: Duration,
}

impl Default for Reclaim {
    fn default() -> Self {
        Self { tries: 6, wait: Duration::from_millis(500) }
    }
}

impl Reclaim {
    /// One try, no retry (for reads that know the OTP interface was not just used).
    pub const NONE: Self = Self { tries: 1, wait: Duration::ZERO };

    /// Runs `f`, retrying while the key answers "rejected".
    fn run<T>(self, mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        let mut tries = 1;
        loop {
            match f() {
                Err(Error::CommandRejected) if tries < self.tries => {
                    tracing::debug!(tries, "OTP command rejected, maybe in reclaim; retrying");
                    tries += 1;
                    sleep(self.wait);
                }
                other => return other,
            }
        }
    }
}

/// Reads a key over its OTP HID interface.
///
/// Normal path: DeviceInfo from slot 0x13, page by page. Firmware before 4.1 gets the
/// synthesized DeviceInfo: the serial from slot 0x10 (none if the key refuses), the version
/// from the status report, and the applications its family is known to have.
pub fn identify_otp(protocol: &mut OtpProtocol<'_>, pid: Pid, reclaim: Reclaim) -> Result<Identified, Error> {
    let key_type = pid.key_type();
    let interfaces = pid.interfaces();
    // An OTP-only key has no other interface to come back from.
    let reclaim = if interfaces == UsbInterfaces::OTP { Reclaim::NONE } else { reclaim };

    let from_management = match OtpManagement::new(protocol) {
        Ok(mut mgmt) => match reclaim.run(|| mgmt.read_device_info()) {
            Ok(info) => Some(info),
            Err(Error::NotSupported(_)) => None,
            Err(e) => return Err(e),
        },
        Err(Error::NotSupported(_)) => None,
        Err(e) => return Err(e),
    };
    let info = match from_management {
        Some(info) => info,
        None => {
            let serial = match reclaim.run(|| otp_serial(protocol)) {
                Ok(serial) => serial,
                Err(Error::CommandRejected) => None,
                Err(e) => return Err(e),
            };
            let version = protocol.version;
            let caps = match key_type {
                KeyType::Neo => {
                    let usb = with_u2f(BASE_NEO_APPS, interfaces, version);
                    PerTransport { usb: Some(usb), nfc: Some(usb) }
                }
                KeyType::Plus => PerTransport { usb: Some(Capabilities::OTP.union(Capabilities::U2F)), nfc: None },
                _ => PerTransport { usb: Some(Capabilities::OTP), nfc: None },
            };
            DeviceInfo::synthesized(version, serial, caps)
        }
    };
    Ok(finish(info, Some(key_type), interfaces, Transport::Usb, Some(pid)))
}

/// Reads a key over its FIDO HID interface.
///
/// Normal path: DeviceInfo through vendor command 0xC2, page by page. Keys that refuse it
/// (Security Key 1, NEO, YubiKey Plus) get yubikit's guess: U2F only (plus the NEO's
/// applications), keychain form factor, no serial.
pub fn identify_ctap(device: &mut CtapHidDevice<'_>, pid: Pid) -> Result<Identified, Error> {
    let key_type = pid.key_type();
    let interfaces = pid.interfaces();
    let mut mgmt = CtapManagement::new(device);
    let info = match mgmt.read_device_info() {
        Ok(info) => info,
        Err(e @ (Error::NotSupported(_) | Error::Ctap(_))) => {
            tracing::debug!("no DeviceInfo over CTAPHID ({e}); synthesizing");
            let version = if key_type == KeyType::Plus { Version::new(4, 0, 0) } else { Version::new(3, 0, 0) };
            let mut caps = PerTransport { usb: Some(Capabilities::U2F), nfc: None };
            if key_type == KeyType::Neo {
                let usb = Capabilities::U2F.union(BASE_NEO_APPS);
                caps = PerTransport { usb: Some(usb), nfc: Some(usb) };
            }
            let mut info = DeviceInfo::synthesized(version, None, caps);
            info.form_factor = FormFactor::UsbAKeychain;
            info
        }
        Err(e) => return Err(e),
    };
    Ok(finish(info, Some(key_type), interfaces, Transport::Usb, Some(pid)))
}

/// U2F is there when the PID has FIDO or the firmware is 3.3.0 or later.
fn with_u2f(caps: Capabilities, interfaces: UsbInterfaces, version: Version) -> Capabilities {
    if interfaces.contains(UsbInterfaces::FIDO) || version >= Version::new(3, 3, 0) {
        caps.union(Capabilities::U2F)
    } else {
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ctaphid::tests::{fast as ctap_fast, FakeFido};
    use crate::transport::ctaphid::cmd;
    use crate::transport::otp_hid::tests::{fast as otp_fast, FakeOtp};

    /// DeviceInfo of a YubiKey 5C NFC (5.7.4) split over two pages, as the key pages it.
    const PAGE0: &str = "0102033f0302033f0204020b885b04010305030507040602000007010f0801000d02033f0e02033f0a01000f010020030000002103000000100101";
    const PAGE1: &str = "110400000000120100130c3738434c5546583530303050140200001502000016010117010018020000";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn page(tlvs: &[u8]) -> Vec<u8> {
        [vec![tlvs.len() as u8], tlvs.to_vec()].concat()
    }

    fn pid(p: u16) -> Pid {
        Pid::new(p).unwrap()
    }

    #[test]
    fn otp_reads_both_pages_with_the_reference_reports() {
        let mut dev = FakeOtp::new([0, 5, 7, 4, 3, 0, 0, 0]);
        let p0 = page(&hex(PAGE0));
        let p1 = page(&hex(PAGE1));
        dev.answer(&FakeOtp::data_reports(&p0));
        dev.answer(&FakeOtp::data_reports(&p1));
        let mut otp = OtpProtocol::new(&mut dev, otp_fast()).unwrap();
        let key = identify_otp(&mut otp, pid(0x0407), Reclaim::NONE).unwrap();
        assert_eq!(key.name, "YubiKey 5C NFC - Enhanced PIN");
        assert_eq!(key.info.serial, Some(34310235));
        assert_eq!(key.info.part_number.as_deref(), Some("78CLUFX5000P"));
        assert_eq!(key.transport, Transport::Usb);
        let writes: Vec<[u8; 8]> = dev.written.iter().copied().filter(|r| r[7] & 0x80 != 0 && r[7] != 0xFF).collect();
        assert_eq!(
            writes,
            vec![
                [0, 0, 0, 0, 0, 0, 0, 0x80],
                [0x00, 0x13, 0x6B, 0x5B, 0, 0, 0, 0x89],
                [0x01, 0, 0, 0, 0, 0, 0, 0x80],
                [0x00, 0x13, 0x46, 0xC9, 0, 0, 0, 0x89],
            ]
        );
    }

    #[test]
    fn otp_retries_a_rejection_while_in_reclaim() {
        let idle = [0, 5, 4, 3, 3, 0, 0, 0];
        let mut dev = FakeOtp::new(idle);
        dev.answer(&[idle]); // rejected: still in reclaim
        dev.answer(&FakeOtp::data_reports(&page(&[0x01, 0x02, 0x02, 0x3F, 0x02, 0x04, 0x00, 0x00, 0x30, 0x39])));
        let mut otp = OtpProtocol::new(&mut dev, otp_fast()).unwrap();
        let reclaim = Reclaim { tries: 3, wait: Duration::ZERO };
        let key = identify_otp(&mut otp, pid(0x0405), reclaim).unwrap();
        assert_eq!(key.info.serial, Some(12345));

        // The retries are bounded: a key that never answers is an error, not a hang.
        let mut dev = FakeOtp::new(idle);
        let mut otp = OtpProtocol::new(&mut dev, otp_fast()).unwrap();
        assert_eq!(identify_otp(&mut otp, pid(0x0405), reclaim).unwrap_err(), Error::CommandRejected);
    }

    #[test]
    fn otp_synthesizes_for_a_neo_and_survives_a_hidden_serial() {
        let idle = [0, 3, 4, 3, 1, 0, 0, 0];
        let mut dev = FakeOtp::new(idle);
        let mut otp = OtpProtocol::new(&mut dev, otp_fast()).unwrap();
        let key = identify_otp(&mut otp, pid(0x0116), Reclaim::NONE).unwrap();
        assert_eq!(key.info.serial, None);
        assert_eq!(key.info.version, Version::new(3, 4, 3));
        assert_eq!(key.name, "YubiKey NEO");
        assert_eq!(key.info.supported.usb, Some(Capabilities(0x3B)));
        assert_eq!(key.info.supported.nfc, Some(Capabilities(0x3B)));

        let mut dev = FakeOtp::new(idle);
        dev.answer(&FakeOtp::data_reports(&[0x00, 0x6B, 0x95, 0x6A]));
        let mut otp = OtpProtocol::new(&mut dev, otp_fast()).unwrap();
        let key = identify_otp(&mut otp, pid(0x0110), Reclaim::NONE).unwrap();
        assert_eq!(key.info.serial, Some(7050602));
        assert_eq!(key.info.supported.usb, Some(Capabilities(0x3B)));
        // OTP-only mode: only OTP is enabled over USB.
        assert_eq!(key.info.enabled.usb, Some(Capabilities::OTP));
    }

    #[test]
    fn otp_refuses_a_bad_crc() {
        let mut dev = FakeOtp::new([0, 5, 4, 3, 3, 0, 0, 0]);
        let mut reports = FakeOtp::data_reports(&page(&[0x01, 0x01, 0x3F]));
        reports[0][2] ^= 0xFF;
        dev.answer(&reports);
        let mut otp = OtpProtocol::new(&mut dev, otp_fast()).unwrap();
        assert!(matches!(
            identify_otp(&mut otp, pid(0x0407), Reclaim::NONE),
            Err(Error::Parse(crate::error::ParseError::BadCrc))
        ));
    }

    const NONCE: [u8; 8] = [8, 7, 6, 5, 4, 3, 2, 1];
    const CID: u32 = 0x0000_0042;

    #[test]
    fn ctap_reads_device_info_with_0xc2() {
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [5, 7, 4], 0x05);
        dev.respond(CID, 0x42, &page(&hex(PAGE0)));
        dev.respond(CID, 0x42, &page(&hex(PAGE1)));
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, ctap_fast()).unwrap();
        let key = identify_ctap(&mut ctap, pid(0x0407)).unwrap();
        assert_eq!(key.name, "YubiKey 5C NFC - Enhanced PIN");
        assert_eq!(key.info.serial, Some(34310235));
        assert_eq!(dev.written[1][..8], [0, 0, 0, 0x42, 0xC2, 0x00, 0x01, 0x00]);
        assert_eq!(dev.written[2][..8], [0, 0, 0, 0x42, 0xC2, 0x00, 0x01, 0x01]);
    }

    #[test]
    fn ctap_synthesizes_for_keys_without_read_config() {
        // A Security Key that refuses the vendor command.
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [4, 1, 8], 0x01);
        dev.respond(CID, cmd::ERROR, &[0x01]);
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, ctap_fast()).unwrap();
        let key = identify_ctap(&mut ctap, pid(0x0120)).unwrap();
        assert_eq!(key.info.serial, None);
        assert_eq!(key.info.version, Version::new(3, 0, 0));
        assert!(key.info.is_sky);
        assert_eq!(key.name, "FIDO U2F Security Key");
        assert_eq!(key.info.form_factor, FormFactor::UsbAKeychain);

        // A NEO: INIT says 3.x, so nothing is asked.
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [3, 4, 3], 0x01);
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, ctap_fast()).unwrap();
        let key = identify_ctap(&mut ctap, pid(0x0113)).unwrap();
        assert_eq!(key.name, "YubiKey NEO");
        assert_eq!(key.info.supported.nfc, Some(Capabilities(0x3B)));
        assert_eq!(dev.written.len(), 1);
    }

    #[test]
    fn ctap_garbage_is_an_error_not_a_guess() {
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [5, 7, 4], 0x05);
        dev.respond(CID, 0x42, &[0x09, 0x01]);
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, ctap_fast()).unwrap();
        assert!(matches!(identify_ctap(&mut ctap, pid(0x0402)), Err(Error::Parse(_))));
    }
}
