//! A virtual YubiKey for tests, independent of the product's parsing code.
//!
//! * [`model`] — what a key is (serial, firmware, capabilities, applets), free of any transport.
//! * [`device_info`] — encodes a model into Management DeviceInfo pages (`LEN || TLV…`).
//! * [`apdu`] — parses ISO 7816 command APDUs (short and extended, cases 1–4).
//! * [`posture`] — what the applets report about PINs, credentials and slots ([`posture::Posture`]).
//! * [`card`] — the APDU processor: applets, NFC restricted mode, response chaining, fault
//!   injection, APDU counting.
//! * [`openpgp`] — the OpenPGP applet's read-only data objects (Application Related Data, C4).
//! * [`ctap2`] — CTAP2 authenticatorGetInfo and clientPIN retries, for CTAPHID and NFCCTAP.
//! * [`cbor`] — the small CBOR encoder/decoder [`ctap2`] needs.
//! * [`vpcd`] — serves a [`card::Card`] to vsmartcard's `vpcd` reader driver over TCP.
//! * [`otp`] — the OTP HID feature-report frame protocol (status, serial, DeviceInfo pages).
//! * [`ctap`] — CTAPHID framing: INIT, PING, WINK and Yubico's READ_CONFIG (0xC2).
//! * [`lab`] — an isolated, real `pcscd` with its own socket and virtual reader, for tests.

pub mod apdu;
pub mod cbor;
pub mod card;
pub mod ctap;
pub mod ctap2;
pub mod device_info;
pub mod lab;
pub mod model;
pub mod openpgp;
pub mod otp;
pub mod posture;
pub mod vpcd;

pub use card::Card;
pub use lab::{ExclusiveHold, InsertedCard, LabOptions, LabReader, PcscLab, ReaderModel};
pub use model::{Fault, KeyModel};
pub use posture::Posture;
