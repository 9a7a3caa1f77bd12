//! The agent's own Prometheus `/metrics` (off by default; `metrics_listen`,
//! loopback only): the latest report it built, with the metric names the
//! controllers export for it (OpenTelemetry host-metrics conventions in
//! Prometheus form), so a local scraper and the central one agree. Written
//! by hand: the agent must stay small and never links the OpenTelemetry
//! SDK. Bounded like the controller's endpoint: a few connections at once,
//! a capped request head, a timeout per exchange.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4;
const MAX_REQUEST_HEAD_BYTES: usize = 8 << 10;
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The latest report, as the reporter publishes it.
pub(crate) type Published = watch::Receiver<Option<Arc<v1::Report>>>;

/// Serves `/metrics` on `listener` until `stop` is set.
pub(crate) async fn serve(
    listener: TcpListener,
    agent_id: String,
    published: Published,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let agent_id = agent_id.clone();
        let published = published.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let exchange = async {
                let mut head = Vec::with_capacity(512);
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buffer).await.ok()?;
                    if n == 0 || head.len() + n > MAX_REQUEST_HEAD_BYTES {
                        return None;
                    }
                    head.extend_from_slice(&buffer[..n]);
                }
                let response = if head.starts_with(b"GET /metrics ") {
                    let report = published.borrow().clone();
                    let body = render(&agent_id, report.as_deref());
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                stream.write_all(response.as_bytes()).await.ok()
            };
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await;
        });
    }
}

/// Prometheus text exposition of `report`.
fn render(agent_id: &str, report: Option<&v1::Report>) -> String {
    let agent = escape(agent_id);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{agent_id=\"{agent}\"{labels}}} {value}");
        }
    };
    gauge(
        "leitstand_agent_up",
        "1 while this agent runs",
        &[(String::new(), 1.0)],
    );
    let Some(report) = report else {
        return out;
    };
    if let Some(host) = &report.host {
        gauge(
            "system_cpu_utilization_ratio",
            "Share of CPU time not idle, all cores",
            &[(String::new(), host.cpu_utilization)],
        );
        gauge(
            "system_cpu_load_average_1m",
            "Load average over 1 minute",
            &[(String::new(), host.load_average_1m)],
        );
        gauge(
            "system_memory_usage_bytes",
            "Memory in use",
            &[(
                ",system_memory_state=\"used\"".into(),
                host.memory_used_bytes as f64,
            )],
        );
        gauge(
            "system_memory_limit_bytes",
            "Total memory",
            &[(String::new(), host.memory_total_bytes as f64)],
        );
        gauge(
            "system_uptime_seconds",
            "Time since boot",
            &[(String::new(), host.uptime_seconds as f64)],
        );
    }
    let checks: Vec<(String, f64)> = report
        .checks
        .iter()
        .map(|check| {
            // Nagios codes: 0 ok, 1 warning, 2 critical, 3 unknown.
            let code = match v1::CheckStatus::try_from(check.status) {
                Ok(v1::CheckStatus::Ok) => 0.0,
                Ok(v1::CheckStatus::Warning) => 1.0,
                Ok(v1::CheckStatus::Critical) => 2.0,
                _ => 3.0,
            };
            (format!(",check=\"{}\"", escape(&check.name)), code)
        })
        .collect();
    gauge(
        "leitstand_check_status",
        "Latest result of each check (Nagios codes: 0 ok, 1 warning, 2 critical, 3 unknown)",
        &checks,
    );
    out
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_latest_report_on_loopback_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (publish, published) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve(listener, "ww-1".into(), published, stop));
        publish.send_replace(Some(Arc::new(v1::Report {
            seq: 1,
            observed_at_unix_ms: 1,
            host: Some(v1::HostMetrics {
                cpu_utilization: 0.25,
                memory_used_bytes: 512,
                memory_total_bytes: 1024,
                ..Default::default()
            }),
            checks: vec![v1::CheckResult {
                name: "uplink-fiber".into(),
                status: v1::CheckStatus::Critical as i32,
                ..Default::default()
            }],
        })));
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("send");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            answer
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        for line in [
            "leitstand_agent_up{agent_id=\"ww-1\"} 1",
            "system_cpu_utilization_ratio{agent_id=\"ww-1\"} 0.25",
            "system_memory_usage_bytes{agent_id=\"ww-1\",system_memory_state=\"used\"} 512",
            "leitstand_check_status{agent_id=\"ww-1\",check=\"uplink-fiber\"} 2",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
        }
        assert!(get("/secrets").await.starts_with("HTTP/1.1 404"));
        stop_tx.send_replace(true);
        server.await.expect("the server stops");
    }
}
