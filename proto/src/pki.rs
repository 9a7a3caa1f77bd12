//! A small certificate authority for Leitstand identities (feature `pki`).
//!
//! Files, as DESIGN.md §9 names them: `ca.pem`, `ca.key`, `crl.pem` and
//! `<kind>-<name>.pem`, `<kind>-<name>.key`. Keys are ECDSA P-256 and are
//! written with mode 0600 through a temporary file and a rename, so a crash
//! never leaves a half-written key. Nothing is overwritten unless `force`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::Error;
use crate::domain::Identifier;
use crate::identity::{PeerKind, SpiffeId, validate_trust_domain};

const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a CRL is declared current. rustls accepts an older one, but
/// other verifiers may not: every `pki revoke` writes a fresh CRL.
const CRL_VALIDITY: Duration = Duration::days(365);

/// Default validity of issued certificates.
pub const DEFAULT_VALIDITY_DAYS: i64 = 397;
pub const MAX_VALIDITY_DAYS: i64 = 3650;

/// When an issued certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (tolerating small clock differences) for `days`.
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// What to issue.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub kind: PeerKind,
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub validity: Validity,
    pub force: bool,
}

/// Paths of the files written by a call.
#[derive(Debug, Clone)]
pub struct Written {
    pub identity: String,
    pub files: Vec<PathBuf>,
}

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
/// What a peer whose certificate was issued in `dir` loads: the CA, its
/// certificate and key, and the CRL.
pub fn peer_files(dir: &Path, kind: PeerKind, name: &str) -> crate::tls::TlsFiles {
    crate::tls::TlsFiles {
        ca: ca_cert_path(dir),
        cert: cert_path(dir, kind, name),
        key: key_path(dir, kind, name),
        crl: Some(crl_path(dir)),
        trust_domain: None,
    }
}

pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}
pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}
pub fn cert_path(dir: &Path, kind: PeerKind, name: &str) -> PathBuf {
    dir.join(format!("{kind}-{name}.pem"))
}
pub fn key_path(dir: &Path, kind: PeerKind, name: &str) -> PathBuf {
    dir.join(format!("{kind}-{name}.key"))
}

fn pki_error(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Pki(format!("{what}: {e}"))
}

fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    crate::tls::crypto_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Pki("the system's random number generator failed".into()))?;
    // Positive and non-zero, as RFC 5280 §4.1.2.2 requires.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), Error> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(Error::AlreadyExists {
            path: p.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Writes `contents` to `path` atomically with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    crate::files::write_atomically(path, contents, mode).map_err(|source| Error::WriteFile {
        path: path.to_owned(),
        source,
    })
}

fn distinguished_name(common_name: &str, unit: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Leitstand");
    dn.push(DnType::OrganizationalUnitName, unit);
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Creates the CA (`ca.pem`, `ca.key`) for `trust_domain` and an empty `crl.pem`.
pub fn init(dir: &Path, trust_domain: &str, force: bool) -> Result<Written, Error> {
    validate_trust_domain(trust_domain)?;
    let (cert_file, key_file, crl_file) = (ca_cert_path(dir), ca_key_path(dir), crl_path(dir));
    refuse_existing(&[&cert_file, &key_file, &crl_file], force)?;
    crate::files::create_private_dir(dir).map_err(|source| Error::WriteFile {
        path: dir.to_owned(),
        source,
    })?;

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(pki_error("generate the CA key"))?;
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial()?);
    params.distinguished_name = distinguished_name(&format!("Leitstand CA {trust_domain}"), "ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let uri = format!("spiffe://{trust_domain}");
    params.subject_alt_names = vec![SanType::URI(
        uri.clone()
            .try_into()
            .map_err(pki_error("trust domain URI"))?,
    )];
    let cert = params
        .self_signed(&key)
        .map_err(pki_error("sign the CA certificate"))?;

    write_file(&key_file, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_file, cert.pem().as_bytes(), 0o644)?;
    let issuer = Issuer::new(params, key);
    write_crl(&crl_file, &issuer, 1, Vec::new())?;
    Ok(Written {
        identity: uri,
        files: vec![cert_file, key_file, crl_file],
    })
}

fn load_issuer(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), Error> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| Error::ReadFile { path, source })
    };
    let cert_pem = read(ca_cert_path(dir))?;
    let key_pem = read(ca_key_path(dir))?;
    let key = KeyPair::from_pem(&key_pem).map_err(pki_error("read ca.key"))?;
    let ca_der = crate::tls::read_certificates(&ca_cert_path(dir))?;
    let trust_domain =
        crate::tls::trust_domain_of_ca(&ca_der[0]).ok_or_else(|| Error::Certificate {
            path: ca_cert_path(dir),
            reason: "no spiffe://<trust-domain> URI SAN; was it made by `leitstand pki init`?"
                .into(),
        })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(pki_error("read ca.pem"))?;
    Ok((issuer, trust_domain))
}

