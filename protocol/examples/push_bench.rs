//! Benchmark (figures, not a test): pushes N records to the sandbox on loopback through the
//! devices client over one kept-alive connection, via a relay that counts the bytes on the
//! wire and the connections. Prints records/s, bytes per record (request + answer, with HTTP
//! headers) and the number of TCP connections used.
//!
//! `cargo run --release -p keytally-protocol --example push_bench -- [N]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keytally_protocol::http::{build_client, parse_secure_url, HttpConfig};
use keytally_protocol::DevicesClient;
use keytally_protocol::auth::{Authenticator, Credential, StaticSource, StaticToken};
use keytally_protocol::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, n: Arc<Counters>, up: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if up { &n.up } else { &n.down }.fetch_add(k as u64, Ordering::Relaxed);
                if to.write_all(&buf[..k]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A TCP relay to `target` that counts bytes each way; returns its address.
async fn relay(target: std::net::SocketAddr, n: Arc<Counters>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            n.connections.fetch_add(1, Ordering::Relaxed);
            let server = TcpStream::connect(target).await.unwrap();
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, n.clone(), true));
            tokio::spawn(pump(sr, cw, n.clone(), false));
        }
    });
    addr
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let sb = keytally_sandbox::spawn(keytally_sandbox::Config::default()).await.unwrap();
    let (_, key) = sb.create_api_key("bench");
    let counters = Arc::new(Counters::default());
    let via = relay(sb.addr, counters.clone()).await;
    let http = build_client(&HttpConfig { timeout: Duration::from_secs(10), ..HttpConfig::default() }).unwrap();
    let auth = Authenticator::new(Credential::Static(StaticToken::new(StaticSource::Value(Secret::new(key))).unwrap()));
    let base = parse_secure_url("server", &format!("http://{via}{}", keytally_sandbox::DEVICES_BASE)).unwrap();
    let client = DevicesClient::new(http, base, Arc::new(auth)).unwrap();
    // A record the size of a real one (`keytally scan --json` of a YubiKey 5 NFC).
    let body = |i: usize| {
        serde_json::to_vec(&serde_json::json!({
            "yubikey": {
                "uniqueId": format!("{}", 30_000_000 + i), "serialNumber": 30_000_000 + i, "firmwareVersion": "5.7.2",
                "formFactor": "USB-A keychain", "deviceType": "YubiKey 5 NFC", "fipsCapable": false, "securityKey": false,
                "usbInterfaces": ["OTP", "FIDO", "CCID"], "nfcInterfaces": ["OTP", "FIDO", "CCID"],
                "enabledApplications": {"usb": ["OTP", "U2F", "FIDO2", "OATH", "PIV", "OpenPGP", "YubiHSM Auth"], "nfc": ["OTP", "U2F", "FIDO2", "OATH", "PIV", "OpenPGP"]},
                "pinComplexity": false, "autoEject": false, "lastUsed": "2026-11-24T05:00:00Z", "lastUpdate": "2026-11-24T05:00:00Z"
            },
            "observation": {"agentId": "6f1c2d0e-3b7a-4d8e-9a51-0c2f7e4b9d13", "host": "bench-host", "reader": "Yubico YubiKey OTP+FIDO+CCID 00 00",
                            "transport": "pcsc", "observedAt": "2026-11-24T05:00:00Z", "agentVersion": "0.1.0"}
        }))
        .unwrap()
    };
    // Warm up the connection (and the token) outside the timing.
    client.put_device("29999999", &serde_json::to_vec(&serde_json::json!({"yubikey": {"uniqueId": "29999999"}})).unwrap(), uuid::Uuid::new_v4()).await.unwrap();
    let (up0, down0) = (counters.up.load(Ordering::Relaxed), counters.down.load(Ordering::Relaxed));
    let conns0 = counters.connections.load(Ordering::Relaxed);
    let bodies: Vec<Vec<u8>> = (0..n).map(body).collect();
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();
    let t = Instant::now();
    for (i, b) in bodies.iter().enumerate() {
        client.put_device(&format!("{}", 30_000_000 + i), b, uuid::Uuid::new_v4()).await.unwrap();
    }
    let el = t.elapsed();
    let up = counters.up.load(Ordering::Relaxed) - up0;
    let down = counters.down.load(Ordering::Relaxed) - down0;
    println!("records pushed:            {n} in {:.2} s", el.as_secs_f64());
    println!("records/s (one connection): {:.0}", n as f64 / el.as_secs_f64());
    println!(
        "TCP connections opened:     {} during the timed pushes ({} in all, with the warm-up)",
        counters.connections.load(Ordering::Relaxed) - conns0,
        counters.connections.load(Ordering::Relaxed)
    );
    println!("record body:                {} bytes", body_bytes / n);
    println!(
        "bytes on the wire/record:   {} (request {} + answer {})",
        (up + down) / n as u64,
        up / n as u64,
        down / n as u64
    );
}
