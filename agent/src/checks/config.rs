//! The `[[check]]` tables of agent.toml, validated into [`CheckSpec`]s.
//! Every mistake is a `leitstand_proto::Error::Config` located at the
//! offending value (file:line:column), so `leitstand agent` exits 2 with a
//! message that says what to write instead.
//!
//! Keys of every kind: `name`, `kind`, `interval` (default: the agent's),
//! `timeout` (default min(interval, 10s), at most 60s), `jitter` (default
//! 10% of interval, at most interval). Per kind:
//!
//! | kind | keys |
//! |---|---|
//! | tcp | `target` |
//! | http | `url`, `expect_status`, `body_regex`, `ca`, `tls_verify` |
//! | exec | `argv` |
//! | grpc | `target`, `service`, `tls`, `ca` |
//!
//! Files named by `ca` are read here, at load: a missing CA is a mistake
//! in the configuration. A missing plugin binary is not: it may be
//! installed later, and until then the check says UNKNOWN.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use leitstand_proto::Error;
use leitstand_proto::config::{ConfigSource, parse_duration};
use leitstand_proto::domain::Identifier;
use leitstand_proto::domain::bounds::MAX_CHECKS_PER_REPORT;
use regex::bytes::RegexBuilder;
use rustls::RootCertStore;
use toml::Spanned;

use super::exec::ExecProbe;
use super::grpc::{GrpcProbe, MAX_SERVICE_BYTES};
use super::http::{ExpectStatus, HttpProbe};
use super::net::{Target, TlsTarget};
use super::tcp::TcpProbe;
use super::tls::{self, Verify};
use super::{CheckSpec, Probe};

/// Checks an agent may have: one report carries all their results.
pub(crate) const MAX_CHECKS: usize = MAX_CHECKS_PER_REPORT;
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout when none is given, unless the interval is shorter.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ARGV_ENTRIES: usize = 64;
const MAX_ARGV_ENTRY_BYTES: usize = 4096;
const MAX_REGEX_BYTES: usize = 1024;
/// Compiled size of a body regex, and of its lazy DFA cache: enough for
/// any sensible pattern, small against the agent's memory budget.
const REGEX_SIZE_LIMIT: usize = 256 << 10;
const REGEX_DFA_SIZE_LIMIT: usize = 256 << 10;

/// One `[[check]]` table as written. Deserialize it as a field
/// `check: Vec<RawCheck>` (with `#[serde(default)]`) of the agent's file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    /// An identifier, unique among the agent's checks.
    name: Spanned<String>,
    /// "tcp", "http", "exec" or "grpc".
    kind: Spanned<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    /// tcp, grpc: "host:port".
    target: Option<Spanned<String>>,
    /// http: an http:// or https:// URL.
    url: Option<Spanned<String>>,
    /// http: the statuses that are OK; by default 200–399.
    expect_status: Option<Spanned<Vec<Spanned<i64>>>>,
    /// http: a regex (at most 1024 bytes) the body must match.
    body_regex: Option<Spanned<String>>,
    /// https, grpc with tls: a PEM CA file, the only trust anchor then;
    /// relative to agent.toml.
    ca: Option<Spanned<String>>,
    /// https: DANGEROUS when false — any certificate is accepted, so
    /// anyone on the path can pose as the service and the check no longer
    /// tells whether the real one is up. Default true.
    tls_verify: Option<Spanned<bool>>,
    /// exec: the plugin (an absolute path) and its arguments.
    argv: Option<Spanned<Vec<Spanned<String>>>>,
    /// grpc: the service name to ask about; "" (default) is the server.
    service: Option<Spanned<String>>,
    /// grpc: TLS instead of plaintext; default false.
    tls: Option<Spanned<bool>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Http,
    Exec,
    Grpc,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        match text {
            "tcp" => Some(Kind::Tcp),
            "http" => Some(Kind::Http),
            "exec" => Some(Kind::Exec),
            "grpc" => Some(Kind::Grpc),
            _ => None,
        }
    }

    /// "a tcp check", "an exec check".
    fn check_noun(self) -> &'static str {
        match self {
            Kind::Tcp => "a tcp check",
            Kind::Http => "an http check",
            Kind::Exec => "an exec check",
            Kind::Grpc => "a grpc check",
        }
    }

    /// The keys of this kind besides the common ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Tcp => &["target"],
            Kind::Http => &["url", "expect_status", "body_regex", "ca", "tls_verify"],
            Kind::Exec => &["argv"],
            Kind::Grpc => &["target", "service", "tls", "ca"],
        }
    }
}

