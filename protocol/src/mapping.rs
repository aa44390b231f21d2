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
//! | `observation.advisories` | `keytally_device::advisory::assess` on the key's series, firmware, NFC, form factor and applications: `[{id, url, applies}]` sorted by id, `[]` when none applies, `null` when the firmware is unknown (never guessed); a posture read settles the conditions it answers ([`set_posture`], [`settle_advisories`]) |

use std::time::SystemTime;

use keytally_device::advisory::{assess, table, Applies, Assessment, KeyFacts, Match};
use keytally_device::caps::{Capabilities, Transport};
use keytally_device::identify::Identified;
use keytally_device::posture::Posture;
use serde_json::Map;
use uuid::Uuid;

use crate::record::{AdvisoryNotice, DeviceRecord, Model, Observation, Owners, YubiKey};

/// The agent-side facts that go into every record.
#[derive(Debug, Clone)]
pub struct ObservationContext {
    /// The installation's id (`observation.agentId`).
    pub agent_id: Uuid,
    /// The machine's host name.
    pub host: String,
    /// When the key was read.
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
        advisories: advisory_notices(&advisories_of(key)),
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

/// The advisories that concern a key as identification read it, before any posture read:
/// conditions that posture could settle stay open (`if …`).
pub fn advisories_of(key: &Identified) -> Assessment {
    let assessment = assess(&KeyFacts::from_identified(key));
    if let Assessment::Unknown(why) = &assessment {
        tracing::debug!(key = %key.name, "advisories not assessed: {why}");
    }
    assessment
}

/// `observation.advisories` from an assessment: one entry per advisory, in id order, `applies`
/// `yes` or `if <condition>`; `None` (`null`, not assessed) when the assessment is unknown.
pub fn advisory_notices(assessment: &Assessment) -> Option<Vec<AdvisoryNotice>> {
    let matches = assessment.matches()?;
    Some(
        matches
            .iter()
            .map(|m| AdvisoryNotice { id: m.id.clone(), url: m.url.clone(), applies: m.applies.to_string() })
            .collect(),
    )
}

/// Settles the record's advisory conditions with the posture it carries
/// (`observation.posture`, via `keytally_device::advisory::posture_answer`: OTP slots
/// configured, the OpenPGP reset code's tries, an OATH password). [`set_posture`] calls it;
/// so must whatever else gives a record a posture (the service's last-read posture). An
/// advisory whose condition the posture rules out leaves the list; one whose conditions all
/// hold becomes `yes`; the others stay `if …`. Without a posture nothing changes; a record
/// whose advisories were not assessed (firmware unknown) stays `null`; an entry the table
/// does not know stays as it is. Settling twice changes nothing more.
pub fn settle_advisories(record: &mut DeviceRecord) {
    let Some(o) = record.observation.as_mut() else { return };
    let (Some(posture), Some(notices)) = (o.posture.as_ref().map(device_posture), o.advisories.as_mut()) else { return };
    let Ok(rows) = table() else { return };
    notices.retain_mut(|notice| {
        let Some(row) = rows.iter().find(|r| r.id == notice.id).filter(|_| !notice.is_certain()) else {
            return true;
        };
        let words = notice.applies.strip_prefix("if ").unwrap_or(&notice.applies).to_string();
        let open = Match { id: row.id.clone(), url: notice.url.clone(), applies: Applies::If(words), open_conditions: row.condition_keys.clone() };
        match advisory_notices(&Assessment::Known(vec![open]).settle_with_posture(&posture)).unwrap_or_default().pop() {
            Some(settled) => {
                *notice = settled;
                true
            }
            None => false,
        }
    });
}

/// A posture struct built from another with the same fields (the device layer's and the
/// record's `observation.posture`), field by field: the one list of posture fields.
macro_rules! same_posture {
    ($to:path, $p:expr) => {{
        let p = $p;
        $to {
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
    }};
}

/// `observation.posture` from the device layer's posture, field by field.
pub fn posture_record(p: &keytally_device::posture::Posture) -> crate::record::Posture {
    same_posture!(crate::record::Posture, p)
}

/// Puts the posture read (if any) into the record's observation, and settles the advisory
/// conditions it answers ([`settle_advisories`]); `None` leaves it absent.
pub fn set_posture(record: &mut DeviceRecord, posture: Option<&keytally_device::posture::Posture>) {
    if let Some(o) = record.observation.as_mut() {
        o.posture = posture.map(posture_record);
    }
    settle_advisories(record);
}

/// The device layer's posture from `observation.posture` (the inverse of [`posture_record`]).
fn device_posture(p: &crate::record::Posture) -> Posture {
    same_posture!(Posture, p)
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

    fn advisories(r: &DeviceRecord) -> serde_json::Value {
        serde_json::to_value(r).unwrap()["observation"]["advisories"].clone()
    }

    #[test]
    fn advisories_of_a_5_4_3_key_with_urls_in_id_order() {
        let r = record_for(&key(Some(1)), None, &ctx());
        let url = |id: &str| format!("https://www.yubico.com/support/security-advisories/{}/", id.to_lowercase());
        let want: Vec<serde_json::Value> = ["YSA-2024-02", "YSA-2024-03", "YSA-2025-02"]
            .iter()
            .map(|id| serde_json::json!({"id": id, "url": url(id), "applies": "yes"}))
            .collect();
        assert_eq!(advisories(&r), serde_json::Value::Array(want));
    }

    #[test]
    fn a_fixed_firmware_has_an_empty_list_and_an_unknown_one_is_not_guessed() {
        let mut k = key(Some(1));
        k.info.version = Version::new(5, 7, 4);
        assert_eq!(advisories(&record_for(&k, None, &ctx())), serde_json::json!([]));
        // Firmware not read (0.0.0): `null`, never a guess from the name or the form factor.
        k.info.version = Version::default();
        let r = record_for(&k, None, &ctx());
        assert_eq!(r.observation.as_ref().unwrap().advisories, None);
        assert!(advisories(&r).is_null());
        // And posture does not make it assessed either.
        let mut r2 = r.clone();
        let all_set = Posture { openpgp_pin_retries: Some([3, 3, 3]), otp_slots_configured: Some([true, true]), oath_password_set: Some(true), ..Posture::default() };
        set_posture(&mut r2, Some(&all_set));
        r2.observation.as_mut().unwrap().posture = None;
        assert_eq!(r2, r);
    }

    #[test]
    fn conditions_stay_open_until_posture_settles_them() {
        let mut k = key(Some(1));
        k.info.version = Version::new(5, 2, 4);
        let mut r = record_for(&k, None, &ctx());
        let ysa_2020_05 = |r: &DeviceRecord| advisories(r).as_array().unwrap().iter().find(|a| a["id"] == "YSA-2020-05").cloned();
        assert_eq!(ysa_2020_05(&r).unwrap()["applies"], "if the OpenPGP reset code retry counter is not zero");
        assert!(r.observation.as_ref().unwrap().advisories.as_ref().unwrap().iter().any(|a| !a.is_certain()));
        // A posture read that finds the reset-code counter at 0 drops it; one that finds it
        // non-zero makes it `yes`; conditions it did not read stay as they were.
        let reset_code = |tries| Posture { openpgp_pin_retries: Some([3, tries, 3]), ..Posture::default() };
        let mut settled_yes = r.clone();
        set_posture(&mut r, Some(&reset_code(0)));
        assert_eq!(ysa_2020_05(&r), None);
        assert_eq!(advisories(&r).as_array().unwrap().iter().find(|a| a["id"] == "YSA-2020-04").unwrap()["applies"], "if an OTP slot is configured and protected by an access code");
        set_posture(&mut settled_yes, Some(&reset_code(3)));
        assert_eq!(ysa_2020_05(&settled_yes).unwrap()["applies"], "yes");
        let once = settled_yes.clone();
        settle_advisories(&mut settled_yes);
        assert_eq!(settled_yes, once, "settling twice changes nothing more");
        // A posture put in by hand (the service's last read) settles the same way.
        let mut later = record_for(&k, None, &ctx());
        later.observation.as_mut().unwrap().posture = Some(posture_record(&reset_code(0)));
        settle_advisories(&mut later);
        assert_eq!(ysa_2020_05(&later), None);
        // No posture read: nothing settled.
        let mut unread = record_for(&k, None, &ctx());
        set_posture(&mut unread, None);
        assert_eq!(ysa_2020_05(&unread).unwrap()["applies"], "if the OpenPGP reset code retry counter is not zero");
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
