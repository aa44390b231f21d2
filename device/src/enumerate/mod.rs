//! Enumeration: which keys are there, read once each, one entry per physical key.
//!
//! The top of the crate. It lists PC/SC readers and Yubico's USB devices, opens them through
//! the transports, identifies what answers, and merges the interfaces of one key into one
//! entry.
//!
//! Everything is exported here, at `enumerate::…`; the files are:
//!
//! | file | job |
//! |---|---|
//! | `pcsc_readers.rs` | read the card in every PC/SC reader (YubiKey CCID, NFC and contact readers), each on its own thread and context, against a deadline |
//! | `usb_devices.rs` | HID discovery: Yubico's USB devices and their OTP/FIDO HID nodes, nothing opened |
//! | `hid_reads.rs` | read USB devices over their HID nodes, in parallel, each against a deadline |
//! | `interfaces.rs` | the interfaces a key can be read through and the order to try them in |
//! | `merge.rs` | PC/SC and HID in the configured order, merged into one entry per physical key |

mod hid_reads;
mod interfaces;
mod merge;
mod pcsc_readers;
mod usb_devices;

pub use hid_reads::{Attempt, HidReader, HidapiReader};
pub use interfaces::{Interface, InterfaceOrder};
pub use merge::{scan_all, scan_with, FullScanOptions, OnKey, Report, ScannedKey, UnreadableKey};
pub use pcsc_readers::{
    read_reader, read_reader_with, read_readers, read_readers_with, reader_stalled, scan_pcsc, FoundKey, OnRead, PcscReport, PostureWanted, ReaderOutcome,
    ReaderProblem, ReaderReads, ScanOptions,
};
pub use usb_devices::{discover, UsbKeyDevice};
