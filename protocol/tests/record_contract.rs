//! The Appterix example device list deserializes and serializes back with the same fields
//! and values.

use keytally_protocol::record::DeviceRecord;
use serde_json::Value;

const EXAMPLE: &str = include_str!("fixtures/appterix-devices-example.json");

#[test]
fn appterix_example_round_trips() {
    let original: Value = serde_json::from_str(EXAMPLE).unwrap();
    let records: Vec<DeviceRecord> = serde_json::from_str(EXAMPLE).unwrap();
    assert_eq!(records.len(), 1);
    let back = serde_json::to_value(&records).unwrap();
    assert_eq!(back, original);
}

#[test]
fn appterix_example_reads_into_typed_fields() {
    let records: Vec<DeviceRecord> = serde_json::from_str(EXAMPLE).unwrap();
    let r = &records[0];
    assert_eq!(r.yubikey.code, Some(12345));
    assert_eq!(r.yubikey.org_code, Some(123));
    assert_eq!(r.yubikey.serial_number.as_deref(), Some("12345678"));
    assert_eq!(r.yubikey.unique_id, "123456");
    assert_eq!(r.yubikey.firmware_version, "5.7.2");
    assert_eq!(r.yubikey.model.interfaces, vec![3]);
    assert_eq!(r.yubikey.model.form_factor, 1);
    assert_eq!(r.yubikey.enabled_usb_capabilities, vec![1]);
    assert_eq!(r.yubikey.last_used.as_deref(), Some("2026-05-05T14:09:08.6Z"));
    assert_eq!(r.owners.count, 1);
    let owner = &r.owners.items[0];
    assert_eq!(owner.email.as_deref(), Some("mail@sample.com"));
    assert_eq!(owner.groups.count, 2);
    assert_eq!(owner.groups.items[0].name.as_deref(), Some("Directory users (Default)"));
    assert_eq!(owner.extra["profilePicture"], "");
    assert_eq!(r.status.as_ref().and_then(|s| s.name.as_deref()), Some("Shared"));
    assert!(r.observation.is_none());
}

#[test]
fn agent_fields_are_typed_and_absent_unless_set() {
    use keytally_protocol::record::{Owner, Owners};
    let mut records: Vec<DeviceRecord> = serde_json::from_str(EXAMPLE).unwrap();
    let r = &mut records[0];
    r.owners = Owners::one(Owner::suggestion("alice", "1000"));
    let v = serde_json::to_value(&*r).unwrap();
    let owner = &v["owners"]["items"][0];
    assert_eq!((&owner["name"], &owner["sid"], &owner["suggested"]), (&Value::from("alice"), &Value::from("1000"), &Value::Bool(true)));
    let back: DeviceRecord = serde_json::from_value(v).unwrap();
    assert!(back.owners.items[0].is_suggestion());
    // An owner the server assigned carries no mark at all.
    assert!(serde_json::to_value(Owner::with_email("a@example.com")).unwrap().get("suggested").is_none());
}
