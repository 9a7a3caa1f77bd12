//! TLS client configurations for checks of city services (https, grpc with
//! `tls = true`).
//!
//! Unlike Leitstand's own mTLS links (`leitstand_proto::tls`: TLS 1.3 only,
//! our CA only), a checked service may still speak only TLS 1.2 and is
//! verified against the system's CA store, or against one CA file named by
//! `ca`. This module never touches `leitstand_proto::tls::crypto_provider`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How a check verifies the server's certificate.
#[derive(Debug, Clone)]
pub(crate) enum Verify {
    /// Against these trust anchors (the system store or a `ca` file).
    Roots(Arc<RootCertStore>),
    /// DANGEROUS (`tls_verify = false`): any certificate is accepted, so
    /// anyone on the path can impersonate the service and the check then
    /// says nothing about whether the real service is up. Only the
    /// handshake signature is still checked.
    DangerousAcceptAnyCertificate,
}

/// A client configuration for TLS 1.2 and 1.3 with ring's default suites,
/// offering `alpn` (e.g. `http/1.1` or `h2`).
pub(crate) fn client_config(
    verify: &Verify,
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match verify {
        Verify::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        Verify::DangerousAcceptAnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(&provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The system's trust anchors (rustls-native-certs: /etc/ssl/certs and
/// friends). Unreadable entries are logged and skipped; an empty store is
/// not an error here — every handshake then fails with an unknown issuer,
/// which is the truth the check should report.
pub(crate) fn system_roots() -> Arc<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "cannot read a system CA certificate for checks");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "system CA certificates not usable as trust anchors"
        );
    }
    if added == 0 {
        tracing::warn!(
            "no system CA certificates found: https and TLS gRPC checks without `ca` will fail; install ca-certificates"
        );
    }
    Arc::new(roots)
}

/// The trust anchors of a PEM file; at least one usable certificate.
pub(crate) fn file_roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let certs = leitstand_proto::tls::read_certificates(path)
        .map_err(|e| leitstand_proto::error_chain(&e))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!(
                "{}: a certificate is not usable as a trust anchor: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// See [`Verify::DangerousAcceptAnyCertificate`].
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
