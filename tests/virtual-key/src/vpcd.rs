//! Serves a [`Card`] to vsmartcard's `vpcd` reader driver: the "vpicc" side of its TCP protocol.
//!
//! Wire format: every message is a 2-byte big-endian length and a payload. A 1-byte payload from
//! the reader is a control code (0 power off, 1 power on, 2 reset, 4 send ATR); a longer one is a
//! command APDU, answered with a response APDU in the same framing. Connecting is a card
//! insertion (an NFC tap), closing the socket a removal.
//!
//! The `vpicc` crate implements the same framing, but its blocking `run` loop has no read
//! timeout, no way to stop it from another thread, and treats an unknown control byte as fatal;
//! the framing is small enough to own here.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::card::Card;

/// vpcd's default port for the first reader (`Virtual PCD 00 00`); the second reader is +1.
pub const DEFAULT_PORT: u16 = 35963;

/// How often a blocked read wakes up to check the stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Once a message has started, it must complete within this time.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

const CTRL_POWER_OFF: u8 = 0;
const CTRL_POWER_ON: u8 = 1;
const CTRL_RESET: u8 = 2;
const CTRL_GET_ATR: u8 = 4;

/// Why serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The reader side closed the connection (pcscd stopped or the driver dropped us).
    ReaderClosed,
    /// The stop flag was raised (card removal requested).
    Stopped,
}

/// What the reader has done with the card so far, observable from other threads.
#[derive(Debug, Default)]
pub struct Session {
    /// The card is powered (power on seen, no power off since).
    pub powered: AtomicBool,
    /// ATRs sent; pcscd asks for the ATR when it detects and powers the card.
    pub atrs_sent: AtomicU64,
    /// APDU exchanges completed on this connection.
    pub apdus: AtomicU64,
    /// Answer ACS's LED/buzzer pseudo-APDU as the reader (ACR122U) instead of the card.
    pub acs_reader: AtomicBool,
    /// Those reader commands, in order.
    pub reader_commands: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Session {
    /// Whether pcscd has detected and powered the card (power on, then ATR).
    pub fn is_powered_with_atr(&self) -> bool {
        self.powered.load(Ordering::SeqCst) && self.atrs_sent.load(Ordering::SeqCst) > 0
    }
}

/// Connects to vpcd on 127.0.0.1:`port` (a card insertion).
pub fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Answers the reader until it closes the connection or `stop` is raised. Every read has a
/// [`POLL_INTERVAL`] timeout; a message that stalls for [`FRAME_TIMEOUT`] is an error.
pub fn serve(
    stream: &mut TcpStream,
    card: &mut Card,
    stop: &AtomicBool,
    session: &Session,
) -> io::Result<End> {
    serve_with(stream, card, stop, session, &mut |_| {})
}

/// As [`serve`], calling `after_apdu(card.apdu_count())` after each response has been sent.
pub fn serve_with(
    stream: &mut TcpStream,
    card: &mut Card,
    stop: &AtomicBool,
    session: &Session,
    after_apdu: &mut dyn FnMut(u64),
) -> io::Result<End> {
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
    loop {
        let msg = match read_message(stream, stop)? {
            Read_::Message(m) => m,
            Read_::Closed => return Ok(End::ReaderClosed),
            Read_::Stopped => return Ok(End::Stopped),
        };
        match msg.as_slice() {
            [] => {}
            [CTRL_POWER_OFF] => {
                session.powered.store(false, Ordering::SeqCst);
                card.reset();
            }
            [CTRL_POWER_ON] | [CTRL_RESET] => {
                card.reset();
                session.powered.store(true, Ordering::SeqCst);
            }
            [CTRL_GET_ATR] => {
                session.atrs_sent.fetch_add(1, Ordering::SeqCst);
                write_message(stream, card.atr())?;
            }
            [_] => {} // unknown control code: ignore, as a reader would
            // An ACR122U answers this itself: `90` and its LED state (both LEDs off here).
            apdu if session.acs_reader.load(Ordering::SeqCst) && apdu.starts_with(&[0xFF, 0x00, 0x40]) => {
                if let Ok(mut c) = session.reader_commands.lock() {
                    c.push(apdu.to_vec());
                }
                write_message(stream, &[0x90, 0x00])?;
            }
            apdu => {
                let response = card.process(apdu);
                if let Some(hold) = card.take_stall() {
                    // A stalled card: the reader waits; a removal ends the wait.
                    let until = Instant::now() + hold;
                    while Instant::now() < until {
                        if stop.load(Ordering::SeqCst) {
                            return Ok(End::Stopped);
                        }
                        std::thread::sleep(POLL_INTERVAL.min(until.saturating_duration_since(Instant::now())));
                    }
                }
                session.apdus.fetch_add(1, Ordering::SeqCst);
                write_message(stream, &response)?;
                after_apdu(card.apdu_count());
            }
        }
    }
}

/// Asks the kernel to acknowledge what arrives at once instead of delaying the ACK.
///
/// vpcd writes a message's 2-byte length and its payload in two `send` calls without
/// TCP_NODELAY, so Nagle holds the payload until the length is acknowledged; with Linux's
/// delayed ACK that costs ~40 ms per message. A real reader has no such delay, and it would
/// swamp every timing taken through the lab. TCP_QUICKACK is not sticky, hence per read.
#[cfg(target_os = "linux")]
fn quick_ack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
    }
    const IPPROTO_TCP: i32 = 6;
    const TCP_QUICKACK: i32 = 12;
    let one: i32 = 1;
    // SAFETY: a valid socket fd and a pointer to a live i32 of the stated length.
    unsafe {
        setsockopt(stream.as_raw_fd(), IPPROTO_TCP, TCP_QUICKACK, (&one as *const i32).cast(), 4);
    }
}

