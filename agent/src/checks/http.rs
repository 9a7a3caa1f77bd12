//! `kind = "http"`: one GET over HTTP/1.1 (TLS for https), no redirects
//! followed, at most [`MAX_BODY_BYTES`] of the body read.
//!
//! OK when the status is expected (by default any 200–399) and, if
//! `body_regex` is set, the body matches it; CRITICAL otherwise, and on any
//! connection, TLS or protocol failure. The connection is closed after the
//! one request (`Connection: close`), so nothing lingers between runs.

use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use regex::bytes::Regex;
use tokio::time::Instant;

use super::net::{self, Target, TlsTarget};
use leitstand_proto::error_chain;

use super::{Outcome, format_ms, perf};

/// Bytes of the body read at most; a longer body is cut, not an error.
pub(crate) const MAX_BODY_BYTES: usize = 64 << 10;
const USER_AGENT: &str = concat!("leitstand-agent/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub(crate) struct HttpProbe {
    /// As configured, for summaries.
    pub(crate) url: Uri,
    pub(crate) target: Target,
    /// The `Host` header: the URL's authority.
    pub(crate) host_header: String,
    /// Path and query of the request line.
    pub(crate) path: String,
    pub(crate) tls: Option<TlsTarget>,
    pub(crate) expect_status: ExpectStatus,
    pub(crate) body_regex: Option<Arc<Regex>>,
}

/// Which response statuses are OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpectStatus {
    /// 200–399: success and redirects (redirects are not followed).
    SuccessOrRedirect,
    Listed(Vec<u16>),
}

impl ExpectStatus {
    fn accepts(&self, status: StatusCode) -> bool {
        match self {
            ExpectStatus::SuccessOrRedirect => (200..400).contains(&status.as_u16()),
            ExpectStatus::Listed(list) => list.contains(&status.as_u16()),
        }
    }

