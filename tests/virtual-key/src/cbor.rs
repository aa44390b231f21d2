//! The little CBOR (RFC 8949) a virtual authenticator needs: an encoder for canonical CTAP2
//! answers, and a bounded decoder for the small integer-keyed maps a client sends.

/// A CBOR data item (only the major types CTAP2 uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    /// Entries in the order given; CTAP2 canonical order is the caller's job.
    Map(Vec<(Value, Value)>),
    Bool(bool),
}

impl Value {
    pub fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    /// Canonical (shortest-form) encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) if *n >= 0 => head(out, 0, *n as u64),
            Value::Int(n) => head(out, 1, (-1 - *n) as u64),
            Value::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Text(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.encode_into(out);
                }
            }
            Value::Map(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.encode_into(out);
                    v.encode_into(out);
                }
            }
            Value::Bool(b) => out.push(if *b { 0xF5 } else { 0xF4 }),
        }
    }

    /// The value under integer key `key` of a map.
    pub fn get(&self, key: i64) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| *k == Value::Int(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xFF => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xFFFF => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Why a request could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    Unsupported,
    TooDeep,
    TrailingBytes,
}

/// Maximum nesting the decoder accepts (a client request is at most a few levels deep).
pub const MAX_DEPTH: usize = 4;

/// Decodes exactly one item filling `data`.
pub fn decode(data: &[u8]) -> Result<Value, DecodeError> {
    let mut pos = 0;
    let v = item(data, &mut pos, 0)?;
    if pos != data.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(v)
}

fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], DecodeError> {
    let end = pos.checked_add(n).ok_or(DecodeError::Truncated)?;
    let s = data.get(*pos..end).ok_or(DecodeError::Truncated)?;
    *pos = end;
    Ok(s)
}

fn item(data: &[u8], pos: &mut usize, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let b = take(data, pos, 1)?[0];
    let (major, info) = (b >> 5, b & 0x1F);
    if major == 7 {
        return match b {
            0xF4 => Ok(Value::Bool(false)),
            0xF5 => Ok(Value::Bool(true)),
            _ => Err(DecodeError::Unsupported),
        };
    }
    let n: u64 = match info {
        0..=23 => u64::from(info),
        24 => u64::from(take(data, pos, 1)?[0]),
        25 => u64::from(u16::from_be_bytes(
            take(data, pos, 2)?.try_into().unwrap_or([0; 2]),
        )),
        26 => u64::from(u32::from_be_bytes(
            take(data, pos, 4)?.try_into().unwrap_or([0; 4]),
        )),
        27 => u64::from_be_bytes(take(data, pos, 8)?.try_into().unwrap_or([0; 8])),
        _ => return Err(DecodeError::Unsupported),
    };
    let len = || usize::try_from(n).map_err(|_| DecodeError::Truncated);
    match major {
        0 => i64::try_from(n)
            .map(Value::Int)
            .map_err(|_| DecodeError::Unsupported),
        1 => i64::try_from(n)
            .map(|n| Value::Int(-1 - n))
            .map_err(|_| DecodeError::Unsupported),
        2 => Ok(Value::Bytes(take(data, pos, len()?)?.to_vec())),
        3 => String::from_utf8(take(data, pos, len()?)?.to_vec())
            .map(Value::Text)
            .map_err(|_| DecodeError::Unsupported),
        4 => {
            let n = len()?;
            if n > data.len() {
                return Err(DecodeError::Truncated);
            }
            (0..n)
                .map(|_| item(data, pos, depth + 1))
                .collect::<Result<_, _>>()
                .map(Value::Array)
        }
        5 => {
            let n = len()?;
            if n > data.len() {
                return Err(DecodeError::Truncated);
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let k = item(data, pos, depth + 1)?;
                let v = item(data, pos, depth + 1)?;
                entries.push((k, v));
            }
            Ok(Value::Map(entries))
        }
        _ => Err(DecodeError::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8949_examples() {
        assert_eq!(Value::Int(0).encode(), [0x00]);
        assert_eq!(Value::Int(23).encode(), [0x17]);
        assert_eq!(Value::Int(24).encode(), [0x18, 0x18]);
        assert_eq!(Value::Int(1000).encode(), [0x19, 0x03, 0xE8]);
        assert_eq!(Value::Int(-7).encode(), [0x26]);
        assert_eq!(Value::Int(-257).encode(), [0x39, 0x01, 0x00]);
        assert_eq!(Value::text("IETF").encode(), b"\x64IETF");
        assert_eq!(Value::Bool(true).encode(), [0xF5]);
        let m = Value::Map(vec![
            (Value::Int(1), Value::Int(2)),
            (Value::Int(3), Value::Int(4)),
        ]);
        assert_eq!(m.encode(), [0xA2, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(decode(&m.encode()), Ok(m));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xA2, 0x01]), Err(DecodeError::Truncated));
        assert_eq!(
            decode(&[0x5A, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode(&[0x81; 20]), Err(DecodeError::TooDeep));
        assert_eq!(decode(&[0x01, 0x02]), Err(DecodeError::TrailingBytes));
        assert_eq!(decode(&[0xF6]), Err(DecodeError::Unsupported));
    }
}