/// Parses and validates the `[[check]]` tables of agent.toml. Errors are
/// `Error::Config` located at the offending value; names are unique.
/// `default_interval` is the agent's `interval`.
pub(crate) fn parse_checks(
    source: &ConfigSource,
    raw: Vec<RawCheck>,
    default_interval: Duration,
) -> Result<Vec<CheckSpec>, Error> {
    if let Some(extra) = raw.get(MAX_CHECKS) {
        return Err(source.error_at(
            extra.name.span(),
            format!(
                "an agent has at most {MAX_CHECKS} checks; this is check {}",
                MAX_CHECKS + 1
            ),
        ));
    }
    let mut parser = Parser {
        source,
        default_interval,
        system_roots: None,
    };
    let mut specs: Vec<CheckSpec> = Vec::with_capacity(raw.len());
    for check in raw {
        if specs
            .iter()
            .any(|s| s.name.as_str() == check.name.get_ref())
        {
            return Err(source.error_at(
                check.name.span(),
                format!(
                    "a check named {:?} is already defined",
                    check.name.get_ref()
                ),
            ));
        }
        let spec = parser.check(check)?;
        specs.push(spec);
    }
    Ok(specs)
}

struct Parser<'a> {
    source: &'a ConfigSource,
    default_interval: Duration,
    /// Read once per file, when the first check needs them.
    system_roots: Option<Arc<RootCertStore>>,
}

