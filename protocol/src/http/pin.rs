//! SPKI pinning: on top of the usual chain check (system roots plus the extra CA), the
//! server's certificate must carry one of the pinned public keys, given as the base64 of the
//! SHA-256 of its DER `SubjectPublicKeyInfo` (the `pin-sha256` of RFC 7469):
//!
//! ```text
//! openssl x509 -in server.pem -pubkey -noout | openssl pkey -pubin -outform der \
//!   | openssl dgst -sha256 -binary | base64
//! ```

use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// The `pin-sha256` of a DER certificate's SubjectPublicKeyInfo, if it parses.
pub fn spki_sha256(cert_der: &[u8]) -> Option<String> {
    let spki = spki_of(cert_der)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

/// One DER element: its tag, the whole element (header and content), its content, and the
/// input after it.
type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn der(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize), &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((tag, &input[..header + len], &rest[..len], &rest[len..]))
}

/// Certificate → tbsCertificate → its 7th field (6th without the optional `[0]` version).
fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, _, cert, _) = der(cert)? else { return None };
    let (0x30, _, mut tbs, _) = der(cert)? else { return None };
    let mut fields = Vec::with_capacity(7);
    while !tbs.is_empty() && fields.len() < 7 {
        let (tag, whole, _, rest) = der(tbs)?;
        fields.push((tag, whole));
        tbs = rest;
    }
    let skip = if fields.first()?.0 == 0xa0 { 1 } else { 0 };
    // serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    let (tag, spki) = *fields.get(skip + 5)?;
    (tag == 0x30).then_some(spki)
}

/// The usual WebPKI verification, then the pin check on the end-entity certificate.
#[derive(Debug)]
pub struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<String>,
}

impl PinnedVerifier {
    /// Verifies chains against `roots`, then requires one of `pins` (base64 `pin-sha256`).
    pub fn new(roots: RootCertStore, pins: Vec<String>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(PinnedVerifier { inner, pins })
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        let got = spki_sha256(end_entity).ok_or_else(|| Error::General("cannot read the server certificate's public key".into()))?;
        if self.pins.iter().any(|p| p.trim() == got) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(format!(
                "the server's public key (pin-sha256 {got}) is not one of the pinned keys"
            )))
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks that `pin` is the base64 of a SHA-256 digest.
pub fn check_pin(pin: &str) -> Result<(), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(pin.trim())
        .map_err(|e| format!("pin {pin:?} is not base64: {e}"))?;
    if raw.len() != 32 {
        return Err(format!("pin {pin:?} is not a SHA-256 digest (32 bytes)"));
    }
    Ok(())
}

/// A rustls client configuration: system roots, the extra CA certificates, the pins.
pub fn pinned_tls_config(extra_ca_der: Vec<CertificateDer<'static>>, pins: Vec<String>) -> Result<rustls::ClientConfig, String> {
    for p in &pins {
        check_pin(p)?;
    }
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    roots.add_parsable_certificates(extra_ca_der);
    let verifier = PinnedVerifier::new(roots, pins)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walker_rejects_garbage() {
        assert_eq!(spki_sha256(b""), None);
        assert_eq!(spki_sha256(&[0x30, 0x82, 0xff]), None);
        assert_eq!(spki_sha256(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
