//! keytally-device: finding and reading YubiKeys.
//!
//! The crate is layered the way Yubico's yubikit is, bottom to top:
//!
//! | layer | module | knows |
//! |---|---|---|
//! | data model | [`caps`], [`version`], [`tlv`], [`device_info`] | the bytes of DeviceInfo and what they mean |
//! | transports | [`smartcard`], [`transport`] | moving APDUs; nothing about YubiKeys |
//! | management protocol | [`management`] | SELECT management, READ CONFIG, paging |
//! | identification | [`identify`] | the fallback chain, fix-ups, product naming |
//! | enumeration | [`scan`] | which readers to look at, one result per key |

pub mod caps;
pub mod device_info;
pub mod error;
pub mod identify;
pub mod management;
pub mod scan;
pub mod smartcard;
pub mod tlv;
pub mod transport;
pub mod usb_scan;
pub mod version;

pub use caps::{Capabilities, FormFactor, Transport};
pub use device_info::DeviceInfo;
pub use error::{Error, ParseError};
pub use identify::{Identified, KeyType};
pub use version::Version;
