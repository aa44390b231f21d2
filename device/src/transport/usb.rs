//! USB discovery through `nusb`: which devices are plugged in, where (the port path), and
//! which HID nodes belong to each. Nothing is opened: on Linux this reads sysfs, so devices
//! the user has no permission for are found too.

use std::path::{Path, PathBuf};

use super::hid::HidNodeInfo;
use crate::error::LinkError;

/// A USB device of one vendor, with its HID nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDevice {
    /// The USB vendor ID.
    pub vendor_id: u16,
    /// The USB product ID.
    pub product_id: u16,
    /// The port path, `BUS-PORT[.PORT…]` as Linux names it (`1-2.3`). Stable while the device
    /// stays in that port; the identity of devices that have no serial.
    pub port: String,
    /// The USB iSerial string, when the device shows one.
    pub serial: Option<String>,
    /// The HID nodes (interfaces) that sit on this device.
    pub hid_nodes: Vec<HidNodeInfo>,
}

/// `bus-port.port.port`, as Linux sysfs names a device.
pub fn port_path(bus: &str, ports: &[u8]) -> String {
    let chain: Vec<String> = ports.iter().map(u8::to_string).collect();
    format!("{bus}-{}", chain.join("."))
}

#[cfg(target_os = "linux")]
fn port_of(d: &nusb::DeviceInfo) -> String {
    port_path(&d.busnum().to_string(), d.port_chain())
}

#[cfg(not(target_os = "linux"))]
fn port_of(d: &nusb::DeviceInfo) -> String {
    port_path(d.bus_id(), d.port_chain())
}

/// Lists the devices with `vendor_id` and attaches the HID nodes to the device they sit on.
/// HID nodes that cannot be placed (no sysfs, or another OS) become devices of their own,
/// with the node path as their port. `hid_nodes` is called only when the vendor has a
/// device on the bus: a machine without one pays for the USB listing alone (sysfs on
/// Linux), not for the HID one (udev and every hidraw node).
pub fn list_devices(vendor_id: u16, hid_nodes: impl FnOnce() -> Vec<HidNodeInfo>) -> Result<Vec<UsbDevice>, LinkError> {
    use nusb::MaybeFuture;
    let found = nusb::list_devices().wait().map_err(|e| LinkError::Other(format!("USB: {e}")))?;
    let mut devices: Vec<(UsbDevice, Option<PathBuf>)> = found
        .filter(|d| d.vendor_id() == vendor_id)
        .map(|d| {
            let device = UsbDevice {
                vendor_id,
                product_id: d.product_id(),
                port: port_of(&d),
                serial: d.serial_number().map(str::to_string),
                hid_nodes: Vec::new(),
            };
            (device, sysfs_of(&d))
        })
        .collect();
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    for node in hid_nodes() {
        let parent = hid_parent(&node.path);
        let slot = devices.iter_mut().find(|(_, sysfs)| match (&parent, sysfs) {
            (Some(p), Some(s)) => p.starts_with(s),
            _ => false,
        });
        match slot {
            Some((device, _)) => device.hid_nodes.push(node),
            None => {
                tracing::debug!(path = node.path, "HID node not on a listed USB device");
                devices.push((
                    UsbDevice {
                        vendor_id: node.vendor_id,
                        product_id: node.product_id,
                        port: node.path.clone(),
                        serial: None,
                        hid_nodes: vec![node],
                    },
                    None,
                ));
            }
        }
    }
    let mut devices: Vec<UsbDevice> = devices.into_iter().map(|(d, _)| d).collect();
    devices.sort_by(|a, b| a.port.cmp(&b.port));
    Ok(devices)
}

#[cfg(target_os = "linux")]
fn sysfs_of(d: &nusb::DeviceInfo) -> Option<PathBuf> {
    Some(d.sysfs_path().to_path_buf())
}

#[cfg(not(target_os = "linux"))]
fn sysfs_of(_: &nusb::DeviceInfo) -> Option<PathBuf> {
    None
}

/// The sysfs directory of the HID interface a hidraw node belongs to
/// (`/sys/devices/…/1-2/1-2:1.0/0003:1050:0407.0001`).
fn hid_parent(node_path: &str) -> Option<PathBuf> {
    let name = Path::new(node_path).file_name()?;
    std::fs::canonicalize(Path::new("/sys/class/hidraw").join(name).join("device")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_paths() {
        assert_eq!(port_path("1", &[2]), "1-2");
        assert_eq!(port_path("3", &[1, 4, 2]), "3-1.4.2");
    }
}
