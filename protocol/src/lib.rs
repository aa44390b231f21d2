//! keytally's wire side: the device record, the devices API client and its credentials.
//!
//! - [`record`]: the device record (Appterix device model); [`mapping`]: a read key → record;
//!   [`server_view`]: the server's owner, status and tags of a listed device.
//! - [`api`]: the HTTP transport, response classification and the devices client.
//! - [`auth`]: the three credential styles (static token, OAuth2 client credentials,
//!   rotating machine token) and JWT expiry warnings.
//! - [`secret`]: the redacting secret type and secret loading.

pub mod api;
pub mod mapping;
pub mod record;
pub mod server_view;
pub mod auth;
pub mod secret;