impl Parser<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        self.source.error_at(span, message)
    }

    fn check(&mut self, raw: RawCheck) -> Result<CheckSpec, Error> {
        let name = Identifier::new(raw.name.get_ref())
            .map_err(|e| self.error(raw.name.span(), format!("name: {}", e.reason)))?;
        let kind = Kind::parse(raw.kind.get_ref()).ok_or_else(|| {
            self.error(
                raw.kind.span(),
                format!(
                    "kind = {:?} is not a check kind; use \"tcp\", \"http\", \"exec\" or \"grpc\"",
                    raw.kind.get_ref()
                ),
            )
        })?;
        self.no_foreign_keys(&raw, kind)?;

        let interval = match &raw.interval {
            Some(v) => parse_duration(self.source, v, MIN_INTERVAL, MAX_INTERVAL)?,
            None => self.default_interval,
        };
        let timeout = match &raw.timeout {
            Some(v) => parse_duration(self.source, v, MIN_TIMEOUT, MAX_TIMEOUT)?,
            None => interval.min(DEFAULT_TIMEOUT),
        };
        let jitter = match &raw.jitter {
            Some(v) => parse_duration(self.source, v, Duration::ZERO, interval)?,
            None => interval / 10,
        };
        let probe = match kind {
            Kind::Tcp => Probe::Tcp(TcpProbe {
                target: self.target(&raw)?,
            }),
            Kind::Http => Probe::Http(self.http(&raw)?),
            Kind::Exec => Probe::Exec(self.exec(&raw)?),
            Kind::Grpc => Probe::Grpc(self.grpc(&raw)?),
        };
        Ok(CheckSpec {
            name,
            interval,
            timeout,
            jitter,
            probe,
        })
    }

    /// A key of another kind is a mistake, not something to ignore: it
    /// usually means a wrong `kind`.
    fn no_foreign_keys(&self, raw: &RawCheck, kind: Kind) -> Result<(), Error> {
        let mut present: Vec<(&str, Range<usize>)> = [
            ("target", raw.target.as_ref().map(Spanned::span)),
            ("url", raw.url.as_ref().map(Spanned::span)),
            (
                "expect_status",
                raw.expect_status.as_ref().map(Spanned::span),
            ),
            ("body_regex", raw.body_regex.as_ref().map(Spanned::span)),
            ("ca", raw.ca.as_ref().map(Spanned::span)),
            ("tls_verify", raw.tls_verify.as_ref().map(Spanned::span)),
            ("argv", raw.argv.as_ref().map(Spanned::span)),
            ("service", raw.service.as_ref().map(Spanned::span)),
            ("tls", raw.tls.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .collect();
        present.sort_by_key(|(_, span)| span.start);
        match present
            .into_iter()
            .find(|(key, _)| !kind.keys().contains(key))
        {
            Some((key, span)) => Err(self.error(
                span,
                format!("`{key}` is not a key of {}", kind.check_noun()),
            )),
            None => Ok(()),
        }
    }

    /// A key the kind cannot do without, or an error at `kind`.
    fn required<'r, T>(
        &self,
        raw: &RawCheck,
        value: &'r Option<Spanned<T>>,
        key: &str,
        example: &str,
    ) -> Result<&'r Spanned<T>, Error> {
        value.as_ref().ok_or_else(|| {
            let noun = Kind::parse(raw.kind.get_ref()).map_or("this check", Kind::check_noun);
            self.error(
                raw.kind.span(),
                format!("{noun} needs `{key}`, e.g. {key} = {example}"),
            )
        })
    }

    fn target(&self, raw: &RawCheck) -> Result<Target, Error> {
        let target = self.required(raw, &raw.target, "target", "\"10.20.0.1:502\"")?;
        Target::parse(target.get_ref()).ok_or_else(|| {
            self.error(
                target.span(),
                format!(
                    "target = {:?} is not host:port, e.g. \"10.20.0.1:502\" or \"[fd00::1]:443\"",
                    target.get_ref()
                ),
            )
        })
    }

    fn http(&mut self, raw: &RawCheck) -> Result<HttpProbe, Error> {
        let url_value = self.required(raw, &raw.url, "url", "\"https://example.org/health\"")?;
        let url_error = |why: &str| {
            self.error(
                url_value.span(),
                format!("url = {:?} {why}", url_value.get_ref()),
            )
        };
        let url: Uri = url_value
            .get_ref()
            .parse()
            .map_err(|e| url_error(&format!("is not a URL ({e})")))?;
        let https = match url.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(url_error("must start with http:// or https://")),
        };
        let authority = url.authority().ok_or_else(|| url_error("names no host"))?;
        if authority.as_str().contains('@') {
            return Err(url_error(
                "contains credentials (user@host); checks send none",
            ));
        }
        // `Authority::port_u16` reads an out-of-range port as none at all.
        let port = match authority
            .as_str()
            .strip_prefix(authority.host())
            .and_then(|rest| rest.strip_prefix(':'))
        {
            None | Some("") => Some(if https { 443 } else { 80 }),
            Some(port) => port.parse::<u16>().ok(),
        };
        let target = port
            .and_then(|port| Target::parse(&format!("{}:{port}", authority.host())))
            .ok_or_else(|| url_error("has no usable host and port"))?;
        // Origin form for the request line: "/path?query", never empty.
        let mut path = match url.path() {
            "" => "/".to_owned(),
            path => path.to_owned(),
        };
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }

        let expect_status = match &raw.expect_status {
            None => ExpectStatus::SuccessOrRedirect,
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.error(
                        list.span(),
                        "expect_status lists no status; leave it out to accept 200–399",
                    ));
                }
                let mut statuses = Vec::with_capacity(list.get_ref().len());
                for status in list.get_ref() {
                    let code = u16::try_from(*status.get_ref())
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .ok_or_else(|| {
                            self.error(
                                status.span(),
                                format!("{} is not an HTTP status (100–599)", status.get_ref()),
                            )
                        })?;
                    statuses.push(code);
                }
                ExpectStatus::Listed(statuses)
            }
        };

        let body_regex = match &raw.body_regex {
            None => None,
            Some(pattern) => Some(Arc::new(self.regex(pattern)?)),
        };

        if !https {
            for (key, span) in [
                ("ca", raw.ca.as_ref().map(Spanned::span)),
                ("tls_verify", raw.tls_verify.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    return Err(self.error(span, format!("`{key}` applies only to https:// URLs")));
                }
            }
        }
        let tls = if https {
            let verify = match (&raw.tls_verify, &raw.ca) {
                (Some(v), Some(ca)) if !*v.get_ref() => {
                    return Err(self.error(
                        ca.span(),
                        "`ca` has no effect with tls_verify = false; remove one of them",
                    ));
                }
                (Some(v), None) if !*v.get_ref() => Verify::DangerousAcceptAnyCertificate,
                (_, Some(ca)) => Verify::Roots(self.ca_roots(ca)?),
                (_, None) => Verify::Roots(self.system_roots()),
            };
            Some(self.tls_target(raw, &target, &verify, b"http/1.1", url_value.span())?)
        } else {
            None
        };
        let host_header = authority.as_str().to_owned();
        Ok(HttpProbe {
            url,
            host_header,
            target,
            path,
            tls,
            expect_status,
            body_regex,
        })
    }

    fn regex(&self, pattern: &Spanned<String>) -> Result<regex::bytes::Regex, Error> {
        let text = pattern.get_ref();
        if text.len() > MAX_REGEX_BYTES {
            return Err(self.error(
                pattern.span(),
                format!(
                    "body_regex has {} bytes; at most {MAX_REGEX_BYTES} are allowed",
                    text.len()
                ),
            ));
        }
        RegexBuilder::new(text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                self.error(
                    pattern.span(),
                    format!("body_regex is not a valid regex: {}", regex_reason(&e)),
                )
            })
    }

    fn exec(&self, raw: &RawCheck) -> Result<ExecProbe, Error> {
        let argv = self.required(
            raw,
            &raw.argv,
            "argv",
            "[\"/usr/lib/nagios/plugins/check_disk\", \"-w\", \"20%\", \"-p\", \"/\"]",
        )?;
        let entries = argv.get_ref();
        let Some(program) = entries.first() else {
            return Err(self.error(
                argv.span(),
                "argv is empty; name the plugin and its arguments",
            ));
        };
        if let Some(extra) = entries.get(MAX_ARGV_ENTRIES) {
            return Err(self.error(
                extra.span(),
                format!(
                    "argv has {} entries; at most {MAX_ARGV_ENTRIES} are allowed",
                    entries.len()
                ),
            ));
        }
        for entry in entries {
            let text = entry.get_ref();
            if text.len() > MAX_ARGV_ENTRY_BYTES {
                return Err(self.error(
                    entry.span(),
                    format!(
                        "this argument has {} bytes; at most {MAX_ARGV_ENTRY_BYTES} are allowed",
                        text.len()
                    ),
                ));
            }
            if text.contains('\0') {
                return Err(self.error(entry.span(), "an argument cannot contain a NUL byte"));
            }
        }
        if !Path::new(program.get_ref()).is_absolute() {
            return Err(self.error(
                program.span(),
                format!(
                    "argv[0] = {:?} is not an absolute path; plugins run without a shell or PATH search, e.g. \"/usr/lib/nagios/plugins/check_disk\"",
                    program.get_ref()
                ),
            ));
        }
        Ok(ExecProbe {
            argv: entries.iter().map(|e| e.get_ref().clone()).collect(),
        })
    }

    fn grpc(&mut self, raw: &RawCheck) -> Result<GrpcProbe, Error> {
        let target = self.target(raw)?;
        let service = match &raw.service {
            None => String::new(),
            Some(service) if service.get_ref().len() > MAX_SERVICE_BYTES => {
                return Err(self.error(
                    service.span(),
                    format!(
                        "service has {} bytes; at most {MAX_SERVICE_BYTES} are allowed",
                        service.get_ref().len()
                    ),
                ));
            }
            Some(service) => service.get_ref().clone(),
        };
        let tls_on = raw.tls.as_ref().is_some_and(|t| *t.get_ref());
        let tls = match (&raw.ca, tls_on) {
            (Some(ca), false) => {
                return Err(self.error(ca.span(), "`ca` applies only with tls = true"));
            }
            (Some(ca), true) => {
                let verify = Verify::Roots(self.ca_roots(ca)?);
                let span = raw.tls.as_ref().map_or(raw.kind.span(), Spanned::span);
                Some(self.tls_target(raw, &target, &verify, b"h2", span)?)
            }
            (None, true) => {
                let verify = Verify::Roots(self.system_roots());
                let span = raw.tls.as_ref().map_or(raw.kind.span(), Spanned::span);
                Some(self.tls_target(raw, &target, &verify, b"h2", span)?)
            }
            (None, false) => None,
        };
        Ok(GrpcProbe {
            target,
            service,
            tls,
        })
    }

    fn ca_roots(&self, ca: &Spanned<String>) -> Result<Arc<RootCertStore>, Error> {
        let path = self.source.resolve(Path::new(ca.get_ref()));
        tls::file_roots(&path).map_err(|reason| self.error(ca.span(), format!("ca: {reason}")))
    }

    fn system_roots(&mut self) -> Arc<RootCertStore> {
        self.system_roots
            .get_or_insert_with(tls::system_roots)
            .clone()
    }

    fn tls_target(
        &self,
        raw: &RawCheck,
        target: &Target,
        verify: &Verify,
        alpn: &[u8],
        span: Range<usize>,
    ) -> Result<TlsTarget, Error> {
        let server_name = target.server_name().ok_or_else(|| {
            self.error(
                span,
                format!(
                    "{:?} is not a name a TLS certificate can be verified for",
                    target.host
                ),
            )
        })?;
        let config = tls::client_config(verify, alpn).map_err(|e| {
            self.error(
                raw.kind.span(),
                format!("cannot build a TLS configuration for this check: {e}"),
            )
        })?;
        Ok(TlsTarget {
            config,
            server_name,
        })
    }
}

