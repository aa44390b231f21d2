//! CTAPHID: the FIDO HID interface's framing (CTAP 2.1 §11.2).
//!
//! Reports are 64 bytes. A message is an initialization packet
//! (`CID[4] || 0x80|CMD || BCNT[2] || 57 data bytes`) followed by continuation packets
//! (`CID[4] || SEQ || 59 data bytes`). A channel is allocated with INIT on the broadcast
//! channel and an 8-byte random nonce that must come back unchanged. This module knows the
//! framing, not what vendor commands mean.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{CtapHidError, Error, LinkError};
use crate::version::Version;

/// YubiKeys (and nearly every authenticator) use 64-byte reports.
pub const PACKET_SIZE: usize = 64;
/// The broadcast channel, used only to allocate a channel (INIT).
pub const BROADCAST_CID: u32 = 0xFFFF_FFFF;
/// The bit that marks an initialization packet (command byte).
pub const TYPE_INIT: u8 = 0x80;
const INIT_HEADER: usize = 7;
const CONT_HEADER: usize = 5;
/// The longest message CTAPHID can frame: 57 + 128 × 59 bytes.
pub const MAX_MESSAGE: usize = PACKET_SIZE - INIT_HEADER + 128 * (PACKET_SIZE - CONT_HEADER);

/// CTAPHID commands (without the 0x80 type bit).
pub mod cmd {
    /// Echo the data back.
    pub const PING: u8 = 0x01;
    /// A U2F (CTAP1) message.
    pub const MSG: u8 = 0x03;
    /// Allocate a channel.
    pub const INIT: u8 = 0x06;
    /// Blink the key's LED.
    pub const WINK: u8 = 0x08;
    /// A CTAP2 (CBOR) message.
    pub const CBOR: u8 = 0x10;
    /// Cancel the request in progress.
    pub const CANCEL: u8 = 0x11;
    /// Sent by the key while a request is in progress.
    pub const KEEPALIVE: u8 = 0x3B;
    /// An error frame; its payload is the code.
    pub const ERROR: u8 = 0x3F;
}

/// INIT's capability flags.
pub mod capability {
    /// The device implements WINK.
    pub const WINK: u8 = 0x01;
    /// The device implements CBOR (CTAP2).
    pub const CBOR: u8 = 0x04;
    /// The device does not implement MSG (CTAP1).
    pub const NMSG: u8 = 0x08;
}

/// A device that moves 64-byte HID reports (report ID not included).
pub trait HidPackets {
    /// Writes one output report.
    fn write_packet(&mut self, packet: &[u8; PACKET_SIZE]) -> Result<(), LinkError>;
    /// One input report, or `None` when none came within `timeout`.
    fn read_packet(&mut self, timeout: Duration) -> Result<Option<[u8; PACKET_SIZE]>, LinkError>;
}

/// The packets that carry `data` as command `command` on channel `cid`.
pub fn request_packets(cid: u32, command: u8, data: &[u8]) -> Result<Vec<[u8; PACKET_SIZE]>, Error> {
    if data.len() > MAX_MESSAGE {
        return Err(Error::NotSupported("CTAPHID message too long"));
    }
    let mut packets = Vec::new();
    let mut init = [0u8; PACKET_SIZE];
    init[..4].copy_from_slice(&cid.to_be_bytes());
    init[4] = TYPE_INIT | command;
    init[5..7].copy_from_slice(&(data.len() as u16).to_be_bytes());
    let first = data.len().min(PACKET_SIZE - INIT_HEADER);
    init[INIT_HEADER..INIT_HEADER + first].copy_from_slice(&data[..first]);
    packets.push(init);
    for (seq, chunk) in data[first..].chunks(PACKET_SIZE - CONT_HEADER).enumerate() {
        let mut cont = [0u8; PACKET_SIZE];
        cont[..4].copy_from_slice(&cid.to_be_bytes());
        cont[4] = seq as u8;
        cont[CONT_HEADER..CONT_HEADER + chunk.len()].copy_from_slice(chunk);
        packets.push(cont);
    }
    Ok(packets)
}

