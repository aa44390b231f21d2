//! USB hot-plug: Yubico devices arriving and leaving, from nusb's watch.
//!
//! nusb only reports events after the watch exists, so start it *before* the initial
//! listing and let the caller de-duplicate (a device may be both listed and reported).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use nusb::hotplug::{HotplugEvent, HotplugWatch};
use nusb::{DeviceId, MaybeFuture};

use crate::error::LinkError;
use crate::usb_ids::YUBICO_VID;

/// A Yubico device came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbChange {
    /// A Yubico device was plugged in.
    Arrived,
    /// A Yubico device was unplugged.
    Left,
}

/// Blocks on USB hot-plug events and keeps only those about Yubico devices.
pub struct UsbWatch {
    watch: HotplugWatch,
    /// Yubico devices known to be attached: a disconnect only carries the id.
    yubico: HashSet<DeviceId>,
}

impl UsbWatch {
    /// Starts watching, then lists what is attached already.
    pub fn start() -> Result<Self, LinkError> {
        let watch = nusb::watch_devices().map_err(|e| LinkError::Other(format!("USB hot-plug: {e}")))?;
        let yubico = nusb::list_devices()
            .wait()
            .map(|devs| devs.filter(|d| d.vendor_id() == YUBICO_VID).map(|d| d.id()).collect())
            .unwrap_or_default();
        Ok(Self { watch, yubico })
    }

    /// Blocks until a Yubico device arrives or leaves; `None` when the watch has ended.
    pub fn next_change(&mut self) -> Option<UsbChange> {
        loop {
            match block_on(NextEvent(&mut self.watch))? {
                HotplugEvent::Connected(d) if d.vendor_id() == YUBICO_VID => {
                    self.yubico.insert(d.id());
                    return Some(UsbChange::Arrived);
                }
                HotplugEvent::Disconnected(id) if self.yubico.remove(&id) => return Some(UsbChange::Left),
                _ => {}
            }
        }
    }
}

/// The next item of the hot-plug stream, as a future.
struct NextEvent<'a>(&'a mut HotplugWatch);

impl Future for NextEvent<'_> {
    type Output = Option<HotplugEvent>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut *self.0).poll_next(cx)
    }
}

/// Parks the thread until the future's waker fires: enough for one stream on its own thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
