//! SPIFFE identities (`spiffe://<trust-domain>/<kind>/<name>`) read from
//! verified certificates, and the verified identity of a gRPC caller.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::domain::Identifier;
use crate::tls::Revocations;

/// What a certificate entitles its holder to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKind {
    Controller,
    Agent,
    Operator,
}

impl PeerKind {
    pub const ALL: [PeerKind; 3] = [PeerKind::Controller, PeerKind::Agent, PeerKind::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Controller => "controller",
            PeerKind::Agent => "agent",
            PeerKind::Operator => "operator",
        }
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PeerKind {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownKind(s.chars().take(32).collect()))
    }
}

/// Why a URI or certificate does not carry a valid Leitstand identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a spiffe:// URI")]
    NotSpiffe,
    #[error(
        "trust domain {0:?} is not valid (1 to 255 bytes of lower-case letters, digits, '.', '-', '_')"
    )]
    TrustDomain(String),
    #[error("expected spiffe://<trust-domain>/<kind>/<name>, found path {0:?}")]
    Path(String),
    #[error("unknown kind {0:?} (expected controller, agent or operator)")]
    UnknownKind(String),
    #[error("name: {0}")]
    Name(String),
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate has no spiffe:// URI SAN")]
    Missing,
    #[error("the certificate has more than one spiffe:// URI SAN")]
    Ambiguous,
    #[error("trust domain {found:?} is not ours ({expected:?})")]
    ForeignTrustDomain { found: String, expected: String },
}

/// A verified `spiffe://<trust-domain>/<kind>/<name>` identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    kind: PeerKind,
    name: Identifier,
}

const MAX_TRUST_DOMAIN: usize = 255;

pub(crate) fn validate_trust_domain(td: &str) -> Result<(), IdentityError> {
    let ok = !td.is_empty()
        && td.len() <= MAX_TRUST_DOMAIN
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(IdentityError::TrustDomain(td.chars().take(64).collect()))
    }
}

impl SpiffeId {
    pub fn new(trust_domain: &str, kind: PeerKind, name: &str) -> Result<Self, IdentityError> {
        validate_trust_domain(trust_domain)?;
        let name = Identifier::new(name).map_err(|e| IdentityError::Name(e.to_string()))?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            kind,
            name,
        })
    }

    pub fn parse(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or(IdentityError::NotSpiffe)?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::Path(String::new()))?;
        let mut segments = path.split('/');
        match (segments.next(), segments.next(), segments.next()) {
            (Some(kind), Some(name), None) => SpiffeId::new(trust_domain, kind.parse()?, name),
            _ => Err(IdentityError::Path(path.chars().take(64).collect())),
        }
    }

    /// The one SPIFFE identity in a DER certificate's URI SANs.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        leaf_identity(der).map(|leaf| leaf.identity)
    }

    /// Fails unless the identity belongs to `trust_domain`.
    pub fn require_trust_domain(&self, trust_domain: &str) -> Result<(), IdentityError> {
        if self.trust_domain == trust_domain {
            Ok(())
        } else {
            Err(IdentityError::ForeignTrustDomain {
                found: self.trust_domain.clone(),
                expected: trust_domain.to_owned(),
            })
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
    pub fn kind(&self) -> PeerKind {
        self.kind
    }
    pub fn name(&self) -> &Identifier {
        &self.name
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/{}/{}",
            self.trust_domain, self.kind, self.name
        )
    }
}

/// What the server keeps of a client's leaf certificate.
pub(crate) struct Leaf {
    pub(crate) identity: SpiffeId,
    pub(crate) serial: Vec<u8>,
    pub(crate) not_after: SystemTime,
}

/// The SPIFFE identity, serial number and end of validity of a DER
/// certificate.
pub(crate) fn leaf_identity(der: &[u8]) -> Result<Leaf, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?
        .ok_or(IdentityError::Missing)?;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && uri.starts_with("spiffe://")
        {
            if found.is_some() {
                return Err(IdentityError::Ambiguous);
            }
            found = Some(SpiffeId::parse(uri)?);
        }
    }
    let identity = found.ok_or(IdentityError::Missing)?;
    // A notAfter before 1970 is as expired as any.
    let not_after = u64::try_from(cert.validity().not_after.timestamp())
        .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs));
    Ok(Leaf {
        identity,
        serial: cert.raw_serial().to_vec(),
        not_after,
    })
}

/// Why a certificate that was valid at the handshake is not any longer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateInvalid {
    #[error(
        "certificate serial {} revoked by the CRL reloaded at {}",
        hex_serial(serial),
        humantime::format_rfc3339_seconds(*reloaded_at)
    )]
    Revoked {
        serial: Vec<u8>,
        reloaded_at: SystemTime,
    },
    #[error(
        "certificate expired at {}; renew it",
        humantime::format_rfc3339_seconds(*not_after)
    )]
    Expired { not_after: SystemTime },
}

impl CertificateInvalid {
    /// Stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CertificateInvalid::Revoked { .. } => "certificate_revoked",
            CertificateInvalid::Expired { .. } => "certificate_expired",
        }
    }
}

