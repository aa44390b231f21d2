//! A small, strict CBOR decoder for CTAP2 answers: definite lengths only, no tags, no floats,
//! nesting at most [`MAX_DEPTH`] deep. Truncated or too-deep input is an error, never a panic.

use std::fmt;

/// The deepest nesting accepted. authenticatorGetInfo nests three levels (map → array of
/// algorithms → map); CTAP2's canonical CBOR allows four.
pub const MAX_DEPTH: usize = 8;

/// A decoded CBOR item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer (major types 0 and 1), within `i128`.
    Int(i128),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A text string.
    Text(String),
    /// An array.
    Array(Vec<Value>),
    /// A map, entries in the order they came.
    Map(Vec<(Value, Value)>),
    /// `true` or `false`.
    Bool(bool),
    /// `null` (and `undefined`).
    Null,
}

impl Value {
    /// The value under integer key `key` of a map; `None` for a missing key or a non-map.
    pub fn get_int_key(&self, key: i128) -> Option<&Value> {
        self.entries()?
            .iter()
            .find(|(k, _)| *k == Value::Int(key))
            .map(|(_, v)| v)
    }

    /// The value under text key `key` of a map; `None` for a missing key or a non-map.
    pub fn get_text_key(&self, key: &str) -> Option<&Value> {
        self.entries()?
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
            .map(|(_, v)| v)
    }

    fn entries(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }
}

/// Why CBOR bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CborError {
    /// The data ends inside an item (at this offset).
    Truncated(usize),
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An encoding this decoder does not accept (indefinite length, tag, float, reserved
    /// additional information, invalid UTF-8); the text says which, with the offset.
    Unsupported(&'static str, usize),
    /// Bytes after the one top-level item.
    TrailingBytes(usize),
}

impl fmt::Display for CborError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CborError::Truncated(at) => write!(f, "CBOR truncated at byte {at}"),
            CborError::TooDeep => write!(f, "CBOR nested deeper than {MAX_DEPTH} levels"),
            CborError::Unsupported(what, at) => write!(f, "CBOR {what} at byte {at} not accepted"),
            CborError::TrailingBytes(at) => write!(f, "bytes after the CBOR item, from byte {at}"),
        }
    }
}

impl std::error::Error for CborError {}

