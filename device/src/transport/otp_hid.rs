//! OTP HID: the keyboard interface's feature-report protocol (ykpers' "frame" protocol).
//!
//! Everything moves in 8-byte feature reports, report ID 0. A command is a 70-byte frame
//! (`payload[64] || slot || CRC-16 LE || 00 00 00`) sent as up to ten 7-byte chunks, each
//! tagged `0x80 | seq` in byte 7. The answer is read back report by report: byte 7 carries
//! `0x40` (response pending) and a 5-bit sequence number; a plain status report (byte 7 = 0)
//! instead of data means the command was rejected. This module knows those bytes, not what
//! the slots mean.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{Error, ParseError, LinkError};
use crate::version::Version;

/// Feature reports are 8 bytes: 7 data bytes and a status/sequence byte.
pub const REPORT_SIZE: usize = 8;
const REPORT_DATA: usize = REPORT_SIZE - 1;
/// A command payload is zero-padded to this size.
pub const SLOT_DATA_SIZE: usize = 64;
/// `payload || slot || crc(2) || 3 filler bytes`.
pub const FRAME_SIZE: usize = SLOT_DATA_SIZE + 6;
/// CRC-16 over `data || complement-CRC (LE)` of a good response leaves this residual.
pub const CRC_OK_RESIDUAL: u16 = 0xF0B8;
/// Written after a response is read, to put the key back in its idle state.
pub const RESET_REPORT: [u8; REPORT_SIZE] = [0, 0, 0, 0, 0, 0, 0, 0xFF];

const SLOT_WRITE_FLAG: u8 = 0x80;
const RESP_PENDING_FLAG: u8 = 0x40;
const RESP_TIMEOUT_WAIT_FLAG: u8 = 0x20;
const SEQUENCE_MASK: u8 = 0x1F;
const STATUS_OFFSET_PROG_SEQ: usize = 4;
const STATUS_OFFSET_TOUCH_LOW: usize = 5;
const CONFIG_SLOTS_PROGRAMMED_MASK: u8 = 0x03;
/// No answer is longer than a frame; more response reports than this is a broken device.
const MAX_RESPONSE_REPORTS: usize = FRAME_SIZE.div_ceil(REPORT_DATA);

/// A device that reads and writes 8-byte feature reports (report ID 0, not included).
pub trait FeatureReports {
    /// Reads the feature report.
    fn get_report(&mut self) -> Result<[u8; REPORT_SIZE], LinkError>;
    /// Writes a feature report.
    fn set_report(&mut self, report: &[u8; REPORT_SIZE]) -> Result<(), LinkError>;
}

/// CRC-16 as ykpers computes it: init 0xFFFF, reflected polynomial 0x8408, no final XOR.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            let carry = crc & 1;
            crc >>= 1;
            if carry != 0 {
                crc ^= 0x8408;
            }
        }
    }
    crc
}

/// True when `data` ends in a valid complement CRC (the device's way).
pub fn check_crc(data: &[u8]) -> bool {
    crc16(data) == CRC_OK_RESIDUAL
}