/// What one received packet meant for the message being reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More packets are needed.
    More,
    /// The whole response payload.
    Done(Vec<u8>),
    /// A KEEPALIVE with its status (1 processing, 2 user presence needed).
    Keepalive(u8),
    /// A packet for another channel (on Linux every reader of a hidraw node sees all input
    /// reports, so another program's traffic shows up here).
    Foreign(u32),
}

/// Reassembles one response on one channel, packet by packet.
#[derive(Debug)]
pub struct Assembler {
    cid: u32,
    command: u8,
    expected: Option<usize>,
    data: Vec<u8>,
    seq: u8,
}

impl Assembler {
    /// Expects the response to `command` on channel `cid`.
    pub fn new(cid: u32, command: u8) -> Self {
        Self { cid, command, expected: None, data: Vec::new(), seq: 0 }
    }

    /// Takes the next packet; errors for a broken sequence, a bad length or an ERROR frame.
    pub fn feed(&mut self, packet: &[u8; PACKET_SIZE]) -> Result<Step, Error> {
        let cid = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        if cid != self.cid {
            return Ok(Step::Foreign(cid));
        }
        let Some(expected) = self.expected else {
            let command = packet[4];
            let len = usize::from(u16::from_be_bytes([packet[5], packet[6]]));
            let body = &packet[INIT_HEADER..];
            if command == TYPE_INIT | cmd::KEEPALIVE {
                return Ok(Step::Keepalive(body[0]));
            }
            if command == TYPE_INIT | cmd::ERROR {
                return Err(Error::Ctap(CtapHidError(body[0])));
            }
            if command & TYPE_INIT == 0 {
                return Err(protocol(format!("continuation packet (seq {command}) before the initialization packet")));
            }
            if command != TYPE_INIT | self.command {
                return Err(protocol(format!(
                    "answer to command 0x{:02X} instead of 0x{:02X}",
                    command & !TYPE_INIT,
                    self.command
                )));
            }
            if len > MAX_MESSAGE {
                return Err(protocol(format!("declared length {len} is over the CTAPHID maximum")));
            }
            self.expected = Some(len);
            self.data.extend_from_slice(&body[..len.min(body.len())]);
            return Ok(self.step(len));
        };
        let seq = packet[4];
        if seq & TYPE_INIT != 0 {
            return Err(protocol(format!("new initialization packet (0x{seq:02X}) inside a message")));
        }
        if seq != self.seq {
            return Err(protocol(format!("continuation packet {seq} where {} was due", self.seq)));
        }
        self.seq += 1;
        let body = &packet[CONT_HEADER..];
        let take = (expected - self.data.len()).min(body.len());
        self.data.extend_from_slice(&body[..take]);
        Ok(self.step(expected))
    }

    fn step(&mut self, expected: usize) -> Step {
        if self.data.len() >= expected {
            Step::Done(std::mem::take(&mut self.data))
        } else {
            Step::More
        }
    }
}

fn protocol(msg: String) -> Error {
    LinkError::Protocol(msg).into()
}

/// How long to wait.
#[derive(Debug, Clone, Copy)]
pub struct CtapTiming {
    /// The longest gap between two packets (keepalives come every 100 ms or so).
    pub packet_timeout: Duration,
    /// The longest a whole call may take, keepalives and busy retries included.
    pub deadline: Duration,
    /// Pause before retrying a CHANNEL_BUSY answer (python-fido2: 100 ms).
    pub busy_backoff: Duration,
}

impl Default for CtapTiming {
    fn default() -> Self {
        Self { packet_timeout: Duration::from_millis(1500), deadline: Duration::from_secs(5), busy_backoff: Duration::from_millis(100) }
    }
}

/// An allocated CTAPHID channel on one device.
pub struct CtapHidDevice<'d> {
    dev: &'d mut dyn HidPackets,
    cid: u32,
    /// The device version from INIT (for YubiKey 4 and later, the firmware version).
    pub version: Version,
    /// INIT's capability flags (see [`capability`]).
    pub capabilities: u8,
    /// The CTAPHID protocol version from INIT.
    pub protocol_version: u8,
    timing: CtapTiming,
    packets: u32,
}

