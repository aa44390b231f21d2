//! Posture: what a key's applets say about their PINs, credentials and slots, read without a
//! PIN, a touch or a write (issue 13 §2).
//!
//! Sits above the management protocol and identification: it needs the key's firmware and
//! enabled applications to know what to ask. One file per applet:
//!
//! | file | reads | fields |
//! |---|---|---|
//! | `piv.rs` | PIV GET METADATA (`INS F7`, firmware 5.3+) for `80`, `81`, `9B` | default PIN/PUK/management key, PIN/PUK retries |
//! | `fido2.rs` | CTAP2 authenticatorGetInfo over CTAPHID (USB) or NFCCTAP (NFC), decoded by `cbor.rs` | PIN set, UV enrolled, force PIN change, min PIN length, remaining discoverable credentials |
//! | `openpgp.rs` | OpenPGP GET DATA `C4` | PW1, reset code and PW3 tries |
//! | `oath.rs` | SELECT OATH | password set (a challenge in the answer) |
//! | `otp.rs` | the OTP status bytes (SELECT OTP, or the OTP HID status report) | slots 1 and 2 configured |
//!
//! A field is `None` where the firmware cannot say, the applet is disabled, or its read
//! failed; a failed applet yields one [`PostureWarning`] and leaves the other fields intact.
//! Every command is bounded by the link's own deadline (the reader's read, CTAPHID's).

pub mod cbor;
pub mod fido2;
pub mod oath;
pub mod openpgp;
pub mod otp;
pub mod piv;

use std::fmt;

use crate::caps::{Capabilities, Transport};
use crate::device_info::DeviceInfo;
use crate::error::Error;
use crate::smartcard::SmartCardProtocol;
use crate::transport::ctaphid::CtapHidDevice;
use crate::transport::otp_hid::OtpProtocol;

/// What the applets report; `None` where unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Posture {
    /// The PIV PIN is the factory default (`123456`).
    pub piv_pin_default: Option<bool>,
    /// The PIV PUK is the factory default (`12345678`).
    pub piv_puk_default: Option<bool>,
    /// The PIV management key is the factory default.
    pub piv_management_key_default: Option<bool>,
    /// PIV PIN tries remaining.
    pub piv_pin_retries: Option<u8>,
    /// PIV PUK tries remaining.
    pub piv_puk_retries: Option<u8>,
    /// A FIDO2 PIN is set (getInfo `options.clientPin`).
    pub fido2_pin_set: Option<bool>,
    /// Built-in user verification (fingerprints) is enrolled (getInfo `options.uv`).
    pub fido2_uv_enrolled: Option<bool>,
    /// The FIDO2 PIN must be changed before use (getInfo `forcePINChange`).
    pub fido2_force_pin_change: Option<bool>,
    /// The shortest FIDO2 PIN accepted (getInfo `minPINLength`).
    pub fido2_min_pin_length: Option<u32>,
    /// Room left for discoverable credentials (getInfo `remainingDiscoverableCredentials`).
    pub fido2_remaining_discoverable_credentials: Option<u32>,
    /// OpenPGP tries remaining: PW1 (user PIN), reset code, PW3 (admin PIN).
    pub openpgp_pin_retries: Option<[u8; 3]>,
    /// The OATH applet is password protected.
    pub oath_password_set: Option<bool>,
    /// OTP slot 1 and slot 2 are configured.
    pub otp_slots_configured: Option<[bool; 2]>,
}

/// The applets posture is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Applet {
    /// PIV.
    Piv,
    /// FIDO2 (CTAP2).
    Fido2,
    /// OpenPGP.
    OpenPgp,
    /// OATH.
    Oath,
    /// Yubico OTP.
    Otp,
}

impl Applet {
    /// The applet's name as the posture fields begin (`piv`, `fido2`, `openpgp`, `oath`, `otp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Applet::Piv => "piv",
            Applet::Fido2 => "fido2",
            Applet::OpenPgp => "openpgp",
            Applet::Oath => "oath",
            Applet::Otp => "otp",
        }
    }

    /// The capability that must be enabled for the applet to answer.
    pub fn capability(self) -> Capabilities {
        match self {
            Applet::Piv => Capabilities::PIV,
            Applet::Fido2 => Capabilities::FIDO2,
            Applet::OpenPgp => Capabilities::OPENPGP,
            Applet::Oath => Capabilities::OATH,
            Applet::Otp => Capabilities::OTP,
        }
    }
}

