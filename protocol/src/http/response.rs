//! What an HTTP answer means for keytally: classifying a status into accepted,
//! "refresh the credential", credential rejected, retryable (with `Retry-After`) or
//! rejected for good (with the server's reason), and reading bodies with a size cap.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// The largest error body read to find the server's reason.
pub const REASON_BODY_CAP: usize = 16 * 1024;
/// The longest reason kept (characters).
pub const REASON_MAX_CHARS: usize = 300;
/// The longest `Retry-After` honoured; longer values are clamped (a hostile or broken
/// server must not park the agent for days).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(6 * 3600);

/// Why a request did not succeed. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A 403, or a 401 that one credential refresh did not cure, or a token endpoint
    /// that refused the client. Pushing with this credential stops until the backoff cap.
    CredentialRejected {
        /// The HTTP status, when the server answered (none when the token source refused).
        status: Option<u16>,
        /// Why, in the server's words where it gave any.
        reason: String,
    },
    /// Worth retrying later: network errors, timeouts, 408/409/425/429/5xx, redirects,
    /// unreadable answers. `retry_after` is the server's `Retry-After`, if it sent one.
    Retryable {
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
        /// What went wrong.
        reason: String,
    },
    /// The server refused this request for good (another 4xx): quarantine the record.
    Rejected {
        /// The HTTP status (0 when keytally refused the request before sending it).
        status: u16,
        /// The server's reason.
        reason: String,
    },
}

impl Failure {
    /// A retryable failure without a status or `Retry-After`.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Failure::Retryable { status: None, retry_after: None, reason: reason.into() }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::CredentialRejected { status, .. } | Failure::Retryable { status, .. } => *status,
            Failure::Rejected { status, .. } => Some(*status),
        }
    }

    /// The server's `Retry-After`, for a retryable failure that carried one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The reason, without the status.
    pub fn reason(&self) -> &str {
        match self {
            Failure::CredentialRejected { reason, .. }
            | Failure::Retryable { reason, .. }
            | Failure::Rejected { reason, .. } => reason,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = |s: Option<u16>| s.map(|s| format!("HTTP {s}: ")).unwrap_or_default();
        match self {
            Failure::CredentialRejected { status: s, reason } => {
                write!(f, "credential rejected: {}{reason}", status(*s))
            }
            Failure::Retryable { status: s, retry_after, reason } => {
                write!(f, "{}{reason}", status(*s))?;
                if let Some(d) = retry_after {
                    write!(f, " (retry after {}s)", d.as_secs())?;
                }
                Ok(())
            }
            Failure::Rejected { status: s, reason } => write!(f, "rejected: HTTP {s}: {reason}"),
        }
    }
}

impl std::error::Error for Failure {}

/// The class of a status code, before any body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx.
    Accepted,
    /// 401: refresh the credential once and try again.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 408, 409, 425, 429, 5xx and anything outside the defined ranges: try again later.
    Retryable,
    /// 3xx: keytally never follows redirects.
    Redirect,
    /// Any other 4xx: the request itself is refused for good.
    Permanent,
}

/// The class of `status`.
pub fn classify(status: StatusCode) -> StatusClass {
    let code = status.as_u16();
    match code {
        200..=299 => StatusClass::Accepted,
        401 => StatusClass::Unauthorized,
        403 => StatusClass::Forbidden,
        408 | 409 | 425 | 429 => StatusClass::Retryable,
        300..=399 => StatusClass::Redirect,
        400..=499 => StatusClass::Permanent,
        // 5xx, and anything outside the defined ranges (1xx as a final answer, 6xx...).
        _ => StatusClass::Retryable,
    }
}

/// Parses `Retry-After` (delta-seconds or an HTTP-date), clamped to [`RETRY_AFTER_MAX`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(RETRY_AFTER_MAX))
}

/// A body read stopped because it was larger than the cap, or failed.
#[derive(Debug)]
pub enum BodyError {
    /// The body is longer than the cap.
    TooLarge {
        /// The cap, in bytes.
        cap: usize,
    },
    /// The connection failed while reading.
    Read(reqwest::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { cap } => write!(f, "the response body is larger than {cap} bytes"),
            BodyError::Read(e) => write!(f, "reading the response body failed: {}", describe_reqwest(e)),
        }
    }
}

