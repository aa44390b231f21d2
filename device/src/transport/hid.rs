//! HID devices through `hidapi` (on Linux its hidraw backend): listing nodes with their
//! top-level usage, opening one, and moving feature reports (OTP) and input/output reports
//! (CTAPHID) with report ID 0 prepended as the OS expects.

use std::ffi::CString;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use hidapi::{HidApi, HidDevice, HidError};

use super::ctaphid::{HidPackets, PACKET_SIZE};
use super::otp_hid::{FeatureReports, REPORT_SIZE};
use crate::error::LinkError;

/// One HID node (a hidraw device on Linux), as listed; nothing is opened to list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HidNodeInfo {
    /// The OS path: `/dev/hidraw3` on Linux.
    pub path: String,
    /// The USB vendor ID.
    pub vendor_id: u16,
    /// The USB product ID.
    pub product_id: u16,
    /// The report descriptor's first usage page.
    pub usage_page: u16,
    /// The report descriptor's first usage (with the usage page: what the node is for).
    pub usage: u16,
}

/// Lists HID nodes of one vendor. On Linux this reads udev and sysfs only, so nodes the user
/// may not open are listed too.
pub fn list_nodes(vendor_id: u16) -> Result<Vec<HidNodeInfo>, LinkError> {
    let (mut api, fresh) = api_and_fresh()?;
    // A context made just now has listed every HID device already: no second listing.
    if !fresh {
        api.reset_devices().and_then(|()| api.add_devices(vendor_id, 0)).map_err(|e| LinkError::Other(format!("hidapi: {e}")))?;
    }
    let mut nodes: Vec<HidNodeInfo> = api
        .device_list()
        .filter(|d| d.vendor_id() == vendor_id)
        .map(|d| HidNodeInfo {
            path: d.path().to_string_lossy().into_owned(),
            vendor_id: d.vendor_id(),
            product_id: d.product_id(),
            usage_page: d.usage_page(),
            usage: d.usage(),
        })
        .collect();
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    nodes.dedup();
    Ok(nodes)
}

/// The process's hidapi context (hidapi wants one; creating it lists every HID device once).
fn api() -> Result<MutexGuard<'static, HidApi>, LinkError> {
    api_and_fresh().map(|(api, _)| api)
}

/// [`api`], and whether this call made it (so its device list is the full one, just made).
fn api_and_fresh() -> Result<(MutexGuard<'static, HidApi>, bool), LinkError> {
    static API: OnceLock<Result<Mutex<HidApi>, String>> = OnceLock::new();
    let mut fresh = false;
    let made = API.get_or_init(|| {
        fresh = true;
        HidApi::new().map(Mutex::new).map_err(|e| e.to_string())
    });
    match made {
        Ok(api) => Ok((api.lock().unwrap_or_else(std::sync::PoisonError::into_inner), fresh)),
        Err(e) => Err(LinkError::Other(format!("hidapi: {e}"))),
    }
}

/// Maps hidapi's errors onto link failures: by the Windows error code where hidapi gives one
/// (its Windows backend words errors as `op: (0x%08X) system text`, and the text is
/// localised), else by the C library's (Linux, macOS) text.
fn map_error(e: HidError) -> LinkError {
    let text = e.to_string();
    match windows_error_code(&text) {
        // ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND, ERROR_DEVICE_NOT_CONNECTED, ERROR_DEV_NOT_EXIST
        Some(2 | 3 | 1167 | 55) => return LinkError::Unplugged,
        Some(5) => return LinkError::AccessDenied, // ERROR_ACCESS_DENIED
        Some(1460 | 121) => return LinkError::Timeout, // ERROR_TIMEOUT, ERROR_SEM_TIMEOUT
        _ => {}
    }
    let lower = text.to_lowercase();
    if lower.contains("permission denied") || lower.contains("access denied") || lower.contains("access is denied") {
        LinkError::AccessDenied
    } else if ["no such device", "disconnected", "no such file", "endpoint shutdown"].iter().any(|m| lower.contains(m)) {
        LinkError::Unplugged
    } else if lower.contains("timed out") {
        LinkError::Timeout
    } else {
        LinkError::Other(format!("HID: {text}"))
    }
}

/// The Win32 error code in hidapi's Windows message `op: (0x00000002) File not found.`.
fn windows_error_code(text: &str) -> Option<u32> {
    let start = text.find("(0x")? + 3;
    let hex = text.get(start..start + 8)?;
    (text[start + 8..].starts_with(')')).then(|| u32::from_str_radix(hex, 16).ok()).flatten()
}

/// An open HID node.
pub struct HidNode {
    dev: HidDevice,
    path: String,
}

impl HidNode {
    /// Opens `path` for reading and writing. A node the user may not open is
    /// [`LinkError::AccessDenied`]; one that went away is [`LinkError::Unplugged`].
    pub fn open(path: &str) -> Result<Self, LinkError> {
        probe_access(path)?;
        let cpath = CString::new(path).map_err(|_| LinkError::Other(format!("bad HID path {path:?}")))?;
        let dev = api()?.open_path(&cpath).map_err(map_error)?;
        Ok(Self { dev, path: path.to_string() })
    }

