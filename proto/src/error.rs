//! The error type of leitstand-proto's fallible operations.

use std::path::PathBuf;

/// What went wrong loading TLS material, parsing an identity or a
/// configuration file, or issuing certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists; pass --force to replace it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("{}: the certificate is not usable: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot build the TLS configuration ({what})")]
    Tls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("invalid identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    /// A configuration mistake, located in its file: binaries exit 2 on it.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Pki(String),
}
