//! keytally-sandbox: a local management server that speaks the devices API, the three
//! credential styles keytally supports, and injects faults on demand. It is the
//! default target for trying keytally and the peer for its loopback tests.
//!
//! Routes (see `protocol/openapi.yaml`):
//! - `PUT /api/external/ybk-management/devices/{uniqueId}`: idempotent upsert
//! - `GET /api/external/ybk-management/devices?limit&offset`: `{items, total_count}`
//!   (or a bare array when the sandbox runs with `bare_list`)
//! - `POST /oauth/token`: OAuth2 client credentials
//! - `GET /auth/machine-token`: YubiEnterprise-style rotation
//! - `GET|POST /api/{account_key}/api-keys`, `DELETE /api/{account_key}/api-keys/{id}`
//! - `GET|POST /_sandbox/faults`, `GET /_sandbox/stats`: test control

mod faults;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

pub use faults::{Faults, Hostile};
pub use store::{Store, Upsert};

/// The devices API root under the sandbox's address.
pub const DEVICES_BASE: &str = "/api/external/ybk-management";

/// How the sandbox starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// SQLite file; `None` keeps everything in memory.
    pub db: Option<PathBuf>,
    /// Address to bind; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// Lifetime of OAuth2 access tokens.
    pub token_lifetime: Duration,
    /// The Yipii-style account key in `/api/{account_key}/api-keys`.
    pub account_key: String,
    /// Admin token accepted by the api-keys endpoints (and the devices API).
    pub admin_token: String,
    /// OAuth2 clients: (client_id, client_secret).
    pub clients: Vec<(String, String)>,
    /// The initial YubiEnterprise-style machine token.
    pub machine_token: Option<String>,
    /// Answer `GET /devices` with a bare array (the Appterix shape).
    pub bare_list: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_lifetime: Duration::from_secs(300),
            account_key: "sandbox".into(),
            admin_token: "sandbox-admin-token".into(),
            clients: vec![("keytally".into(), "sandbox-client-secret".into())],
            machine_token: None,
            bare_list: false,
        }
    }
}

/// Shared server state.
pub struct Shared {
    cfg: Config,
    store: Mutex<Store>,
    pub faults: Mutex<Faults>,
    requests: AtomicU64,
    device_requests: AtomicU64,
    token_requests: AtomicU64,
    /// `METHOD path` of every request (except `/_sandbox`), in arrival order; capped.
    log: Mutex<Vec<String>>,
}

/// The most requests kept in the request log.
const LOG_CAP: usize = 100_000;

impl Shared {
    pub(crate) fn log_request(&self, method: &str, path: &str) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() < LOG_CAP {
            log.push(format!("{method} {path}"));
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running sandbox. Dropping it stops the server.
pub struct Sandbox {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Sandbox {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn devices_base(&self) -> String {
        format!("http://{}{DEVICES_BASE}", self.addr)
    }
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }
    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store()
    }
    /// Requests received on any route except `/_sandbox` (dropped connections excluded).
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
    pub fn device_request_count(&self) -> u64 {
        self.shared.device_requests.load(Ordering::SeqCst)
    }
    pub fn token_request_count(&self) -> u64 {
        self.shared.token_requests.load(Ordering::SeqCst)
    }
    /// `METHOD path` of every request so far (except `/_sandbox`), in arrival order.
    pub fn request_log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Creates an API key; returns (id, key).
    pub fn create_api_key(&self, name: &str) -> (String, String) {
        self.store().create_api_key(name)
    }
    pub fn revoke_api_key(&self, id: &str) -> bool {
        self.store().revoke_api_key(id)
    }
    pub fn current_machine_token(&self) -> Option<String> {
        self.store().machine_token()
    }
}

/// Starts the sandbox on `cfg.bind` in the current tokio runtime.
pub async fn spawn(cfg: Config) -> anyhow::Result<Sandbox> {
    let mut store = Store::open(cfg.db.as_deref())?;
    if let Some(t) = &cfg.machine_token {
        store.set_machine_token_if_none(t);
    }
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        faults: Mutex::new(Faults::default()),
        requests: AtomicU64::new(0),
        device_requests: AtomicU64::new(0),
        token_requests: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        cfg: cfg.clone(),
    });
    let listener = tokio::net::TcpListener::bind(cfg.bind).await?;
    let addr = listener.local_addr()?;
    let app = router(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = faults::DroppingListener { inner: listener, shared: shared.clone() };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Sandbox { addr, shared, _stop: tx })
}

pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(&format!("{DEVICES_BASE}/devices"), get(list_devices))
        .route(&format!("{DEVICES_BASE}/devices/{{unique_id}}"), put(put_device).get(get_device))
        .route("/oauth/token", axum::routing::post(token))
        .route("/auth/machine-token", get(rotate_machine_token))
        .route("/api/{account}/api-keys", get(list_keys).post(create_key))
        .route("/api/{account}/api-keys/{id}", delete(revoke_key))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), faults::inject));
    Router::new()
        .route("/_sandbox/faults", get(get_faults).post(set_faults))
        .route("/_sandbox/stats", get(stats))
        .merge(api)
        .with_state(shared)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": status.canonical_reason().unwrap_or("error"), "message": message }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Who presented a token, if it is valid.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = bearer(headers) else {
        return Err(Box::new(error(StatusCode::UNAUTHORIZED, "missing bearer token")));
    };
    if token == shared.cfg.admin_token {
        return Ok(());
    }
    let store = shared.store();
    if store.token_valid(token, now_secs()) {
        Ok(())
    } else if store.token_forbidden(token) {
        Err(Box::new(error(StatusCode::FORBIDDEN, "this API key was revoked")))
    } else {
        Err(Box::new(error(StatusCode::UNAUTHORIZED, "invalid or expired token")))
    }
}

async fn put_device(
    State(shared): State<Arc<Shared>>,
    Path(unique_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.device_requests.fetch_add(1, Ordering::SeqCst);
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let Ok(record) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let body_id = record.pointer("/yubikey/uniqueId").and_then(|v| v.as_str());
    if body_id != Some(unique_id.as_str()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "yubikey.uniqueId in the body does not match the URL");
    }
    if let Err(problem) = check_observation(&record) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, problem);
    }
    let idem = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(parse_hyphenated_uuid) {
            Some(u) => Some(u),
            None => return error(StatusCode::BAD_REQUEST, "Idempotency-Key must be a UUID"),
        },
    };
    match shared.store().upsert(&unique_id, &record, idem.as_deref(), now_secs()) {
        Ok(Upsert::Created) => (StatusCode::CREATED, Json(record)).into_response(),
        Ok(Upsert::Updated) | Ok(Upsert::Replayed) => (StatusCode::OK, Json(record)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("store: {e}")),
    }
}

/// The parts of the agent's `observation` that `openapi.yaml` types: when present it is an
/// object, its `advisories` is `null` or a list of objects with the strings `id`, `url` and
/// `applies`, and its `posture` is `null` or an object whose known fields have their types
/// ([`check_posture`]). Everything else in it is stored as sent.
fn check_observation(record: &Value) -> Result<(), &'static str> {
    let Some(observation) = record.get("observation") else { return Ok(()) };
    let Some(observation) = observation.as_object() else {
        return Err("observation must be an object");
    };
    check_posture(observation.get("posture"))?;
    let advisories = match observation.get("advisories") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("observation.advisories must be null or a list"),
    };
    for a in advisories {
        let field = |name| a.get(name).and_then(Value::as_str);
        if field("id").is_none() || field("url").is_none() || field("applies").is_none() {
            return Err("each of observation.advisories must have the strings id, url and applies");
        }
    }
    Ok(())
}