impl<'d> CtapHidDevice<'d> {
    /// Allocates a channel: INIT on the broadcast channel with `nonce`.
    pub fn init(dev: &'d mut dyn HidPackets, nonce: [u8; 8], timing: CtapTiming) -> Result<Self, Error> {
        let mut this = Self { dev, cid: BROADCAST_CID, version: Version::default(), capabilities: 0, protocol_version: 0, timing, packets: 0 };
        let answer = this.call(cmd::INIT, &nonce)?;
        if answer.len() < 17 {
            return Err(protocol(format!("INIT answer of {} bytes, expected 17", answer.len())));
        }
        if answer[..8] != nonce {
            return Err(protocol("INIT answer carries another nonce".into()));
        }
        let cid = u32::from_be_bytes([answer[8], answer[9], answer[10], answer[11]]);
        if cid == BROADCAST_CID || cid == 0 {
            return Err(protocol(format!("INIT allocated the reserved channel 0x{cid:08X}")));
        }
        this.cid = cid;
        this.protocol_version = answer[12];
        this.version = Version::new(answer[13], answer[14], answer[15]);
        this.capabilities = answer[16];
        Ok(this)
    }

    /// Reports moved so far, both directions.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// The channel ID INIT allocated.
    pub fn channel(&self) -> u32 {
        self.cid
    }

    /// Sends `data` as `command` and returns the response payload. CHANNEL_BUSY is retried
    /// until the deadline; other error frames come back as [`Error::Ctap`].
    pub fn call(&mut self, command: u8, data: &[u8]) -> Result<Vec<u8>, Error> {
        let deadline = Instant::now() + self.timing.deadline;
        loop {
            match self.call_once(command, data, deadline) {
                Err(Error::Ctap(CtapHidError::CHANNEL_BUSY)) if Instant::now() + self.timing.busy_backoff < deadline => {
                    tracing::debug!("CTAPHID channel busy, retrying");
                    sleep(self.timing.busy_backoff);
                }
                other => return other,
            }
        }
    }

    fn call_once(&mut self, command: u8, data: &[u8], deadline: Instant) -> Result<Vec<u8>, Error> {
        for packet in request_packets(self.cid, command, data)? {
            self.packets += 1;
            self.dev.write_packet(&packet)?;
        }
        let mut assembler = Assembler::new(self.cid, command);
        let mut foreign = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout(foreign, self.cid));
            }
            let Some(packet) = self.dev.read_packet(left.min(self.timing.packet_timeout))? else {
                return Err(timeout(foreign, self.cid));
            };
            self.packets += 1;
            match assembler.feed(&packet)? {
                Step::Done(payload) => return Ok(payload),
                Step::More => {}
                Step::Keepalive(status) => tracing::trace!(status, "CTAPHID keepalive"),
                Step::Foreign(cid) => {
                    tracing::debug!("CTAPHID packet for channel 0x{cid:08X} skipped");
                    foreign = Some(cid);
                }
            }
        }
    }
}

