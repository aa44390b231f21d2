//! keytally's wire side: the device record, the devices API client and its credentials.
//!
//! - [`record`]: the device record (Appterix device model); [`mapping`]: a read key → record;
//!   [`server_view`]: the server's owner, status and tags of a listed device.
//! - [`http`]: the HTTP plumbing beneath both the API and auth: the client (TLS, CA file,
//!   SPKI pin, proxy, timeouts), the https-unless-loopback URL policy, response classes, and
//!   the [`http::BearerProvider`] seam through which a request gets its token.
//! - [`devices`]: the devices API client (`PUT /devices/{uniqueId}`, `GET /devices`).
//! - [`auth`]: the three credential styles (static token, OAuth2 client credentials,
//!   rotating machine token) and JWT expiry warnings; [`auth::Authenticator`] is a
//!   [`http::BearerProvider`].
//! - [`secret`]: the redacting secret type and secret loading.
//!
//! Layering: `http` imports neither `devices` nor `auth`; `devices` and `auth` import `http`
//! (and `secret`) but not each other. They meet only here, in [`DevicesClient`].

#![warn(missing_docs)]

pub mod devices;
pub mod http;
pub mod mapping;
pub mod record;
pub mod server_view;
pub mod auth;
pub mod secret;

/// The devices client as the agent uses it: its requests carry the bearer tokens of an
/// [`auth::Authenticator`].
pub type DevicesClient = devices::DevicesClient<auth::Authenticator>;