    fn describe(&self) -> String {
        match self {
            ExpectStatus::SuccessOrRedirect => "200–399".to_owned(),
            ExpectStatus::Listed(list) => list
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// What came back.
struct Fetched {
    status: StatusCode,
    body: Vec<u8>,
    /// More body followed than was read.
    cut: bool,
}

impl HttpProbe {
    pub(super) fn describe(&self) -> String {
        format!("GET {}", self.url)
    }

    /// Fetches and judges; the caller bounds the time.
    pub(super) async fn run(&self, started: Instant) -> Outcome {
        match self.fetch().await {
            Ok(fetched) => self.judge(&fetched, started.elapsed()),
            Err(reason) => Outcome::critical(reason),
        }
    }

    async fn fetch(&self) -> Result<Fetched, String> {
        let io = net::connect(&self.target, self.tls.as_ref()).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                format!(
                    "HTTP handshake with {} failed: {}",
                    self.target,
                    error_chain(&e)
                )
            })?;
        let request = Request::get(self.path.as_str())
            .header(header::HOST, self.host_header.as_str())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "*/*")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request for {}: {e}", self.url))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("GET {} failed: {}", self.url, error_chain(&e)))?;
            let status = response.status();
            let mut body = response.into_body();
            let mut kept = Vec::new();
            let mut cut = false;
            while !cut {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let frame = frame.map_err(|e| {
                    format!(
                        "reading the body of {} failed: {}",
                        self.url,
                        error_chain(&e)
                    )
                })?;
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY_BYTES - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                    cut = data.len() > room;
                }
            }
            Ok(Fetched {
                status,
                body: kept,
                cut,
            })
        };
        // The connection is driven here rather than in a spawned task, so
        // a timeout that drops this future closes it too.
        tokio::pin!(exchange);
        tokio::pin!(connection);
        let mut connection_done = false;
        loop {
            tokio::select! {
                biased;
                fetched = &mut exchange => return fetched,
                ended = &mut connection, if !connection_done => {
                    // A clean end may come before the exchange has taken
                    // the last buffered body bytes: keep reading them.
                    ended.map_err(|e| format!("connection to {} failed: {}", self.target, error_chain(&e)))?;
                    connection_done = true;
                }
            }
        }
    }

    fn judge(&self, fetched: &Fetched, took: std::time::Duration) -> Outcome {
        let code = fetched.status.as_u16();
        let perf_data = vec![
            perf("time", took.as_secs_f64(), "s"),
            perf("size", fetched.body.len() as f64, "B"),
        ];
        let reason = fetched.status.canonical_reason().unwrap_or("");
        let head = format!("HTTP {code} in {}", format_ms(took));
        if !self.expect_status.accepts(fetched.status) {
            return Outcome::critical(format!(
                "HTTP {code} {reason} in {}; expected {}",
                format_ms(took),
                self.expect_status.describe()
            ))
            .with_perf(perf_data);
        }
        if let Some(regex) = &self.body_regex
            && !regex.is_match(&fetched.body)
        {
            let read = if fetched.cut {
                format!(" (only the first {} KiB are read)", MAX_BODY_BYTES >> 10)
            } else {
                String::new()
            };
            return Outcome::critical(format!(
                "{head}, but the body does not match body_regex {:?}{read}",
                regex.as_str()
            ))
            .with_perf(perf_data);
        }
        Outcome::ok(head).with_perf(perf_data)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leitstand_proto::v1::CheckStatus;

    use super::super::run_once;
    use super::super::test_support::*;
    use super::*;

    fn http_check(url: &str, extra: &str) -> super::super::CheckSpec {
        must_parse_one(&format!(
            "name = \"web\"\nkind = \"http\"\nurl = \"{url}\"\n{extra}"
        ))
    }

    #[tokio::test]
    async fn ok_with_host_header_and_user_agent() {
        let server = HttpServer::start(Reply::new(200, "hello world")).await;
        let spec = http_check(&format!("http://{}/health?x=1", server.address), "");
        let result = run_once(&spec).await;
        must_have_status(&result, CheckStatus::Ok);
        assert!(
            result.summary.starts_with("HTTP 200 in ") && result.summary.ends_with(" ms"),
            "{}",
            result.summary
        );
        let labels: Vec<_> = result
            .perf
            .iter()
            .map(|p| (p.label.as_str(), p.unit.as_str()))
            .collect();
        assert_eq!(labels, [("time", "s"), ("size", "B")]);
        assert_eq!(result.perf[1].value, 11.0);
        let request = server.requests().pop().expect("one request");
        let lines: Vec<&str> = request.lines().collect();
        assert_eq!(lines[0], "GET /health?x=1 HTTP/1.1");
        let has = |header: &str| lines.iter().any(|l| l.eq_ignore_ascii_case(header));
        assert!(has(&format!("host: {}", server.address)), "{request}");
        assert!(
            has(&format!(
                "user-agent: leitstand-agent/{}",
                env!("CARGO_PKG_VERSION")
            )),
            "{request}"
        );
    }

    #[tokio::test]
    async fn status_outside_the_expected_is_critical() {
        let server = HttpServer::start(Reply::new(503, "down")).await;
        let result = run_once(&http_check(&format!("http://{}/", server.address), "")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result
                .summary
                .starts_with("HTTP 503 Service Unavailable in ")
                && result.summary.ends_with("; expected 200–399"),
            "{}",
            result.summary
        );

        // A redirect is not followed, and is OK by default...
        let server = HttpServer::start(Reply::new(302, "").header("Location: /elsewhere")).await;
        let url = format!("http://{}/", server.address);
        must_have_status(&run_once(&http_check(&url, "")).await, CheckStatus::Ok);
        assert_eq!(server.requests().len(), 1, "no redirect followed");
        // ...unless expect_status says otherwise.
        let result = run_once(&http_check(&url, "expect_status = [200, 204]\n")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result.summary.ends_with("; expected 200, 204"),
            "{}",
            result.summary
        );

        let server = HttpServer::start(Reply::new(418, "teapot")).await;
        let url = format!("http://{}/", server.address);
        let result = run_once(&http_check(&url, "expect_status = [418]\n")).await;
        must_have_status(&result, CheckStatus::Ok);
    }

    #[tokio::test]
    async fn body_regex_match_and_mismatch() {
        let server = HttpServer::start(Reply::new(200, "{\"status\":\"UP\",\"db\":\"ok\"}")).await;
        let url = format!("http://{}/", server.address);
        let ok = run_once(&http_check(&url, "body_regex = '\"status\":\\s*\"UP\"'\n")).await;
        must_have_status(&ok, CheckStatus::Ok);
        let bad = run_once(&http_check(&url, "body_regex = '\"db\":\"down\"'\n")).await;
        must_have_status(&bad, CheckStatus::Critical);
        assert!(
            bad.summary.starts_with("HTTP 200 in ")
                && bad.summary.ends_with(
                    ", but the body does not match body_regex \"\\\"db\\\":\\\"down\\\"\""
                ),
            "{}",
            bad.summary
        );
    }

    #[tokio::test]
    async fn only_the_first_64_kib_of_the_body_are_read() {
        let mut body = "x".repeat(MAX_BODY_BYTES);
        body.push_str("MARKER");
        body.push_str(&"y".repeat(100_000));
        let server = HttpServer::start(Reply::new(200, &body)).await;
        let url = format!("http://{}/", server.address);
        let result = run_once(&http_check(&url, "body_regex = 'MARKER'\n")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result.summary.ends_with("(only the first 64 KiB are read)"),
            "{}",
            result.summary
        );
        assert_eq!(result.perf[1].value, MAX_BODY_BYTES as f64);
        let result = run_once(&http_check(&url, "body_regex = '^x+$'\n")).await;
        must_have_status(&result, CheckStatus::Ok);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_critical_at_the_timeout() {
        let server = HttpServer::start(Reply::Silent).await;
        let url = format!("http://{}/", server.address);
        let spec = http_check(&url, "timeout = \"300ms\"\n");
        let started = tokio::time::Instant::now();
        let result = run_once(&spec).await;
        let took = started.elapsed();
        must_have_status(&result, CheckStatus::Critical);
        assert_eq!(result.summary, format!("timed out after 300ms: GET {url}"));
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(server.requests().len(), 1, "the request was sent");
    }

    #[tokio::test]
    async fn a_connection_closed_without_answer_is_critical() {
        let server = HttpServer::start(Reply::Close).await;
        let url = format!("http://{}/", server.address);
        let result = run_once(&http_check(&url, "")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result.summary.starts_with(&format!("GET {url} failed: ")),
            "{}",
            result.summary
        );
    }

    #[tokio::test]
    async fn https_is_verified_against_ca_or_the_system_roots() {
        let pki = TestPki::new();
        let server =
            HttpServer::start_tls(Reply::new(200, "secure"), pki.server_config(None)).await;
        let url = format!("https://{}/", server.address);
        let ca = pki.ca.display();

        let with_ca = run_once(&http_check(&url, &format!("ca = \"{ca}\"\n"))).await;
        must_have_status(&with_ca, CheckStatus::Ok);
        assert!(
            with_ca.summary.starts_with("HTTP 200 in "),
            "{}",
            with_ca.summary
        );

        // The system roots do not know Leitstand's test CA.
        let without = run_once(&http_check(&url, "")).await;
        must_have_status(&without, CheckStatus::Critical);
        assert!(
            without
                .summary
                .starts_with(&format!("TLS handshake with {} failed: ", server.address))
                && without.summary.contains("UnknownIssuer"),
            "{}",
            without.summary
        );

        let unverified = run_once(&http_check(&url, "tls_verify = false\n")).await;
        must_have_status(&unverified, CheckStatus::Ok);
    }

    #[tokio::test]
    async fn https_verifies_the_name_too() {
        let pki = TestPki::new();
        let server = HttpServer::start_tls(Reply::new(200, "ok"), pki.server_config(None)).await;
        // The certificate is for 127.0.0.1, not for "localhost".
        let url = format!("https://localhost:{}/", server.address.port());
        let result = run_once(&http_check(
            &url,
            &format!("ca = \"{}\"\n", pki.ca.display()),
        ))
        .await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result
                .summary
                .contains("certificate not valid for name \"localhost\""),
            "{}",
            result.summary
        );
    }

    #[tokio::test]
    async fn https_to_a_tls_1_2_only_server() {
        let pki = TestPki::new();
        let server = HttpServer::start_tls(
            Reply::new(200, "old but fine"),
            pki.server_config(Some(&rustls::version::TLS12)),
        )
        .await;
        let url = format!("https://{}/", server.address);
        let result = run_once(&http_check(
            &url,
            &format!("ca = \"{}\"\n", pki.ca.display()),
        ))
        .await;
        must_have_status(&result, CheckStatus::Ok);
    }
}
