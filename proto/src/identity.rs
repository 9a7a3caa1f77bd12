//! SPIFFE identities (`spiffe://<trust-domain>/<kind>/<name>`) read from
//! verified certificates, and the verified identity of a gRPC caller.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::domain::Identifier;

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
        leaf_identity(der).map(|(id, _)| id)
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

/// The SPIFFE identity and the serial number of a DER certificate.
pub(crate) fn leaf_identity(der: &[u8]) -> Result<(SpiffeId, Vec<u8>), IdentityError> {
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
    Ok((identity, cert.raw_serial().to_vec()))
}

/// The verified peer of a connection, attached to every request it carries.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    pub identity: SpiffeId,
    /// Serial number of the peer's certificate, to re-check it against a
    /// CRL loaded after the handshake.
    pub serial: Vec<u8>,
}

/// The verified peer of a gRPC request served through [`crate::tls::incoming`].
pub fn peer_info<T>(request: &tonic::Request<T>) -> Result<&PeerInfo, tonic::Status> {
    request.extensions().get::<PeerInfo>().ok_or_else(|| {
        tonic::Status::unauthenticated("no verified client certificate on this connection")
    })
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