#[cfg(not(target_os = "linux"))]
fn quick_ack(_: &TcpStream) {}

enum Read_ {
    Message(Vec<u8>),
    Closed,
    Stopped,
}

fn read_message(stream: &mut TcpStream, stop: &AtomicBool) -> io::Result<Read_> {
    quick_ack(stream);
    let mut header = [0u8; 2];
    match read_full(stream, &mut header, stop, true)? {
        Fill::Done => {}
        Fill::Eof => return Ok(Read_::Closed),
        Fill::Stopped => return Ok(Read_::Stopped),
    }
    quick_ack(stream);
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(header))];
    match read_full(stream, &mut msg, stop, false)? {
        Fill::Done => Ok(Read_::Message(msg)),
        Fill::Eof => Ok(Read_::Closed),
        Fill::Stopped => Ok(Read_::Stopped),
    }
}

enum Fill {
    Done,
    Eof,
    Stopped,
}

/// Fills `buf`. While nothing of a message has arrived (`idle`), waits indefinitely (checking
/// `stop`); once bytes arrive, the rest must follow within [`FRAME_TIMEOUT`].
fn read_full(
    stream: &mut TcpStream,
    buf: &mut [u8],
    stop: &AtomicBool,
    idle: bool,
) -> io::Result<Fill> {
    let mut filled = 0;
    let mut started = (!idle).then(Instant::now);
    while filled < buf.len() {
        if stop.load(Ordering::SeqCst) {
            return Ok(Fill::Stopped);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 && idle => return Ok(Fill::Eof),
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "vpcd closed mid-message",
                ))
            }
            Ok(n) => {
                filled += n;
                started.get_or_insert_with(Instant::now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return Ok(Fill::Eof)
            }
            Err(e) => return Err(e),
        }
        if started.is_some_and(|t| t.elapsed() > FRAME_TIMEOUT) {
            return Err(io::Error::new(ErrorKind::TimedOut, "vpcd message stalled"));
        }
    }
    Ok(Fill::Done)
}

fn write_message(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let len = u16::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            ErrorKind::InvalidInput,
            "vpcd message longer than 65535 bytes",
        )
    })?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyModel;
    use std::net::TcpListener;
    use std::sync::Arc;

    fn frame(p: &[u8]) -> Vec<u8> {
        let mut v = (p.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(p);
        v
    }

    fn read_frame(s: &mut TcpStream) -> Vec<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let mut m = vec![0u8; u16::from_be_bytes(h) as usize];
        s.read_exact(&mut m).unwrap();
        m
    }

    /// A fake vpcd: the test plays the reader side over a local TCP socket.
    #[test]
    fn framing_control_and_apdus() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let session = Arc::new(Session::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (Arc::clone(&session), Arc::clone(&stop));
        let t = std::thread::spawn(move || {
            let mut stream = connect(port, Duration::from_secs(2)).unwrap();
            let mut card = Card::new(KeyModel::preset("yk5nfc").unwrap());
            serve(&mut stream, &mut card, &st2, &s2).unwrap()
        });
        let (mut r, _) = listener.accept().unwrap();
        r.write_all(&frame(&[1])).unwrap();
        r.write_all(&frame(&[4])).unwrap();
        assert_eq!(
            read_frame(&mut r),
            KeyModel::preset("yk5nfc").unwrap().atr.bytes()
        );
        r.write_all(&frame(&[9])).unwrap(); // unknown control: ignored
                                            // A message split across writes still arrives whole.
        let select = frame(&[
            0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0, 0, 5, 0x27, 0x47, 0x11, 0x17,
        ]);
        r.write_all(&select[..5]).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        r.write_all(&select[5..]).unwrap();
        assert_eq!(read_frame(&mut r), b"5.4.3\x90\x00");
        assert!(session.is_powered_with_atr());
        assert_eq!(session.apdus.load(Ordering::SeqCst), 1);
        drop(r);
        assert_eq!(t.join().unwrap(), End::ReaderClosed);
    }

    #[test]
    fn stop_flag_ends_an_idle_card() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st2 = Arc::clone(&stop);
        let t = std::thread::spawn(move || {
            let mut stream = connect(port, Duration::from_secs(2)).unwrap();
            let mut card = Card::new(KeyModel::preset("neo").unwrap());
            serve(&mut stream, &mut card, &st2, &Session::default())
        });
        let (_r, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        stop.store(true, Ordering::SeqCst);
        assert_eq!(t.join().unwrap().unwrap(), End::Stopped);
    }
}