/// `observation.posture`: absent, `null`, or an object whose known fields are `null` or of
/// their type (booleans; retries 0–255; lengths and counts 0–2^32-1; three retries; two slots).
fn check_posture(posture: Option<&Value>) -> Result<(), &'static str> {
    let posture = match posture {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(p)) => p,
        Some(_) => return Err("observation.posture must be null or an object"),
    };
    let int_to = |max: u64| move |v: &Value| v.as_u64().is_some_and(|n| n <= max);
    let list = |len: usize, item: &dyn Fn(&Value) -> bool, v: &Value| v.as_array().is_some_and(|a| a.len() == len && a.iter().all(item));
    type Check<'a> = &'a dyn Fn(&Value) -> bool;
    let fields: [(&str, Check); 13] = [
        ("pivPinDefault", &Value::is_boolean),
        ("pivPukDefault", &Value::is_boolean),
        ("pivManagementKeyDefault", &Value::is_boolean),
        ("pivPinRetries", &int_to(255)),
        ("pivPukRetries", &int_to(255)),
        ("fido2PinSet", &Value::is_boolean),
        ("fido2UvEnrolled", &Value::is_boolean),
        ("fido2ForcePinChange", &Value::is_boolean),
        ("fido2MinPinLength", &int_to(u64::from(u32::MAX))),
        ("fido2RemainingDiscoverableCredentials", &int_to(u64::from(u32::MAX))),
        ("openpgpPinRetries", &|v: &Value| list(3, &int_to(255), v)),
        ("oathPasswordSet", &Value::is_boolean),
        ("otpSlotsConfigured", &|v: &Value| list(2, &Value::is_boolean, v)),
    ];
    for (name, ok) in fields {
        if posture.get(name).is_some_and(|v| !v.is_null() && !ok(v)) {
            return Err("a field of observation.posture has the wrong type (see openapi.yaml)");
        }
    }
    Ok(())
}

async fn get_device(State(shared): State<Arc<Shared>>, Path(unique_id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    match shared.store().device(&unique_id) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such device"),
    }
}

#[derive(serde::Deserialize)]
struct Page {
    limit: Option<u64>,
    offset: Option<u64>,
}

async fn list_devices(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    shared.device_requests.fetch_add(1, Ordering::SeqCst);
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let Ok(Query(p)) = query else {
        return error(StatusCode::BAD_REQUEST, "limit and offset must be non-negative integers");
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000");
    }
    let offset = p.offset.unwrap_or(0);
    if offset > i64::MAX as u64 {
        return error(StatusCode::BAD_REQUEST, "offset must be at most 9223372036854775807");
    }
    let (items, total) = shared.store().list(limit, offset);
    if shared.cfg.bare_list {
        Json(Value::Array(items)).into_response()
    } else {
        Json(json!({ "items": items, "total_count": total })).into_response()
    }
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url_decode(&body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("grant_type").as_deref() != Some("client_credentials") {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "unsupported_grant_type"}))).into_response();
    }
    let from_basic = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (pct_decode(a), pct_decode(b))));
    let (id, secret) = match from_basic.or_else(|| Some((get("client_id")?, get("client_secret")?))) {
        Some(c) => c,
        None => return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response(),
    };
    let ok = shared.cfg.clients.iter().any(|(i, s)| *i == id && *s == secret) && !shared.store().client_revoked(&id);
    if !ok {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client", "error_description": "unknown client or wrong secret"})))
            .into_response();
    }
    let lifetime = shared.cfg.token_lifetime.as_secs().max(1);
    let token = shared.store().issue_access_token(&id, now_secs() + lifetime);
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})).into_response()
}

async fn rotate_machine_token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "missing bearer token");
    };
    let mut store = shared.store();
    if store.machine_token().as_deref() != Some(token) {
        return error(StatusCode::UNAUTHORIZED, "not the current machine token");
    }
    let new = store.rotate_machine_token(now_secs() + 365 * 86_400);
    Json(json!({ "token": new })).into_response()
}

fn key_admin(shared: &Shared, account: &str, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if account != shared.cfg.account_key {
        return Err(Box::new(error(StatusCode::NOT_FOUND, "no such account")));
    }
    authorize(shared, headers)
}

async fn list_keys(State(shared): State<Arc<Shared>>, Path(account): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = key_admin(&shared, &account, &headers) {
        return *r;
    }
    Json(shared.store().list_api_keys()).into_response()
}

#[derive(serde::Deserialize)]
struct NewKey {
    name: String,
}

