//! The HTTP transport: builds the one `reqwest` client every request goes through
//! (rustls, system roots plus an optional extra CA, timeouts, no redirects, the
//! keytally `User-Agent`) and enforces "https unless loopback" on every URL.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

/// The `User-Agent` keytally sends: `keytally/<version>`.
pub const USER_AGENT: &str = concat!("keytally/", env!("CARGO_PKG_VERSION"));

/// Knobs for the HTTP client. `Default` is what the agent uses.
#[derive(Debug, Clone)]
pub struct TransportConfig {
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

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            extra_ca_file: None,
            pinned_spki: Vec::new(),
        }
    }
}

/// Why a URL or the transport could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("{what} {url:?} is not a valid URL: {reason}")]
    BadUrl { what: &'static str, url: String, reason: String },
    #[error("{what} {url} uses {scheme}://; https:// is required except on loopback (127.0.0.1, ::1, localhost)")]
    Insecure { what: &'static str, url: String, scheme: String },
    #[error("cannot use CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    #[error("pinned server key: {0}")]
    Pin(String),
}

/// Parses `url` and refuses anything that is not https, except http on loopback.
pub fn parse_secure_url(what: &'static str, url: &str) -> Result<Url, TransportError> {
    let parsed = Url::parse(url.trim()).map_err(|e| TransportError::BadUrl {
        what,
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    check_secure(what, &parsed)?;
    Ok(parsed)
}

/// https always; http only when the host is a loopback address or `localhost`.
pub fn check_secure(what: &'static str, url: &Url) -> Result<(), TransportError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        other => Err(TransportError::Insecure {
            what,
            url: redact_url(url),
            scheme: other.to_owned(),
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A URL as it may appear in logs: no user info, no query string.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Builds the HTTP client. Redirects are never followed: a redirect from the devices API
/// is a configuration error, and one from a token URL could send the client secret to
/// another host.
pub fn build_client(cfg: &TransportConfig) -> Result<reqwest::Client, TransportError> {
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
        let pem = std::fs::read(path).map_err(|e| TransportError::CaFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TransportError::CaFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(TransportError::CaFile {
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
                .map_err(|e| TransportError::CaFile { path: path.clone(), reason: e.to_string() })?;
        }
    }
    if !cfg.pinned_spki.is_empty() {
        // The same roots (system + extra CA), verified by rustls, then the pin.
        let tls = super::pin::pinned_tls_config(extra_der, cfg.pinned_spki.clone()).map_err(TransportError::Pin)?;
        b = b.use_preconfigured_tls(tls);
    }
    b.build().map_err(|e| TransportError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_required_except_loopback() {
        assert!(parse_secure_url("server", "https://sample.appterix.eu/api").is_ok());
        assert!(parse_secure_url("server", "http://127.0.0.1:8080/api").is_ok());
        assert!(parse_secure_url("server", "http://[::1]:8080/api").is_ok());
        assert!(parse_secure_url("server", "http://localhost:1/").is_ok());
        let e = parse_secure_url("server", "http://example.com/api").unwrap_err();
        assert!(e.to_string().contains("https:// is required"), "{e}");
        assert!(parse_secure_url("server", "ftp://127.0.0.1/").is_err());
        assert!(parse_secure_url("server", "not a url").is_err());
    }

    #[test]
    fn redacted_url_drops_credentials_and_query() {
        let u = Url::parse("https://user:pw@h.example/p?token=abc").unwrap();
        let r = redact_url(&u);
        assert!(!r.contains("pw") && !r.contains("abc") && !r.contains("user"), "{r}");
    }
}
