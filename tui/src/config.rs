//! `operator.toml`: the keys of DESIGN.md §9, validated with the file, line
//! and column of every mistake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leitstand_proto::config::{ConfigSource, is_host_port, parse_duration};
use leitstand_proto::tls::TlsFiles;
use toml::Spanned;

use crate::Error;

/// A cluster has at most 9 members, so there is no use in listing more.
const MAX_CONTROLLERS: usize = 9;
/// How long one command may take in all, unless `timeout` says otherwise.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated operator configuration.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Controller addresses (host:port), tried in this order.
    pub controllers: Vec<String>,
    /// An operator certificate, its key and the CA, paths resolved.
    pub tls: TlsFiles,
    /// The overall deadline of one call, retries and leader hops included.
    pub timeout: Duration,
    /// The file it came from, for messages.
    pub source: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    controllers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    tls: TlsFiles,
}

impl OperatorConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let source = ConfigSource::read(path).map_err(Error::Config)?;
        Self::from_source(&source)
    }

    fn from_source(source: &ConfigSource) -> Result<Self, Error> {
        let raw: RawConfig = source.parse().map_err(Error::Config)?;
        let at =
            |span: std::ops::Range<usize>, msg: String| Error::Config(source.error_at(span, msg));

        let listed = raw.controllers.get_ref();
        if listed.is_empty() || listed.len() > MAX_CONTROLLERS {
            return Err(at(
                raw.controllers.span(),
                format!("controllers must list 1 to {MAX_CONTROLLERS} addresses"),
            ));
        }
        let mut controllers: Vec<String> = Vec::with_capacity(listed.len());
        for address in listed {
            let text = address.get_ref();
            if !is_host_port(text) {
                return Err(at(
                    address.span(),
                    format!("controller address {text:?} is not host:port, e.g. \"10.0.0.1:7401\""),
                ));
            }
            if controllers.contains(text) {
                return Err(at(
                    address.span(),
                    format!("controller address {text:?} is listed twice"),
                ));
            }
            controllers.push(text.clone());
        }
        let timeout = match &raw.timeout {
            Some(t) => parse_duration(source, t, Duration::from_secs(1), Duration::from_secs(600))
                .map_err(Error::Config)?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(OperatorConfig {
            controllers,
            tls: raw.tls.resolved(|p| source.resolve(p)),
            timeout,
            source: source.path().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: &str = "[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-alice.pem\"\nkey = \"pki/operator-alice.key\"\n";

    fn load(text: &str) -> Result<OperatorConfig, Error> {
        let source =
            ConfigSource::from_text(Path::new("/etc/leitstand/operator.toml"), text.to_owned());
        OperatorConfig::from_source(&source)
    }

    /// `text` must fail with a message starting `operator.toml:<location>:`
    /// and containing `needle`.
    fn check_error(text: &str, location: &str, needle: &str) {
        let err = match load(text) {
            Err(e) => e.to_string(),
            Ok(config) => panic!("{text:?} should be refused, got {config:?}"),
        };
        let prefix = format!("/etc/leitstand/operator.toml:{location}: ");
        assert!(err.starts_with(&prefix), "{err:?} starts with {prefix:?}");
        assert!(err.contains(needle), "{err:?} says {needle:?}");
    }

    #[test]
    fn mistakes_name_file_line_and_column() {
        let cases = [
            (
                format!("controllers = [\"127.0.0.1:7401\"]\ncontrolers = []\n{TLS}"),
                "2:1",
                "unknown field `controlers`",
            ),
            (
                format!("controllers = []\n{TLS}"),
                "1:15",
                "1 to 9 addresses",
            ),
            (
                format!("controllers = [\"127.0.0.1:7401\", \"nowhere\"]\n{TLS}"),
                "1:34",
                "\"nowhere\" is not host:port",
            ),
            (
                format!("controllers = [\"a:1\", \"a:1\"]\n{TLS}"),
                "1:23",
                "listed twice",
            ),
            (
                format!("controllers = [\"a:1\"]\ntimeout = \"soon\"\n{TLS}"),
                "2:11",
                "is not a duration",
            ),
            (
                format!("controllers = [\"a:1\"]\ntimeout = \"2h\"\n{TLS}"),
                "2:11",
                "out of range",
            ),
            (
                "controllers = [\"a:1\"]\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\n".to_owned(),
                "2:1",
                "missing field `key`",
            ),
            (
                format!("controllers = [\"a:1\"]\n{TLS}crll = \"crl.pem\"\n"),
                "6:1",
                "unknown field `crll`",
            ),
            (
                format!("controllers = \"a:1\"\n{TLS}"),
                "1:15",
                "invalid type",
            ),
        ];
        for (text, location, needle) in &cases {
            check_error(text, location, needle);
        }
        let ten = format!(
            "controllers = [{}]\n{TLS}",
            (1..=10)
                .map(|i| format!("\"c{i}:7401\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        check_error(&ten, "1:15", "1 to 9 addresses");
    }

    #[test]
    fn a_valid_file_resolves_paths_against_its_directory() {
        let config = load(&format!(
            "controllers = [\"127.0.0.1:7401\", \"[::1]:7402\", \"leitstand-3.stadt.example:7403\"]\n{TLS}crl = \"/etc/pki/crl.pem\"\n"
        ))
        .expect("valid operator.toml");
        assert_eq!(
            config.controllers,
            [
                "127.0.0.1:7401",
                "[::1]:7402",
                "leitstand-3.stadt.example:7403"
            ]
        );
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
        assert_eq!(config.tls.ca, PathBuf::from("/etc/leitstand/pki/ca.pem"));
        assert_eq!(
            config.tls.key,
            PathBuf::from("/etc/leitstand/pki/operator-alice.key")
        );
        assert_eq!(config.tls.crl, Some(PathBuf::from("/etc/pki/crl.pem")));

        let quick = load(&format!("controllers = [\"a:1\"]\ntimeout = \"3s\"\n{TLS}"))
            .expect("valid operator.toml");
        assert_eq!(quick.timeout, Duration::from_secs(3));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = OperatorConfig::load(Path::new("/nonexistent/operator.toml"))
            .expect_err("no such file");
        assert!(
            leitstand_proto::error_chain(&err).contains("/nonexistent/operator.toml"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }
}
