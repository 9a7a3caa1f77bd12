//! mTLS for every Leitstand connection: TLS 1.3 only, AES-GCM suites only,
//! NIST P-256/P-384 key exchange (BSI TR-02102-2), client certificates
//! required and verified against the CA bundle and an optional CRL.
//!
//! Servers accept with [`incoming`], which performs handshakes concurrently,
//! reads the peer's SPIFFE identity and attaches it to every request
//! ([`crate::identity::peer_info`]). Clients connect with [`ClientTls`],
//! which verifies the server's certificate against the address dialled and
//! requires it to be a `controller` of our trust domain.
//!
//! Reload ([`ServerTls::reload`], [`ClientTls::reload`], called on SIGHUP)
//! builds a whole new rustls configuration from the files and swaps it in
//! for new handshakes; established connections keep the configuration they
//! were made with, so open streams continue. The CRL in force is shared with
//! every accepted connection ([`Revocations`]), so that each request, and
//! each message of a long stream, can be checked against the newest CRL and
//! the certificate's notAfter ([`crate::identity::PeerInfo::still_valid`]);
//! services subscribe to reloads ([`ServerTls::reloads`]) to check open
//! streams at once. A reload that fails keeps the previous material.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::Error;
use crate::identity::{
    IdentityError, PeerInfo, PeerKind, SpiffeId, leaf_identity, validate_trust_domain,
};

/// A handshake that has not finished after this long is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the backlog.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[tls]` section of every configuration file.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA bundle (PEM) that verifies every peer.
    pub ca: PathBuf,
    /// Our certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Our private key (PEM, PKCS#8 or SEC1); should be mode 0600.
    pub key: PathBuf,
    /// Certificate revocation list (PEM), optional.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Our SPIFFE trust domain; by default the one in the CA certificate's
    /// `spiffe://<trust-domain>` URI SAN (`leitstand pki init` writes it).
    #[serde(default)]
    pub trust_domain: Option<String>,
}

impl TlsFiles {
    /// The same files with relative paths resolved by `resolve`.
    pub fn resolved(self, resolve: impl Fn(&Path) -> PathBuf) -> Self {
        TlsFiles {
            ca: resolve(&self.ca),
            cert: resolve(&self.cert),
            key: resolve(&self.key),
            crl: self.crl.as_deref().map(&resolve),
            trust_domain: self.trust_domain,
        }
    }
}

/// The only cryptography Leitstand speaks: ring, TLS 1.3 AES-GCM suites,
/// ECDHE over P-256 and P-384.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![ring::kx_group::SECP256R1, ring::kx_group::SECP384R1],
        ..ring::default_provider()
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Pem {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

/// Reads every certificate in a PEM file; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "contains no CERTIFICATE block"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    warn_if_key_is_exposed(path);
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| pem_error(path, format!("contains no usable private key ({e})")))
}

fn warn_if_key_is_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            key = %path.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "private key is readable by group or others; chmod 600 it"
        );
    }
}

fn read_crls(path: Option<&Path>) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let pem = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not a PEM CRL file ({e})")))?;
    if crls.is_empty() {
        return Err(pem_error(path, "contains no X509 CRL block"));
    }
    Ok(crls)
}

/// Everything read from the files of a `[tls]` section.
struct Material {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// Serial numbers the CRLs revoke, for streams opened before a reload.
    revoked: HashSet<Vec<u8>>,
    trust_domain: String,
    identity: SpiffeId,
}

impl Material {
    fn load(files: &TlsFiles) -> Result<Self, Error> {
        let ca = read_certificates(&files.ca)?;
        let mut roots = RootCertStore::empty();
        for cert in &ca {
            roots.add(cert.clone()).map_err(|e| Error::Certificate {
                path: files.ca.clone(),
                reason: format!("not usable as a trust anchor: {e}"),
            })?;
        }
        let trust_domain = match &files.trust_domain {
            Some(td) => {
                validate_trust_domain(td)?;
                td.clone()
            }
            None => trust_domain_of_ca(&ca[0]).ok_or_else(|| Error::Certificate {
                path: files.ca.clone(),
                reason: "the CA certificate names no spiffe://<trust-domain> URI SAN; set [tls] trust_domain"
                    .into(),
            })?,
        };
        let chain = read_certificates(&files.cert)?;
        let identity = SpiffeId::from_certificate(&chain[0]).map_err(|e| Error::Certificate {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
        identity
            .require_trust_domain(&trust_domain)
            .map_err(|e| Error::Certificate {
                path: files.cert.clone(),
                reason: e.to_string(),
            })?;
        let crls = read_crls(files.crl.as_deref())?;
        let revoked = revoked_serials(files.crl.as_deref(), &crls)?;
        Ok(Material {
            roots: Arc::new(roots),
            chain,
            key: read_key(&files.key)?,
            crls,
            revoked,
            trust_domain,
            identity,
        })
    }
}

fn revoked_serials(
    path: Option<&Path>,
    crls: &[CertificateRevocationListDer<'static>],
) -> Result<HashSet<Vec<u8>>, Error> {
    let mut serials = HashSet::new();
    for crl in crls {
        let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
            .map_err(|e| {
                pem_error(
                    path.unwrap_or(Path::new("crl")),
                    format!("unparsable CRL ({e})"),
                )
            })?;
        serials.extend(
            parsed
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec()),
        );
    }
    Ok(serials)
}

pub(crate) fn trust_domain_of_ca(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => {
            let td = uri.strip_prefix("spiffe://")?.trim_end_matches('/');
            validate_trust_domain(td).ok().map(|()| td.to_owned())
        }
        _ => None,
    })
}

