//! The fallback chain for keys without READ CONFIG (YubiKey NEO, YubiKey 4 before 4.1).
//!
//! Mirrors yubikit's `_read_info_ccid`: version and serial from the OTP applet, serial from
//! PIV where the firmware has it, capabilities by probing which applets answer SELECT.

use crate::caps::Capabilities;
use crate::device_info::{DeviceInfo, PerTransport};
use crate::error::Error;
use crate::smartcard::{aid, Apdu, SmartCardProtocol};
use crate::version::Version;

use crate::usb_ids::{KeyType, UsbInterfaces};

/// What the fallback chain learned, before the U2F rule is applied.
pub(super) struct Synthesized {
    caps: Capabilities,
    serial: Option<u32>,
    version: Version,
    /// The NEO's USB mode, from byte 6 of the OTP applet's status.
    pub neo_mode: Option<UsbInterfaces>,
}

impl Synthesized {
    /// The synthesized DeviceInfo. U2F is assumed when the PID has FIDO or the firmware is
    /// 3.3.0 or later, as yubikit does.
    pub fn info_with_u2f(self, interfaces: UsbInterfaces) -> DeviceInfo {
        let mut caps = self.caps;
        if interfaces.contains(UsbInterfaces::FIDO) || self.version >= Version::new(3, 3, 0) {
            caps = caps.union(Capabilities::U2F);
        }
        DeviceInfo::synthesized(self.version, self.serial, PerTransport { usb: Some(caps), nfc: Some(caps) })
    }
}

/// The first version whose PIV applet answers GET SERIAL.
const PIV_SERIAL_VERSION: Version = Version::new(5, 0, 3);
/// Used when nothing on the key tells its version.
const BASELINE_VERSION: Version = Version::new(3, 0, 0);

/// The NEO keeps the management applet selected unless told otherwise; ykman sends these
/// four bytes as a "de-select" before it talks to other applets. The answer does not matter.
pub(super) fn neo_deselect(protocol: &mut SmartCardProtocol<'_>) {
    let _ = protocol.send_raw(&[0xA4, 0x04, 0x00, 0x08]);
}

/// Runs the chain. `version` is what the management applet announced, if it answered.
pub(super) fn synthesize(
    protocol: &mut SmartCardProtocol<'_>,
    key_type: Option<KeyType>,
    version: Option<Version>,
) -> Result<Synthesized, Error> {
    let mut caps = Capabilities::NONE;
    let mut serial = None;
    let mut version = version;
    let mut neo_mode = None;

    match protocol.select(aid::OTP) {
        Ok(status) => {
            caps = caps.union(Capabilities::OTP);
            if version.is_none() {
                version = status.get(..3).and_then(Version::from_bytes);
            }
            if status.first() == Some(&3) && status.len() > 6 {
                neo_mode = UsbInterfaces::from_mode_code(status[6]);
            }
            serial = read_u32(protocol, &Apdu::new(0x00, 0x01, 0x10, 0x00, &[]))?;
        }
        Err(e) if e.is_application_missing() => {}
        Err(e) => return Err(e),
    }
    let version = version.unwrap_or(BASELINE_VERSION);

    let probes: [(&[u8], Capabilities); 5] = [
        (aid::FIDO, Capabilities::U2F),
        (aid::U2F_YUBICO, Capabilities::U2F),
        (aid::PIV, Capabilities::PIV),
        (aid::OPENPGP, Capabilities::OPENPGP),
        (aid::OATH, Capabilities::OATH),
    ];
    for (applet, cap) in probes {
        match protocol.select(applet) {
            Ok(_) => {
                caps = caps.union(cap);
                if cap == Capabilities::PIV && serial.is_none() && version >= PIV_SERIAL_VERSION {
                    serial = read_u32(protocol, &Apdu::new(0x00, 0xF8, 0x00, 0x00, &[]))?;
                }
            }
            Err(Error::Link(t)) => return Err(t.into()),
            Err(e) if e.is_application_missing() => {}
            Err(e) => tracing::debug!("probing applet {applet:02X?}: {e}"),
        }
    }

    if caps.is_empty() && key_type.is_none() {
        return Err(Error::NotAYubiKey);
    }
    Ok(Synthesized { caps, serial, version, neo_mode })
}

/// A command whose answer is a 4-byte big-endian number (a serial). A refusal or an odd
/// answer means "no serial"; only a broken link is an error.
fn read_u32(protocol: &mut SmartCardProtocol<'_>, apdu: &Apdu<'_>) -> Result<Option<u32>, Error> {
    match protocol.send(apdu) {
        Ok(data) => Ok(<[u8; 4]>::try_from(data.as_slice()).ok().map(u32::from_be_bytes).filter(|s| *s != 0)),
        Err(Error::Link(t)) => Err(t.into()),
        Err(e) => {
            tracing::debug!("no serial from {:02X}: {e}", apdu.ins);
            Ok(None)
        }
    }
}
