//! keytally-device: finding and reading YubiKeys.
//!
//! The crate is layered the way Yubico's yubikit is, bottom to top. A layer uses only the
//! layers below it: a transport never imports identification or enumeration.
//!
//! | layer | module | knows |
//! |---|---|---|
//! | USB identifiers | [`usb_ids`] | Yubico's vendor ID, the PID table, interface sets, HID usages, YubiKey reader names |
//! | data model | [`caps`], [`version`], [`tlv`], [`device_info`], [`error`] | the bytes of DeviceInfo and what they mean; what can go wrong |
//! | transports | [`smartcard`], [`transport`] | moving APDUs and HID reports; listing readers and USB devices; nothing about YubiKeys beyond [`usb_ids`] |
//! | management protocol | [`management`] | SELECT management, READ CONFIG, paging, over CCID, OTP or CTAPHID |
//! | identification | [`identify`] | the fallback chain, fix-ups, product naming |
//! | advisories | [`advisory`] | which Yubico security advisories concern an identified key (a table lookup, no I/O) |
//! | posture | [`posture`] | what the applets say about PINs, credentials and slots, read without a PIN, a touch or a write; one file per applet |
//! | enumeration | [`enumerate`] | which readers and USB devices to look at, reading them against deadlines, one result per key |

#![warn(missing_docs)]

pub mod advisory;
pub mod caps;
pub mod device_info;
pub mod enumerate;
pub mod error;
pub mod identify;
pub mod management;
pub mod posture;
pub mod smartcard;
pub mod tlv;
pub mod transport;
pub mod usb_ids;
pub mod version;

pub use caps::{Capabilities, FormFactor, Transport};
pub use device_info::DeviceInfo;
pub use error::{Error, LinkError, ParseError};
pub use identify::Identified;
pub use usb_ids::KeyType;
pub use version::Version;
