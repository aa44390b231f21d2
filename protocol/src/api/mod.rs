//! The devices API: the HTTP transport, response classification, and the client.

pub mod client;
pub mod pin;
pub mod response;
pub mod transport;

pub use client::{DevicePage, DevicesClient, Pushed};
pub use response::Failure;
pub use transport::{build_client, parse_secure_url, TransportConfig, TransportError, USER_AGENT};
