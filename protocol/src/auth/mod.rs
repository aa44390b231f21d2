//! Credentials: which bearer token a request carries, and what to do when the server
//! refuses it. One [`Authenticator`] per server profile, in one of three styles:
//! a static token (API key or long-lived JWT), OAuth2 client credentials, or a
//! rotating machine token.

pub mod jwt;
pub mod oauth;
pub mod rotation;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub use jwt::ExpiryWarning;
pub use oauth::{ClientAuth, ClientCredentials};
pub use rotation::MachineToken;

use crate::http::{BearerProvider, Failure};
use crate::secret::{Secret, SecretSource};

/// Why no usable token could be had. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential itself was refused; retrying soon will not help.
    #[error("credential rejected: {0}")]
    Rejected(String),
    /// The token endpoint could not be reached or answered with a transient error.
    #[error("{reason}")]
    Transient {
        /// What went wrong.
        reason: String,
        /// How long the token endpoint asked to wait.
        retry_after: Option<Duration>,
    },
    /// The credential is misconfigured (missing file, bad permissions...).
    #[error("{0}")]
    Config(String),
}

/// Where a static token comes from; a file or keyring entry is read again after a 401, and
/// while the token stands rejected, in case it was replaced.
pub type StaticSource = SecretSource;

/// A static bearer token: an API key (revocable at any time) or an API token JWT.
#[derive(Debug)]
pub struct StaticToken {
    source: StaticSource,
    current: Mutex<Secret>,
}

impl StaticToken {
    /// Reads the token from `source` now; an unreadable source is an error here, not later.
    pub fn new(source: StaticSource) -> Result<Self, AuthError> {
        let current = match &source {
            // A file's own error (too open, missing...) says more than a string would.
            SecretSource::File(p) => Secret::from_file(p)?,
            other => other.read().map_err(AuthError::Config)?,
        };
        Ok(StaticToken { source, current: Mutex::new(current) })
    }

    fn token(&self) -> Secret {
        self.current.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reads the source again; true when it now holds another token (which is then used).
    fn reread(&self) -> Result<bool, AuthError> {
        if !self.source.can_change() {
            return Ok(false);
        }
        let fresh = self.source.read().map_err(AuthError::Config)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if *current == fresh {
            return Ok(false);
        }
        *current = fresh;
        Ok(true)
    }

    fn reload(&self, rejected: &Secret) -> Result<(), AuthError> {
        if self.reread()? || self.token() != *rejected {
            return Ok(());
        }
        Err(AuthError::Rejected("the server refused the API token".into()))
    }
}

/// The credential style.
#[derive(Debug)]
pub enum Credential {
    /// An API key or long-lived API token JWT.
    Static(StaticToken),
    /// OAuth2 client credentials exchanged for short-lived access tokens.
    OAuth(ClientCredentials),
    /// A YubiEnterprise-style machine token in a file, rotated by the server.
    Machine(MachineToken),
}

/// What `status` shows about a credential: its kind and expiry, never its value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialInfo {
    /// `api-token`, `oauth2-client-credentials` or `machine-token`.
    pub kind: &'static str,
    /// Where it comes from: a file path, a client id and token URL... never the secret.
    pub source: String,
    /// When the token expires, if that is known (a JWT's `exp`, an OAuth2 token's lifetime).
    #[serde(with = "opt_rfc3339")]
    pub expires_at: Option<SystemTime>,
    /// The same in words for people: `expires 2027-…`, or why no date can be given (an OAuth2
    /// access token is fetched when needed and this process may hold none; an opaque token
    /// states no expiry).
    pub expiry: String,
    /// The expiry warning for a long-lived token, when it is due.
    pub expiry_warning: Option<String>,
    /// A machine-token rotation was started and its outcome never recorded.
    pub rotation_interrupted: bool,
}

mod opt_rfc3339 {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&humantime::format_rfc3339_seconds(*t).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Hands out bearer tokens and handles refusals, for one credential.
#[derive(Debug)]
pub struct Authenticator {
    credential: Credential,
    warned: Mutex<ExpiryWarning>,
}

impl Authenticator {
    /// An authenticator for `credential`.
    pub fn new(credential: Credential) -> Self {
        Authenticator { credential, warned: Mutex::new(ExpiryWarning::None) }
    }

