//! BER-TLV parsing, as ykman's `Tlv` reads DeviceInfo and the version qualifier.

use std::collections::BTreeMap;

use crate::error::ParseError;

/// One tag-length-value item borrowed from a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag, multi-byte tags as one number (`0x7F49`).
    pub tag: u32,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Splits `data` into TLVs. Multi-byte tags (low 5 bits all set) and the definite long length
/// forms 0x81..0x84 are accepted; the indefinite form 0x80 and anything that overruns the
/// buffer is an error.
pub fn parse_all(data: &[u8]) -> Result<Vec<Tlv<'_>>, ParseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let (tlv, next) = parse_one(data, pos)?;
        out.push(tlv);
        pos = next;
    }
    Ok(out)
}

/// Parses TLVs into a map where a repeated tag keeps its last value (ykman's `parse_dict`).
pub fn parse_map(data: &[u8]) -> Result<BTreeMap<u32, Vec<u8>>, ParseError> {
    Ok(parse_all(data)?
        .into_iter()
        .map(|t| (t.tag, t.value.to_vec()))
        .collect())
}

fn parse_one(data: &[u8], start: usize) -> Result<(Tlv<'_>, usize), ParseError> {
    let truncated = ParseError::TruncatedTlv { offset: start };
    let mut pos = start;
    let first = *data.get(pos).ok_or(truncated.clone())?;
    pos += 1;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        loop {
            let b = *data.get(pos).ok_or(truncated.clone())?;
            pos += 1;
            if tag > 0x00FF_FFFF {
                return Err(ParseError::BadTlvLength { offset: start });
            }
            tag = (tag << 8) | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let len_byte = *data.get(pos).ok_or(truncated.clone())?;
    pos += 1;
    let len = match len_byte {
        0..=0x7F => usize::from(len_byte),
        0x81..=0x84 => {
            let n = usize::from(len_byte & 0x7F);
            let bytes = data.get(pos..pos + n).ok_or(truncated.clone())?;
            pos += n;
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
        _ => return Err(ParseError::BadTlvLength { offset: start }),
    };
    let end = pos.checked_add(len).ok_or(truncated.clone())?;
    let value = data.get(pos..end).ok_or(truncated)?;
    Ok((Tlv { tag, value }, end))
}

/// A big-endian unsigned value of at most four bytes (an empty value is 0).
pub fn be_u32(tag: u32, value: &[u8]) -> Result<u32, ParseError> {
    if value.len() > 4 {
        return Err(ParseError::BadValueLength { tag, len: value.len(), expected: "at most 4 bytes" });
    }
    Ok(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        let tlvs = parse_all(&[0x01, 0x02, 0xAA, 0xBB, 0x13, 0x81, 0x01, 0x41]).unwrap();
        assert_eq!(tlvs[0], Tlv { tag: 1, value: &[0xAA, 0xBB] });
        assert_eq!(tlvs[1], Tlv { tag: 0x13, value: &[0x41] });
    }

    #[test]
    fn multi_byte_tag() {
        let tlvs = parse_all(&[0x7F, 0x49, 0x01, 0x00]).unwrap();
        assert_eq!(tlvs[0].tag, 0x7F49);
    }

    #[test]
    fn errors() {
        assert_eq!(parse_all(&[0x01]), Err(ParseError::TruncatedTlv { offset: 0 }));
        assert_eq!(parse_all(&[0x01, 0x05, 0x00]), Err(ParseError::TruncatedTlv { offset: 0 }));
        assert_eq!(parse_all(&[0x01, 0x80]), Err(ParseError::BadTlvLength { offset: 0 }));
        assert_eq!(parse_all(&[0x01, 0x82, 0x00]), Err(ParseError::TruncatedTlv { offset: 0 }));
    }

    #[test]
    fn last_duplicate_wins() {
        let m = parse_map(&[0x05, 0x01, 0x01, 0x05, 0x01, 0x02]).unwrap();
        assert_eq!(m[&5], vec![2]);
    }
}
