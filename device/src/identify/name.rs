//! The product name ("YubiKey 5C NFC"), derived exactly as yubikit's `get_name`.

use crate::caps::{Capabilities, FormFactor, Transport};
use crate::device_info::DeviceInfo;
use crate::version::Version;

use crate::usb_ids::KeyType;

/// Pre-release firmware ranges that ykman names "YubiKey Preview".
const PREVIEW_RANGES: [(Version, Version); 3] = [
    (Version::new(5, 0, 0), Version::new(5, 1, 0)),
    (Version::new(5, 2, 0), Version::new(5, 2, 3)),
    (Version::new(5, 5, 0), Version::new(5, 5, 2)),
];

fn is_preview(v: Version) -> bool {
    PREVIEW_RANGES.iter().any(|(lo, hi)| *lo <= v && v < *hi)
}

/// The family of a key read without a USB PID (over NFC), guessed from its version and
/// capabilities as yubikit's `get_name` does: 3.x is a NEO, a FIDO-only key without a serial
/// is a Security Key before 5.2.8, anything else is named as a YubiKey 4/5.
pub fn nfc_key_type(info: &DeviceInfo) -> KeyType {
    if info.version.major == 3 {
        KeyType::Neo
    } else if info.serial.is_none() && info.supported.usb.unwrap_or_default().is_fido_only() {
        if info.version < Version::new(5, 2, 8) {
            KeyType::Sky
        } else {
            KeyType::Yk4
        }
    } else {
        KeyType::Yk4
    }
}

/// Names a key. `key_type` is the family from the USB PID, or `None` over NFC, where the
/// family is guessed from the version and capabilities ([`nfc_key_type`]).
pub fn product_name(info: &DeviceInfo, key_type: Option<KeyType>) -> String {
    let usb = info.supported.usb.unwrap_or_default();
    let key_type = key_type.unwrap_or_else(|| nfc_key_type(info));

    match key_type {
        KeyType::Sky => {
            if info.has_transport(Transport::Nfc) {
                "Security Key NFC".into()
            } else if !usb.contains(Capabilities::FIDO2) {
                "FIDO U2F Security Key".into()
            } else {
                key_type.family_name().into()
            }
        }
        KeyType::Yk4 => yk4_name(info, usb),
        other => other.family_name().into(),
    }
}

fn yk4_name(info: &DeviceInfo, usb: Capabilities) -> String {
    let v = info.version;
    let mut name = KeyType::Yk4.family_name().to_string();
    if v.major < 4 {
        return if v.major == 0 { format!("YubiKey ({v})") } else { name };
    }
    if v.major == 4 {
        name = if info.is_fips {
            "YubiKey FIPS (4 Series)".into()
        } else if usb == Capabilities::OTP.union(Capabilities::U2F) {
            "YubiKey Edge".into()
        } else {
            "YubiKey 4".into()
        };
    }
    if is_preview(v) {
        return "YubiKey Preview".into();
    }
    if v < Version::new(5, 1, 0) {
        return name;
    }

    let ff = info.form_factor;
    let mut parts: Vec<&str> = if info.is_sky {
        vec!["Security Key"]
    } else if ff.is_bio() {
        vec!["YubiKey"]
    } else {
        vec!["YubiKey", "5"]
    };
    if ff.is_usb_c() {
        parts.push("C");
    } else if ff == FormFactor::UsbCLightning {
        parts.push("Ci");
    }
    if ff.is_nano() {
        parts.push("Nano");
    } else if info.has_transport(Transport::Nfc) {
        parts.push("NFC");
    } else if ff == FormFactor::UsbAKeychain {
        parts.push("A");
    } else if ff.is_bio() {
        parts.push("Bio");
    }
    if info.is_fips {
        parts.push("FIPS");
    } else if ff.is_bio() {
        if usb.is_fido_only() {
            parts.push("- FIDO Edition");
        } else if usb.contains(Capabilities::PIV) {
            parts.push("- Multi-protocol Edition");
        }
    } else if info.is_sky && info.serial.is_some() {
        parts.push("- Enterprise Edition");
    } else if info.pin_complexity && !info.is_sky {
        parts.push("- Enhanced PIN");
    }
    parts.join(" ").replace("5 C", "5C").replace("5 A", "5A")
}
