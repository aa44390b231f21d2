//! Transports: how bytes reach a key. Each knows its link, not YubiKeys.

pub mod ctaphid;
pub mod hid;
pub mod otp_hid;
pub mod pcsc;
pub mod pcsc_service;
pub mod pcsc_watch;
pub mod reader_signal;
pub mod usb;
pub mod usb_watch;
