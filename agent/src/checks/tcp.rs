//! `kind = "tcp"`: OK when a TCP connection to `target` is established,
//! CRITICAL with the reason when it is refused, unreachable or too slow.

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::net::Target;
use super::{Outcome, format_ms, perf};

#[derive(Debug, Clone)]
pub(crate) struct TcpProbe {
    pub(crate) target: Target,
}

impl TcpProbe {
    pub(super) fn describe(&self) -> String {
        format!("TCP connect to {}", self.target)
    }

    /// Connects and closes at once; the caller bounds the time.
    pub(super) async fn run(&self, started: Instant) -> Outcome {
        let target = &self.target;
        match TcpStream::connect((target.host.as_str(), target.port)).await {
            Ok(stream) => {
                let took = started.elapsed();
                drop(stream);
                Outcome::ok(format!("TCP connect to {target} in {}", format_ms(took)))
                    .with_perf(vec![perf("time", took.as_secs_f64(), "s")])
            }
            Err(e) => Outcome::critical(format!("cannot connect to {target}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use leitstand_proto::v1::CheckStatus;

    use super::super::run_once;
    use super::super::test_support::*;

    #[tokio::test]
    async fn connect_is_ok() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let spec = must_parse_one(&format!(
            "name = \"db\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{port}\"\n"
        ));
        let result = run_once(&spec).await;
        must_have_status(&result, CheckStatus::Ok);
        assert!(
            result
                .summary
                .starts_with(&format!("TCP connect to 127.0.0.1:{port} in ")),
            "{}",
            result.summary
        );
        assert_eq!(result.perf.len(), 1);
        assert_eq!(
            (result.perf[0].label.as_str(), result.perf[0].unit.as_str()),
            ("time", "s")
        );
        assert!(result.perf[0].value > 0.0);
    }

    #[tokio::test]
    async fn refused_is_critical_with_the_reason() {
        let port = free_port().await;
        let spec = must_parse_one(&format!(
            "name = \"db\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{port}\"\n"
        ));
        let result = run_once(&spec).await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result
                .summary
                .starts_with(&format!("cannot connect to 127.0.0.1:{port}: "))
                && result.summary.contains("refused"),
            "{}",
            result.summary
        );
    }
}
