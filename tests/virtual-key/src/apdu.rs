//! Parses ISO 7816-4 command APDUs (short and extended forms, cases 1–4) without panicking.

/// A parsed command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    /// Expected response length; `None` when the command carries no Le (cases 1 and 3).
    /// A short Le of `00` is 256, an extended Le of `00 00` is 65536.
    pub le: Option<usize>,
}

/// Why a byte string is not a command APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than 4 header bytes.
    TooShort,
    /// Lc/Le do not agree with the number of bytes.
    WrongLength,
}

/// Parses a command APDU.
pub fn parse(bytes: &[u8]) -> Result<Command<'_>, ParseError> {
    let (header, body) = match bytes {
        [cla, ins, p1, p2, body @ ..] => ([*cla, *ins, *p1, *p2], body),
        _ => return Err(ParseError::TooShort),
    };
    let (data, le) = parse_body(body)?;
    Ok(Command {
        cla: header[0],
        ins: header[1],
        p1: header[2],
        p2: header[3],
        data,
        le,
    })
}

fn parse_body(body: &[u8]) -> Result<(&[u8], Option<usize>), ParseError> {
    let short_le = |b: u8| if b == 0 { 256 } else { usize::from(b) };
    let ext_len = |hi: u8, lo: u8| usize::from(u16::from_be_bytes([hi, lo]));
    match body {
        [] => Ok((&[], None)),
        [le] => Ok((&[], Some(short_le(*le)))),
        [0, hi, lo] => {
            let le = ext_len(*hi, *lo);
            Ok((&[], Some(if le == 0 { 65536 } else { le })))
        }
        [0, hi, lo, rest @ ..] => {
            let lc = ext_len(*hi, *lo);
            if lc == 0 {
                return Err(ParseError::WrongLength);
            }
            match rest.len().checked_sub(lc) {
                Some(0) => Ok((rest, None)),
                Some(2) => {
                    let le = ext_len(rest[lc], rest[lc + 1]);
                    Ok((&rest[..lc], Some(if le == 0 { 65536 } else { le })))
                }
                _ => Err(ParseError::WrongLength),
            }
        }
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            match rest.len().checked_sub(lc) {
                Some(0) => Ok((rest, None)),
                Some(1) => Ok((&rest[..lc], Some(short_le(rest[lc])))),
                _ => Err(ParseError::WrongLength),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let c = parse(&[0, 0x1D, 1, 0]).unwrap();
        assert_eq!((c.ins, c.p1, c.data.len(), c.le), (0x1D, 1, 0, None));
        let c = parse(&[0, 0x1D, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(256));
        let c = parse(&[0, 0xA4, 4, 0, 2, 0xAA, 0xBB]).unwrap();
        assert_eq!((c.data, c.le), (&[0xAA, 0xBB][..], None));
        let c = parse(&[0, 0xA4, 4, 0, 1, 0xAA, 0x10]).unwrap();
        assert_eq!((c.data, c.le), (&[0xAA][..], Some(16)));
        let c = parse(&[0, 0xCB, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(65536));
        let c = parse(&[0, 0xCB, 0, 0, 0, 0, 1, 0x55, 0, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[0x55][..], Some(65536)));
        assert_eq!(parse(&[0, 1, 2]), Err(ParseError::TooShort));
        assert_eq!(parse(&[0, 0xA4, 4, 0, 5, 1]), Err(ParseError::WrongLength));
        assert_eq!(
            parse(&[0, 0xA4, 4, 0, 0, 0, 9, 1]),
            Err(ParseError::WrongLength)
        );
    }
}
