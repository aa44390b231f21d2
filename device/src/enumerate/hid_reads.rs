//! Reading USB keys over their HID nodes: each device in its own thread against one
//! deadline, its interfaces tried in order, the first that answers wins.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::interfaces::{Interface, InterfaceOrder};
use super::pcsc_readers::PostureWanted;
use super::usb_devices::UsbKeyDevice;
use crate::error::{Error, LinkError};
use crate::device_info::DeviceInfo;
use crate::identify::{identify_ctap, identify_otp, Identified, Reclaim};
use crate::posture::{self, PostureRead};
use crate::transport::ctaphid::{CtapHidDevice, CtapTiming};
use crate::transport::hid::HidNode;
use crate::transport::otp_hid::{OtpProtocol, OtpTiming};
use crate::usb_ids::Pid;

/// Reads one HID node of a key. A trait so that tests can stand in for real devices.
pub trait HidReader: Send + Sync {
    /// The key behind `path`, and how many USB transfers (reports) that took.
    fn read(&self, iface: Interface, path: &str, pid: Pid) -> Result<(Identified, u32), Error>;

    /// [`HidReader::read`], and the key's posture over the same interface when `posture`
    /// wants it. The default reads no posture.
    fn read_with(&self, iface: Interface, path: &str, pid: Pid, posture: &PostureWanted) -> Result<(Identified, u32, Option<PostureRead>), Error> {
        let _ = posture;
        self.read(iface, path, pid).map(|(key, transfers)| (key, transfers, None))
    }

    /// FIDO2 posture over the FIDO HID node `path` of a key identified another way (its CCID
    /// reader), added to `read`. The default reads nothing.
    fn add_fido2_posture(&self, path: &str, info: &DeviceInfo, read: &mut PostureRead) {
        let _ = (path, info, read);
    }
}

/// The real reader: hidapi, the OTP and CTAPHID protocols, identification.
#[derive(Debug, Clone, Copy, Default)]
pub struct HidapiReader {
    /// Polling and deadlines of the OTP HID protocol.
    pub otp: OtpTiming,
    /// Packet timeouts and deadline of CTAPHID.
    pub ctap: CtapTiming,
    /// Retries while the OTP interface is in reclaim.
    pub reclaim: Reclaim,
}

impl HidReader for HidapiReader {
    fn read(&self, iface: Interface, path: &str, pid: Pid) -> Result<(Identified, u32), Error> {
        self.read_with(iface, path, pid, &PostureWanted::Never).map(|(key, transfers, _)| (key, transfers))
    }

    /// Over OTP HID the posture is the OTP slots; over FIDO HID, FIDO2's getInfo.
    fn read_with(&self, iface: Interface, path: &str, pid: Pid, wanted: &PostureWanted) -> Result<(Identified, u32, Option<PostureRead>), Error> {
        let mut node = HidNode::open(path)?;
        match iface {
            Interface::Otp => {
                let mut otp = OtpProtocol::new(&mut node, self.otp)?;
                let key = identify_otp(&mut otp, pid, self.reclaim)?;
                let posture = wanted.wants(&key).then(|| {
                    let mut read = PostureRead::default();
                    posture::read_otp_hid(&mut otp, &key.info, &mut read);
                    read
                });
                Ok((key, otp.reports(), posture))
            }
            Interface::Fido => {
                let mut ctap = CtapHidDevice::init(&mut node, rand::random(), self.ctap)?;
                let key = identify_ctap(&mut ctap, pid)?;
                let posture = wanted.wants(&key).then(|| {
                    let mut read = PostureRead::default();
                    posture::read_fido2_hid(&mut ctap, &key.info, &mut read);
                    read
                });
                Ok((key, ctap.packets(), posture))
            }
            Interface::Ccid => Err(Error::NotSupported("CCID is read through PC/SC")),
        }
    }

    fn add_fido2_posture(&self, path: &str, info: &DeviceInfo, read: &mut PostureRead) {
        let outcome = HidNode::open(path).map_err(Error::from).and_then(|mut node| {
            let mut ctap = CtapHidDevice::init(&mut node, rand::random(), self.ctap)?;
            posture::read_fido2_hid(&mut ctap, info, read);
            Ok(())
        });
        if let Err(error) = outcome {
            read.warnings.push(posture::PostureWarning { applet: posture::Applet::Fido2, error: error.into() });
        }
    }
}

/// One interface that was tried and failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The interface tried.
    pub interface: Interface,
    /// The HID node path.
    pub path: String,
    /// Why it failed.
    pub error: Error,
}

/// The outcome of reading one device over HID.
pub(crate) struct DeviceRead {
    pub(crate) device: UsbKeyDevice,
    pub(crate) outcome: Result<(Identified, Interface, u32, Option<PostureRead>), Vec<Attempt>>,
}

/// Tries the device's HID interfaces in order; the first that answers wins.
fn read_device(reader: &dyn HidReader, device: &UsbKeyDevice, order: &InterfaceOrder, posture: &PostureWanted) -> DeviceRead {
    let mut attempts = Vec::new();
    for iface in order.hid() {
        for path in device.nodes(iface) {
            match reader.read_with(iface, path, device.pid, posture) {
                Ok((key, transfers, posture)) => {
                    return DeviceRead { device: device.clone(), outcome: Ok((key, iface, transfers, posture)) };
                }
                Err(error) => {
                    tracing::debug!(path, %iface, "reading {} failed: {error}", device.port);
                    attempts.push(Attempt { interface: iface, path: path.clone(), error });
                }
            }
        }
    }
    DeviceRead { device: device.clone(), outcome: Err(attempts) }
}

/// Reads devices in parallel, each in its own thread, against one deadline: a device that
/// hangs is reported as timed out and the others are not held up.
pub(crate) fn read_devices(
    reader: &Arc<dyn HidReader>,
    devices: Vec<UsbKeyDevice>,
    order: &InterfaceOrder,
    timeout: Duration,
    posture: &PostureWanted,
) -> Vec<DeviceRead> {
    let (tx, rx) = mpsc::channel();
    let mut pending = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let (reader, tx, device, order, posture) = (Arc::clone(reader), tx.clone(), device.clone(), order.clone(), posture.clone());
        let spawned = thread::Builder::new().name(format!("usb:{}", device.port)).spawn(move || {
            let _ = tx.send((i, read_device(reader.as_ref(), &device, &order, &posture)));
        });
        match spawned {
            Ok(_) => pending.push(i),
            Err(e) => tracing::warn!("cannot start a USB reader thread: {e}"),
        }
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut reads: Vec<(usize, DeviceRead)> = Vec::new();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((i, read)) = rx.recv_timeout(left) else { break };
        pending.retain(|p| *p != i);
        reads.push((i, read));
    }
    for i in pending {
        let device = devices[i].clone();
        let attempts = order
            .hid()
            .find_map(|iface| device.nodes(iface).first().map(|p| (iface, p.clone())))
            .map(|(interface, path)| vec![Attempt { interface, path, error: LinkError::Timeout.into() }])
            .unwrap_or_default();
        reads.push((i, DeviceRead { device, outcome: Err(attempts) }));
    }
    reads.sort_by_key(|(i, _)| *i);
    reads.into_iter().map(|(_, r)| r).collect()
}