/// The 70-byte frame for `slot` with `payload` (at most 64 bytes).
pub fn format_frame(slot: u8, payload: &[u8]) -> Result<[u8; FRAME_SIZE], Error> {
    if payload.len() > SLOT_DATA_SIZE {
        return Err(Error::NotSupported("OTP payload longer than 64 bytes"));
    }
    let mut frame = [0u8; FRAME_SIZE];
    frame[..payload.len()].copy_from_slice(payload);
    let crc = crc16(&frame[..SLOT_DATA_SIZE]);
    frame[SLOT_DATA_SIZE] = slot;
    frame[SLOT_DATA_SIZE + 1..SLOT_DATA_SIZE + 3].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// The feature reports that carry `frame`: chunk `seq` becomes `chunk[7] || 0x80 | seq`.
/// All-zero chunks are skipped, except the first and the last.
pub fn frame_reports(frame: &[u8; FRAME_SIZE]) -> Vec<[u8; REPORT_SIZE]> {
    let last = FRAME_SIZE / REPORT_DATA - 1;
    frame
        .chunks(REPORT_DATA)
        .enumerate()
        .filter(|(seq, chunk)| *seq == 0 || *seq == last || chunk.iter().any(|b| *b != 0))
        .map(|(seq, chunk)| {
            let mut report = [0u8; REPORT_SIZE];
            report[..REPORT_DATA].copy_from_slice(chunk);
            report[REPORT_DATA] = SLOT_WRITE_FLAG | seq as u8;
            report
        })
        .collect()
}

/// How long to wait, and how often to poll.
#[derive(Debug, Clone, Copy)]
pub struct OtpTiming {
    /// Polls for the write flag to clear before each report (ykman: 20 × 50 ms).
    pub ready_polls: u32,
    /// The pause between those polls.
    pub ready_interval: Duration,
    /// Poll interval while the key is busy.
    pub busy_interval: Duration,
    /// Poll interval while the key waits for a touch.
    pub touch_interval: Duration,
    /// The longest one command may take from the first report written to the last read.
    pub deadline: Duration,
}

impl Default for OtpTiming {
    fn default() -> Self {
        Self {
            ready_polls: 20,
            ready_interval: Duration::from_millis(50),
            busy_interval: Duration::from_millis(20),
            touch_interval: Duration::from_millis(100),
            deadline: Duration::from_secs(3),
        }
    }
}

/// The OTP protocol over one device.
pub struct OtpProtocol<'d> {
    dev: &'d mut dyn FeatureReports,
    /// The firmware version from the first status report.
    pub version: Version,
    timing: OtpTiming,
    reports: u32,
}

impl<'d> OtpProtocol<'d> {
    /// Reads one status report, which carries the firmware version.
    pub fn new(dev: &'d mut dyn FeatureReports, timing: OtpTiming) -> Result<Self, Error> {
        let mut this = Self { dev, version: Version::default(), timing, reports: 0 };
        let status = this.get()?;
        this.version = Version::new(status[1], status[2], status[3]);
        Ok(this)
    }

    /// Feature reports moved so far, both directions.
    pub fn reports(&self) -> u32 {
        self.reports
    }

    /// The six status bytes: version, programming sequence, touch level.
    pub fn read_status(&mut self) -> Result<[u8; 6], Error> {
        let r = self.get()?;
        Ok([r[1], r[2], r[3], r[4], r[5], r[6]])
    }

    /// Sends a command and returns the response bytes (CRC included, unchecked), or the six
    /// updated status bytes when the command was a write that the key accepted.
    pub fn send_and_receive(&mut self, slot: u8, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let frame = format_frame(slot, payload)?;
        let prog_seq = self.get()?[STATUS_OFFSET_PROG_SEQ];
        for report in frame_reports(&frame) {
            self.await_ready()?;
            self.set(&report)?;
        }
        self.read_frame(prog_seq)
    }

    fn get(&mut self) -> Result<[u8; REPORT_SIZE], Error> {
        self.reports += 1;
        Ok(self.dev.get_report()?)
    }

    fn set(&mut self, report: &[u8; REPORT_SIZE]) -> Result<(), Error> {
        self.reports += 1;
        Ok(self.dev.set_report(report)?)
    }

    fn await_ready(&mut self) -> Result<(), Error> {
        for _ in 0..self.timing.ready_polls.max(1) {
            if self.get()?[REPORT_DATA] & SLOT_WRITE_FLAG == 0 {
                return Ok(());
            }
            sleep(self.timing.ready_interval);
        }
        Err(LinkError::Timeout.into())
    }

