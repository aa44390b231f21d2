//! How a key read by `keytally-device` becomes a [`DeviceRecord`].
//!
//! | record field | from |
//! |---|---|
//! | `yubikey.serialNumber` | DeviceInfo serial as a decimal string, `null` when none |
//! | `yubikey.uniqueId` | the serial; for keys without one, a UUIDv5 of agent id, reader and DeviceInfo |
//! | `yubikey.firmwareVersion` | `major.minor.patch` |
//! | `yubikey.name`, `model.name` | the product name, as ykman derives it |
//! | `model.formFactor` | form factor 0–7 (FIPS/SKY flags go to `observation`) |
//! | `model.interfaces` | `[mask]`, USB = 1, NFC = 2 |
//! | `model.usbCapabilities`, `nfcCapabilities` | supported capability bits, ascending; `[]` for an absent transport |
//! | `enabledUSBCapabilities`, `enabledNFCCapabilities` | enabled capability bits, ascending |
//! | `lastUpdate`, `lastUsed` | the observation time, RFC 3339 UTC |
//! | `code`, `orgCode`, `model.code`, `prodLineCode`, `model.uniqueId` | `null`: only the server knows them |
//! | `observation.posture` | `keytally_device::posture::Posture` field by field ([`set_posture`]); absent when posture was not read |

use std::time::SystemTime;

use keytally_device::caps::{Capabilities, Transport};
use keytally_device::identify::Identified;
use serde_json::Map;
use uuid::Uuid;

use crate::record::{DeviceRecord, Model, Observation, Owners, YubiKey};

/// The agent-side facts that go into every record.
#[derive(Debug, Clone)]
pub struct ObservationContext {
    pub agent_id: Uuid,
    pub host: String,
    pub observed_at: SystemTime,
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-05-05T14:11:42.780Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn bits(c: Option<Capabilities>) -> Vec<u32> {
    c.map(Capabilities::set_bits).unwrap_or_default()
}

/// The key's identity. With a serial it is the serial itself, so every agent names the same
/// key the same way. Without one (Security Keys), it is a name-based UUID of the agent, the
/// place the key was read and what it reports: stable for the same key at the same reader.
pub fn unique_id(key: &Identified, place: Option<&str>, agent_id: Uuid) -> String {
    match key.info.serial {
        Some(serial) => serial.to_string(),
        None => {
            let i = &key.info;
            let fingerprint = format!(
                "{}|{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}",
                key.transport.as_str(),
                place.unwrap_or(""),
                key.name,
                i.version,
                i.form_factor.code(),
                i.supported.usb,
                i.supported.nfc,
                i.enabled.usb,
                i.enabled.nfc,
            );
            format!("noserial-{}", Uuid::new_v5(&agent_id, fingerprint.as_bytes()))
        }
    }
}

/// Builds the record for one key. `place` is the reader name (PC/SC) or port path (USB).
pub fn record_for(key: &Identified, place: Option<&str>, ctx: &ObservationContext) -> DeviceRecord {
    let info = &key.info;
    let now = rfc3339(ctx.observed_at);
    let mask = u32::from(info.supported.usb.is_some()) | (u32::from(info.supported.nfc.is_some()) << 1);
    let yubikey = YubiKey {
        code: None,
        org_code: None,
        name: key.name.clone(),
        description: None,
        unique_id: unique_id(key, place, ctx.agent_id),
        serial_number: info.serial.map(|s| s.to_string()),
        alternative_serial_number: None,
        firmware_version: info.version.to_string(),
        model: Model {
            code: None,
            name: key.name.clone(),
            unique_id: None,
            prod_line_code: None,
            form_factor: info.form_factor.code(),
            interfaces: vec![mask],
            usb_capabilities: bits(info.supported.usb),
            nfc_capabilities: bits(info.supported.nfc),
            extra: Map::new(),
        },
        enabled_usb_capabilities: bits(info.enabled.usb),
        enabled_nfc_capabilities: bits(info.enabled.nfc),
        last_update: Some(now.clone()),
        last_used: Some(now.clone()),
        status: None,
        extra: Map::new(),
    };
    let observation = Observation {
        transport: key.transport.as_str().to_string(),
        reader: place.map(str::to_string),
        host: ctx.host.clone(),
        agent_id: ctx.agent_id.to_string(),
        observed_at: now,
        fips_capable: info.fips_capable.set_bits(),
        fips_approved: info.fips_approved.set_bits(),
        fips_series: info.is_fips,
        security_key: info.is_sky,
        pin_complexity: info.pin_complexity,
        nfc_restricted: info.nfc_restricted,
        config_locked: info.is_locked,
        part_number: info.part_number.clone(),
        version_name: info.version_name(),
        version_qualifier: info.version_qualifier.to_string(),
        reset_blocked: info.reset_blocked.set_bits(),
        fps_version: info.fps_version.map(|v| v.to_string()),
        stm_version: info.stm_version.map(|v| v.to_string()),
        usb_pid: key.pid.map(|p| p.to_string()),
        tapped_at: None,
        posture: None,
        extra: Map::new(),
    };
    DeviceRecord {
        yubikey,
        owners: Owners::default(),
        tags: Vec::new(),
        status: None,
        observation: Some(observation),
        extra: Map::new(),
    }
}

/// `observation.posture` from the device layer's posture, field by field.
pub fn posture_record(p: &keytally_device::posture::Posture) -> crate::record::Posture {
    crate::record::Posture {
        piv_pin_default: p.piv_pin_default,
        piv_puk_default: p.piv_puk_default,
        piv_management_key_default: p.piv_management_key_default,
        piv_pin_retries: p.piv_pin_retries,
        piv_puk_retries: p.piv_puk_retries,
        fido2_pin_set: p.fido2_pin_set,
        fido2_uv_enrolled: p.fido2_uv_enrolled,
        fido2_force_pin_change: p.fido2_force_pin_change,
        fido2_min_pin_length: p.fido2_min_pin_length,
        fido2_remaining_discoverable_credentials: p.fido2_remaining_discoverable_credentials,
        openpgp_pin_retries: p.openpgp_pin_retries,
        oath_password_set: p.oath_password_set,
        otp_slots_configured: p.otp_slots_configured,
    }
}

/// Puts the posture read (if any) into the record's observation; `None` leaves it absent.
pub fn set_posture(record: &mut DeviceRecord, posture: Option<&keytally_device::posture::Posture>) {
    if let Some(o) = record.observation.as_mut() {
        o.posture = posture.map(posture_record);
    }
}

/// Whether a record came over NFC (kiosk taps) or USB.
pub fn transport_of(record: &DeviceRecord) -> Option<Transport> {
    match record.observation.as_ref()?.transport.as_str() {
        "usb" => Some(Transport::Usb),
        "nfc" => Some(Transport::Nfc),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keytally_device::caps::FormFactor;
    use keytally_device::device_info::{DeviceInfo, PerTransport};
    use keytally_device::version::Version;

    fn key(serial: Option<u32>) -> Identified {
        let mut info = DeviceInfo::synthesized(
            Version::new(5, 4, 3),
            serial,
            PerTransport { usb: Some(Capabilities(0x023F)), nfc: Some(Capabilities(0x023F)) },
        );
        info.enabled = info.supported;
        info.form_factor = FormFactor::UsbAKeychain;
        Identified { info, key_type: None, name: "YubiKey 5 NFC".into(), transport: Transport::Nfc, pid: None }
    }

    fn ctx() -> ObservationContext {
        ObservationContext {
            agent_id: Uuid::from_u128(7),
            host: "desk-1".into(),
            observed_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_780_000_000_123),
        }
    }

    #[test]
    fn maps_a_yubikey_5_nfc() {
        let r = record_for(&key(Some(12345678)), Some("Virtual PCD 00 00"), &ctx());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["yubikey"]["serialNumber"], "12345678");
        assert_eq!(v["yubikey"]["uniqueId"], "12345678");
        assert_eq!(v["yubikey"]["firmwareVersion"], "5.4.3");
        assert_eq!(v["yubikey"]["model"]["interfaces"], serde_json::json!([3]));
        assert_eq!(v["yubikey"]["model"]["usbCapabilities"], serde_json::json!([1, 2, 4, 8, 16, 32, 512]));
        assert_eq!(v["yubikey"]["enabledNFCCapabilities"], serde_json::json!([1, 2, 4, 8, 16, 32, 512]));
        assert_eq!(v["yubikey"]["model"]["formFactor"], 1);
        assert_eq!(v["yubikey"]["lastUpdate"], "2026-05-28T20:26:40.123Z");
        assert!(v["yubikey"]["code"].is_null() && v["yubikey"]["model"]["prodLineCode"].is_null());
        assert_eq!(v["observation"]["transport"], "nfc");
        assert_eq!(v["observation"]["agentId"], "00000000-0000-0000-0000-000000000007");
    }

