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

/// An error with all its causes on one line (`a: b: c`), as operators read
/// it in the log. Libraries such as tonic repeat a cause in their own
/// message; a cause already said is left out.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layer(message: &'static str, source: Option<Layer>) -> Layer {
        Layer {
            message,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn every_cause_once_in_order() {
        let cases = [
            (layer("a", None), "a"),
            (
                layer("a", Some(layer("b", Some(layer("c", None))))),
                "a: b: c",
            ),
            (
                layer("connect failed: refused", Some(layer("refused", None))),
                "connect failed: refused",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(super::error_chain(&error), expected);
        }
    }
}
