//! TOML configuration files whose every mistake names file, line and column.
//!
//! Binaries exit with status 2 on [`Error::Config`]. Relative paths inside a
//! configuration file are resolved against the file's own directory, so a
//! unit's working directory does not change what a file means.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::Error;

/// Configuration files larger than this are refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// The text of one configuration file, kept for locating mistakes.
#[derive(Debug)]
pub struct ConfigSource {
    path: PathBuf,
    text: String,
}

impl ConfigSource {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let read_error = |source| Error::ReadFile {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_error)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(Error::Config {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: format!(
                    "the file has {len} bytes; configuration files are at most {MAX_CONFIG_BYTES}"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Ok(ConfigSource {
            path: path.to_owned(),
            text,
        })
    }

    pub fn from_text(path: &Path, text: String) -> Self {
        ConfigSource {
            path: path.to_owned(),
            text,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        toml::from_str(&self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            self.error_at(span, e.message().to_owned())
        })
    }

    /// A mistake found after parsing, at the span of the offending value
    /// (from `toml::Spanned`).
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        let (line, column) = line_and_column(&self.text, span.start);
        Error::Config {
            path: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// `path` if absolute, otherwise relative to this file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_owned();
        }
        match self.path.parent() {
            Some(dir) => dir.join(path),
            None => path.to_owned(),
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

/// Whether `address` has the form host:port (a DNS name or IP address,
/// IPv6 in brackets, and a port number).
pub fn is_host_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Parses a duration such as "200ms", "1s", "10m" from a configuration value.
pub fn parse_duration(
    source: &ConfigSource,
    value: &toml::Spanned<String>,
    min: Duration,
    max: Duration,
) -> Result<Duration, Error> {
    let parsed = humantime::parse_duration(value.get_ref()).map_err(|e| {
        source.error_at(
            value.span(),
            format!(
                "{:?} is not a duration ({e}); write e.g. \"200ms\", \"1s\" or \"10m\"",
                value.get_ref()
            ),
        )
    })?;
    if parsed < min || parsed > max {
        return Err(source.error_at(
            value.span(),
            format!(
                "{:?} is out of range; allowed is {} to {}",
                value.get_ref(),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        id: String,
        interval: toml::Spanned<String>,
    }

    fn source(text: &str) -> ConfigSource {
        ConfigSource::from_text(Path::new("/etc/leitstand/agent.toml"), text.to_owned())
    }

    #[test]
    fn syntax_and_schema_errors_name_line_and_column() {
        let cases = [
            (
                "id = \"a\"\ninterval = \"1s\"\nbogus = 1\n",
                3,
                1,
                "unknown field `bogus`",
            ),
            ("id = \"a\"\ninterval = 5\n", 2, 12, "invalid type"),
            ("id = \"a\"\n\ninterval = \"1s\" x\n", 3, 17, ""),
        ];
        for (text, line, column, needle) in cases {
            match source(text).parse::<Sample>() {
                Err(Error::Config {
                    line: l,
                    column: c,
                    message,
                    ..
                }) => {
                    assert_eq!((l, c), (line, column), "{text:?}: {message}");
                    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                }
                other => panic!("{text:?} should fail with a located error, got {other:?}"),
            }
        }
    }

    #[test]
    fn durations_are_parsed_and_bounded_with_their_location() {
        let src = source("id = \"a\"\ninterval = \"2h\"\n");
        let sample: Sample = src.parse().expect("valid TOML");
        let err = parse_duration(
            &src,
            &sample.interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )
        .expect_err("2h is above the bound");
        assert!(
            err.to_string()
                .starts_with("/etc/leitstand/agent.toml:2:12: \"2h\" is out of range"),
            "{err}"
        );
        let ok = source("id = \"a\"\ninterval = \"250ms\"\n");
        let sample: Sample = ok.parse().expect("valid TOML");
        assert_eq!(
            parse_duration(
                &ok,
                &sample.interval,
                Duration::ZERO,
                Duration::from_secs(1)
            )
            .expect("in range"),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let src = source("");
        assert_eq!(
            src.resolve(Path::new("pki/ca.pem")),
            PathBuf::from("/etc/leitstand/pki/ca.pem")
        );
        assert_eq!(
            src.resolve(Path::new("/abs/ca.pem")),
            PathBuf::from("/abs/ca.pem")
        );
    }
}
