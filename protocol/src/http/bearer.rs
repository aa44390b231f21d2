//! The seam between a request and its credential: what the devices client needs from
//! whoever hands out bearer tokens. `auth` implements it; the devices client only knows
//! this trait, so neither imports the other.

use std::future::Future;

use super::response::Failure;
use crate::secret::Secret;

/// Hands out the bearer token for the next request and reacts to the server's verdict on it.
pub trait BearerProvider: Send + Sync {
    /// The token for the next request. An error says why none can be had, classified as
    /// the request's [`Failure`] (a refused credential, or a token endpoint to retry later).
    fn bearer(&self) -> impl Future<Output = Result<Secret, Failure>> + Send;

    /// Called once after the server answered 401 to `rejected`. `Ok` means another token
    /// is now available and the request may be sent once more.
    fn refresh_after_unauthorized(&self, rejected: &Secret) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Called after any 2xx answer to a request that carried the current token.
    fn note_success(&self);
}
