//! OAuth2 client credentials (the Appterix style): exchanges a client id and secret for
//! an access token at a token URL, caches it, refreshes it before it expires (at 80 % of
//! its lifetime, on the monotonic clock) and once more when the API answers 401.
//! The token request never follows a redirect.

use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use tokio::sync::Mutex;

use super::AuthError;
use crate::http::redact_url;
use crate::http::response::{self, read_capped, read_reason, StatusClass};
use crate::secret::{Secret, SecretSource};

/// The largest token response read.
const TOKEN_BODY_CAP: usize = 64 * 1024;
/// Lifetime assumed when the server does not send `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// How the client authenticates at the token URL (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(id:secret)` (the RFC's preferred way).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    obtained: Instant,
    lifetime: Duration,
    expires_wall: SystemTime,
}

impl Cached {
    fn fresh(&self) -> bool {
        self.obtained.elapsed() < self.lifetime.mul_f64(0.8)
    }
}

/// A client-credentials token source with a single-flight cache.
#[derive(Debug)]
pub struct ClientCredentials {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    client_secret: std::sync::Mutex<Secret>,
    /// Where the client secret was read, to read it again once it is refused.
    secret_source: Option<SecretSource>,
    scope: Option<String>,
    client_auth: ClientAuth,
    cache: Mutex<Option<Cached>>,
}

impl ClientCredentials {
    /// A token source for `client_id` at `token_url`; no request is sent until a token is needed.
    pub fn new(
        http: reqwest::Client,
        token_url: Url,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        client_auth: ClientAuth,
    ) -> Self {
        ClientCredentials {
            http,
            token_url,
            client_id,
            client_secret: std::sync::Mutex::new(client_secret),
            secret_source: None,
            scope,
            client_auth,
            cache: Mutex::new(None),
        }
    }

    /// Where the client secret came from (a file, a keyring entry), so it can be read again.
    pub fn with_secret_source(mut self, source: SecretSource) -> Self {
        self.secret_source = Some(source);
        self
    }

    fn secret(&self) -> Secret {
        self.client_secret.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reads the client secret's source again; true when it changed (the cached access
    /// token, got with the old secret, is then dropped at the next request).
    pub fn reread_secret(&self) -> Result<bool, AuthError> {
        let Some(source) = self.secret_source.as_ref().filter(|s| s.can_change()) else { return Ok(false) };
        let fresh = source.read().map_err(AuthError::Config)?;
        let mut current = self.client_secret.lock().unwrap_or_else(|p| p.into_inner());
        if *current == fresh {
            return Ok(false);
        }
        *current = fresh;
        if let Ok(mut cache) = self.cache.try_lock() {
            *cache = None;
        }
        Ok(true)
    }

    /// A one-way fingerprint of the client secret in use (never the secret).
    pub fn secret_fingerprint(&self) -> String {
        crate::secret::fingerprint(&self.secret())
    }

    /// The OAuth2 client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The token URL, redacted for logs.
    pub fn token_url(&self) -> String {
        redact_url(&self.token_url)
    }

    /// The current access token, fetched or refreshed when needed. Concurrent callers
    /// wait for one token request instead of each sending their own.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| c.fresh()) {
            return Ok(c.token.clone());
        }
        let fetched = self.fetch().await?;
        let token = fetched.token.clone();
        *cache = Some(fetched);
        Ok(token)
    }

    /// After a 401 for `rejected`: fetch a new token, unless another caller already did.
    pub async fn refresh(&self, rejected: &Secret) -> Result<(), AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if &c.token != rejected && c.fresh() {
                return Ok(());
            }
        }
        *cache = None;
        let fetched = self.fetch().await?;
        if &fetched.token == rejected {
            *cache = Some(fetched);
            return Err(AuthError::Rejected("the token URL handed out the token the API had just refused".into()));
        }
        *cache = Some(fetched);
        Ok(())
    }

    /// When the cached token expires (wall clock), if one is cached.
    pub async fn expires_at(&self) -> Option<SystemTime> {
        self.cache.lock().await.as_ref().map(|c| c.expires_wall)
    }

    async fn fetch(&self) -> Result<Cached, AuthError> {
        let mut req = self
            .http
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        // The form serializer is not `Send`: it lives only in this block, not across an await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &self.scope {
                form.append_pair("scope", scope);
            }
            match self.client_auth {
                ClientAuth::Basic => {
                    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                    req = req.basic_auth(enc(&self.client_id), Some(enc(self.secret().expose())));
                }
                ClientAuth::Body => {
                    form.append_pair("client_id", &self.client_id);
                    form.append_pair("client_secret", self.secret().expose());
                }
            }
            Secret::new(form.finish())
        };
        let started = Instant::now();
        let mut resp = req.body(body.expose().to_owned()).send().await.map_err(|e| AuthError::Transient {
            reason: format!("token request to {}: {}", self.token_url(), response::describe_reqwest(&e)),
            retry_after: None,
        })?;
        let status = resp.status();
        match response::classify(status) {
            StatusClass::Accepted => {}
            StatusClass::Redirect => {
                let to = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| self.token_url.join(l).ok())
                    .map(|u| u.host_str().unwrap_or("?").to_owned())
                    .unwrap_or_else(|| "an unknown location".into());
                return Err(AuthError::Rejected(format!(
                    "the token URL {} answered HTTP {} redirecting to {to}; keytally never follows redirects on the token URL",
                    self.token_url(),
                    status.as_u16()
                )));
            }
            StatusClass::Retryable => {
                let retry_after = response::retry_after(resp.headers(), SystemTime::now());
                let reason = read_reason(&mut resp).await;
                return Err(AuthError::Transient {
                    reason: format!("token URL answered HTTP {}: {reason}", status.as_u16()),
                    retry_after,
                });
            }
            StatusClass::Unauthorized | StatusClass::Forbidden | StatusClass::Permanent => {
                let reason = read_reason(&mut resp).await;
                return Err(AuthError::Rejected(format!(
                    "token URL refused the client {:?}: HTTP {}: {reason}",
                    self.client_id,
                    status.as_u16()
                )));
            }
        }
        let bytes = read_capped(&mut resp, TOKEN_BODY_CAP).await.map_err(|e| AuthError::Transient {
            reason: format!("token response from {}: {e}", self.token_url()),
            retry_after: None,
        })?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            token_type: Option<String>,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| AuthError::Transient {
            reason: format!(
                "token response from {} (HTTP {}) is not an OAuth2 token answer: {e}",
                self.token_url(),
                status.as_u16()
            ),
            retry_after: None,
        })?;
        if let Some(tt) = &parsed.token_type {
            if !tt.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Rejected(format!("token URL issued a {tt:?} token; keytally needs a Bearer token")));
            }
        }
        if parsed.access_token.is_empty() {
            return Err(AuthError::Transient { reason: "token URL returned an empty access_token".into(), retry_after: None });
        }
        let lifetime = parsed
            .expires_in
            .as_ref()
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        tracing::debug!(lifetime_s = lifetime.as_secs(), "obtained an OAuth2 access token");
        Ok(Cached {
            token: Secret::new(parsed.access_token),
            obtained: started,
            lifetime,
            expires_wall: SystemTime::now() + lifetime,
        })
    }
}
