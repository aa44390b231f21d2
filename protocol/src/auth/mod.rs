//! Credentials: which bearer token a request carries, and what to do when the server
//! refuses it. One [`Authenticator`] per server profile, in one of three styles:
//! a static token (API key or long-lived JWT), OAuth2 client credentials, or a
//! rotating machine token.

pub mod jwt;
pub mod oauth;
pub mod rotation;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub use jwt::ExpiryWarning;
pub use oauth::{ClientAuth, ClientCredentials};
pub use rotation::MachineToken;

use crate::secret::Secret;

/// Why no usable token could be had. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential itself was refused; retrying soon will not help.
    #[error("credential rejected: {0}")]
    Rejected(String),
    /// The token endpoint could not be reached or answered with a transient error.
    #[error("{reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// The credential is misconfigured (missing file, bad permissions...).
    #[error("{0}")]
    Config(String),
}

/// Where a static token comes from.
#[derive(Debug, Clone)]
pub enum StaticSource {
    /// Given directly (an environment variable or the config file).
    Value(Secret),
    /// A file, re-read after a 401 in case it was replaced.
    File(PathBuf),
}

/// A static bearer token: an API key (revocable at any time) or an API token JWT.
#[derive(Debug)]
pub struct StaticToken {
    source: StaticSource,
    current: Mutex<Secret>,
}

impl StaticToken {
    pub fn new(source: StaticSource) -> Result<Self, AuthError> {
        let current = match &source {
            StaticSource::Value(s) => s.clone(),
            StaticSource::File(p) => Secret::from_file(p)?,
        };
        Ok(StaticToken { source, current: Mutex::new(current) })
    }

    fn token(&self) -> Secret {
        self.current.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn reload(&self, rejected: &Secret) -> Result<(), AuthError> {
        if let StaticSource::File(p) = &self.source {
            let fresh = Secret::from_file(p)?;
            if &fresh != rejected {
                match self.current.lock() {
                    Ok(mut g) => *g = fresh,
                    Err(poison) => *poison.into_inner() = fresh,
                }
                return Ok(());
            }
        }
        Err(AuthError::Rejected("the server refused the API token".into()))
    }
}

/// The credential style.
#[derive(Debug)]
pub enum Credential {
    Static(StaticToken),
    OAuth(ClientCredentials),
    Machine(MachineToken),
}

/// What `status` shows about a credential: its kind and expiry, never its value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialInfo {
    /// `api-token`, `oauth2-client-credentials` or `machine-token`.
    pub kind: &'static str,
    /// Where it comes from: a file path, a client id and token URL... never the secret.
    pub source: String,
    #[serde(with = "opt_rfc3339")]
    pub expires_at: Option<SystemTime>,
    pub expiry_warning: Option<String>,
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
    pub fn new(credential: Credential) -> Self {
        Authenticator { credential, warned: Mutex::new(ExpiryWarning::None) }
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The token for the next request.
    pub async fn bearer(&self) -> Result<Secret, AuthError> {
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

    /// Called once after a 401 for `rejected`. `Ok` means a different token is now
    /// available and the request may be sent once more.
    pub async fn refresh_after_unauthorized(&self, rejected: &Secret) -> Result<(), AuthError> {
        match &self.credential {
            Credential::Static(s) => s.reload(rejected),
            Credential::OAuth(o) => o.refresh(rejected).await,
            Credential::Machine(m) => m.reload(rejected),
        }
    }

    /// Called after any 2xx.
    pub fn note_success(&self) {
        if let Credential::Machine(m) = &self.credential {
            m.confirm_current();
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
            Credential::Static(s) => {
                let source = match &s.source {
                    StaticSource::Value(_) => "configured value".to_owned(),
                    StaticSource::File(p) => format!("file {}", p.display()),
                };
                ("api-token", source, jwt::expiry(s.token().expose()), false)
            }
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
        CredentialInfo { kind, source, expires_at, expiry_warning, rotation_interrupted }
    }
}