/// A serial number as `openssl x509 -serial` prints it, colon-separated.
pub fn hex_serial(serial: &[u8]) -> String {
    serial
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The verified peer of a connection, attached to every request it carries.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    pub identity: SpiffeId,
    /// Serial number of the peer's certificate, to re-check it against a
    /// CRL loaded after the handshake.
    pub serial: Vec<u8>,
    /// The end of the certificate's validity: a connection outlives it only
    /// until the next request or message.
    pub not_after: SystemTime,
    /// The CRL in force on the server that accepted the connection, updated
    /// by every reload.
    pub(crate) revocations: Revocations,
}

impl PeerInfo {
    /// Fails when the certificate presented at the handshake is no longer
    /// valid at `now`: revoked by the CRL in force (loaded after the
    /// handshake), or past its notAfter. Services call it for every request
    /// and every message of a long-lived stream.
    pub fn still_valid(&self, now: SystemTime) -> Result<(), CertificateInvalid> {
        if let Some(reloaded_at) = self.revocations.revoked_by(&self.serial) {
            return Err(CertificateInvalid::Revoked {
                serial: self.serial.clone(),
                reloaded_at,
            });
        }
        if now > self.not_after {
            return Err(CertificateInvalid::Expired {
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

/// The verified peer of a gRPC request served through [`crate::tls::incoming`],
/// if its certificate is still valid ([`PeerInfo::still_valid`]): a
/// connection opened before its certificate was revoked or expired carries
/// no further request. UNAUTHENTICATED otherwise, with the reason.
pub fn peer_info<T>(request: &tonic::Request<T>) -> Result<&PeerInfo, tonic::Status> {
    let peer = request.extensions().get::<PeerInfo>().ok_or_else(|| {
        tonic::Status::unauthenticated("no verified client certificate on this connection")
    })?;
    if let Err(invalid) = peer.still_valid(SystemTime::now()) {
        tracing::warn!(
            peer = %peer.remote_addr,
            identity = %peer.identity,
            reason = invalid.reason(),
            "request refused: {invalid}"
        );
        return Err(tonic::Status::unauthenticated(invalid.to_string()));
    }
    Ok(peer)
}

/// The caller's identity if it is of `kind`; PERMISSION_DENIED otherwise.
pub fn require_kind<T>(
    request: &tonic::Request<T>,
    kind: PeerKind,
) -> Result<&PeerInfo, tonic::Status> {
    let peer = peer_info(request)?;
    if peer.identity.kind() == kind {
        Ok(peer)
    } else {
        Err(tonic::Status::permission_denied(format!(
            "this service requires a {kind} certificate; {} presented a {} certificate",
            peer.identity,
            peer.identity.kind()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_a_spiffe_uri() {
        let id = SpiffeId::parse("spiffe://stadt.example/agent/ww-hengsteysee-1").expect("valid");
        assert_eq!(id.trust_domain(), "stadt.example");
        assert_eq!(id.kind(), PeerKind::Agent);
        assert_eq!(id.name().as_str(), "ww-hengsteysee-1");
        assert_eq!(
            id.to_string(),
            "spiffe://stadt.example/agent/ww-hengsteysee-1"
        );
    }

    fn peer(serial: &[u8], not_after: SystemTime, revoked: &[&[u8]]) -> PeerInfo {
        PeerInfo {
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            identity: SpiffeId::parse("spiffe://stadt.example/agent/a").expect("valid"),
            serial: serial.to_vec(),
            not_after,
            revocations: Revocations::new(revoked.iter().map(|s| s.to_vec()).collect()),
        }
    }

    #[test]
    fn a_certificate_stays_valid_until_revoked_or_expired() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let later = now + Duration::from_secs(60);
        assert_eq!(peer(&[1], later, &[&[2]]).still_valid(now), Ok(()));

        let expired = peer(&[1], now - Duration::from_secs(1), &[]).still_valid(now);
        let Err(invalid) = expired else {
            panic!("expected expiry, got {expired:?}")
        };
        assert_eq!(invalid.reason(), "certificate_expired");
        assert_eq!(
            invalid.to_string(),
            "certificate expired at 2027-01-15T07:59:59Z; renew it"
        );

        let revoked = peer(&[0x3a, 0x07], later, &[&[0x3a, 0x07]]).still_valid(now);
        let Err(invalid) = revoked else {
            panic!("expected revocation, got {revoked:?}")
        };
        assert_eq!(invalid.reason(), "certificate_revoked");
        assert!(
            invalid
                .to_string()
                .starts_with("certificate serial 3a:07 revoked by the CRL reloaded at "),
            "{invalid}"
        );
    }

    #[test]
    fn rejects_malformed_uris() {
        let cases = [
            ("https://stadt.example/agent/a", IdentityError::NotSpiffe),
            (
                "spiffe://Stadt/agent/a",
                IdentityError::TrustDomain("Stadt".into()),
            ),
            ("spiffe://stadt/agent", IdentityError::Path("agent".into())),
            (
                "spiffe://stadt/agent/a/b",
                IdentityError::Path("agent/a/b".into()),
            ),
            (
                "spiffe://stadt/robot/a",
                IdentityError::UnknownKind("robot".into()),
            ),
        ];
        for (uri, expected) in cases {
            assert_eq!(SpiffeId::parse(uri), Err(expected), "{uri}");
        }
        assert!(matches!(
            SpiffeId::parse("spiffe://stadt/agent/a b"),
            Err(IdentityError::Name(_))
        ));
    }
}
