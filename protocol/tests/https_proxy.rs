//! `HTTPS_PROXY` and `NO_PROXY` are honoured: a request to an HTTPS server on loopback goes
//! through a tiny CONNECT proxy on loopback, unless `NO_PROXY` names the host. (Its own test
//! binary: it sets process environment variables.)

mod tls_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keytally_protocol::http::{build_client, parse_secure_url, HttpConfig};
use keytally_protocol::DevicesClient;
use keytally_protocol::auth::{Authenticator, Credential, StaticSource, StaticToken};
use keytally_protocol::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CONNECT-only proxy; returns its address, the tunnel count and the targets asked for.
async fn connect_proxy() -> (std::net::SocketAddr, Arc<AtomicU64>, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let tunnels = Arc::new(AtomicU64::new(0));
    let targets = Arc::new(Mutex::new(Vec::new()));
    let (t2, g2) = (tunnels.clone(), targets.clone());
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let (t, g) = (t2.clone(), g2.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut words = text.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    let _ = c.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n").await;
                    return;
                };
                g.lock().unwrap().push(target.to_owned());
                let Ok(mut up) = tokio::net::TcpStream::connect(target).await else { return };
                t.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    (addr, tunnels, targets)
}

fn client(base: &str, ca: &std::path::Path) -> DevicesClient {
    let http = build_client(&HttpConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        extra_ca_file: Some(ca.to_owned()),
        ..HttpConfig::default()
    })
    .unwrap();
    let auth = Authenticator::new(Credential::Static(StaticToken::new(StaticSource::Value(Secret::new("t"))).unwrap()));
    DevicesClient::new(http, parse_secure_url("server", base).unwrap(), Arc::new(auth)).unwrap()
}

#[tokio::test]
async fn https_proxy_and_no_proxy_are_honoured() {
    let srv = tls_common::start().await;
    let (proxy, tunnels, targets) = connect_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &srv.cert_pem).unwrap();
    let base = format!("https://127.0.0.1:{}/api", srv.addr.port());
    for v in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"] {
        std::env::remove_var(v);
    }

    std::env::set_var("HTTPS_PROXY", format!("http://{proxy}"));
    client(&base, &ca).list_devices(10, 0).await.unwrap();
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "the request went through the proxy");
    assert_eq!(targets.lock().unwrap().as_slice(), [format!("127.0.0.1:{}", srv.addr.port())]);

    std::env::set_var("NO_PROXY", "127.0.0.1");
    client(&base, &ca).list_devices(10, 0).await.unwrap();
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "NO_PROXY: straight to the server");
    assert_eq!(srv.handshakes.load(Ordering::SeqCst), 2);
}
