//! TLS: an extra CA file and an optional pinned SPKI hash, against an HTTPS server on
//! loopback with a self-signed certificate generated in the test (rcgen).

mod tls_common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use keytally_protocol::http::pin::spki_sha256;
use keytally_protocol::http::{build_client, parse_secure_url, Failure, HttpConfig};
use keytally_protocol::DevicesClient;
use keytally_protocol::auth::{Authenticator, Credential, StaticSource, StaticToken};
use keytally_protocol::secret::Secret;

fn client(base: &str, ca: Option<std::path::PathBuf>, pins: Vec<String>) -> Result<DevicesClient, String> {
    let http = build_client(&HttpConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        extra_ca_file: ca,
        pinned_spki: pins,
    })
    .map_err(|e| e.to_string())?;
    let auth = Authenticator::new(Credential::Static(StaticToken::new(StaticSource::Value(Secret::new("t"))).unwrap()));
    Ok(DevicesClient::new(http, parse_secure_url("server", base).unwrap(), Arc::new(auth)).unwrap())
}

#[tokio::test]
async fn pinned_spki_on_top_of_the_extra_ca() {
    let srv = tls_common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &srv.cert_pem).unwrap();
    let base = format!("https://127.0.0.1:{}/api/external/ybk-management", srv.addr.port());

    // The DER walker finds the same SubjectPublicKeyInfo rcgen encoded.
    let pin = spki_sha256(&srv.cert_der).expect("SPKI found");
    let expected = base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, &srv.spki_der));
    assert_eq!(pin, expected);

    // Extra CA, no pin: accepted (the plain reqwest path).
    client(&base, Some(ca.clone()), vec![]).unwrap().list_devices(10, 0).await.unwrap();
    // Extra CA and the right pin (among others): accepted.
    let other = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let page = client(&base, Some(ca.clone()), vec![other.clone(), pin.clone()]).unwrap().list_devices(10, 0).await.unwrap();
    assert!(page.items.is_empty());
    // Extra CA and only a wrong pin: refused, and the error says why.
    let e = client(&base, Some(ca.clone()), vec![other]).unwrap().list_devices(10, 0).await.unwrap_err();
    assert!(matches!(e, Failure::Retryable { status: None, .. }), "{e:?}");
    assert!(e.to_string().contains("not one of the pinned keys"), "{e}");
    // The right pin but no CA that vouches for the certificate: the pin adds to the chain
    // check, it does not replace it.
    let e = client(&base, None, vec![pin.clone()]).unwrap().list_devices(10, 0).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("issuer") || e.to_string().contains("certificate"), "{e}");
    // Neither: the system roots do not know a self-signed certificate.
    assert!(client(&base, None, vec![]).unwrap().list_devices(10, 0).await.is_err());
    // A malformed pin is a configuration error, before any connection.
    let before = srv.handshakes.load(std::sync::atomic::Ordering::SeqCst);
    let e = client(&base, Some(ca), vec!["not-base64!".into()]).unwrap_err();
    assert!(e.contains("not base64"), "{e}");
    assert_eq!(srv.handshakes.load(std::sync::atomic::Ordering::SeqCst), before);
}
