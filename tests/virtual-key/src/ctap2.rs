//! CTAP2 authenticator commands of a virtual key, transport-independent: the same bytes go
//! out over CTAPHID (`CTAPHID_CBOR`, [`crate::ctap`]) and over NFC (`NFCCTAP_MSG`,
//! [`crate::card`]). Served: authenticatorGetInfo (0x04) from the model and its
//! [`crate::posture::Posture`], and the read-only authenticatorClientPIN subcommands
//! getPINRetries (0x01) and getUVRetries (0x07). Nothing that verifies, creates or writes.

use crate::cbor::{self, Value};
use crate::model::{KeyModel, Version};
use crate::posture::PostureFault;

pub const CMD_GET_INFO: u8 = 0x04;
pub const CMD_CLIENT_PIN: u8 = 0x06;
pub const SUB_GET_PIN_RETRIES: i64 = 0x01;
pub const SUB_GET_UV_RETRIES: i64 = 0x07;

pub const OK: u8 = 0x00;
pub const ERR_INVALID_COMMAND: u8 = 0x01;
pub const ERR_INVALID_LENGTH: u8 = 0x03;
pub const ERR_INVALID_CBOR: u8 = 0x12;
pub const ERR_MISSING_PARAMETER: u8 = 0x14;
pub const ERR_INVALID_SUBCOMMAND: u8 = 0x3E;

/// Fingerprint attempts left on a Bio key (ykman: "Registered, N attempt(s) remaining").
pub const UV_RETRIES: u8 = 3;

/// An AAGUID per product line, from memory of Yubico's published list and not checked
/// against it here: informational only (no posture field and no test depends on it).
fn aaguid(m: &KeyModel) -> [u8; 16] {
    let hex = match (
        m.is_bio(),
        m.version >= Version::new(5, 7, 0),
        m.nfc_supported.is_some(),
    ) {
        (true, _, _) => "d8522d9f575b486688a9ba99fa02f35b", // YubiKey Bio Series (5.7)
        (false, true, true) => "a25342c03cdc44148e46f4807fca511c", // YubiKey 5 NFC 5.7
        (false, true, false) => "19083c3dbfb14b2c8e1b3a5b7cd5ea1f", // YubiKey 5 Nano 5.7
        (false, false, true) => "2fc0579f811347eab116bb5a8db9202a", // YubiKey 5 NFC 5.2/5.4
        (false, false, false) => "ee882879721c491397753dfcce97072a", // YubiKey 5 5.2/5.4
    };
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

/// CTAP2 canonical order of text map keys: shorter first, then bytewise.
fn canonical(mut entries: Vec<(&str, bool)>) -> Value {
    entries.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(b.0)));
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::text(k), Value::Bool(v)))
            .collect(),
    )
}

fn texts(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::text(s)).collect())
}

/// The authenticatorGetInfo response map (without the status byte).
pub fn get_info(m: &KeyModel) -> Value {
    let p = &m.posture;
    let ctap21 = m.version >= Version::new(5, 5, 0);
    let mut versions = vec!["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE"];
    let mut extensions = vec!["credProtect", "hmac-secret"];
    let mut options = vec![
        ("rk", true),
        ("up", true),
        ("plat", false),
        ("clientPin", p.fido2_pin_set),
        ("credentialMgmtPreview", true),
    ];
    if ctap21 {
        versions.push("FIDO_2_1");
        extensions.extend(["largeBlobKey", "credBlob", "minPinLength"]);
        options.extend([
            ("alwaysUv", false),
            ("credMgmt", true),
            ("authnrCfg", true),
            ("largeBlobs", !m.is_bio()),
            ("pinUvAuthToken", true),
            ("setMinPINLength", true),
            ("makeCredUvNotRqd", true),
        ]);
    }
    if m.is_bio() {
        options.extend([
            ("uv", p.fido2_uv_enrolled),
            ("bioEnroll", p.fido2_uv_enrolled),
            ("userVerificationMgmtPreview", true),
        ]);
    }
    let transports: &[&str] = if m.nfc_supported.is_some() {
        &["nfc", "usb"]
    } else {
        &["usb"]
    };
    let alg = |n: i64| {
        Value::Map(vec![
            (Value::text("alg"), Value::Int(n)),
            (Value::text("type"), Value::text("public-key")),
        ])
    };
    let v = m.version;
    let mut map = vec![
        (1, texts(&versions)),
        (2, texts(&extensions)),
        (3, Value::Bytes(aaguid(m).to_vec())),
        (4, canonical(options)),
        (5, Value::Int(1200)),
        (6, Value::Array(vec![Value::Int(2), Value::Int(1)])),
        (7, Value::Int(8)),
        (8, Value::Int(128)),
        (9, texts(transports)),
        (10, Value::Array(vec![alg(-7), alg(-8)])),
    ];
    if ctap21 && !m.is_bio() {
        map.push((11, Value::Int(1024)));
    }
    map.push((12, Value::Bool(p.fido2_force_pin_change)));
    map.push((13, Value::Int(i64::from(p.fido2_min_pin_length))));
    map.push((
        14,
        Value::Int(i64::from(v.major) << 16 | i64::from(v.minor) << 8 | i64::from(v.patch)),
    ));
    if ctap21 {
        map.push((15, Value::Int(32)));
        map.push((16, Value::Int(1)));
        map.push((
            20,
            Value::Int(i64::from(p.fido2_remaining_discoverable_credentials)),
        ));
    }
    Value::Map(map.into_iter().map(|(k, v)| (Value::Int(k), v)).collect())
}