/// Issues a certificate and key for `<kind>/<name>` signed by the CA in `dir`.
pub fn issue(dir: &Path, request: &IssueRequest) -> Result<Written, Error> {
    let name =
        Identifier::new(&request.name).map_err(|e| Error::Pki(format!("--name: {}", e.reason)))?;
    if request.kind == PeerKind::Controller && request.dns.is_empty() && request.ips.is_empty() {
        return Err(Error::Pki(
            "a controller certificate needs at least one --dns or --ip: clients verify the address they dial".into(),
        ));
    }
    if request.validity.not_after <= request.validity.not_before {
        return Err(Error::Pki(
            "the certificate would expire before it becomes valid".into(),
        ));
    }
    let (cert_file, key_file) = (
        cert_path(dir, request.kind, name.as_str()),
        key_path(dir, request.kind, name.as_str()),
    );
    refuse_existing(&[&cert_file, &key_file], request.force)?;
    let (issuer, trust_domain) = load_issuer(dir)?;
    let identity = SpiffeId::new(&trust_domain, request.kind, name.as_str())?;

    let mut params = CertificateParams::default();
    params.not_before = request.validity.not_before;
    params.not_after = request.validity.not_after;
    params.serial_number = Some(random_serial()?);
    params.distinguished_name = distinguished_name(name.as_str(), request.kind.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match request.kind {
        // Controllers serve everyone and are clients of their peers.
        PeerKind::Controller => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        PeerKind::Agent | PeerKind::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let mut sans = vec![SanType::URI(
        identity
            .to_string()
            .try_into()
            .map_err(pki_error("SPIFFE URI"))?,
    )];
    for dns in &request.dns {
        let valid = rustls::pki_types::DnsName::try_from(dns.as_str()).is_ok();
        if !valid {
            return Err(Error::Pki(format!("--dns {dns:?} is not a valid DNS name")));
        }
        sans.push(SanType::DnsName(
            dns.clone().try_into().map_err(pki_error("--dns"))?,
        ));
    }
    sans.extend(request.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(pki_error("generate the key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(pki_error("sign the certificate"))?;
    crate::files::create_private_dir(dir).map_err(|source| Error::WriteFile {
        path: dir.to_owned(),
        source,
    })?;
    write_file(&key_file, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_file, cert.pem().as_bytes(), 0o644)?;
    Ok(Written {
        identity: identity.to_string(),
        files: vec![cert_file, key_file],
    })
}

fn write_crl(
    path: &Path,
    issuer: &Issuer<'_, KeyPair>,
    number: u64,
    revoked_certs: Vec<RevokedCertParams>,
) -> Result<(), Error> {
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + CRL_VALIDITY,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(issuer)
        .map_err(pki_error("sign the CRL"))?;
    let pem = crl.pem().map_err(pki_error("encode the CRL"))?;
    write_file(path, pem.as_bytes(), 0o644)
}

/// Revokes `<kind>/<name>`: adds its certificate's serial to `crl.pem`.
/// Controllers and agents pick the new CRL up on SIGHUP. Returns the
/// revoked serial number in hex.
pub fn revoke(dir: &Path, kind: PeerKind, name: &str) -> Result<String, Error> {
    let name = Identifier::new(name).map_err(|e| Error::Pki(format!("--name: {}", e.reason)))?;
    let (issuer, _) = load_issuer(dir)?;
    let cert_file = cert_path(dir, kind, name.as_str());
    let der = crate::tls::read_certificates(&cert_file)?;
    let (_, cert) = X509Certificate::from_der(&der[0]).map_err(|e| Error::Certificate {
        path: cert_file.clone(),
        reason: e.to_string(),
    })?;
    let serial = cert.raw_serial().to_vec();

    let crl_file = crl_path(dir);
    let (mut revoked, number) = match std::fs::read(&crl_file) {
        Ok(pem) => existing_revocations(&crl_file, &pem)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
        Err(source) => {
            return Err(Error::ReadFile {
                path: crl_file,
                source,
            });
        }
    };
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    if !revoked
        .iter()
        .any(|r| r.serial_number.as_ref() == serial.as_slice())
    {
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: OffsetDateTime::now_utc(),
            reason_code: Some(RevocationReason::Unspecified),
            invalidity_date: None,
        });
    }
    write_crl(&crl_file, &issuer, number + 1, revoked)?;
    Ok(hex)
}

fn existing_revocations(path: &Path, pem: &[u8]) -> Result<(Vec<RevokedCertParams>, u64), Error> {
    use rustls::pki_types::CertificateRevocationListDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| Error::Certificate {
        path: path.to_owned(),
        reason,
    };
    let der = CertificateRevocationListDer::from_pem_slice(pem)
        .map_err(|e| bad(format!("not a PEM CRL: {e}")))?;
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| bad(e.to_string()))?;
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedCertParams {
            serial_number: SerialNumber::from_slice(r.raw_serial()),
            revocation_time: r.revocation_date.to_datetime(),
            reason_code: Some(RevocationReason::Unspecified),
            invalidity_date: None,
        })
        .collect();
    Ok((revoked, number))
}
