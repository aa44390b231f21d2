//! HID discovery: Yubico's USB devices, grouped by port, with the OTP and FIDO HID nodes of
//! each. Nothing is opened, so devices the user may not open are found too.

use super::interfaces::Interface;
use crate::error::LinkError;
use crate::transport::{hid, usb};
use crate::usb_ids::{Pid, USAGE_FIDO, USAGE_OTP, YUBICO_VID};

/// A YubiKey on the USB bus, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbKeyDevice {
    /// The port path (`1-2.3`); the identity of a key without a serial.
    pub port: String,
    /// Its USB product ID.
    pub pid: Pid,
    /// OTP HID node paths (one per key in practice).
    pub otp: Vec<String>,
    /// FIDO HID node paths.
    pub fido: Vec<String>,
}

impl UsbKeyDevice {
    pub(crate) fn nodes(&self, iface: Interface) -> &[String] {
        match iface {
            Interface::Ccid => &[],
            Interface::Otp => &self.otp,
            Interface::Fido => &self.fido,
        }
    }
}

/// Lists Yubico's USB devices and their HID nodes; nothing is opened. Devices with a PID
/// ykman does not know are skipped, as ykman skips them. The HID nodes are listed only when
/// a Yubico device is on the bus (a scan of NFC readers alone lists no HID node).
pub fn discover() -> Result<Vec<UsbKeyDevice>, LinkError> {
    let nodes = || {
        hid::list_nodes(YUBICO_VID).unwrap_or_else(|e| {
            tracing::debug!("listing HID nodes: {e}");
            Vec::new()
        })
    };
    let devices = usb::list_devices(YUBICO_VID, nodes)?;
    Ok(devices
        .into_iter()
        .filter_map(|d| {
            let Some(pid) = Pid::new(d.product_id) else {
                tracing::debug!(port = d.port, "unsupported Yubico device with PID 0x{:04X}", d.product_id);
                return None;
            };
            let with_usage = |usage: (u16, u16)| -> Vec<String> {
                d.hid_nodes.iter().filter(|n| (n.usage_page, n.usage) == usage).map(|n| n.path.clone()).collect()
            };
            Some(UsbKeyDevice { port: d.port.clone(), pid, otp: with_usage(USAGE_OTP), fido: with_usage(USAGE_FIDO) })
        })
        .collect())
}
