//! Transports: how bytes reach a key. Each knows its link, not YubiKeys.

pub mod pcsc;
