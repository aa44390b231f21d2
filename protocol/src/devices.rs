//! The devices API client: `PUT {base}/devices/{uniqueId}` (idempotent upsert) and
//! `GET {base}/devices` (paginated list), with the bearer credential, one refresh after
//! a 401, and every answer classified into a [`Failure`] the scheduler understands.
//!
//! The credential comes in through [`BearerProvider`]; the crate root names the client
//! the agent uses, with `auth`'s `Authenticator`, [`crate::DevicesClient`].

use std::sync::Arc;
use std::time::SystemTime;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Url};
use uuid::Uuid;

use crate::http::response::{self, read_capped, read_reason, request_failure, Failure, StatusClass};
use crate::http::url_policy::{check_secure, redact_url};
use crate::http::{BearerProvider, HttpSetupError};

/// The largest list page read.
pub const LIST_BODY_CAP: usize = 8 * 1024 * 1024;
/// The largest record body sent.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A successful upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The server's 2xx status code.
    pub status: u16,
    /// Bytes of the request body.
    pub body_bytes: usize,
}

/// One page of `GET /devices`.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePage {
    /// The devices on this page, as the server sent them.
    pub items: Vec<serde_json::Value>,
    /// Present when the server uses the `{items, total_count}` shape.
    pub total_count: Option<u64>,
}

/// A client for one server profile, carrying the bearer tokens `A` hands out.
#[derive(Debug)]
pub struct DevicesClient<A> {
    http: reqwest::Client,
    base: Url,
    auth: Arc<A>,
}

impl<A> Clone for DevicesClient<A> {
    fn clone(&self) -> Self {
        DevicesClient { http: self.http.clone(), base: self.base.clone(), auth: self.auth.clone() }
    }
}

impl<A: BearerProvider> DevicesClient<A> {
    /// `base` is the API root, for example
    /// `https://sample.appterix.eu/api/external/ybk-management`.
    pub fn new(http: reqwest::Client, base: Url, auth: Arc<A>) -> Result<Self, HttpSetupError> {
        check_secure("server URL", &base)?;
        if base.cannot_be_a_base() {
            return Err(HttpSetupError::BadUrl { what: "server URL", url: base.to_string(), reason: "not a base URL".into() });
        }
        Ok(DevicesClient { http, base, auth })
    }

    /// The API root, redacted for logs.
    pub fn base(&self) -> String {
        redact_url(&self.base)
    }

    /// The credential this client's requests carry.
    pub fn auth(&self) -> &Arc<A> {
        &self.auth
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        u
    }

    /// Upserts one record. `idempotency_key` identifies this version of the record, so a
    /// retried PUT of the same version is recognisably the same request.
    pub async fn put_device(&self, unique_id: &str, body: &[u8], idempotency_key: Uuid) -> Result<Pushed, Failure> {
        if unique_id.is_empty() {
            return Err(Failure::Rejected { status: 0, reason: "the record has an empty uniqueId".into() });
        }
        if body.len() > MAX_RECORD_BYTES {
            return Err(Failure::Rejected {
                status: 0,
                reason: format!("the record is {} bytes, more than the {MAX_RECORD_BYTES}-byte limit", body.len()),
            });
        }
        let url = self.url(&["devices", unique_id]);
        let body = body.to_vec();
        let key = HeaderValue::from_str(&idempotency_key.hyphenated().to_string()).map_err(|_| Failure::retryable("bad idempotency key"))?;
        let mut resp = self
            .send_authorized(|| {
                self.http
                    .request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(ACCEPT, "application/json")
                    .header("Idempotency-Key", key.clone())
                    .body(body.clone())
            })
            .await?;
        let status = resp.status().as_u16();
        // Drain a little of the body so the connection can be reused; ignore its content.
        let _ = read_capped(&mut resp, 64 * 1024).await;
        Ok(Pushed { status, body_bytes: body.len() })
    }