    /// Classifies a failed transfer. A stalled control transfer (EPIPE, "Broken pipe") is
    /// what a key pulled mid-read gives, but a live key may stall too: it counts as
    /// unplugged only when the node has gone.
    fn fail(&self, e: HidError) -> LinkError {
        match map_error(e) {
            LinkError::Other(text) if !std::path::Path::new(&self.path).exists() => {
                tracing::debug!(path = self.path, "{text}; the node is gone");
                LinkError::Unplugged
            }
            other => other,
        }
    }
}

/// hidapi reports a failed open as text; on Linux, find out exactly why first.
#[cfg(target_os = "linux")]
fn probe_access(path: &str) -> Result<(), LinkError> {
    use std::io::ErrorKind;
    match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(LinkError::AccessDenied),
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(19 /* ENODEV */) => {
            Err(LinkError::Unplugged)
        }
        Err(e) => Err(LinkError::Other(format!("cannot open {path}: {e}"))),
    }
}

#[cfg(not(target_os = "linux"))]
fn probe_access(_path: &str) -> Result<(), LinkError> {
    Ok(())
}

impl FeatureReports for HidNode {
    fn get_report(&mut self) -> Result<[u8; REPORT_SIZE], LinkError> {
        // Report ID 0 goes in front; hidapi hands it back in byte 0 and counts it.
        let mut buf = [0u8; REPORT_SIZE + 1];
        let n = self.dev.get_feature_report(&mut buf).map_err(|e| self.fail(e))?;
        if n != REPORT_SIZE + 1 {
            return Err(LinkError::Protocol(format!("feature report of {n} bytes, expected {}", REPORT_SIZE + 1)));
        }
        let mut report = [0u8; REPORT_SIZE];
        report.copy_from_slice(&buf[1..]);
        Ok(report)
    }

    fn set_report(&mut self, report: &[u8; REPORT_SIZE]) -> Result<(), LinkError> {
        let mut buf = [0u8; REPORT_SIZE + 1];
        buf[1..].copy_from_slice(report);
        self.dev.send_feature_report(&buf).map_err(|e| self.fail(e))
    }
}

impl HidPackets for HidNode {
    fn write_packet(&mut self, packet: &[u8; PACKET_SIZE]) -> Result<(), LinkError> {
        let mut buf = [0u8; PACKET_SIZE + 1];
        buf[1..].copy_from_slice(packet);
        let n = self.dev.write(&buf).map_err(|e| self.fail(e))?;
        if n < PACKET_SIZE {
            return Err(LinkError::Protocol(format!("short HID write ({n} bytes)")));
        }
        Ok(())
    }

    fn read_packet(&mut self, timeout: Duration) -> Result<Option<[u8; PACKET_SIZE]>, LinkError> {
        let mut buf = [0u8; PACKET_SIZE];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX).max(1);
        match self.dev.read_timeout(&mut buf, ms).map_err(|e| self.fail(e))? {
            0 => Ok(None),
            n if n < 7 => Err(LinkError::Protocol(format!("HID input report of {n} bytes"))),
            // Shorter reports are zero-padded: the framing carries its own length.
            _ => Ok(Some(buf)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidapi_errors_are_classified() {
        let e = |m: &str| map_error(HidError::HidApiError { message: m.into() });
        assert_eq!(e("Failed to open a device with path '/dev/hidraw0': Permission denied"), LinkError::AccessDenied);
        assert_eq!(e("hid_read_timeout: unexpected poll error (device disconnected)"), LinkError::Unplugged);
        assert_eq!(e("ioctl (GFEATURE): No such device"), LinkError::Unplugged);
        assert!(matches!(e("something odd"), LinkError::Other(_)));
    }

    #[test]
    fn hidapi_windows_errors_are_classified_by_code_not_text() {
        let e = |m: &str| map_error(HidError::HidApiError { message: m.into() });
        // Wine's wording, then Windows' (English and German): the code decides.
        assert_eq!(e("hid_open_path/CreateFile: (0x00000002) File not found."), LinkError::Unplugged);
        assert_eq!(e("CreateFile: (0x00000002) The system cannot find the file specified."), LinkError::Unplugged);
        assert_eq!(e("CreateFile: (0x00000002) Das System kann die angegebene Datei nicht finden."), LinkError::Unplugged);
        assert_eq!(e("HidD_GetFeature: (0x0000048F) The device is not connected."), LinkError::Unplugged);
        assert_eq!(e("CreateFile: (0x00000005) Zugriff verweigert"), LinkError::AccessDenied);
        assert_eq!(e("WaitForSingleObject: (0x000005B4) This operation returned because the timeout period expired."), LinkError::Timeout);
        assert!(matches!(e("HidD_GetFeature: (0x0000001F) A device attached to the system is not functioning."), LinkError::Other(_)));
        assert_eq!(windows_error_code("x (0x1) y"), None);
    }

    #[test]
    fn a_missing_node_is_unplugged() {
        assert_eq!(HidNode::open("/dev/keytally-no-such-hidraw").err(), Some(LinkError::Unplugged));
    }
}
