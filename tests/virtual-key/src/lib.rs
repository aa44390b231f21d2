//! A virtual YubiKey for tests, independent of the product's parsing code.
//!
//! * [`model`] — what a key is (serial, firmware, capabilities, applets), free of any transport.
//! * [`device_info`] — encodes a model into Management DeviceInfo pages (`LEN || TLV…`).
//! * [`apdu`] — parses ISO 7816 command APDUs (short and extended, cases 1–4).
//! * [`card`] — the APDU processor: applets, response chaining, fault injection, APDU counting.
//! * [`vpcd`] — serves a [`card::Card`] to vsmartcard's `vpcd` reader driver over TCP.
//! * [`otp`] — the OTP HID feature-report frame protocol (status, serial, DeviceInfo pages).
//! * [`ctap`] — CTAPHID framing: INIT, PING, WINK and Yubico's READ_CONFIG (0xC2).
//! * [`lab`] — an isolated, real `pcscd` with its own socket and virtual reader, for tests.

pub mod apdu;
pub mod card;
pub mod ctap;
pub mod device_info;
pub mod lab;
pub mod model;
pub mod otp;
pub mod vpcd;

pub use card::Card;
pub use lab::{InsertedCard, PcscLab, ReaderModel};
pub use model::{Fault, KeyModel};