/// Answers one CTAP2 request (`command byte || CBOR parameters`) with `status || CBOR`.
pub fn process(m: &KeyModel, request: &[u8]) -> Vec<u8> {
    let Some((&cmd, params)) = request.split_first() else {
        return vec![ERR_INVALID_LENGTH];
    };
    match cmd {
        CMD_GET_INFO => {
            let mut out = vec![OK];
            match m.posture_fault {
                Some(PostureFault::GetInfoTruncated) => {
                    let full = get_info(m).encode();
                    out.extend_from_slice(&full[..full.len() / 2]);
                }
                Some(PostureFault::GetInfoTooDeep) => {
                    // {1: [[[…]]]} 200 levels deep: well-formed, but deeper than any reader
                    // should follow.
                    out.extend_from_slice(&[0xA1, 0x01]);
                    out.extend(std::iter::repeat_n(0x81, 199));
                    out.push(0x80);
                }
                _ => out.extend_from_slice(&get_info(m).encode()),
            }
            out
        }
        CMD_CLIENT_PIN => client_pin(m, params),
        _ => vec![ERR_INVALID_COMMAND],
    }
}

fn client_pin(m: &KeyModel, params: &[u8]) -> Vec<u8> {
    let req = match cbor::decode(params) {
        Ok(v @ Value::Map(_)) => v,
        _ => return vec![ERR_INVALID_CBOR],
    };
    let Some(Value::Int(sub)) = req.get(2) else {
        return vec![ERR_MISSING_PARAMETER];
    };
    let ctap21 = m.version >= Version::new(5, 5, 0);
    let answer = match *sub {
        SUB_GET_PIN_RETRIES => {
            let mut e = vec![(
                Value::Int(3),
                Value::Int(i64::from(m.posture.fido2_pin_retries)),
            )];
            if ctap21 {
                e.push((Value::Int(4), Value::Bool(false)));
            }
            Value::Map(e)
        }
        SUB_GET_UV_RETRIES if m.is_bio() => {
            Value::Map(vec![(Value::Int(5), Value::Int(i64::from(UV_RETRIES)))])
        }
        _ => return vec![ERR_INVALID_SUBCOMMAND],
    };
    let mut out = vec![OK];
    out.extend_from_slice(&answer.encode());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture;

    fn info(m: &KeyModel) -> Value {
        let r = process(m, &[CMD_GET_INFO]);
        assert_eq!(r[0], OK);
        cbor::decode(&r[1..]).unwrap()
    }

    fn option(v: &Value, name: &str) -> Option<bool> {
        match v.get(4)? {
            Value::Map(e) => e.iter().find_map(|(k, v)| match (k, v) {
                (Value::Text(k), Value::Bool(b)) if k == name => Some(*b),
                _ => None,
            }),
            _ => None,
        }
    }

    #[test]
    fn get_info_carries_the_posture() {
        let m = KeyModel::preset("yk5cnfc").unwrap();
        let v = info(&m);
        assert_eq!(option(&v, "clientPin"), Some(false));
        assert_eq!(option(&v, "uv"), None);
        assert_eq!(v.get(12), Some(&Value::Bool(false)));
        assert_eq!(v.get(13), Some(&Value::Int(4)));
        assert_eq!(v.get(14), Some(&Value::Int(0x050704)));
        assert_eq!(v.get(20), Some(&Value::Int(100)));
        let h = info(&m.with_posture(posture::hardened()));
        assert_eq!(option(&h, "clientPin"), Some(true));
        assert_eq!(h.get(12), Some(&Value::Bool(true)));
        assert_eq!(h.get(13), Some(&Value::Int(6)));
        assert_eq!(h.get(20), Some(&Value::Int(17)));
        let bio = KeyModel::preset("bio")
            .unwrap()
            .with_posture(posture::hardened());
        assert_eq!(option(&info(&bio), "uv"), Some(true));
        assert_eq!(option(&info(&bio), "bioEnroll"), Some(true));
        // 5.4 firmware: CTAP 2.1-PRE, no remainingDiscoverableCredentials.
        assert_eq!(info(&KeyModel::preset("yk5nfc").unwrap()).get(20), None);
    }

    #[test]
    fn client_pin_retries_and_bad_requests() {
        let m = KeyModel::preset("yk5nfc")
            .unwrap()
            .with_posture(posture::hardened());
        // {1: 2, 2: 1}
        let r = process(&m, &[CMD_CLIENT_PIN, 0xA2, 0x01, 0x02, 0x02, 0x01]);
        assert_eq!(r, [OK, 0xA1, 0x03, 0x05]);
        assert_eq!(
            process(&m, &[CMD_CLIENT_PIN, 0xA2, 0x01]),
            [ERR_INVALID_CBOR]
        );
        assert_eq!(
            process(&m, &[CMD_CLIENT_PIN, 0xA1, 0x01, 0x02]),
            [ERR_MISSING_PARAMETER]
        );
        assert_eq!(
            process(&m, &[CMD_CLIENT_PIN, 0xA2, 0x01, 0x02, 0x02, 0x05]),
            [ERR_INVALID_SUBCOMMAND],
            "getPinToken (needs the PIN) is not served"
        );
        assert_eq!(process(&m, &[0x01]), [ERR_INVALID_COMMAND]);
        assert_eq!(process(&m, &[]), [ERR_INVALID_LENGTH]);
    }
}