    fn read_frame(&mut self, prog_seq: u8) -> Result<Vec<u8>, Error> {
        let deadline = Instant::now() + self.timing.deadline;
        let mut response = Vec::new();
        let mut seq: u8 = 0;
        let mut needs_touch = false;
        loop {
            let report = self.get()?;
            let status = report[REPORT_DATA];
            if status & RESP_PENDING_FLAG != 0 {
                let got = status & SEQUENCE_MASK;
                if got == seq && usize::from(seq) < MAX_RESPONSE_REPORTS {
                    response.extend_from_slice(&report[..REPORT_DATA]);
                    seq += 1;
                } else if got == 0 && seq > 0 {
                    // The sequence wrapped back to 0: the transfer is complete.
                    self.set(&RESET_REPORT)?;
                    return Ok(response);
                } else if seq > 0 && got == seq - 1 {
                    // The same report read twice; nothing new.
                } else {
                    self.abort();
                    return Err(LinkError::Protocol(format!(
                        "OTP response report out of sequence (expected {seq}, got {got})"
                    ))
                    .into());
                }
            } else if status == 0 {
                if !response.is_empty() {
                    return Err(LinkError::Protocol("incomplete OTP transfer".into()).into());
                }
                if is_sequence_updated(&report, prog_seq) {
                    return Ok(report[1..REPORT_DATA].to_vec());
                }
                if needs_touch {
                    return Err(LinkError::Timeout.into());
                }
                return Err(Error::CommandRejected);
            } else {
                // Busy, or waiting for a touch.
                let interval = if status & RESP_TIMEOUT_WAIT_FLAG != 0 {
                    needs_touch = true;
                    self.timing.touch_interval
                } else {
                    self.timing.busy_interval
                };
                if Instant::now() + interval > deadline {
                    self.abort();
                    return Err(LinkError::Timeout.into());
                }
                sleep(interval);
                continue;
            }
            if Instant::now() > deadline {
                self.abort();
                return Err(LinkError::Timeout.into());
            }
        }
    }

    /// Best effort: leave the key idle after a failed read.
    fn abort(&mut self) {
        if let Err(e) = self.set(&RESET_REPORT) {
            tracing::debug!("OTP reset report after a failed read: {e}");
        }
    }
}

/// A write succeeded when the programming sequence moved on by one (or went back to 0
/// because the last configuration was deleted).
fn is_sequence_updated(report: &[u8; REPORT_SIZE], prev: u8) -> bool {
    let next = report[STATUS_OFFSET_PROG_SEQ];
    next == prev.wrapping_add(1)
        || (next == 0 && prev > 0 && report[STATUS_OFFSET_TOUCH_LOW] & CONFIG_SLOTS_PROGRAMMED_MASK == 0)
}