    #[test]
    fn keys_without_serial_get_a_stable_id() {
        let a = unique_id(&key(None), Some("reader A"), Uuid::from_u128(1));
        assert!(a.starts_with("noserial-"));
        assert_eq!(a, unique_id(&key(None), Some("reader A"), Uuid::from_u128(1)));
        assert_ne!(a, unique_id(&key(None), Some("reader B"), Uuid::from_u128(1)));
        let r = record_for(&key(None), None, &ctx());
        assert!(r.yubikey.serial_number.is_none());
        assert!(!r.yubikey.unique_id.is_empty());
    }

    #[test]
    fn posture_is_absent_unless_read_and_null_where_unknown() {
        let mut r = record_for(&key(Some(1)), None, &ctx());
        assert!(serde_json::to_value(&r).unwrap()["observation"].get("posture").is_none());
        let p = keytally_device::posture::Posture {
            piv_pin_default: Some(true),
            piv_pin_retries: Some(3),
            openpgp_pin_retries: Some([3, 0, 3]),
            otp_slots_configured: Some([true, false]),
            fido2_min_pin_length: Some(4),
            ..Default::default()
        };
        set_posture(&mut r, Some(&p));
        let v = serde_json::to_value(&r).unwrap()["observation"]["posture"].clone();
        assert_eq!(
            v,
            serde_json::json!({
                "pivPinDefault": true, "pivPukDefault": null, "pivManagementKeyDefault": null,
                "pivPinRetries": 3, "pivPukRetries": null,
                "fido2PinSet": null, "fido2UvEnrolled": null, "fido2ForcePinChange": null,
                "fido2MinPinLength": 4, "fido2RemainingDiscoverableCredentials": null,
                "openpgpPinRetries": [3, 0, 3], "oathPasswordSet": null, "otpSlotsConfigured": [true, false]
            })
        );
        // And back: a record from the server keeps it.
        let back: DeviceRecord = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn absent_transport_is_empty() {
        let mut k = key(Some(1));
        k.info.supported.nfc = None;
        k.info.enabled.nfc = None;
        let r = record_for(&k, None, &ctx());
        assert_eq!(r.yubikey.model.interfaces, vec![1]);
        assert!(r.yubikey.model.nfc_capabilities.is_empty());
        assert!(r.yubikey.enabled_nfc_capabilities.is_empty());
    }
}