/// Decodes exactly one item from `data`.
pub fn decode(data: &[u8]) -> Result<Value, CborError> {
    let mut reader = Reader { data, pos: 0 };
    let value = reader.item(1)?;
    if reader.pos != data.len() {
        return Err(CborError::TrailingBytes(reader.pos));
    }
    Ok(value)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CborError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or(CborError::Truncated(self.data.len()))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The argument of a head with additional information `info`.
    fn argument(&mut self, info: u8, start: usize) -> Result<u64, CborError> {
        let n = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Err(CborError::Unsupported("indefinite length", start)),
            _ => {
                return Err(CborError::Unsupported(
                    "reserved additional information",
                    start,
                ))
            }
        };
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A length that must fit in what is left (each element takes at least one byte).
    fn length(&mut self, info: u8, start: usize) -> Result<usize, CborError> {
        let n = self.argument(info, start)?;
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(CborError::Truncated(self.data.len()));
        }
        Ok(n as usize)
    }

    fn item(&mut self, depth: usize) -> Result<Value, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let start = self.pos;
        let head = *self.take(1)?.first().ok_or(CborError::Truncated(start))?;
        let (major, info) = (head >> 5, head & 0x1F);
        Ok(match major {
            0 => Value::Int(i128::from(self.argument(info, start)?)),
            1 => Value::Int(-1 - i128::from(self.argument(info, start)?)),
            2 => {
                let n = self.length(info, start)?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            3 => {
                let n = self.length(info, start)?;
                let bytes = self.take(n)?.to_vec();
                Value::Text(
                    String::from_utf8(bytes)
                        .map_err(|_| CborError::Unsupported("invalid UTF-8 text", start))?,
                )
            }
            4 => {
                let n = self.length(info, start)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Value::Array(items)
            }
            5 => {
                let n = self.length(info, start)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = self.item(depth + 1)?;
                    let value = self.item(depth + 1)?;
                    entries.push((key, value));
                }
                Value::Map(entries)
            }
            6 => return Err(CborError::Unsupported("tag", start)),
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 | 23 => Value::Null,
                _ => return Err(CborError::Unsupported("float or simple value", start)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_small_map() {
        // {1: ["FIDO_2_0"], 4: {"clientPin": false}, 13: 4, -1: h'01'}
        let mut data = vec![0xA4, 0x01, 0x81, 0x68];
        data.extend_from_slice(b"FIDO_2_0");
        data.extend_from_slice(&[0x04, 0xA1, 0x69]);
        data.extend_from_slice(b"clientPin");
        data.extend_from_slice(&[0xF4, 0x0D, 0x04, 0x20, 0x41, 0x01]);
        let v = decode(&data).unwrap();
        assert_eq!(
            v.get_int_key(1),
            Some(&Value::Array(vec![Value::Text("FIDO_2_0".into())]))
        );
        assert_eq!(
            v.get_int_key(4).and_then(|o| o.get_text_key("clientPin")),
            Some(&Value::Bool(false))
        );
        assert_eq!(v.get_int_key(13), Some(&Value::Int(4)));
        assert_eq!(v.get_int_key(-1), Some(&Value::Bytes(vec![1])));
        assert_eq!(decode(&[0x19, 0x04, 0xB0]).unwrap(), Value::Int(1200));
        assert_eq!(
            decode(&[0x3B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap(),
            Value::Int(-(1i128 << 64))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut data = vec![0xA2, 0x01, 0x82, 0x63];
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&[0x19, 0x01, 0x00, 0x0D, 0x44, 1, 2, 3, 4]);
        assert!(decode(&data).is_ok());
        for cut in 0..data.len() {
            assert!(
                matches!(decode(&data[..cut]), Err(CborError::Truncated(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn too_deep_is_an_error() {
        // {1: [[[…]]]} 200 deep, as the virtual key's getinfo-too-deep fault sends it.
        let mut data = vec![0xA1, 0x01];
        data.extend(std::iter::repeat_n(0x81, 199));
        data.push(0x80);
        assert_eq!(decode(&data), Err(CborError::TooDeep));
        // MAX_DEPTH levels are fine, one more is not.
        let nested = |levels: usize| [vec![0x81; levels - 1], vec![0x80]].concat();
        assert!(decode(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(decode(&nested(MAX_DEPTH + 1)), Err(CborError::TooDeep));
    }

    #[test]
    fn lengths_beyond_the_data_do_not_allocate() {
        // An array of 2^64-1 items in 9 bytes.
        assert!(matches!(
            decode(&[0x9B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(CborError::Truncated(_))
        ));
        assert!(matches!(
            decode(&[0x5A, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(CborError::Truncated(_))
        ));
    }

    #[test]
    fn refuses_what_ctap2_never_sends() {
        assert_eq!(
            decode(&[0x9F, 0xFF]),
            Err(CborError::Unsupported("indefinite length", 0))
        );
        assert_eq!(decode(&[0xC1, 0x00]), Err(CborError::Unsupported("tag", 0)));
        assert_eq!(
            decode(&[0xF9, 0x3C, 0x00]),
            Err(CborError::Unsupported("float or simple value", 0))
        );
        assert_eq!(
            decode(&[0x1C]),
            Err(CborError::Unsupported("reserved additional information", 0))
        );
        assert_eq!(
            decode(&[0x62, 0xFF, 0xFE]),
            Err(CborError::Unsupported("invalid UTF-8 text", 0))
        );
        assert_eq!(decode(&[0x01, 0x02]), Err(CborError::TrailingBytes(1)));
        assert!(matches!(decode(&[]), Err(CborError::Truncated(_))));
    }
}
