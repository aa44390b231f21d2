//! The scan benchmark's floor (tests/bench/scan.sh): the least a program can do to read a
//! YubiKey's DeviceInfo through PC/SC, started as a process like keytally is.
//!
//! It establishes a PC/SC context, connects to the named reader and sends the APDUs keytally
//! sends to a 5.x key: SELECT the management applet, then READ CONFIG page by page while tag
//! 0x10 says more pages follow (and GET RESPONSE on `61xx`); a status word other than 9000
//! ends the read (a key without READ CONFIG, such as a NEO, answers the first one so); then
//! it disconnects leaving the card as it is, as keytally does. No reader listing, no
//! transaction, no parsing beyond that, no USB, no logging, no configuration.
//!
//! Usage: `keytally-scan-floor READER` — prints the number of APDUs sent; exits 1 on a PC/SC
//! error (with the error on stderr).

use std::ffi::CString;
use std::process::ExitCode;

use pcsc::{Card, Context, Disposition, Protocols, Scope, ShareMode};

const SELECT_MANAGEMENT: [u8; 13] = [
    0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17,
];
const MORE_DATA: u8 = 0x10;

fn main() -> ExitCode {
    let Some(reader) = std::env::args().nth(1) else {
        eprintln!("usage: keytally-scan-floor READER");
        return ExitCode::from(2);
    };
    match read(&reader) {
        Ok(apdus) => {
            println!("{apdus}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keytally-scan-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(reader: &str) -> Result<u32, String> {
    let ctx = Context::establish(Scope::User).map_err(|e| format!("establish: {e}"))?;
    let name = CString::new(reader).map_err(|_| "reader name with a NUL".to_string())?;
    let card = ctx
        .connect(&name, ShareMode::Shared, Protocols::ANY)
        .map_err(|e| format!("connect: {e}"))?;
    let apdus = send_apdus(&card);
    // As keytally lets go of a card: leaving it as it is (no reset).
    card.disconnect(Disposition::LeaveCard)
        .map_err(|(_, e)| format!("disconnect: {e}"))?;
    apdus
}

/// SELECT management, then READ CONFIG page by page; the number of APDUs sent.
fn send_apdus(card: &Card) -> Result<u32, String> {
    let mut apdus = 0;
    // The answer's data, or None for a status word other than 9000.
    let mut send = |command: &[u8]| -> Result<Option<Vec<u8>>, String> {
        let mut data = Vec::new();
        let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        let mut command = command.to_vec();
        loop {
            apdus += 1;
            let resp = card
                .transmit(&command, &mut buf)
                .map_err(|e| format!("transmit: {e}"))?;
            let (body, sw) = resp.split_at(resp.len().checked_sub(2).ok_or("no status word")?);
            data.extend_from_slice(body);
            match sw {
                [0x90, 0x00] => return Ok(Some(data)),
                [0x61, n] => command = vec![0x00, 0xC0, 0x00, 0x00, *n],
                _ => return Ok(None),
            }
        }
    };
    if send(&SELECT_MANAGEMENT)?.is_none() {
        return Ok(apdus);
    }
    let (mut page, mut remaining) = (0u8, 1u32);
    while remaining > 0 && page < 16 {
        remaining -= 1;
        let Some(raw) = send(&[0x00, 0x1D, page, 0x00, 0x00])? else {
            break;
        };
        if let Some(more) = more_pages(&raw) {
            remaining = more;
        }
        page += 1;
    }
    Ok(apdus)
}

/// Tag 0x10 of one DeviceInfo page (`LEN || TLVs`): how many pages follow.
fn more_pages(page: &[u8]) -> Option<u32> {
    let mut tlvs = page.get(1..)?;
    while let [tag, len, rest @ ..] = tlvs {
        let len = usize::from(*len);
        let value = rest.get(..len)?;
        if *tag == MORE_DATA {
            return Some(value.iter().fold(0, |n, b| n << 8 | u32::from(*b)));
        }
        tlvs = &rest[len..];
    }
    None
}