    /// The credential it hands out tokens for.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Reads the credential's source again (a file or keyring entry an admin may have
    /// replaced after the server refused it); true when it changed. A value given once, or a
    /// machine token keytally rotates itself, does not change this way.
    pub fn reread(&self) -> Result<bool, AuthError> {
        match &self.credential {
            Credential::Static(s) => s.reread(),
            Credential::OAuth(o) => o.reread_secret(),
            Credential::Machine(_) => Ok(false),
        }
    }

    /// A one-way fingerprint of the credential in use (the token, or the OAuth2 client
    /// secret), to tell a replaced credential from a refused one. Never the secret itself.
    pub fn fingerprint(&self) -> String {
        match &self.credential {
            Credential::Static(s) => crate::secret::fingerprint(&s.token()),
            Credential::OAuth(o) => o.secret_fingerprint(),
            Credential::Machine(m) => crate::secret::fingerprint(&m.token()),
        }
    }

    /// Logs the expiry warning when it reaches a new level (7 days, 1 day, today, expired).
    fn warn_expiry(&self, token: &Secret, now: SystemTime) {
        let Some(exp) = jwt::expiry(token.expose()) else { return };
        let level = ExpiryWarning::at(exp, now);
        let mut warned = match self.warned.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if level > *warned {
            *warned = level;
            if let Some(msg) = level.message("the API token", exp) {
                tracing::warn!("{msg}");
            }
        }
    }

    /// Kind, source and expiry of the credential, for `status`.
    pub async fn info(&self, now: SystemTime) -> CredentialInfo {
        let (kind, source, expires_at, rotation_interrupted) = match &self.credential {
            Credential::Static(s) => ("api-token", s.source.describe(), jwt::expiry(s.token().expose()), false),
            Credential::OAuth(o) => (
                "oauth2-client-credentials",
                format!("client {:?} at {}", o.client_id(), o.token_url()),
                o.expires_at().await,
                false,
            ),
            Credential::Machine(m) => (
                "machine-token",
                format!("file {}", m.path().display()),
                jwt::expiry(m.token().expose()),
                m.rotation_interrupted(),
            ),
        };
        let expiry_warning = match (&self.credential, expires_at) {
            (Credential::OAuth(_), _) | (_, None) => None,
            (_, Some(exp)) => ExpiryWarning::at(exp, now).message("the API token", exp),
        };
        let expiry = match (&self.credential, expires_at) {
            (_, Some(exp)) => format!("expires {}", humantime::format_rfc3339_seconds(exp)),
            (Credential::OAuth(_), None) => "access tokens fetched when needed, none held by this process".into(),
            (_, None) => "no expiry stated in the token".into(),
        };
        CredentialInfo { kind, source, expires_at, expiry, expiry_warning, rotation_interrupted }
    }
}

impl BearerProvider for Authenticator {
    async fn bearer(&self) -> Result<Secret, Failure> {
        let token = match &self.credential {
            Credential::Static(s) => s.token(),
            Credential::OAuth(o) => o.token().await?,
            Credential::Machine(m) => m.token(),
        };
        if !matches!(self.credential, Credential::OAuth(_)) {
            self.warn_expiry(&token, SystemTime::now());
        }
        Ok(token)
    }

    async fn refresh_after_unauthorized(&self, rejected: &Secret) -> Result<(), Failure> {
        Ok(match &self.credential {
            Credential::Static(s) => s.reload(rejected),
            Credential::OAuth(o) => o.refresh(rejected).await,
            Credential::Machine(m) => m.reload(rejected),
        }?)
    }

    fn note_success(&self) {
        if let Credential::Machine(m) = &self.credential {
            m.confirm_current();
        }
    }
}

/// No token means the request fails: a refused or misconfigured credential is a
/// credential failure, an unreachable token endpoint one to retry.
impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Rejected(reason) | AuthError::Config(reason) => Failure::CredentialRejected { status: None, reason },
            AuthError::Transient { reason, retry_after } => Failure::Retryable { status: None, retry_after, reason },
        }
    }
}
