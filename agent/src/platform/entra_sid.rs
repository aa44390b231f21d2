//! The Microsoft Entra ID object id carried by an Entra account's Windows SID. Pure (no OS
//! call), so it is built and tested everywhere; the Windows user module uses it.
//!
//! An Entra ID user signed in to Windows has a SID `S-1-12-1-a-b-c-d`: the four
//! sub-authorities, each a little-endian 32-bit number, are the 16 bytes of the object id's
//! GUID in Microsoft's layout (`Guid.ToByteArray()`: Data1, Data2 and Data3 little-endian,
//! Data4 as is). Example: object id `73d664e4-0886-4a73-b745-c694da45ddb4` is
//! `S-1-12-1-1943430372-1249052806-2496021943-3034400218`.

/// The object id (lower-case GUID text) of an Entra ID account's SID; `None` for any other SID
/// (`S-1-5-21-…` domain or local accounts) and for anything malformed: another prefix, not
/// exactly four parts, a part that is not plain decimal digits or does not fit 32 bits.
pub fn entra_object_id(sid: &str) -> Option<String> {
    let rest = sid.strip_prefix("S-1-12-1-")?;
    let mut bytes = [0u8; 16];
    let mut parts = rest.split('-');
    for chunk in bytes.chunks_exact_mut(4) {
        let part = parts.next()?;
        // u32's parser takes a leading '+'; a SID never has one.
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        chunk.copy_from_slice(&part.parse::<u32>().ok()?.to_le_bytes());
    }
    if parts.next().is_some() {
        return None;
    }
    let data1 = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data2 = u16::from_le_bytes([bytes[4], bytes[5]]);
    let data3 = u16::from_le_bytes([bytes[6], bytes[7]]);
    let d4: String = bytes[8..].iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{data1:08x}-{data2:04x}-{data3:04x}-{}-{}", &d4[..4], &d4[4..]))
}

#[cfg(test)]
mod tests {
    use super::entra_object_id;

    #[test]
    fn microsofts_example() {
        assert_eq!(
            entra_object_id("S-1-12-1-1943430372-1249052806-2496021943-3034400218").as_deref(),
            Some("73d664e4-0886-4a73-b745-c694da45ddb4")
        );
    }

    #[test]
    fn boundaries() {
        assert_eq!(entra_object_id("S-1-12-1-0-0-0-0").as_deref(), Some("00000000-0000-0000-0000-000000000000"));
        assert_eq!(
            entra_object_id("S-1-12-1-4294967295-4294967295-4294967295-4294967295").as_deref(),
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff")
        );
        // Byte order: 1 is Data1's low byte; 256 is Data2's high byte; 16777216 (0x01000000) is
        // Data4[3]; the last part's 1 is Data4[4]; 65536 in the second part is Data3.
        assert_eq!(entra_object_id("S-1-12-1-1-256-16777216-1").as_deref(), Some("00000001-0100-0000-0000-000101000000"));
        assert_eq!(entra_object_id("S-1-12-1-0-65536-0-0").as_deref(), Some("00000000-0000-0001-0000-000000000000"));
    }

    #[test]
    fn other_and_malformed_sids_are_none() {
        for sid in [
            "S-1-5-21-123456789-123456789-123456798-123",
            "S-1-5-18",
            "S-1-12-1-1943430372-1249052806-2496021943",
            "S-1-12-1-1943430372-1249052806-2496021943-3034400218-1",
            "S-1-12-1-1943430372-1249052806-2496021943-4294967296",
            "S-1-12-1-+1-2-3-4",
            "S-1-12-1--1-2-3-4",
            "S-1-12-1-1-2-3-",
            "S-1-12-1-1-2-3-4 ",
            "S-1-12-1-0x1-2-3-4",
            "s-1-12-1-1-2-3-4",
            "S-1-12-2-1-2-3-4",
            "S-1-12-1-",
            "",
        ] {
            assert_eq!(entra_object_id(sid), None, "{sid:?}");
        }
    }
}
