//! `kind = "grpc"`: `grpc.health.v1.Health/Check` for `service` ("" is
//! the whole server), in plaintext or, with `tls = true`, over TLS verified
//! against the system roots or `ca`.
//!
//! SERVING is OK, NOT_SERVING CRITICAL; SERVICE_UNKNOWN, UNKNOWN, a service
//! the server does not know (NOT_FOUND) and a server without the health
//! service (UNIMPLEMENTED) are UNKNOWN. No connection, a failed handshake,
//! another RPC error or no answer within the timeout is CRITICAL.

use std::io;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::net::{self, Target, TlsTarget};
use leitstand_proto::error_chain;

use super::{Outcome, format_ms, perf};

/// Bytes of a `service` name, at most.
pub(crate) const MAX_SERVICE_BYTES: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct GrpcProbe {
    pub(crate) target: Target,
    pub(crate) service: String,
    pub(crate) tls: Option<TlsTarget>,
}

impl GrpcProbe {
    pub(super) fn describe(&self) -> String {
        format!("gRPC health check of {:?} at {}", self.service, self.target)
    }

    /// Connects, asks once, closes; the caller bounds the time.
    pub(super) async fn run(&self, started: Instant) -> Outcome {
        // The scheme is http because TLS (if any) happens in our connector.
        let endpoint = match Endpoint::from_shared(format!("http://{}", self.target)) {
            Ok(endpoint) => endpoint,
            Err(e) => return Outcome::unknown(format!("{} is not usable: {e}", self.target)),
        };
        let target = self.target.clone();
        let tls = self.tls.clone();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let target = target.clone();
            let tls = tls.clone();
            async move {
                net::connect(&target, tls.as_ref())
                    .await
                    .map(TokioIo::new)
                    .map_err(io::Error::other)
            }
        });
        let channel = match endpoint.connect_with_connector(connector).await {
            Ok(channel) => channel,
            Err(e) => {
                return Outcome::critical(format!(
                    "no gRPC connection to {}: {}",
                    self.target,
                    error_chain(&e)
                ));
            }
        };
        let request = HealthCheckRequest {
            service: self.service.clone(),
        };
        let answer = HealthClient::new(channel).check(request).await;
        let took = started.elapsed();
        let what = format!("gRPC health of {:?} at {}", self.service, self.target);
        let outcome = match answer {
            Ok(response) => {
                let status = ServingStatus::try_from(response.into_inner().status)
                    .unwrap_or(ServingStatus::Unknown);
                let summary = format!("{what}: {} in {}", status.as_str_name(), format_ms(took));
                match status {
                    ServingStatus::Serving => Outcome::ok(summary),
                    ServingStatus::NotServing => Outcome::critical(summary),
                    ServingStatus::ServiceUnknown | ServingStatus::Unknown => {
                        Outcome::unknown(summary)
                    }
                }
            }
            Err(status) => {
                // The transport's reason, if any, hides in the source.
                let mut detail = status.message().to_owned();
                if let Some(cause) = std::error::Error::source(&status) {
                    let cause = error_chain(cause);
                    if cause.starts_with(&detail) {
                        detail = cause;
                    } else if !detail.contains(&cause) {
                        detail = format!("{detail}: {cause}");
                    }
                }
                let text = format!("{what}: {:?}: {detail}", status.code());
                match status.code() {
                    tonic::Code::NotFound | tonic::Code::Unimplemented => Outcome::unknown(text),
                    _ => Outcome::critical(text),
                }
            }
        };
        outcome.with_perf(vec![perf("time", took.as_secs_f64(), "s")])
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use leitstand_proto::v1::CheckStatus;
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::server::HealthReporter;

    use super::super::run_once;
    use super::super::test_support::*;

    /// A tonic server with only the health service, on 127.0.0.1.
    async fn health_server() -> (SocketAddr, HealthReporter, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (reporter, service) = tonic_health::server::health_reporter();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        (address, reporter, task)
    }

    fn grpc_check(address: SocketAddr, extra: &str) -> super::super::CheckSpec {
        must_parse_one(&format!(
            "name = \"api\"\nkind = \"grpc\"\ntarget = \"{address}\"\n{extra}"
        ))
    }

    #[tokio::test]
    async fn serving_then_not_serving() {
        let (address, reporter, server) = health_server().await;
        reporter
            .set_service_status("leitstand.Dispatch", tonic_health::ServingStatus::Serving)
            .await;
        let spec = grpc_check(address, "service = \"leitstand.Dispatch\"\n");

        let result = run_once(&spec).await;
        must_have_status(&result, CheckStatus::Ok);
        assert!(
            result.summary.starts_with(&format!(
                "gRPC health of \"leitstand.Dispatch\" at {address}: SERVING in "
            )),
            "{}",
            result.summary
        );
        assert_eq!(result.perf[0].label, "time");

        reporter
            .set_service_status(
                "leitstand.Dispatch",
                tonic_health::ServingStatus::NotServing,
            )
            .await;
        let result = run_once(&spec).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result.summary.contains(": NOT_SERVING in "),
            "{}",
            result.summary
        );

        reporter
            .set_service_status("leitstand.Dispatch", tonic_health::ServingStatus::Unknown)
            .await;
        must_have_status(&run_once(&spec).await, CheckStatus::Unknown);

        // The whole server ("") is SERVING; an unknown service is UNKNOWN.
        must_have_status(&run_once(&grpc_check(address, "")).await, CheckStatus::Ok);
        let result = run_once(&grpc_check(address, "service = \"nope\"\n")).await;
        must_have_status(&result, CheckStatus::Unknown);
        assert!(result.summary.contains("NotFound"), "{}", result.summary);
        server.abort();
    }

    #[tokio::test]
    async fn no_server_is_critical() {
        let port = free_port().await;
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let result = run_once(&grpc_check(address, "")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result
                .summary
                .starts_with(&format!("no gRPC connection to {address}: "))
                && result.summary.contains("refused"),
            "{}",
            result.summary
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_critical_at_the_timeout() {
        // Accepts TCP but never speaks HTTP/2.
        let server = HttpServer::start(Reply::Silent).await;
        let address = server.address;
        let result = run_once(&grpc_check(address, "timeout = \"300ms\"\n")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert_eq!(
            result.summary,
            format!("timed out after 300ms: gRPC health check of \"\" at {address}")
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_grpc_is_critical() {
        let server = HttpServer::start(Reply::new(200, "plain HTTP/1.1")).await;
        let result = run_once(&grpc_check(server.address, "")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result.summary.starts_with(&format!(
                "gRPC health of \"\" at {}: Unknown: transport error",
                server.address
            )),
            "{}",
            result.summary
        );
    }

    #[tokio::test]
    async fn over_tls() {
        let pki = TestPki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (_reporter, service) = tonic_health::server::health_reporter();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.grpc_server_config());
        let incoming = tls_incoming(listener, acceptor);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        let ca = format!("ca = \"{}\"\n", pki.ca.display());
        let result = run_once(&grpc_check(address, &format!("tls = true\n{ca}"))).await;
        must_have_status(&result, CheckStatus::Ok);

        // Without our CA the system roots refuse the certificate.
        let result = run_once(&grpc_check(address, "tls = true\n")).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result.summary.contains("UnknownIssuer"),
            "{}",
            result.summary
        );
        server.abort();
    }
}