fn tls_error(what: &'static str) -> impl FnOnce(rustls::Error) -> Error {
    move |source| Error::Tls { what, source }
}

fn build_server_config(m: &Material) -> Result<ServerConfig, Error> {
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(m.roots.clone(), provider.clone())
        .with_crls(m.crls.clone())
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| {
            tls_error("client certificate verifier")(rustls::Error::General(e.to_string()))
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("protocol versions"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())
        .map_err(tls_error("server certificate and key"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn build_client_config(m: &Material) -> Result<ClientConfig, Error> {
    let provider = crypto_provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        m.roots.clone(),
        provider.clone(),
    )
    .with_crls(m.crls.clone())
    .only_check_end_entity_revocation()
    .build()
    .map_err(|e| tls_error("server certificate verifier")(rustls::Error::General(e.to_string())))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("protocol versions"))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
        .map_err(tls_error("client certificate and key"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Why a connection was refused before any request was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeRejection {
    /// Certificate not issued by our CA (or badly signed).
    UnknownIssuer,
    /// The client presented no certificate.
    NoClientCertificate,
    /// Certificate expired or not yet valid.
    Expired,
    /// Certificate listed in the CRL.
    Revoked,
    /// No common protocol version, suite or group (e.g. TLS 1.2 only).
    Incompatible,
    /// Certificate without a valid SPIFFE identity of our trust domain.
    BadIdentity,
    /// The handshake did not finish in time.
    Timeout,
    /// The peer closed the connection before completing a handshake, as TCP
    /// health probes and port checks do. Counted, logged only at debug.
    ClosedEarly,
    /// Anything else (malformed records, resets).
    Other,
}

impl HandshakeRejection {
    pub const ALL: [HandshakeRejection; 9] = [
        HandshakeRejection::UnknownIssuer,
        HandshakeRejection::NoClientCertificate,
        HandshakeRejection::Expired,
        HandshakeRejection::Revoked,
        HandshakeRejection::Incompatible,
        HandshakeRejection::BadIdentity,
        HandshakeRejection::Timeout,
        HandshakeRejection::ClosedEarly,
        HandshakeRejection::Other,
    ];

    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeRejection::UnknownIssuer => "unknown_issuer",
            HandshakeRejection::NoClientCertificate => "no_client_certificate",
            HandshakeRejection::Expired => "expired",
            HandshakeRejection::Revoked => "revoked",
            HandshakeRejection::Incompatible => "incompatible_protocol",
            HandshakeRejection::BadIdentity => "bad_identity",
            HandshakeRejection::Timeout => "timeout",
            HandshakeRejection::ClosedEarly => "closed_before_handshake",
            HandshakeRejection::Other => "other",
        }
    }

    fn classify(error: &io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            return HandshakeRejection::ClosedEarly;
        }
        let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return HandshakeRejection::Other;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => HandshakeRejection::NoClientCertificate,
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::Revoked => HandshakeRejection::Revoked,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => HandshakeRejection::Expired,
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    HandshakeRejection::UnknownIssuer
                }
                _ => HandshakeRejection::Other,
            },
            rustls::Error::PeerIncompatible(_) => HandshakeRejection::Incompatible,
            _ => HandshakeRejection::Other,
        }
    }
}

/// Refused handshakes by reason.
#[derive(Debug, Default)]
pub struct HandshakeCounters {
    counts: [AtomicU64; HandshakeRejection::ALL.len()],
    accepted: AtomicU64,
}

