//! Reading a JWT's `exp` without verifying it, and the expiry warnings keytally gives
//! for long-lived API tokens (7 days before, 1 day before, and on the day).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

/// The `exp` claim of a JWT, if `token` looks like one. The signature is not checked:
/// this is only used to warn before the token expires, never to trust it.
pub fn expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 64 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp.as_u64().or_else(|| exp.as_f64().filter(|f| *f >= 0.0 && f.is_finite()).map(|f| f as u64))?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// How close a credential is to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryWarning {
    /// More than 7 days left.
    None,
    /// 7 days or less left.
    Week,
    /// 1 day or less left.
    Day,
    /// It expires today (UTC).
    Today,
    /// It has expired.
    Expired,
}

impl ExpiryWarning {
    /// The level for a credential expiring at `expires`, seen at `now`.
    pub fn at(expires: SystemTime, now: SystemTime) -> ExpiryWarning {
        let Ok(left) = expires.duration_since(now) else {
            return ExpiryWarning::Expired;
        };
        if left.is_zero() {
            return ExpiryWarning::Expired;
        }
        let day = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        if day(expires) == day(now) {
            ExpiryWarning::Today
        } else if left <= Duration::from_secs(86_400) {
            ExpiryWarning::Day
        } else if left <= Duration::from_secs(7 * 86_400) {
            ExpiryWarning::Week
        } else {
            ExpiryWarning::None
        }
    }

    /// The sentence for the log and `status`, or `None` when there is nothing to say.
    pub fn message(self, what: &str, expires: SystemTime) -> Option<String> {
        let when = humantime::format_rfc3339_seconds(expires);
        match self {
            ExpiryWarning::None => None,
            ExpiryWarning::Week => Some(format!("{what} expires within 7 days, at {when}; replace it soon")),
            ExpiryWarning::Day => Some(format!("{what} expires within 1 day, at {when}; replace it now")),
            ExpiryWarning::Today => Some(format!("{what} expires today, at {when}; replace it now")),
            ExpiryWarning::Expired => Some(format!("{what} expired at {when}")),
        }
    }
}

/// Builds an unsigned JWT with the given `exp`, for tests and the sandbox.
pub fn unsigned_for_test(exp: SystemTime) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let secs = exp.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!(
        "{}.{}.{}",
        e.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(format!(r#"{{"sub":"api-caller","exp":{secs}}}"#)),
        e.encode(b"not-a-signature")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_without_verifying() {
        let exp = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        assert_eq!(expiry(&unsigned_for_test(exp)), Some(exp));
        assert_eq!(expiry("not-a-jwt"), None);
        assert_eq!(expiry("a.b.c"), None);
        assert_eq!(expiry("a.!!!.c"), None);
        assert_eq!(expiry("a.b.c.d"), None);
    }

    #[test]
    fn warning_levels() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 1_800_000_000 % 86_400 + 3600); // 01:00 UTC
        let d = |s: u64| now + Duration::from_secs(s);
        assert_eq!(ExpiryWarning::at(d(30 * 86_400), now), ExpiryWarning::None);
        assert_eq!(ExpiryWarning::at(d(6 * 86_400), now), ExpiryWarning::Week);
        assert_eq!(ExpiryWarning::at(d(86_400), now), ExpiryWarning::Day);
        assert_eq!(ExpiryWarning::at(d(3600), now), ExpiryWarning::Today);
        assert_eq!(ExpiryWarning::at(now - Duration::from_secs(1), now), ExpiryWarning::Expired);
        assert!(ExpiryWarning::Week.message("the API token", d(6 * 86_400)).unwrap().contains("7 days"));
        assert!(ExpiryWarning::None.message("x", now).is_none());
    }
}
