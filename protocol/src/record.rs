//! The device record: serde types for the Appterix external API's device model.
//!
//! Field names are the API's own (camelCase, `enabledUSBCapabilities`). Fields keytally does
//! not model are kept in `extra` maps, so a record read from a server serializes back with
//! the same fields and values. Server-only fields (`code`, `orgCode`, `model.code`,
//! `prodLineCode`) are `null` in what the agent sends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One device as the devices API lists it, plus keytally's `observation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The key itself.
    pub yubikey: YubiKey,
    /// Who the server has assigned the key to (or the agent suggests).
    #[serde(default)]
    pub owners: Owners,
    /// The server's tags on the key.
    #[serde(default)]
    pub tags: Vec<Label>,
    /// The key's status in the server's inventory.
    #[serde(default)]
    pub status: Option<Status>,
    /// What the agent saw and the model has no field for. Absent in server listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<Observation>,
    /// Fields keytally does not model, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `yubikey` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct YubiKey {
    /// Server-only: the device's code (`null` from the agent).
    pub code: Option<i64>,
    /// Server-only: the organization's code (`null` from the agent).
    pub org_code: Option<i64>,
    /// The product name, as ykman derives it (e.g. `YubiKey 5 NFC`).
    pub name: String,
    /// Free text the server keeps.
    pub description: Option<String>,
    /// Stable, never empty: the key's identity in `PUT /devices/{uniqueId}`.
    pub unique_id: String,
    /// The serial as a decimal string; `null` when the key exposes none.
    pub serial_number: Option<String>,
    /// A second serial the server may keep.
    pub alternative_serial_number: Option<String>,
    /// `major.minor.patch`.
    pub firmware_version: String,
    /// The model: product line, form factor, interfaces and capabilities.
    pub model: Model,
    /// Enabled USB applications, as capability bits, ascending.
    #[serde(rename = "enabledUSBCapabilities")]
    pub enabled_usb_capabilities: Vec<u32>,
    /// Enabled NFC applications, as capability bits, ascending.
    #[serde(rename = "enabledNFCCapabilities")]
    pub enabled_nfc_capabilities: Vec<u32>,
    /// RFC 3339, UTC.
    pub last_update: Option<String>,
    /// RFC 3339, UTC.
    pub last_used: Option<String>,
    /// The server's status code for the key.
    pub status: Option<i64>,
    /// Fields keytally does not model, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `yubikey.model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    /// Server-only: the model's code.
    pub code: Option<i64>,
    /// The product name.
    pub name: String,
    /// Server-only: the model's identity.
    pub unique_id: Option<String>,
    /// Server-only: the product line's code.
    pub prod_line_code: Option<i64>,
    /// 0–7, without the FIPS and Security Key flags.
    pub form_factor: u8,
    /// `[mask]` with USB = 1 and NFC = 2.
    pub interfaces: Vec<u32>,
    /// Supported USB applications, as capability bits, ascending; `[]` without USB.
    pub usb_capabilities: Vec<u32>,
    /// Supported NFC applications, as capability bits, ascending; `[]` without NFC.
    pub nfc_capabilities: Vec<u32>,
    /// Fields keytally does not model, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{count, items}`, the API's list wrapper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counted<T> {
    /// The number of items on the server (may exceed `items.len()`).
    pub count: u64,
    /// The items.
    pub items: Vec<T>,
}

impl<T> Default for Counted<T> {
    fn default() -> Self {
        Self { count: 0, items: Vec::new() }
    }
}

/// The `owners` list of a record.
pub type Owners = Counted<Owner>;

/// A person the server has assigned to the key, or (with `suggested`) one the agent proposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The server's code for the person.
    pub code: Option<i64>,
    /// The person's display name.
    pub name: Option<String>,
    /// The person's email address.
    pub email: Option<String>,
    /// Whether the person is an administrator.
    pub is_admin: Option<bool>,
    /// The account's security identifier (the uid where there is no SID).
    pub sid: Option<String>,
    /// The person's Microsoft Entra ID object id.
    pub entra_id: Option<String>,
    /// RFC 3339, UTC: the person's last login.
    pub last_login: Option<String>,
    /// The groups the person is in.
    #[serde(default)]
    pub groups: Counted<Label>,
    /// The person's tags.
    #[serde(default)]
    pub tags: Counted<Label>,
    /// keytally's own mark (not the API's): `true` on an owner the agent only suggests (the
    /// workstation's logged-in user), so neither the server nor the tray takes it for an
    /// assignment. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested: Option<bool>,
    /// Fields keytally does not model, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Owner {
    /// The logged-in user of a workstation as a suggested owner: the name, and the account
    /// id (a SID on Windows, the uid elsewhere), marked `suggested`.
    pub fn suggestion(name: &str, sid: &str) -> Self {
        Owner { name: Some(name.to_string()), sid: Some(sid.to_string()), suggested: Some(true), ..Owner::default() }
    }

    /// An owner assigned by email (the enrollment desk).
    pub fn with_email(email: &str) -> Self {
        Owner { email: Some(email.to_string()), ..Owner::default() }
    }

    /// Whether the agent only suggested this owner.
    pub fn is_suggestion(&self) -> bool {
        self.suggested == Some(true)
    }
}

impl Owners {
    /// The list with exactly this one owner.
    pub fn one(owner: Owner) -> Self {
        Counted { count: 1, items: vec![owner] }
    }
}

/// A group or tag reference: `{type, source, description, code, name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// The label's type code (`type` on the wire).
    #[serde(rename = "type")]
    pub kind: Option<i64>,
    /// Where the label comes from (the server's source code).
    pub source: Option<i64>,
    /// Free text.
    pub description: Option<String>,
    /// The server's code for the label.
    pub code: Option<i64>,
    /// The label's name.
    pub name: Option<String>,
    /// Fields keytally does not model, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Label {
    /// A label that carries only a name (a tag given at the enrollment desk).
    pub fn named(name: &str) -> Self {
        Label { name: Some(name.to_string()), ..Label::default() }
    }
}