impl HandshakeCounters {
    fn reject(&self, reason: HandshakeRejection) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn rejected(&self, reason: HandshakeRejection) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// A server's TLS configuration, reloadable from its files.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Current<ServerConfig>>,
    /// The CRL in force, shared with every connection accepted.
    revocations: Revocations,
    counters: HandshakeCounters,
    reloads: watch::Sender<u64>,
}

#[derive(Debug)]
struct Current<C> {
    config: Arc<C>,
    trust_domain: String,
    identity: SpiffeId,
}

impl<C> Current<C> {
    fn new(config: C, m: &Material) -> Self {
        Current {
            config: Arc::new(config),
            trust_domain: m.trust_domain.clone(),
            identity: m.identity.clone(),
        }
    }
}

/// The serial numbers the CRL in force on a server revokes, and when that
/// CRL was loaded. Every connection the server accepted holds a handle, so a
/// reload reaches connections opened before it.
#[derive(Clone)]
pub struct Revocations(Arc<RwLock<CrlInForce>>);

struct CrlInForce {
    serials: HashSet<Vec<u8>>,
    loaded_at: SystemTime,
}

impl Revocations {
    pub(crate) fn new(serials: HashSet<Vec<u8>>) -> Self {
        Revocations(Arc::new(RwLock::new(CrlInForce {
            serials,
            loaded_at: SystemTime::now(),
        })))
    }

    fn replace(&self, serials: HashSet<Vec<u8>>) {
        *write_lock(&self.0) = CrlInForce {
            serials,
            loaded_at: SystemTime::now(),
        };
    }

    /// When the CRL that revokes `serial` was loaded; `None` if the CRL in
    /// force does not revoke it.
    pub fn revoked_by(&self, serial: &[u8]) -> Option<SystemTime> {
        let crl = read_lock(&self.0);
        crl.serials.contains(serial).then_some(crl.loaded_at)
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let crl = read_lock(&self.0);
        f.debug_struct("Revocations")
            .field("revoked", &crl.serials.len())
            .field(
                "loaded_at",
                &humantime::format_rfc3339_seconds(crl.loaded_at),
            )
            .finish()
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding this lock cannot leave a half-written value: the
    // only writer swaps in a fully built configuration.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<Self, Error> {
        let material = Material::load(&files)?;
        let config = build_server_config(&material)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(Current::new(config, &material)),
            revocations: Revocations::new(material.revoked),
            counters: HandshakeCounters::default(),
            reloads: watch::Sender::new(0),
        })
    }

    /// Re-reads certificate, key, CA bundle and CRL for new handshakes,
    /// then tells [`ServerTls::reloads`] subscribers. On error the previous
    /// material stays in force.
    pub fn reload(&self) -> Result<(), Error> {
        let material = Material::load(&self.files)?;
        let config = build_server_config(&material)?;
        *write_lock(&self.current) = Current::new(config, &material);
        self.revocations.replace(material.revoked);
        self.reloads.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Changes after every successful reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Whether the CRL in force revokes the certificate with `serial`.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revocations.revoked_by(serial).is_some()
    }

    pub fn identity(&self) -> SpiffeId {
        read_lock(&self.current).identity.clone()
    }

    pub fn trust_domain(&self) -> String {
        read_lock(&self.current).trust_domain.clone()
    }

    pub fn counters(&self) -> &HandshakeCounters {
        &self.counters
    }

    fn acceptor(&self) -> (TlsAcceptor, String) {
        let current = read_lock(&self.current);
        (
            TlsAcceptor::from(current.config.clone()),
            current.trust_domain.clone(),
        )
    }
}

/// An authenticated connection, ready for tonic: it carries the peer's
/// verified identity into every request's extensions.
#[derive(Debug)]
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// Accepts TCP connections, performs TLS handshakes concurrently (each
/// bounded by [`HANDSHAKE_TIMEOUT`]) and yields authenticated connections
/// for `tonic::transport::Server::serve_with_incoming`. Refusals are logged
/// with their reason and counted in [`ServerTls::counters`].
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, remote_addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let tls = tls.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(conn) = handshake(tcp, remote_addr, &tls).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    tls: &ServerTls,
) -> Option<TlsConnection> {
    let _ = tcp.set_nodelay(true);
    let (acceptor, trust_domain) = tls.acceptor();
    let refuse = |reason: HandshakeRejection, detail: &dyn std::fmt::Display| {
        tls.counters.reject(reason);
        if reason == HandshakeRejection::ClosedEarly {
            tracing::debug!(peer = %remote_addr, reason = reason.as_str(), "connection closed before the TLS handshake: {detail}");
        } else {
            tracing::warn!(peer = %remote_addr, reason = reason.as_str(), "TLS connection refused: {detail}");
        }
        None
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return refuse(HandshakeRejection::classify(&e), &e),
        Err(_) => {
            return refuse(
                HandshakeRejection::Timeout,
                &"handshake did not finish within 10 s",
            );
        }
    };
    let identity = match stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        Some(leaf) => leaf_identity(leaf).and_then(|leaf| {
            leaf.identity.require_trust_domain(&trust_domain)?;
            Ok(leaf)
        }),
        None => Err(IdentityError::Missing),
    };
    match identity {
        Ok(leaf) => {
            tls.counters.accepted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %remote_addr, identity = %leaf.identity, "TLS connection accepted");
            Some(TlsConnection {
                stream,
                info: PeerInfo {
                    remote_addr,
                    identity: leaf.identity,
                    serial: leaf.serial,
                    not_after: leaf.not_after,
                    revocations: tls.revocations.clone(),
                },
            })
        }
        Err(e) => refuse(HandshakeRejection::BadIdentity, &e),
    }
}

