//! The HTTP plumbing beneath the devices API and auth: the client (TLS roots, CA file,
//! SPKI pin, proxy, timeouts), the URL policy, what an answer means, and the bearer-token
//! seam. It knows HTTP, not devices or credentials.

pub mod bearer;
pub mod client;
pub mod pin;
pub mod response;
pub mod url_policy;

pub use bearer::BearerProvider;
pub use client::{build_client, HttpConfig, HttpSetupError, USER_AGENT};
pub use response::Failure;
pub use url_policy::{parse_secure_url, redact_url};
