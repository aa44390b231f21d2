//! A virtual key's security posture: what each applet tells a reader without a PIN, a touch or
//! a write (issue 13 §2). Set per test with [`Posture`]'s fields or [`Posture::apply`]
//! (`keytally-vkey --posture KEY=VALUE,...`); the applets answer from it.

use std::fmt;

/// The posture a key reports. [`Posture::default`] is a key fresh from the factory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    /// PIV PIN still `123456` (GET METADATA slot 80, tag 05).
    pub piv_pin_default: bool,
    /// PIV PIN retries remaining / total (tag 06).
    pub piv_pin_retries: u8,
    pub piv_pin_total: u8,
    /// PIV PUK still `12345678` (slot 81).
    pub piv_puk_default: bool,
    pub piv_puk_retries: u8,
    pub piv_puk_total: u8,
    /// PIV management key still the well-known default (slot 9B).
    pub piv_management_key_default: bool,
    /// FIDO2 `options.clientPin`.
    pub fido2_pin_set: bool,
    /// FIDO2 PIN retries (authenticatorClientPIN getPINRetries).
    pub fido2_pin_retries: u8,
    /// FIDO2 `options.uv` / `options.bioEnroll`: fingerprints enrolled (Bio models only).
    pub fido2_uv_enrolled: bool,
    /// FIDO2 getInfo `forcePINChange` (0x0C).
    pub fido2_force_pin_change: bool,
    /// FIDO2 getInfo `minPINLength` (0x0D).
    pub fido2_min_pin_length: u8,
    /// FIDO2 getInfo `remainingDiscoverableCredentials` (0x14; firmware 5.5 and later).
    pub fido2_remaining_discoverable_credentials: u32,
    /// OpenPGP PW status (C4): remaining tries of PW1, reset code, PW3.
    pub openpgp_pin_retries: [u8; 3],
    /// OATH access key set: SELECT answers with a challenge (tag 74).
    pub oath_password_set: bool,
    /// OTP status touch-level bits 0x01 / 0x02: slot 1 / slot 2 configured.
    pub otp_slots_configured: [bool; 2],
}

impl Default for Posture {
    fn default() -> Self {
        Posture {
            piv_pin_default: true,
            piv_pin_retries: 3,
            piv_pin_total: 3,
            piv_puk_default: true,
            piv_puk_retries: 3,
            piv_puk_total: 3,
            piv_management_key_default: true,
            fido2_pin_set: false,
            fido2_pin_retries: 8,
            fido2_uv_enrolled: false,
            fido2_force_pin_change: false,
            fido2_min_pin_length: 4,
            fido2_remaining_discoverable_credentials: 100,
            openpgp_pin_retries: [3, 0, 3],
            oath_password_set: false,
            otp_slots_configured: [false, false],
        }
    }
}

/// A posture answer that is wrong in one applet (issue 13 "Bad input"): the reader must null
/// that one field, warn, and keep the rest of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostureFault {
    /// PIV GET METADATA (80, 81, 9B): the retries TLV declares more bytes than follow.
    PivMetadataMalformed,
    /// PIV GET METADATA answers the undefined status word `6F00`.
    PivUnknownSw,
    /// CTAP2 getInfo: status OK, then the CBOR map cut in the middle.
    GetInfoTruncated,
    /// CTAP2 getInfo: a well-formed map whose key 1 holds arrays nested 200 deep.
    GetInfoTooDeep,
    /// OpenPGP GET DATA (6E, C4) answers `6F00`.
    OpenPgpUnknownSw,
    /// OpenPGP: the PW status bytes (C4, inside 6E too) are 2 bytes instead of 7.
    OpenPgpPwStatusShort,
    /// SELECT OATH: the name TLV declares more bytes than follow.
    OathSelectMalformed,
}

impl PostureFault {
    pub const ALL: [PostureFault; 7] = [
        PostureFault::PivMetadataMalformed,
        PostureFault::PivUnknownSw,
        PostureFault::GetInfoTruncated,
        PostureFault::GetInfoTooDeep,
        PostureFault::OpenPgpUnknownSw,
        PostureFault::OpenPgpPwStatusShort,
        PostureFault::OathSelectMalformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PostureFault::PivMetadataMalformed => "piv-metadata-malformed",
            PostureFault::PivUnknownSw => "piv-unknown-sw",
            PostureFault::GetInfoTruncated => "getinfo-truncated",
            PostureFault::GetInfoTooDeep => "getinfo-too-deep",
            PostureFault::OpenPgpUnknownSw => "openpgp-unknown-sw",
            PostureFault::OpenPgpPwStatusShort => "openpgp-pw-status-short",
            PostureFault::OathSelectMalformed => "oath-select-malformed",
        }
    }
}

impl std::str::FromStr for PostureFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PostureFault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown posture fault {s:?}; known: {}",
                    PostureFault::ALL.map(PostureFault::name).join(", ")
                )
            })
    }
}

/// The keys [`Posture::apply`] understands, in the order [`Posture`] declares them.
pub const KEYS: [&str; 16] = [
    "piv-pin-default",
    "piv-pin-retries",
    "piv-pin-total",
    "piv-puk-default",
    "piv-puk-retries",
    "piv-puk-total",
    "piv-mgmt-key-default",
    "fido2-pin-set",
    "fido2-pin-retries",
    "fido2-uv-enrolled",
    "fido2-force-pin-change",
    "fido2-min-pin-length",
    "fido2-remaining-creds",
    "openpgp-retries",
    "oath-password",
    "otp-slots",
];