/// No answer in time. If only other channels answered, say so: that is a broken device
/// (or another program talking to it), not a slow one.
fn timeout(foreign: Option<u32>, ours: u32) -> Error {
    match foreign {
        Some(cid) => protocol(format!("answers came on channel 0x{cid:08X}, not on ours (0x{ours:08X})")),
        None => LinkError::Timeout.into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted FIDO device: the queued input reports, and every report written.
    pub(crate) struct FakeFido {
        pub input: VecDeque<Result<Option<[u8; 64]>, LinkError>>,
        pub written: Vec<[u8; 64]>,
    }

    impl FakeFido {
        pub fn new() -> Self {
            Self { input: VecDeque::new(), written: Vec::new() }
        }

        /// Queues a whole response message on `cid`.
        pub fn respond(&mut self, cid: u32, command: u8, payload: &[u8]) {
            for p in request_packets(cid, command, payload).unwrap() {
                self.input.push_back(Ok(Some(p)));
            }
        }

        /// Queues the INIT answer for whatever nonce is sent first: the fake cannot know
        /// the nonce in advance, so `init_with` is used with a fixed one.
        pub fn init_answer(&mut self, nonce: [u8; 8], cid: u32, version: [u8; 3], caps: u8) {
            let mut p = nonce.to_vec();
            p.extend_from_slice(&cid.to_be_bytes());
            p.extend_from_slice(&[2, version[0], version[1], version[2], caps]);
            self.respond(BROADCAST_CID, cmd::INIT, &p);
        }
    }

    impl HidPackets for FakeFido {
        fn write_packet(&mut self, packet: &[u8; 64]) -> Result<(), LinkError> {
            self.written.push(*packet);
            Ok(())
        }
        fn read_packet(&mut self, _timeout: Duration) -> Result<Option<[u8; 64]>, LinkError> {
            self.input.pop_front().unwrap_or(Ok(None))
        }
    }

    pub(crate) fn fast() -> CtapTiming {
        CtapTiming { packet_timeout: Duration::from_millis(10), deadline: Duration::from_millis(300), busy_backoff: Duration::from_millis(1) }
    }

    const NONCE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
    const CID: u32 = 0xCCCC_CCCC;

    #[test]
    fn init_allocates_a_channel() {
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [5, 7, 4], capability::CBOR | capability::WINK);
        let ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
        assert_eq!(ctap.channel(), CID);
        assert_eq!(ctap.version, Version::new(5, 7, 4));
        assert_eq!(ctap.capabilities, 0x05);
        let mut expected = [0u8; 64];
        expected[..7].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x86, 0x00, 0x08]);
        expected[7..15].copy_from_slice(&NONCE);
        assert_eq!(dev.written, vec![expected]);
    }

    #[test]
    fn init_rejects_another_nonce() {
        let mut dev = FakeFido::new();
        dev.init_answer([9; 8], CID, [5, 7, 4], 0);
        let err = CtapHidDevice::init(&mut dev, NONCE, fast()).err().unwrap();
        assert!(matches!(err, Error::Link(LinkError::Protocol(m)) if m.contains("nonce")));
    }

    #[test]
    fn init_rejects_short_answers_and_reserved_channels() {
        let mut dev = FakeFido::new();
        dev.respond(BROADCAST_CID, cmd::INIT, &NONCE);
        assert!(CtapHidDevice::init(&mut dev, NONCE, fast()).is_err());
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, BROADCAST_CID, [5, 7, 4], 0);
        assert!(CtapHidDevice::init(&mut dev, NONCE, fast()).is_err());
    }

    /// A channel that is already allocated (INIT is tested on its own).
    fn on_channel(dev: &mut FakeFido) -> CtapHidDevice<'_> {
        CtapHidDevice { dev, cid: CID, version: Version::default(), capabilities: 0, protocol_version: 2, timing: fast(), packets: 0 }
    }

    #[test]
    fn the_vendor_read_config_request_bytes() {
        let p = request_packets(CID, 0x42, &[0x00]).unwrap();
        let mut expected = [0u8; 64];
        expected[..8].copy_from_slice(&[0xCC, 0xCC, 0xCC, 0xCC, 0xC2, 0x00, 0x01, 0x00]);
        assert_eq!(p, vec![expected]);
        let p1 = request_packets(CID, 0x42, &[0x01]).unwrap();
        assert_eq!(p1[0][..8], [0xCC, 0xCC, 0xCC, 0xCC, 0xC2, 0x00, 0x01, 0x01]);
    }

    #[test]
    fn long_requests_and_responses_span_packets() {
        let data: Vec<u8> = (0..200u8).collect();
        let packets = request_packets(CID, cmd::PING, &data).unwrap();
        assert_eq!(packets.len(), 4);
        assert_eq!(packets[1][4], 0);
        assert_eq!(packets[3][4], 2);
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [5, 7, 4], 0);
        dev.respond(CID, cmd::PING, &data);
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
        assert_eq!(ctap.call(cmd::PING, &data).unwrap(), data);
        assert_eq!(ctap.packets(), 2 + 4 + 4);
    }

    #[test]
    fn keepalives_and_other_channels_are_skipped() {
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [5, 7, 4], 0);
        let mut ka = [0u8; 64];
        ka[..8].copy_from_slice(&[0xCC, 0xCC, 0xCC, 0xCC, 0xBB, 0x00, 0x01, 0x01]);
        dev.input.push_back(Ok(Some(ka)));
        dev.respond(0x1234_5678, 0x42, &[9, 9, 9]);
        dev.respond(CID, 0x42, &[3, 1, 1, 0x3F]);
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
        assert_eq!(ctap.call(0x42, &[0]).unwrap(), vec![3, 1, 1, 0x3F]);
    }

    #[test]
    fn error_frames_are_typed() {
        let mut dev = FakeFido::new();
        dev.respond(CID, cmd::ERROR, &[0x01]);
        let mut ctap = on_channel(&mut dev);
        assert_eq!(ctap.call(0x42, &[0]).unwrap_err(), Error::Ctap(CtapHidError::INVALID_CMD));
    }

    #[test]
    fn busy_is_retried() {
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [5, 7, 4], 0);
        dev.respond(CID, cmd::ERROR, &[0x06]);
        dev.respond(CID, cmd::ERROR, &[0x06]);
        dev.respond(CID, 0x42, &[1, 2]);
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
        assert_eq!(ctap.call(0x42, &[0]).unwrap(), vec![1, 2]);
        // Each try sent the request again.
        assert_eq!(dev.written.len(), 4);
    }

    #[test]
    fn silence_times_out_and_foreign_answers_are_named() {
        let mut dev = FakeFido::new();
        assert_eq!(on_channel(&mut dev).call(0x42, &[0]).unwrap_err(), Error::Link(LinkError::Timeout));
        dev.respond(0x0102_0304, 0x42, &[1]);
        let mut ctap = on_channel(&mut dev);
        let err = ctap.call(0x42, &[0]).unwrap_err();
        assert!(matches!(err, Error::Link(LinkError::Protocol(m)) if m.contains("0x01020304")));
    }

    #[test]
    fn broken_sequences_and_lengths_are_errors() {
        let mut a = Assembler::new(CID, 0x42);
        let mut init = request_packets(CID, 0x42, &[0u8; 100]).unwrap();
        assert_eq!(a.feed(&init[0]).unwrap(), Step::More);
        init[1][4] = 5;
        assert!(a.feed(&init[1]).is_err());

        let mut a = Assembler::new(CID, 0x42);
        let cont = request_packets(CID, 0x42, &[0u8; 100]).unwrap()[1];
        assert!(a.feed(&cont).is_err());

        let mut a = Assembler::new(CID, 0x42);
        let mut huge = [0u8; 64];
        huge[..7].copy_from_slice(&[0xCC, 0xCC, 0xCC, 0xCC, 0xC2, 0xFF, 0xFF]);
        assert!(a.feed(&huge).is_err());

        let mut a = Assembler::new(CID, 0x42);
        assert!(a.feed(&request_packets(CID, cmd::CBOR, &[1]).unwrap()[0]).is_err());
    }

    #[test]
    fn an_unplugged_key_is_a_clean_error() {
        let mut dev = FakeFido::new();
        dev.init_answer(NONCE, CID, [5, 7, 4], 0);
        dev.input.push_back(Err(LinkError::Unplugged));
        let mut ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
        assert_eq!(ctap.call(0x42, &[0]).unwrap_err(), Error::Link(LinkError::Unplugged));
    }

    proptest::proptest! {
        #[test]
        fn the_assembler_never_panics(packets in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 64), 0..12)) {
            let mut a = Assembler::new(CID, 0x42);
            for p in packets {
                let mut packet: [u8; 64] = p.try_into().unwrap();
                // Make most packets ours, so reassembly is exercised, not just skipped.
                if packet[0] & 1 == 0 {
                    packet[..4].copy_from_slice(&CID.to_be_bytes());
                }
                match a.feed(&packet) {
                    Ok(Step::Done(data)) => { proptest::prop_assert!(data.len() <= MAX_MESSAGE); break; }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }
}