impl fmt::Display for Applet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one applet's posture could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostureError {
    /// The link failed, the key answered a status word other than 9000, or its answer did
    /// not parse.
    #[error(transparent)]
    Key(#[from] Error),
    /// The authenticator answered a CTAP2 error status.
    #[error("the authenticator answered CTAP2 status 0x{0:02X}")]
    Ctap2Status(u8),
    /// The CTAP2 answer is not acceptable CBOR.
    #[error("{0}")]
    Cbor(#[from] cbor::CborError),
    /// The answer parses but a field in it has the wrong form; the text says which.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

/// One applet whose posture could not be read. The caller names the reader or port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostureWarning {
    /// The applet.
    pub applet: Applet,
    /// What went wrong.
    pub error: PostureError,
}

impl fmt::Display for PostureWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} posture not read: {}", self.applet, self.error)
    }
}

/// The posture read from one key, and the applets that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostureRead {
    /// The fields read; the failed applets' fields are `None`.
    pub posture: Posture,
    /// One entry per applet whose read failed.
    pub warnings: Vec<PostureWarning>,
    /// Commands sent for posture (APDUs, or CTAPHID/OTP HID reports).
    pub transfers: u32,
}

impl PostureRead {
    /// Records the outcome of one applet's read: a warning when it failed.
    fn note(&mut self, applet: Applet, outcome: Result<(), PostureError>) {
        if let Err(error) = outcome {
            tracing::debug!(%applet, "posture read failed: {error}");
            self.warnings.push(PostureWarning { applet, error });
        }
    }
}

/// Whether `applet` is to be asked over `transport`: enabled there (or nothing is known
/// about what is enabled).
pub fn applet_enabled(info: &DeviceInfo, transport: Transport, applet: Applet) -> bool {
    match info
        .enabled
        .get(transport)
        .or(info.supported.get(transport))
    {
        Some(caps) => caps.contains(applet.capability()),
        None => true,
    }
}

/// Reads the posture over a smart-card connection (USB CCID or NFC): PIV, OpenPGP, OATH and
/// OTP, and FIDO2 over NFCCTAP when the key is on NFC (over USB, FIDO2 answers on the FIDO
/// HID interface only: see [`read_fido2_hid`]). `info` is the key as identified.
pub fn read_smartcard(protocol: &mut SmartCardProtocol<'_>, info: &DeviceInfo) -> PostureRead {
    let transport = protocol.transport();
    let before = protocol.apdus_sent();
    let mut read = PostureRead::default();
    let wanted = |applet| applet_enabled(info, transport, applet);
    if wanted(Applet::Piv) && piv::metadata_supported(info.version) {
        let outcome = piv::read(protocol, &mut read.posture);
        read.note(Applet::Piv, outcome);
    }
    if wanted(Applet::Fido2) && transport == Transport::Nfc {
        let outcome = fido2::read_nfcctap(protocol).map(|p| fido2::apply(&p, &mut read.posture));
        read.note(Applet::Fido2, outcome);
    }
    if wanted(Applet::OpenPgp) {
        let outcome = openpgp::read(protocol).map(|t| read.posture.openpgp_pin_retries = t);
        read.note(Applet::OpenPgp, outcome);
    }
    if wanted(Applet::Oath) {
        let outcome = oath::read(protocol).map(|p| read.posture.oath_password_set = p);
        read.note(Applet::Oath, outcome);
    }
    if wanted(Applet::Otp) && otp::status_supported(info.version) {
        let outcome = otp::read_smartcard(protocol).map(|s| read.posture.otp_slots_configured = s);
        read.note(Applet::Otp, outcome);
    }
    read.transfers = protocol.apdus_sent() - before;
    read
}

/// FIDO2 posture over CTAPHID (a USB key's FIDO HID interface), added to `read`.
pub fn read_fido2_hid(ctap: &mut CtapHidDevice<'_>, info: &DeviceInfo, read: &mut PostureRead) {
    if !applet_enabled(info, Transport::Usb, Applet::Fido2) {
        return;
    }
    let before = ctap.packets();
    let outcome = fido2::read_ctaphid(ctap).map(|p| fido2::apply(&p, &mut read.posture));
    read.note(Applet::Fido2, outcome);
    read.transfers += ctap.packets() - before;
}

/// OTP posture over the OTP HID interface (one status report), added to `read`.
pub fn read_otp_hid(otp: &mut OtpProtocol<'_>, info: &DeviceInfo, read: &mut PostureRead) {
    if !applet_enabled(info, Transport::Usb, Applet::Otp) || !otp::status_supported(info.version) {
        return;
    }
    let before = otp.reports();
    let outcome = otp
        .read_status()
        .map(|s| read.posture.otp_slots_configured = Some(otp::slots_configured(&s)))
        .map_err(PostureError::from);
    read.note(Applet::Otp, outcome);
    read.transfers += otp.reports() - before;
}

#[cfg(test)]
mod tests;