/// Checks a data response whose first `len` bytes are followed by the complement CRC, and
/// returns those `len` bytes.
pub fn strip_crc(response: &[u8], len: usize) -> Result<&[u8], ParseError> {
    let framed = response.get(..len + 2).ok_or(ParseError::TooShort("OTP response shorter than its length"))?;
    if !check_crc(framed) {
        return Err(ParseError::BadCrc);
    }
    Ok(&framed[..len])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted OTP device. It answers status reports (`idle`) until a whole frame was
    /// written (the report tagged `0x89`), then plays that command's scripted answer, then
    /// goes back to `idle`. `before` is served first, whatever was written.
    pub(crate) struct FakeOtp {
        pub answers: VecDeque<Vec<Result<[u8; 8], LinkError>>>,
        pub before: VecDeque<Result<[u8; 8], LinkError>>,
        current: VecDeque<Result<[u8; 8], LinkError>>,
        pub idle: [u8; 8],
        pub written: Vec<[u8; 8]>,
    }

    impl FakeOtp {
        pub fn new(idle: [u8; 8]) -> Self {
            Self { answers: VecDeque::new(), before: VecDeque::new(), current: VecDeque::new(), idle, written: Vec::new() }
        }

        /// Scripts the answer to the next command.
        pub fn answer(&mut self, answer: &[[u8; 8]]) {
            self.answers.push_back(answer.iter().copied().map(Ok).collect());
        }

        /// The data reports for `data`, with its complement CRC appended, as a key sends them.
        pub fn data_reports(data: &[u8]) -> Vec<[u8; 8]> {
            let mut bytes = data.to_vec();
            bytes.extend_from_slice(&(!crc16(data)).to_le_bytes());
            let mut out: Vec<[u8; 8]> = bytes
                .chunks(7)
                .enumerate()
                .map(|(i, c)| {
                    let mut r = [0u8; 8];
                    r[..c.len()].copy_from_slice(c);
                    r[7] = 0x40 | i as u8;
                    r
                })
                .collect();
            out.push([0, 0, 0, 0, 0, 0, 0, 0x40]);
            out
        }
    }

    impl FeatureReports for FakeOtp {
        fn get_report(&mut self) -> Result<[u8; 8], LinkError> {
            self.before.pop_front().or_else(|| self.current.pop_front()).unwrap_or(Ok(self.idle))
        }
        fn set_report(&mut self, report: &[u8; 8]) -> Result<(), LinkError> {
            self.written.push(*report);
            if report[7] == 0x89 {
                self.current = self.answers.pop_front().unwrap_or_default().into();
            }
            Ok(())
        }
    }

    pub(crate) fn fast() -> OtpTiming {
        OtpTiming {
            ready_polls: 3,
            ready_interval: Duration::ZERO,
            busy_interval: Duration::from_millis(1),
            touch_interval: Duration::from_millis(1),
            deadline: Duration::from_millis(200),
        }
    }

    const IDLE_543: [u8; 8] = [0x00, 5, 4, 3, 7, 0, 0, 0];

    #[test]
    fn crc_of_the_reference_examples() {
        assert_eq!(crc16(&[0u8; 64]), 0x5B6B);
        let mut page1 = [0u8; 64];
        page1[0] = 1;
        assert_eq!(crc16(&page1), 0xC946);
        // A serial response 00 6B 95 6A with the complement CRC appended.
        let serial = [0x00, 0x6B, 0x95, 0x6A, 0x8C, 0x7B];
        assert_eq!(!crc16(&serial[..4]), 0x7B8C);
        assert!(check_crc(&serial));
        assert!(!check_crc(&[0x00, 0x6B, 0x95, 0x6B, 0x8C, 0x7B]));
    }

    #[test]
    fn frames_match_the_reference_reports() {
        let serial = frame_reports(&format_frame(0x10, &[]).unwrap());
        assert_eq!(serial, vec![[0, 0, 0, 0, 0, 0, 0, 0x80], [0x00, 0x10, 0x6B, 0x5B, 0, 0, 0, 0x89]]);
        let page0 = frame_reports(&format_frame(0x13, &[0x00]).unwrap());
        assert_eq!(page0, vec![[0, 0, 0, 0, 0, 0, 0, 0x80], [0x00, 0x13, 0x6B, 0x5B, 0, 0, 0, 0x89]]);
        let page1 = frame_reports(&format_frame(0x13, &[0x01]).unwrap());
        assert_eq!(page1, vec![[0x01, 0, 0, 0, 0, 0, 0, 0x80], [0x00, 0x13, 0x46, 0xC9, 0, 0, 0, 0x89]]);
        // A payload that reaches the middle chunks sends those too.
        let long = frame_reports(&format_frame(0x12, &[b'c'; 51]).unwrap());
        assert_eq!(long.len(), 9, "the all-zero chunk 8 is skipped");
        assert!(format_frame(0x12, &[0; 65]).is_err());
    }

    #[test]
    fn reads_a_response_and_sends_the_reset_report() {
        let mut dev = FakeOtp::new(IDLE_543);
        dev.answer(&FakeOtp::data_reports(&[0x00, 0x6B, 0x95, 0x6A]));
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert_eq!(otp.version, Version::new(5, 4, 3));
        let resp = otp.send_and_receive(0x10, &[]).unwrap();
        assert_eq!(strip_crc(&resp, 4).unwrap(), [0x00, 0x6B, 0x95, 0x6A]);
        let reports = otp.reports();
        assert_eq!(
            dev.written,
            vec![[0, 0, 0, 0, 0, 0, 0, 0x80], [0x00, 0x10, 0x6B, 0x5B, 0, 0, 0, 0x89], RESET_REPORT]
        );
        // status + prog-seq + 2 × (ready poll + write) + 1 data + 1 end + reset
        assert_eq!(reports, 9);
    }

    #[test]
    fn a_plain_status_report_is_a_rejection() {
        let mut dev = FakeOtp::new(IDLE_543);
        dev.answer(&[IDLE_543]);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert_eq!(otp.send_and_receive(0x13, &[0]).unwrap_err(), Error::CommandRejected);
    }

    #[test]
    fn an_advanced_programming_sequence_is_a_successful_write() {
        let mut dev = FakeOtp::new(IDLE_543);
        dev.answer(&[[0x00, 5, 4, 3, 8, 0x01, 0, 0]]);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert_eq!(otp.send_and_receive(0x11, &[0]).unwrap(), vec![5, 4, 3, 8, 1, 0]);
    }

    #[test]
    fn waits_while_busy_and_for_the_write_flag() {
        let mut dev = FakeOtp::new(IDLE_543);
        // status, prog-seq, then the write flag is still set twice before the first report.
        dev.before.extend([IDLE_543, IDLE_543, [0, 5, 4, 3, 7, 0, 0, 0x80], [0, 5, 4, 3, 7, 0, 0, 0x81]].map(Ok));
        // busy (processing), then waiting for touch, then the data.
        let mut answer = vec![[0, 0, 0, 0, 0, 0, 0, 0x01], [0, 0, 0, 0, 0, 0, 0, 0x25]];
        answer.extend(FakeOtp::data_reports(&[1, 2, 3, 4]));
        dev.answer(&answer);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        let resp = otp.send_and_receive(0x10, &[]).unwrap();
        assert_eq!(strip_crc(&resp, 4).unwrap(), [1, 2, 3, 4]);
    }

    #[test]
    fn touch_that_never_comes_times_out() {
        let mut dev = FakeOtp::new(IDLE_543);
        dev.answer(&[[0, 0, 0, 0, 0, 0, 0, 0x2F]; 500]);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert_eq!(otp.send_and_receive(0x10, &[]).unwrap_err(), Error::Link(LinkError::Timeout));
        assert_eq!(dev.written.last(), Some(&RESET_REPORT));
    }

    #[test]
    fn write_flag_stuck_times_out() {
        let mut dev = FakeOtp::new([0, 5, 4, 3, 7, 0, 0, 0x80]);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert_eq!(otp.send_and_receive(0x10, &[]).unwrap_err(), Error::Link(LinkError::Timeout));
    }

    #[test]
    fn out_of_sequence_and_incomplete_transfers_are_errors() {
        let mut dev = FakeOtp::new(IDLE_543);
        dev.answer(&[[1, 2, 3, 4, 5, 6, 7, 0x40], [0, 0, 0, 0, 0, 0, 0, 0x43]]);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert!(matches!(otp.send_and_receive(0x10, &[]), Err(Error::Link(LinkError::Protocol(_)))));

        let mut dev = FakeOtp::new(IDLE_543);
        dev.answer(&[[1, 2, 3, 4, 5, 6, 7, 0x40], IDLE_543]);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert!(matches!(otp.send_and_receive(0x10, &[]), Err(Error::Link(LinkError::Protocol(_)))));
    }

    #[test]
    fn endless_data_is_cut_off() {
        let mut dev = FakeOtp::new(IDLE_543);
        let endless: Vec<[u8; 8]> = (0..31).map(|i| [0xAA, 0, 0, 0, 0, 0, 0, 0x40 | i]).collect();
        dev.answer(&endless);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert!(matches!(otp.send_and_receive(0x10, &[]), Err(Error::Link(LinkError::Protocol(_)))));
    }

    #[test]
    fn an_unplugged_key_is_a_clean_error() {
        let mut dev = FakeOtp::new(IDLE_543);
        dev.answers.push_back(vec![Err(LinkError::Unplugged)]);
        let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
        assert_eq!(otp.send_and_receive(0x10, &[]).unwrap_err(), Error::Link(LinkError::Unplugged));
    }

    #[test]
    fn strip_crc_checks_length_and_crc() {
        assert_eq!(strip_crc(&[1, 2], 4), Err(ParseError::TooShort("OTP response shorter than its length")));
        assert_eq!(strip_crc(&[0x00, 0x6B, 0x95, 0x6A, 0x8C, 0x7C], 4), Err(ParseError::BadCrc));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_reports(reports in proptest::collection::vec(proptest::array::uniform8(proptest::num::u8::ANY), 0..40)) {
            let mut dev = FakeOtp::new(IDLE_543);
            dev.answer(&reports);
            let mut otp = OtpProtocol::new(&mut dev, fast()).unwrap();
            if let Ok(resp) = otp.send_and_receive(0x13, &[0]) {
                proptest::prop_assert!(resp.len() <= MAX_RESPONSE_REPORTS * 7);
                let _ = strip_crc(&resp, usize::from(resp.first().copied().unwrap_or(0)) + 1);
            }
        }
    }
}