/// The top-level `status` object (e.g. `{"code": 12345, "name": "Shared"}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The server's code for the status.
    pub code: Option<i64>,
    /// The status name (e.g. `Active`, `Shared`).
    pub name: Option<String>,
    /// Fields keytally does not model, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Status {
    /// A status that carries only a name.
    pub fn named(name: &str) -> Self {
        Status { name: Some(name.to_string()), ..Status::default() }
    }
}

/// `observation.posture`: issue 13 §2's fields, each `null` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Posture {
    /// PIV PIN is the factory default (GET METADATA `80`).
    pub piv_pin_default: Option<bool>,
    /// PIV PUK is the factory default (GET METADATA `81`).
    pub piv_puk_default: Option<bool>,
    /// PIV management key is the factory default (GET METADATA `9B`).
    pub piv_management_key_default: Option<bool>,
    /// PIV PIN tries remaining.
    pub piv_pin_retries: Option<u8>,
    /// PIV PUK tries remaining.
    pub piv_puk_retries: Option<u8>,
    /// A FIDO2 PIN is set (getInfo `options.clientPin`).
    pub fido2_pin_set: Option<bool>,
    /// Fingerprints are enrolled (getInfo `options.uv`).
    pub fido2_uv_enrolled: Option<bool>,
    /// The FIDO2 PIN must be changed before use (getInfo `forcePINChange`).
    pub fido2_force_pin_change: Option<bool>,
    /// The shortest FIDO2 PIN accepted (getInfo `minPINLength`).
    pub fido2_min_pin_length: Option<u32>,
    /// Room left for discoverable credentials (getInfo `remainingDiscoverableCredentials`).
    pub fido2_remaining_discoverable_credentials: Option<u32>,
    /// OpenPGP tries remaining: `[PW1, reset code, PW3]` (GET DATA `C4`).
    pub openpgp_pin_retries: Option<[u8; 3]>,
    /// The OATH applet is password protected (SELECT answers a challenge).
    pub oath_password_set: Option<bool>,
    /// `[slot 1, slot 2]` configured (OTP status bytes).
    pub otp_slots_configured: Option<[bool; 2]>,
}

/// How, where and when the agent saw the key, and the DeviceInfo facts the model lacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// `"usb"` or `"nfc"`.
    pub transport: String,
    /// The PC/SC reader (or USB port) the key was read through.
    pub reader: Option<String>,
    /// The host name of the machine that read the key.
    pub host: String,
    /// A UUID made once per installation.
    pub agent_id: String,
    /// RFC 3339, UTC.
    pub observed_at: String,
    /// Applications that can run in FIPS mode, as capability bits.
    pub fips_capable: Vec<u32>,
    /// Applications running in FIPS-approved mode, as capability bits.
    pub fips_approved: Vec<u32>,
    /// The FIPS-series flag (form factor 0x80, or a YubiKey 4 FIPS).
    pub fips_series: bool,
    /// The Security Key flag (form factor 0x40, or the SKY PID).
    pub security_key: bool,
    /// The PIN complexity policy is on.
    pub pin_complexity: bool,
    /// Restricted NFC mode is on (NFC serves only NDEF until USB power).
    pub nfc_restricted: bool,
    /// A lock code protects the configuration.
    pub config_locked: bool,
    /// The part number the key reports, when it reports one.
    pub part_number: Option<String>,
    /// ykman's version name: `5.4.3`, or `5.7.8.beta.233` for a pre-release build.
    pub version_name: String,
    /// The version qualifier in full: `5.4.3.final.0`.
    pub version_qualifier: String,
    /// Applications whose reset is blocked, as capability bits.
    pub reset_blocked: Vec<u32>,
    /// Fingerprint-sensor and MCU firmware of a Bio key.
    pub fps_version: Option<String>,
    /// The MCU firmware of a Bio key.
    pub stm_version: Option<String>,
    /// The USB product ID when known (USB CCID reader name, or the USB device).
    pub usb_pid: Option<String>,
    /// RFC 3339, UTC: when a kiosk tap presented the key. A tap is an event of its own, and its
    /// time makes an otherwise unchanged record a new version to push. Absent outside the kiosk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tapped_at: Option<String>,
    /// What the applets say about PINs, credentials and slots (read without a PIN, a touch or
    /// a write). Absent when posture was not read (a plain scan); a field is `null` where the
    /// firmware cannot say, the applet is disabled, or its read failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<Posture>,
    /// The Yubico security advisories that apply to the key (keytally's table,
    /// `device/advisories.toml`), sorted by id; `[]` when none applies. `null` when they were
    /// not assessed: the firmware version was not read, so no range is guessed (also `null`,
    /// or absent, in records from agents that predate the field).
    #[serde(default)]
    pub advisories: Option<Vec<AdvisoryNotice>>,
    /// Fields keytally does not model, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `observation.advisories`: an advisory that applies to the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvisoryNotice {
    /// The advisory's id, e.g. `YSA-2024-03`.
    pub id: String,
    /// The URL of Yubico's advisory.
    pub url: String,
    /// `yes`, or `if <condition in words>` while the condition is not settled (posture reads
    /// settle some: an unmet condition drops the entry, a met one makes it `yes`).
    pub applies: String,
}

impl AdvisoryNotice {
    /// Whether it applies as the key stands (`applies` is `yes`), not only under a condition.
    pub fn is_certain(&self) -> bool {
        self.applies == "yes"
    }
}