/// Reads at most `cap` bytes of a body; a longer body is an error, not a truncation.
/// The client's total timeout bounds a slow body.
pub async fn read_capped(resp: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = resp.content_length() {
        if len > cap as u64 {
            return Err(BodyError::TooLarge { cap });
        }
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if out.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads up to [`REASON_BODY_CAP`] bytes and pulls a human reason out of them: the
/// `message`/`error_description`/`error`/`detail`/`title` of a JSON body, or the text.
/// The reason is cut to [`REASON_MAX_CHARS`] and stripped of control characters.
pub async fn read_reason(resp: &mut reqwest::Response) -> String {
    let status = resp.status();
    let fallback = || status.canonical_reason().unwrap_or("no reason given").to_owned();
    let mut out = Vec::new();
    // A partial read is fine here: the reason is informative only.
    while let Ok(Some(c)) = resp.chunk().await {
        let room = REASON_BODY_CAP.saturating_sub(out.len());
        out.extend_from_slice(&c[..c.len().min(room)]);
        if out.len() >= REASON_BODY_CAP {
            break;
        }
    }
    let reason = reason_from_body(&out);
    if reason.is_empty() {
        fallback()
    } else {
        reason
    }
}

/// The human reason in a body: the `message`/`error_description`/`error`/`detail`/`title`/
/// `reason` of a JSON body (or `error.message`), else the text; cleaned and cut short.
pub fn reason_from_body(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["message", "error_description", "error", "detail", "title", "reason"] {
            match v.get(key) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => return clean(s),
                Some(obj @ serde_json::Value::Object(_)) => {
                    if let Some(serde_json::Value::String(s)) = obj.get("message") {
                        return clean(s);
                    }
                }
                _ => {}
            }
        }
    }
    clean(&String::from_utf8_lossy(body))
}

fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_MAX_CHARS)
        .collect();
    if s.chars().count() > REASON_MAX_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

/// A transport error in words, without the URL's query string or anything secret.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read"
    } else if e.is_request() {
        "the request failed"
    } else {
        "HTTP error"
    };
    // reqwest's Display includes the URL; we only use URLs without secrets, but strip it anyway
    // and keep the innermost cause, which says what happened (refused, reset, dns...).
    let mut cause: Option<String> = None;
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        cause = Some(s.to_string());
        src = s.source();
    }
    match cause {
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}

/// The failure for a request that got no full answer (never reached the server, timed
/// out, or the connection broke): worth retrying.
pub fn request_failure(context: &str, e: &reqwest::Error) -> Failure {
    Failure::retryable(format!("{context}: {}", describe_reqwest(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn status_classes() {
        let c = |n| classify(StatusCode::from_u16(n).unwrap());
        assert_eq!(c(200), StatusClass::Accepted);
        assert_eq!(c(204), StatusClass::Accepted);
        assert_eq!(c(401), StatusClass::Unauthorized);
        assert_eq!(c(403), StatusClass::Forbidden);
        for n in [408, 409, 425, 429, 500, 502, 503, 504] {
            assert_eq!(c(n), StatusClass::Retryable, "{n}");
        }
        for n in [400, 404, 410, 413, 415, 422] {
            assert_eq!(c(n), StatusClass::Permanent, "{n}");
        }
        assert_eq!(c(302), StatusClass::Redirect);
    }

    #[test]
    fn retry_after_seconds_date_and_clamp() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&h, now), Some(RETRY_AFTER_MAX));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn reasons_from_bodies() {
        assert_eq!(reason_from_body(br#"{"message":"uniqueId mismatch"}"#), "uniqueId mismatch");
        assert_eq!(reason_from_body(br#"{"error":{"message":"bad"}}"#), "bad");
        assert_eq!(reason_from_body(b"plain\ntext"), "plain text");
        let long = "x".repeat(1000);
        assert!(reason_from_body(long.as_bytes()).chars().count() <= REASON_MAX_CHARS + 1);
    }
}