/// Why a client could not reach a controller.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{address:?} is not host:port")]
    Address { address: String },
    #[error("cannot connect to {address}")]
    Tcp {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {address} failed")]
    Handshake {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("{address} is not a controller of our trust domain")]
    NotAController {
        address: String,
        #[source]
        source: IdentityError,
    },
    #[error("{address} presented {found}, expected a controller")]
    WrongKind { address: String, found: SpiffeId },
    #[error("no gRPC channel to {address}")]
    Channel {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A client's TLS configuration, reloadable from its files.
#[derive(Debug)]
pub struct ClientTls {
    files: TlsFiles,
    current: RwLock<Current<ClientConfig>>,
}

impl ClientTls {
    pub fn load(files: TlsFiles) -> Result<Self, Error> {
        let material = Material::load(&files)?;
        let config = build_client_config(&material)?;
        Ok(ClientTls {
            files,
            current: RwLock::new(Current::new(config, &material)),
        })
    }

    /// Re-reads the files for new connections; on error the previous
    /// material stays in force.
    pub fn reload(&self) -> Result<(), Error> {
        let material = Material::load(&self.files)?;
        let config = build_client_config(&material)?;
        *write_lock(&self.current) = Current::new(config, &material);
        Ok(())
    }

    /// Our own identity, from our certificate.
    pub fn identity(&self) -> SpiffeId {
        read_lock(&self.current).identity.clone()
    }

    /// A TLS connection to the controller at `address` (host:port). The
    /// server's certificate must match the host (DNS or IP SAN) and carry a
    /// `controller` identity of our trust domain.
    pub async fn connect(
        &self,
        address: &str,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, SpiffeId), ConnectError> {
        let host = address
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConnectError::Address {
                address: address.to_owned(),
            })?;
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| ConnectError::Address {
                address: address.to_owned(),
            })?;
        let (config, trust_domain) = {
            let current = read_lock(&self.current);
            (current.config.clone(), current.trust_domain.clone())
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer within 5 s",
            )),
        }
        .map_err(|source| ConnectError::Tcp {
            address: address.to_owned(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let handshake = TlsConnector::from(config).connect(server_name, tcp);
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake did not finish within 10 s",
            )),
        }
        .map_err(|source| ConnectError::Handshake {
            address: address.to_owned(),
            source,
        })?;
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(IdentityError::Missing)
            .and_then(|leaf| SpiffeId::from_certificate(leaf))
            .and_then(|id| id.require_trust_domain(&trust_domain).map(|()| id))
            .map_err(|source| ConnectError::NotAController {
                address: address.to_owned(),
                source,
            })?;
        if identity.kind() != PeerKind::Controller {
            return Err(ConnectError::WrongKind {
                address: address.to_owned(),
                found: identity,
            });
        }
        Ok((stream, identity))
    }

    /// A gRPC channel to the controller at `address`, connected now; it
    /// reconnects through [`ClientTls::connect`] with the material current
    /// at that time.
    pub async fn channel(
        self: &Arc<Self>,
        address: &str,
    ) -> Result<tonic::transport::Channel, ConnectError> {
        let channel_error = |source| ConnectError::Channel {
            address: address.to_owned(),
            source,
        };
        // The scheme is http because TLS happens in our connector, not in tonic.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(channel_error)?
            .connect_timeout(CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let tls = self.clone();
        let target = address.to_owned();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let tls = tls.clone();
            let target = target.clone();
            async move {
                let (stream, _) = tls.connect(&target).await?;
                Ok::<_, ConnectError>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(channel_error)
    }
}
