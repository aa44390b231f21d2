//! Fault injection: fail the next N requests with a status (and `Retry-After`), add
//! latency, drop connections, answer with hostile bodies, redirect the token URL.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Shared;

/// A hostile answer to `GET /devices` and `PUT /devices/...`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hostile {
    /// 200 with an HTML body.
    NonJson,
    /// 200 with a body of this many bytes.
    Huge(u64),
    /// 200 whose body trickles one byte per this many milliseconds.
    SlowBody(u64),
}

/// The fault plan. `POST /_sandbox/faults` replaces it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fail this many of the next requests...
    pub fail_next: u32,
    /// ...with this status (default 503)...
    pub fail_status: Option<u16>,
    /// ...and this `Retry-After` in seconds.
    pub retry_after: Option<u64>,
    /// Fail every request (an outage) until cleared.
    pub down: bool,
    /// Latency added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Drop this many of the next new connections right after accepting them.
    pub drop_next: u32,
    pub hostile: Option<Hostile>,
    /// Answer the token URL with a redirect to this location.
    pub token_redirect: Option<String>,
    /// Revoke every key and token (applied once, when the plan is set).
    pub revoke_all: bool,
}

pub async fn inject(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    shared.log_request(req.method().as_str(), req.uri().path());
    let (latency, fail, hostile, redirect) = {
        let mut f = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        let fail = if f.down || f.fail_next > 0 {
            f.fail_next = f.fail_next.saturating_sub(1);
            Some((f.fail_status.unwrap_or(503), f.retry_after))
        } else {
            None
        };
        (f.latency_ms, fail, f.hostile.clone(), f.token_redirect.clone())
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some((status, retry_after)) = fail {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut r = (status, axum::Json(serde_json::json!({"message": "injected fault"}))).into_response();
        if let Some(s) = retry_after {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        return r;
    }
    let path = req.uri().path().to_owned();
    if path == "/oauth/token" {
        if let Some(loc) = redirect {
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert("location", v);
            }
            return r;
        }
    }
    if path.contains("/devices") {
        match hostile {
            Some(Hostile::NonJson) => {
                return (StatusCode::OK, [("content-type", "text/html")], "<html><body>Gateway login</body></html>").into_response()
            }
            Some(Hostile::Huge(n)) => {
                let chunk = bytes::Bytes::from(vec![b'['; 64 * 1024]);
                let chunks = n.div_ceil(64 * 1024);
                let stream = futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
                return (StatusCode::OK, [("content-type", "application/json")], Body::from_stream(stream)).into_response();
            }
            Some(Hostile::SlowBody(ms)) => {
                let stream = futures_util::stream::unfold(0u32, move |i| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    (i < 100_000).then(|| (Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")), i + 1))
                });
                return (StatusCode::OK, [("content-type", "application/json")], Body::from_stream(stream)).into_response();
            }
            None => {}
        }
    }
    next.run(req).await
}

/// A listener that drops the next `drop_next` connections right after accepting them.
pub struct DroppingListener {
    pub inner: tokio::net::TcpListener,
    pub shared: Arc<Shared>,
}

impl axum::serve::Listener for DroppingListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = match self.inner.accept().await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let drop_it = {
                let mut f = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
                if f.drop_next > 0 {
                    f.drop_next -= 1;
                    true
                } else {
                    false
                }
            };
            if drop_it {
                drop(io);
                continue;
            }
            let _ = io.set_nodelay(true);
            return (io, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
