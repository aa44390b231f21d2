//! Identification: who is this key? The fallback chain, the fix-ups and the product name.
//!
//! Sits on top of the management protocol; enumeration sits on top of this.

mod fixups;
mod hid;
mod legacy;
mod name;
mod nfc_restricted;

pub use fixups::apply_fixups;
pub use hid::{identify_ctap, identify_otp, Reclaim};
pub use name::{nfc_key_type, product_name};
pub use nfc_restricted::{is_nfc_restricted, RESTRICTED_NDEF};

use crate::caps::Transport;
use crate::device_info::DeviceInfo;
use crate::error::Error;
use crate::management::SmartCardManagement;
use crate::smartcard::SmartCardProtocol;
use crate::usb_ids::{KeyType, Pid, UsbInterfaces};

/// A key, read and named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    /// What the key said about itself (or what the fallback chain put together), fixed up.
    pub info: DeviceInfo,
    /// The family, known from the USB PID; `None` over NFC.
    pub key_type: Option<KeyType>,
    /// ykman's product name, e.g. "YubiKey 5 NFC".
    pub name: String,
    /// USB or NFC.
    pub transport: Transport,
    /// The USB PID; `None` over NFC and on external readers.
    pub pid: Option<Pid>,
}

/// Reads a key over a smart-card connection (USB CCID or NFC).
///
/// The normal path is SELECT management + READ CONFIG (two APDUs for a single-page key).
/// Keys without READ CONFIG (NEO, YubiKey 4 before 4.1) go down the fallback chain in
/// `legacy`: version and serial from the OTP applet, serial from PIV, applet probing.
/// A card without the management applet that answers the NDEF check of
/// [`is_nfc_restricted`] is a key in NFC restricted mode: [`Error::NfcRestricted`].
pub fn identify_smartcard(protocol: &mut SmartCardProtocol<'_>, pid: Option<Pid>) -> Result<Identified, Error> {
    let transport = protocol.transport();
    let key_type = pid.map(|p| p.key_type());
    let mut interfaces = pid.map_or(UsbInterfaces::NONE, |p| p.interfaces());

    let mut session_version = None;
    let from_management = match SmartCardManagement::select(protocol) {
        Ok(mut mgmt) => {
            session_version = Some(mgmt.version);
            match mgmt.read_device_info() {
                Ok(info) => Some(info),
                Err(Error::NotSupported(_)) => {
                    if mgmt.version.major == 3 {
                        legacy::neo_deselect(protocol);
                    }
                    None
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) if e.is_application_missing() => {
            if is_nfc_restricted(protocol)? {
                return Err(Error::NfcRestricted);
            }
            None
        }
        Err(e) => return Err(e),
    };

    let info = match from_management {
        Some(info) => info,
        None => {
            let synth = legacy::synthesize(protocol, key_type, session_version)?;
            if pid.is_none() && transport == Transport::Nfc {
                if let Some(mode) = synth.neo_mode {
                    interfaces = mode;
                }
            }
            synth.info_with_u2f(interfaces)
        }
    };

    Ok(finish(info, key_type, interfaces, transport, pid))
}

/// The last steps on every path: yubikit's fix-ups, then the product name.
fn finish(
    info: DeviceInfo,
    key_type: Option<KeyType>,
    interfaces: UsbInterfaces,
    transport: Transport,
    pid: Option<Pid>,
) -> Identified {
    let info = apply_fixups(info, key_type, interfaces);
    let name = product_name(&info, key_type);
    Identified { info, key_type, name, transport, pid }
}
