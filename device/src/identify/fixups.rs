//! Post-read fix-ups: yubikit's corrections of what older or odd keys report.

use crate::caps::{Capabilities, FormFactor, Transport};
use crate::device_info::DeviceInfo;
use crate::version::Version;

use crate::usb_ids::{KeyType, UsbInterfaces};

/// Applies yubikit's `read_info` corrections.
///
/// One deliberate difference: for keys known to have no NFC (Nano, 5Ci, 5C before 5.2.4)
/// both the enabled *and the supported* NFC capabilities are removed. ykman 5.9 means to do
/// this but discards the result of `dataclasses.replace`, so it keeps NFC as "supported";
/// yubikit-android removes it, and so do we.
pub fn apply_fixups(mut info: DeviceInfo, key_type: Option<KeyType>, interfaces: UsbInterfaces) -> DeviceInfo {
    // USB enabled is missing before YubiKey 5: derive it from supported and the PID.
    if let (Some(supported), None) = (info.supported.usb, info.enabled.usb) {
        let mut enabled = supported;
        let edge = Capabilities::OTP.union(Capabilities::U2F).union(Capabilities::CCID);
        if supported == edge {
            // YubiKey Edge: hide the unusable CCID bit from supported too.
            info.supported.usb = Some(Capabilities::OTP.union(Capabilities::U2F));
        }
        if !interfaces.contains(UsbInterfaces::OTP) {
            enabled = enabled.without(Capabilities::OTP);
        }
        if !interfaces.contains(UsbInterfaces::FIDO) {
            enabled = enabled.without(Capabilities::FIDO_APPS);
        }
        if !interfaces.contains(UsbInterfaces::CCID) {
            enabled = enabled.without(Capabilities(
                Capabilities::CCID.0 | Capabilities::OATH.0 | Capabilities::OPENPGP.0 | Capabilities::PIV.0,
            ));
        }
        info.enabled.usb = Some(enabled);
    }

    if key_type == Some(KeyType::Sky) {
        info.is_sky = true;
    }
    if Version::new(4, 4, 0) <= info.version && info.version < Version::new(4, 5, 0) {
        info.is_fips = true;
    }

    if let Some(nfc) = info.supported.nfc {
        if info.enabled.nfc.is_none() {
            info.enabled.nfc = Some(nfc);
        }
        if known_without_nfc(&info) {
            info.supported.nfc = None;
            info.enabled.nfc = None;
        }
    }
    debug_assert!(info.supported.get(Transport::Nfc).is_some() || info.enabled.nfc.is_none());
    info
}

/// Form factors that have no NFC antenna, whatever the firmware says.
fn known_without_nfc(info: &DeviceInfo) -> bool {
    matches!(info.form_factor, FormFactor::UsbANano | FormFactor::UsbCNano | FormFactor::UsbCLightning)
        || (info.form_factor == FormFactor::UsbCKeychain && info.version < Version::new(5, 2, 4))
}