/// A hardened (non-default) posture, the opposite of the factory state in every field.
pub fn hardened() -> Posture {
    Posture {
        piv_pin_default: false,
        piv_pin_retries: 2,
        piv_pin_total: 5,
        piv_puk_default: false,
        piv_puk_retries: 0,
        piv_puk_total: 3,
        piv_management_key_default: false,
        fido2_pin_set: true,
        fido2_pin_retries: 5,
        fido2_uv_enrolled: true,
        fido2_force_pin_change: true,
        fido2_min_pin_length: 6,
        fido2_remaining_discoverable_credentials: 17,
        openpgp_pin_retries: [2, 1, 3],
        oath_password_set: true,
        otp_slots_configured: [true, true],
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got {v:?}")),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{key}: expected a number, got {v:?}"))
}

fn parse_list<T: std::str::FromStr + Copy + Default, const N: usize>(
    key: &str,
    v: &str,
    item: impl Fn(&str, &str) -> Result<T, String>,
) -> Result<[T; N], String> {
    let parts: Vec<&str> = v.split('/').collect();
    if parts.len() != N {
        return Err(format!(
            "{key}: expected {N} values separated by '/', got {v:?}"
        ));
    }
    let mut out = [T::default(); N];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = item(key, p)?;
    }
    Ok(out)
}

impl Posture {
    /// Applies `KEY=VALUE[,KEY=VALUE…]` (keys in [`KEYS`]; booleans `true`/`false`, lists
    /// with `/`: `openpgp-retries=3/0/3`, `otp-slots=true/false`). `hardened` alone (or as
    /// the first item) starts from [`hardened`].
    pub fn apply(&mut self, spec: &str) -> Result<(), String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "hardened" {
                *self = hardened();
                continue;
            }
            if item == "factory" {
                *self = Posture::default();
                continue;
            }
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("posture item {item:?} is not KEY=VALUE"))?;
            let (k, v) = (k.trim(), v.trim());
            match k {
                "piv-pin-default" => self.piv_pin_default = parse_bool(k, v)?,
                "piv-pin-retries" => self.piv_pin_retries = parse_num(k, v)?,
                "piv-pin-total" => self.piv_pin_total = parse_num(k, v)?,
                "piv-puk-default" => self.piv_puk_default = parse_bool(k, v)?,
                "piv-puk-retries" => self.piv_puk_retries = parse_num(k, v)?,
                "piv-puk-total" => self.piv_puk_total = parse_num(k, v)?,
                "piv-mgmt-key-default" => self.piv_management_key_default = parse_bool(k, v)?,
                "fido2-pin-set" => self.fido2_pin_set = parse_bool(k, v)?,
                "fido2-pin-retries" => self.fido2_pin_retries = parse_num(k, v)?,
                "fido2-uv-enrolled" => self.fido2_uv_enrolled = parse_bool(k, v)?,
                "fido2-force-pin-change" => self.fido2_force_pin_change = parse_bool(k, v)?,
                "fido2-min-pin-length" => self.fido2_min_pin_length = parse_num(k, v)?,
                "fido2-remaining-creds" => {
                    self.fido2_remaining_discoverable_credentials = parse_num(k, v)?
                }
                "openpgp-retries" => self.openpgp_pin_retries = parse_list(k, v, parse_num)?,
                "oath-password" => self.oath_password_set = parse_bool(k, v)?,
                "otp-slots" => self.otp_slots_configured = parse_list(k, v, parse_bool)?,
                _ => {
                    return Err(format!(
                        "unknown posture key {k:?}; known: hardened, factory, {}",
                        KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(())
    }

    /// The OTP touch-level low byte's configured bits.
    pub fn otp_slot_bits(&self) -> u8 {
        u8::from(self.otp_slots_configured[0]) | (u8::from(self.otp_slots_configured[1]) << 1)
    }
}

impl fmt::Display for Posture {
    /// The `KEY=VALUE,…` form [`Posture::apply`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.openpgp_pin_retries;
        let [s1, s2] = self.otp_slots_configured;
        write!(
            f,
            "piv-pin-default={},piv-pin-retries={},piv-pin-total={},piv-puk-default={},\
             piv-puk-retries={},piv-puk-total={},piv-mgmt-key-default={},fido2-pin-set={},\
             fido2-pin-retries={},fido2-uv-enrolled={},fido2-force-pin-change={},\
             fido2-min-pin-length={},fido2-remaining-creds={},openpgp-retries={a}/{b}/{c},\
             oath-password={},otp-slots={s1}/{s2}",
            self.piv_pin_default,
            self.piv_pin_retries,
            self.piv_pin_total,
            self.piv_puk_default,
            self.piv_puk_retries,
            self.piv_puk_total,
            self.piv_management_key_default,
            self.fido2_pin_set,
            self.fido2_pin_retries,
            self.fido2_uv_enrolled,
            self.fido2_force_pin_change,
            self.fido2_min_pin_length,
            self.fido2_remaining_discoverable_credentials,
            self.oath_password_set,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips_through_apply() {
        for p in [Posture::default(), hardened()] {
            let mut q = Posture::default();
            q.apply(&p.to_string()).unwrap();
            assert_eq!(q, p);
        }
    }

    #[test]
    fn apply_names_the_bad_item() {
        let mut p = Posture::default();
        assert!(p
            .apply("piv-pin-retries=x")
            .unwrap_err()
            .contains("piv-pin-retries"));
        assert!(p
            .apply("nope=1")
            .unwrap_err()
            .contains("unknown posture key"));
        assert!(p
            .apply("openpgp-retries=1/2")
            .unwrap_err()
            .contains("3 values"));
        assert!(p.apply("oath-password").unwrap_err().contains("KEY=VALUE"));
        p.apply("hardened,piv-pin-retries=1").unwrap();
        assert_eq!((p.piv_pin_retries, p.oath_password_set), (1, true));
    }
}
