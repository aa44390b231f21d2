//! A virtual YubiKey as a Linux USB gadget (configfs + FunctionFS, through the `usb-gadget`
//! crate). The key itself — DeviceInfo, applets, OTP frames, CTAPHID — is the transport-free
//! model of `keytally-virtual-key`; this crate only adds what is USB:
//!
//! * [`descriptors`] — per-PID device strings and interface sets, HID report descriptors, the
//!   54-byte CCID class descriptor, USB ATRs.
//! * [`ccid`] — the CCID bulk message protocol around a [`keytally_virtual_key::Card`].

pub mod ccid;
pub mod descriptors;