    /// One page of the server's devices.
    pub async fn list_devices(&self, limit: u32, offset: u64) -> Result<DevicePage, Failure> {
        let mut url = self.url(&["devices"]);
        url.query_pairs_mut().append_pair("limit", &limit.to_string()).append_pair("offset", &offset.to_string());
        let mut resp = self.send_authorized(|| self.http.get(url.clone()).header(ACCEPT, "application/json")).await?;
        let status = resp.status().as_u16();
        let bytes = read_capped(&mut resp, LIST_BODY_CAP)
            .await
            .map_err(|e| Failure::Retryable { status: Some(status), retry_after: None, reason: format!("GET devices: {e}") })?;
        parse_page(&bytes).map_err(|reason| Failure::Retryable { status: Some(status), retry_after: None, reason })
    }

    /// Every device, page by page, stopping at `max_items`.
    pub async fn list_all(&self, page_size: u32, max_items: usize) -> Result<Vec<serde_json::Value>, Failure> {
        let page_size = page_size.clamp(1, 1000);
        let mut all = Vec::new();
        loop {
            let page = self.list_devices(page_size, all.len() as u64).await?;
            let n = page.items.len();
            all.extend(page.items);
            let done = n < page_size as usize
                || page.total_count.is_some_and(|t| all.len() as u64 >= t)
                || all.len() >= max_items;
            if done || n == 0 {
                all.truncate(max_items);
                return Ok(all);
            }
        }
    }

    /// Sends a request with the bearer token; on a 401 refreshes the credential once
    /// and sends it again. Returns the response only for a 2xx.
    async fn send_authorized(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let mut refreshed = false;
        loop {
            let token = self.auth.bearer().await?;
            let resp = build()
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|e| request_failure(&format!("request to {}", self.base()), &e))?;
            let status = resp.status();
            match response::classify(status) {
                StatusClass::Accepted => {
                    self.auth.note_success();
                    return Ok(resp);
                }
                StatusClass::Unauthorized if !refreshed => {
                    refreshed = true;
                    tracing::info!("server answered 401; refreshing the credential once");
                    self.auth.refresh_after_unauthorized(&token).await?;
                    continue;
                }
                class => return Err(failure_from(class, resp).await),
            }
        }
    }
}

async fn failure_from(class: StatusClass, mut resp: reqwest::Response) -> Failure {
    let status = resp.status().as_u16();
    match class {
        StatusClass::Unauthorized | StatusClass::Forbidden => {
            let reason = read_reason(&mut resp).await;
            Failure::CredentialRejected { status: Some(status), reason }
        }
        StatusClass::Retryable => {
            let retry_after = response::retry_after(resp.headers(), SystemTime::now());
            let reason = read_reason(&mut resp).await;
            Failure::Retryable { status: Some(status), retry_after, reason }
        }
        StatusClass::Redirect => {
            let to = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("?");
            let to: String = to.chars().take(200).collect();
            Failure::Retryable {
                status: Some(status),
                retry_after: None,
                reason: format!("the server redirects to {to}; keytally does not follow redirects, so check the server URL"),
            }
        }
        StatusClass::Permanent => {
            let reason = read_reason(&mut resp).await;
            Failure::Rejected { status, reason }
        }
        StatusClass::Accepted => Failure::retryable("internal: accepted answer classified as failure"),
    }
}

/// A list answer: a bare array (Appterix) or `{items, total_count}` (YubiEnterprise).
pub fn parse_page(bytes: &[u8]) -> Result<DevicePage, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the devices list is not JSON: {e}"))?;
    match v {
        serde_json::Value::Array(items) => Ok(DevicePage { items, total_count: None }),
        serde_json::Value::Object(mut o) => {
            let items = match o.remove("items") {
                Some(serde_json::Value::Array(a)) => a,
                _ => return Err("the devices list is an object without an `items` array".into()),
            };
            let total_count = o.get("total_count").and_then(|t| t.as_u64());
            Ok(DevicePage { items, total_count })
        }
        _ => Err("the devices list is neither an array nor an object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_list_shapes() {
        let p = parse_page(br#"[{"yubikey":{"uniqueId":"1"}}]"#).unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.total_count, None);
        let p = parse_page(br#"{"items":[{},{}],"total_count":7}"#).unwrap();
        assert_eq!((p.items.len(), p.total_count), (2, Some(7)));
        assert!(parse_page(b"<html>").unwrap_err().contains("not JSON"));
        assert!(parse_page(br#"{"data":[]}"#).is_err());
        assert!(parse_page(b"3").is_err());
    }
}
