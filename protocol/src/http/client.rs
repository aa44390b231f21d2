//! The one `reqwest` client every request goes through: rustls, system roots plus an
//! optional extra CA, an optional SPKI pin, the proxy from `HTTPS_PROXY`/`NO_PROXY`, timeouts, no
//! redirects, the keytally `User-Agent`.

use std::path::PathBuf;
use std::time::Duration;

/// The `User-Agent` keytally sends: `keytally/<version>`.
pub const USER_AGENT: &str = concat!("keytally/", env!("CARGO_PKG_VERSION"));

/// Knobs for the HTTP client. `Default` is what the agent uses.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time to establish TCP + TLS.
    pub connect_timeout: Duration,
    /// Time for a whole exchange, from connecting until the last body byte.
    pub timeout: Duration,
    /// A PEM file with extra CA certificates trusted besides the system roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Pinned server keys: base64 SHA-256 of the SubjectPublicKeyInfo (`pin-sha256`).
    /// When set, the server's certificate must also carry one of these keys.
    pub pinned_spki: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            extra_ca_file: None,
            pinned_spki: Vec::new(),
        }
    }
}

/// Why a URL was refused or the HTTP client could not be built (configuration errors,
/// found before any request is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpSetupError {
    /// The URL does not parse, or cannot be a base for API paths.
    #[error("{what} {url:?} is not a valid URL: {reason}")]
    BadUrl {
        /// Which URL (for example "server URL", "token URL").
        what: &'static str,
        /// The URL as given.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The URL is not https and its host is not loopback.
    #[error("{what} {url} uses {scheme}://; https:// is required except on loopback (127.0.0.1, ::1, localhost)")]
    Insecure {
        /// Which URL.
        what: &'static str,
        /// The URL, redacted.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The extra CA file cannot be read or holds no PEM certificate.
    #[error("cannot use CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// reqwest refused the client configuration.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    /// A pinned key is malformed, or the pinned TLS configuration cannot be built.
    #[error("pinned server key: {0}")]
    Pin(String),
}

/// Builds the HTTP client. Redirects are never followed: a redirect from the devices API
/// is a configuration error, and one from a token URL could send the client secret to
/// another host.
pub fn build_client(cfg: &HttpConfig) -> Result<reqwest::Client, HttpSetupError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .https_only(false); // enforced per URL by check_secure, which allows loopback http
    let mut extra_der = Vec::new();
    if let Some(path) = &cfg.extra_ca_file {
        let pem = std::fs::read(path).map_err(|e| HttpSetupError::CaFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpSetupError::CaFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(HttpSetupError::CaFile {
                path: path.clone(),
                reason: "no PEM certificate in it".into(),
            });
        }
        if cfg.pinned_spki.is_empty() {
            for c in certs {
                b = b.add_root_certificate(c);
            }
        } else {
            use rustls::pki_types::pem::PemObject;
            extra_der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| HttpSetupError::CaFile { path: path.clone(), reason: e.to_string() })?;
        }
    }
    if !cfg.pinned_spki.is_empty() {
        // The same roots (system + extra CA), verified by rustls, then the pin.
        let tls = super::pin::pinned_tls_config(extra_der, cfg.pinned_spki.clone()).map_err(HttpSetupError::Pin)?;
        b = b.use_preconfigured_tls(tls);
    }
    b.build().map_err(|e| HttpSetupError::Build(e.to_string()))
}