/// The one-line reason of a regex error (syntax errors come as several
/// lines with a caret; the last "error:" line says what is wrong).
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("error: "))
        .next_back()
        .map_or_else(
            || text.lines().last().unwrap_or("").trim().to_owned(),
            str::to_owned,
        )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::in_dir(dir.path());
        let text = format!(
            r#"
[[check]]
name = "uplink-fiber"
kind = "tcp"
target = "10.20.0.1:502"
interval = "200ms"
timeout = "1s"

[[check]]
name = "disk-root"
kind = "exec"
argv = ["/usr/lib/nagios/plugins/check_disk", "-w", "20%", "-c", "10%", "-p", "/"]

[[check]]
name = "portal"
kind = "http"
url = "https://[::1]:8443/health?deep=1"
expect_status = [200, 204]
body_regex = '"status":\s*"UP"'
ca = "{ca}"
interval = "30s"
jitter = "0s"

[[check]]
name = "portal-plain"
kind = "http"
url = "http://portal.example"
interval = "2m"

[[check]]
name = "dispatch-api"
kind = "grpc"
target = "dispatch.example:50051"
service = "leitstand.Dispatch"
tls = true
timeout = "60s"
"#,
            ca = pki.ca.file_name().expect("file").to_str().expect("utf-8"),
        );
        // `ca` is relative: resolved against the file's directory.
        let specs = must_parse_at(&dir.path().join("agent.toml"), &text);
        let summary: Vec<_> = specs
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.probe.kind(),
                    s.interval,
                    s.timeout,
                    s.jitter,
                )
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            summary,
            [
                ("uplink-fiber", "tcp", ms(200), ms(1000), ms(20)),
                ("disk-root", "exec", ms(1000), ms(1000), ms(100)),
                ("portal", "http", ms(30_000), ms(10_000), ms(0)),
                ("portal-plain", "http", ms(120_000), ms(10_000), ms(12_000)),
                ("dispatch-api", "grpc", ms(1000), ms(60_000), ms(100)),
            ]
        );
        let Probe::Tcp(tcp) = &specs[0].probe else {
            panic!("tcp")
        };
        assert_eq!(tcp.target.to_string(), "10.20.0.1:502");
        let Probe::Exec(exec) = &specs[1].probe else {
            panic!("exec")
        };
        assert_eq!(exec.argv.len(), 7);
        let Probe::Http(http) = &specs[2].probe else {
            panic!("http")
        };
        assert_eq!((http.target.host.as_str(), http.target.port), ("::1", 8443));
        assert_eq!(http.host_header, "[::1]:8443");
        assert_eq!(http.path, "/health?deep=1");
        assert_eq!(http.expect_status, ExpectStatus::Listed(vec![200, 204]));
        assert!(http.tls.is_some() && http.body_regex.is_some());
        let Probe::Http(plain) = &specs[3].probe else {
            panic!("http")
        };
        assert_eq!((plain.target.port, plain.path.as_str()), (80, "/"));
        assert_eq!(plain.host_header, "portal.example");
        assert!(plain.tls.is_none());
        let Probe::Grpc(grpc) = &specs[4].probe else {
            panic!("grpc")
        };
        assert_eq!(grpc.service, "leitstand.Dispatch");
        let tls = grpc.tls.as_ref().expect("tls");
        assert_eq!(tls.config.alpn_protocols, [b"h2".to_vec()]);
    }

    #[test]
    fn urls_become_target_host_header_and_request_path() {
        let check = |url: &str, target: &str, host_header: &str, path: &str, tls: bool| {
            let spec = must_parse_one(&format!("name = \"a\"\nkind = \"http\"\nurl = \"{url}\"\n"));
            let Probe::Http(http) = spec.probe else {
                panic!("{url}: not http")
            };
            assert_eq!(
                (
                    http.target.to_string().as_str(),
                    http.host_header.as_str(),
                    http.path.as_str(),
                    http.tls.is_some()
                ),
                (target, host_header, path, tls),
                "{url}"
            );
        };
        check("http://x", "x:80", "x", "/", false);
        check("http://x:/", "x:80", "x:", "/", false);
        check("http://x?y=1", "x:80", "x", "/?y=1", false);
        check(
            "http://x/a/b?c=d&e#fragment",
            "x:80",
            "x",
            "/a/b?c=d&e",
            false,
        );
        check("https://x", "x:443", "x", "/", true);
        check(
            "https://10.0.0.1:8443/h",
            "10.0.0.1:8443",
            "10.0.0.1:8443",
            "/h",
            true,
        );
        check(
            "http://[fd00::1]:81/",
            "[fd00::1]:81",
            "[fd00::1]:81",
            "/",
            false,
        );
        check("HTTPS://x/", "x:443", "x", "/", true);
    }

    /// `text` holds `[[check]]` tables; the error must be exactly
    /// `expected` ("file:line:column: message").
    fn check(text: &str, expected: &str) {
        match parse(text) {
            Ok(specs) => panic!("{text}\nshould fail with {expected:?}, parsed {specs:?}"),
            Err(e) => assert_eq!(e.to_string(), expected, "\n{text}"),
        }
    }

    #[test]
    fn mistakes_are_located() {
        let f = AGENT_TOML;
        check(
            "[[check]]\nname = \"a\"\nkind = \"udp\"\n",
            &format!(
                "{f}:3:8: kind = \"udp\" is not a check kind; use \"tcp\", \"http\", \"exec\" or \"grpc\""
            ),
        );
        check(
            "[[check]]\nname = \"a b\"\nkind = \"tcp\"\ntarget = \"h:1\"\n",
            &format!("{f}:2:8: name: ' ' is not allowed; use letters, digits, '.', '_' and '-'"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\n[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:2\"\n",
            &format!("{f}:6:8: a check named \"a\" is already defined"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\nurl = \"http://x\"\n",
            &format!("{f}:5:7: `url` is not a key of a tcp check"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"exec\"\nargv = [\"/bin/true\"]\ntls = true\nservice = \"x\"\n",
            &format!("{f}:5:7: `tls` is not a key of an exec check"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\n",
            &format!("{f}:3:8: a tcp check needs `target`, e.g. target = \"10.20.0.1:502\""),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"10.0.0.1\"\n",
            &format!(
                "{f}:4:10: target = \"10.0.0.1\" is not host:port, e.g. \"10.20.0.1:502\" or \"[fd00::1]:443\""
            ),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\nbogus = 1\n",
            &format!(
                "{f}:5:1: unknown field `bogus`, expected one of `name`, `kind`, `interval`, `timeout`, `jitter`, `target`, `url`, `expect_status`, `body_regex`, `ca`, `tls_verify`, `argv`, `service`, `tls`"
            ),
        );
        // Durations.
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\ninterval = \"10ms\"\n",
            &format!("{f}:5:12: \"10ms\" is out of range; allowed is 100ms to 1h"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\ntimeout = \"0s\"\n",
            &format!("{f}:5:11: \"0s\" is out of range; allowed is 1ms to 1m"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\ntimeout = \"61s\"\n",
            &format!("{f}:5:11: \"61s\" is out of range; allowed is 1ms to 1m"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\ninterval = \"200ms\"\njitter = \"1s\"\n",
            &format!("{f}:6:10: \"1s\" is out of range; allowed is 0s to 200ms"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\ntimeout = \"soon\"\n",
            &format!(
                "{f}:5:11: \"soon\" is not a duration (expected number at 0); write e.g. \"200ms\", \"1s\" or \"10m\""
            ),
        );
        // http.
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"ftp://x/\"\n",
            &format!("{f}:4:7: url = \"ftp://x/\" must start with http:// or https://"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"/health\"\n",
            &format!("{f}:4:7: url = \"/health\" must start with http:// or https://"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x:99999/\"\n",
            &format!("{f}:4:7: url = \"http://x:99999/\" has no usable host and port"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x y/\"\n",
            &format!("{f}:4:7: url = \"http://x y/\" is not a URL (invalid uri character)"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://u:p@x/\"\n",
            &format!(
                "{f}:4:7: url = \"http://u:p@x/\" contains credentials (user@host); checks send none"
            ),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x/\"\nexpect_status = [200, 700]\n",
            &format!("{f}:5:23: 700 is not an HTTP status (100–599)"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x/\"\nexpect_status = []\n",
            &format!("{f}:5:17: expect_status lists no status; leave it out to accept 200–399"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x/\"\nbody_regex = \"(\"\n",
            &format!("{f}:5:14: body_regex is not a valid regex: unclosed group"),
        );
        check(
            &format!(
                "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x/\"\nbody_regex = \"{}\"\n",
                "a".repeat(1025)
            ),
            &format!("{f}:5:14: body_regex has 1025 bytes; at most 1024 are allowed"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x/\"\nbody_regex = \"\\\\w{1000}\\\\w{1000}\"\n",
            &format!(
                "{f}:5:14: body_regex is not a valid regex: Compiled regex exceeds size limit of 262144 bytes."
            ),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x/\"\ntls_verify = false\n",
            &format!("{f}:5:14: `tls_verify` applies only to https:// URLs"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"https://x/\"\ntls_verify = false\nca = \"ca.pem\"\n",
            &format!("{f}:6:6: `ca` has no effect with tls_verify = false; remove one of them"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"http\"\nurl = \"https://x/\"\nca = \"missing.pem\"\n",
            &format!(
                "{f}:5:6: ca: cannot read /etc/leitstand/missing.pem: No such file or directory (os error 2)"
            ),
        );
        // exec.
        check(
            "[[check]]\nname = \"a\"\nkind = \"exec\"\nargv = []\n",
            &format!("{f}:4:8: argv is empty; name the plugin and its arguments"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"exec\"\nargv = [\"check_disk\", \"-w\", \"20%\"]\n",
            &format!(
                "{f}:4:9: argv[0] = \"check_disk\" is not an absolute path; plugins run without a shell or PATH search, e.g. \"/usr/lib/nagios/plugins/check_disk\""
            ),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"exec\"\nargv = [\"/bin/x\", \"a\\u0000b\"]\n",
            &format!("{f}:4:19: an argument cannot contain a NUL byte"),
        );
        check(
            &format!(
                "[[check]]\nname = \"a\"\nkind = \"exec\"\nargv = [\"/bin/x\", \"{}\"]\n",
                "a".repeat(4097)
            ),
            &format!("{f}:4:19: this argument has 4097 bytes; at most 4096 are allowed"),
        );
        check(
            &format!(
                "[[check]]\nname = \"a\"\nkind = \"exec\"\nargv = [\"/bin/x\"{}]\n",
                ", \"a\"".repeat(64)
            ),
            &format!(
                "{f}:4:{}: argv has 65 entries; at most 64 are allowed",
                9 + 8 + 5 * 63 + 2
            ),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"exec\"\n",
            &format!(
                "{f}:3:8: an exec check needs `argv`, e.g. argv = [\"/usr/lib/nagios/plugins/check_disk\", \"-w\", \"20%\", \"-p\", \"/\"]"
            ),
        );
        // grpc.
        check(
            "[[check]]\nname = \"a\"\nkind = \"grpc\"\ntarget = \"h:1\"\nca = \"ca.pem\"\n",
            &format!("{f}:5:6: `ca` applies only with tls = true"),
        );
        check(
            &format!(
                "[[check]]\nname = \"a\"\nkind = \"grpc\"\ntarget = \"h:1\"\nservice = \"{}\"\n",
                "s".repeat(257)
            ),
            &format!("{f}:5:11: service has 257 bytes; at most 256 are allowed"),
        );
        check(
            "[[check]]\nname = \"a\"\nkind = \"grpc\"\ntarget = \"a..b:1\"\ntls = true\n",
            &format!("{f}:5:7: \"a..b\" is not a name a TLS certificate can be verified for"),
        );
    }

    #[test]
    fn at_most_256_checks() {
        let table =
            |i: usize| format!("[[check]]\nname = \"c{i}\"\nkind = \"tcp\"\ntarget = \"h:1\"\n");
        let ok: String = (0..256).map(table).collect();
        assert_eq!(parse(&ok).expect("256 checks are fine").len(), 256);
        let too_many: String = (0..257).map(table).collect();
        check(
            &too_many,
            &format!("{AGENT_TOML}:1026:8: an agent has at most 256 checks; this is check 257"),
        );
    }
}