async fn create_key(State(shared): State<Arc<Shared>>, Path(account): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = key_admin(&shared, &account, &headers) {
        return *r;
    }
    let Ok(req) = serde_json::from_slice::<NewKey>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"name\": \"...\"}");
    };
    if !(1..=200).contains(&req.name.chars().count()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "name must be 1..200 characters");
    }
    let (id, key) = shared.store().create_api_key(&req.name);
    (StatusCode::CREATED, Json(json!({ "id": id, "name": req.name, "key": key, "created_at": now_secs() }))).into_response()
}

async fn revoke_key(State(shared): State<Arc<Shared>>, Path((account, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if let Err(r) = key_admin(&shared, &account, &headers) {
        return *r;
    }
    if shared.store().revoke_api_key(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such API key")
    }
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()).into_response()
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            if f.revoke_all {
                shared.store().revoke_everything();
            }
            *shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = f;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store();
    Json(json!({
        "requests": shared.requests.load(Ordering::SeqCst),
        "device_requests": shared.device_requests.load(Ordering::SeqCst),
        "token_requests": shared.token_requests.load(Ordering::SeqCst),
        "devices": store.device_count(),
        "puts_applied": store.puts_applied(),
    }))
    .into_response()
}

/// A UUID in the hyphenated form of RFC 9562 (what OpenAPI's `format: uuid` means), lowercased;
/// the other spellings `uuid` would parse (braced, URN, 32 bare digits) are refused.
fn parse_hyphenated_uuid(text: &str) -> Option<String> {
    let hyphens_at = |i: usize| matches!(i, 8 | 13 | 18 | 23);
    let well_formed = text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| if hyphens_at(i) { b == b'-' } else { b.is_ascii_hexdigit() });
    well_formed.then(|| text.to_ascii_lowercase())
}

fn url_decode(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_hyphenated_uuids_only() {
        let id = "67E55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(parse_hyphenated_uuid(id).as_deref(), Some("67e55044-10b1-426f-9247-bb680e5fe0c8"));
        for bad in ["67e5504410b1426f9247bb680e5fe0c8", "{67e55044-10b1-426f-9247-bb680e5fe0c8}", "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8", "67e55044-10b1-426f-9247-bb680e5fe0cg", ""] {
            assert_eq!(parse_hyphenated_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn observation_posture_fields_are_checked() {
        let with = |posture: Value| json!({"yubikey": {"uniqueId": "1"}, "observation": {"posture": posture}});
        assert!(check_observation(&with(json!(null))).is_ok());
        let good = json!({"pivPinDefault": true, "pivPinRetries": 3, "fido2MinPinLength": 4, "fido2UvEnrolled": null,
            "openpgpPinRetries": [3, 0, 3], "otpSlotsConfigured": [true, false], "more": "kept"});
        assert!(check_observation(&with(good)).is_ok());
        for bad in [json!([]), json!({"pivPinDefault": 1}), json!({"pivPinRetries": 256}), json!({"fido2MinPinLength": -1}),
            json!({"openpgpPinRetries": [3, 0]}), json!({"otpSlotsConfigured": [true, 1]})] {
            assert!(check_observation(&with(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn observation_advisories_are_checked_the_rest_is_not() {
        let with = |observation: Value| json!({"yubikey": {"uniqueId": "1"}, "observation": observation});
        assert!(check_observation(&json!({"yubikey": {"uniqueId": "1"}})).is_ok());
        assert!(check_observation(&with(json!({"gen": 2}))).is_ok());
        assert!(check_observation(&with(json!({"advisories": null}))).is_ok());
        assert!(check_observation(&with(json!({"advisories": []}))).is_ok());
        let ok = json!({"id": "YSA-2024-03", "url": "https://www.yubico.com/support/security-advisories/ysa-2024-03/", "applies": "yes", "more": 1});
        assert!(check_observation(&with(json!({"advisories": [ok]}))).is_ok());
        for bad in [with(json!(null)), with(json!([1])), with(json!({"advisories": "YSA-2024-03"})), with(json!({"advisories": [{"id": "YSA-2024-03"}]})), with(json!({"advisories": [{"id": 1, "url": "u", "applies": "yes"}]}))] {
            assert!(check_observation(&bad).is_err(), "{bad}");
        }
    }
}
