//! URL policy for every request: https unless the host is loopback, and URLs as they may
//! appear in logs (no user info, no query string).

use std::net::IpAddr;

use reqwest::Url;

use super::client::HttpSetupError;

/// Parses `url` and refuses anything that is not https, except http on loopback.
pub fn parse_secure_url(what: &'static str, url: &str) -> Result<Url, HttpSetupError> {
    let parsed = Url::parse(url.trim()).map_err(|e| HttpSetupError::BadUrl {
        what,
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    check_secure(what, &parsed)?;
    Ok(parsed)
}

/// https always; http only when the host is a loopback address or `localhost`.
pub fn check_secure(what: &'static str, url: &Url) -> Result<(), HttpSetupError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        other => Err(HttpSetupError::Insecure {
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
