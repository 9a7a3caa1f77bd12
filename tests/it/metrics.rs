//! Metrics into real monitoring: three controller processes and an agent,
//! scraped by Debian's `prometheus` binary; the series are asserted through
//! Prometheus' HTTP query API. The same scrape checks that every metric the
//! Grafana dashboard (deploy/grafana/leitstand.json) queries exists, and
//! the `/metrics` endpoint's refusals. CI installs `prometheus` (.ci/run).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Process, free_port, site_pki, wait_until};

/// A child process killed on drop.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Prometheus, or a failure saying how to get it.
fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("prometheus"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    found.unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is not installed: run the install step of .ci/run \
             (apt-get install prometheus, as CI does) and run the tests again"
        )
    })
}

/// One HTTP/1.0 GET on loopback: (status code, body). Bounded by 10 s.
pub(crate) fn http_get(address: &str, target: &str) -> (u16, String) {
    http_request(
        address,
        &format!("GET {target} HTTP/1.0\r\nHost: {address}\r\n\r\n"),
    )
}

pub(crate) fn http_request(address: &str, request: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from {address}: {head:?}"));
    (status, body.to_owned())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running Prometheus scraping `targets` every second.
struct Prometheus {
    address: String,
    _process: Guard,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[String]) -> Prometheus {
        let binary = prometheus_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let listed: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: leitstand\n    static_configs:\n      - targets: [{}]\n",
                listed.join(", ")
            ),
        )
        .expect("prometheus.yml");
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            address,
            _process: Guard(child),
            _dir: dir,
        };
        wait_until("Prometheus to be ready", Duration::from_secs(30), || {
            TcpStream::connect(&prometheus.address).is_ok()
                && http_get(&prometheus.address, "/-/ready").0 == 200
        });
        prometheus
    }

    /// The result vector of an instant query: (labels, value) per series.
    fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, body) = http_get(
            &self.address,
            &format!("/api/v1/query?query={}", percent_encode(promql)),
        );
        assert_eq!(status, 200, "query {promql}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        answer["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {promql}: no result vector in {body}"))
            .iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect()
    }

    /// Waits until `promql` returns `count` series that all satisfy `ok`.
    // A blocking test thread without a runtime: std's Instant, as in support.rs.
    #[allow(clippy::disallowed_types)]
    fn must_see(
        &self,
        promql: &str,
        count: usize,
        ok: impl Fn(f64) -> bool,
    ) -> Vec<(serde_json::Value, f64)> {
        let within = Duration::from_secs(45);
        let deadline = std::time::Instant::now() + within;
        loop {
            let series = self.query(promql);
            if series.len() == count && series.iter().all(|(_, v)| ok(*v)) {
                return series;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus did not show {count} series of `{promql}` with plausible values within {within:?}; it shows: {series:?}"
            );
            crate::support::pause_between_polls();
        }
    }
}

/// Three controllers with `metrics_listen`, and an agent with two checks.
pub(crate) struct Lab {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) listen: Vec<String>,
    pub(crate) metrics: Vec<String>,
}

impl Lab {
    /// Writes the PKI and configurations; `telemetry` is appended to every
    /// controller.toml.
    pub(crate) fn new(controllers: usize, telemetry: &str) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids: Vec<String> = (1..=controllers).map(|i| i.to_string()).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        site_pki(&dir.path().join("pki"), &id_refs, &["leitstelle-1"]);
        let listen: Vec<String> = (0..controllers)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let metrics: Vec<String> = (0..controllers)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = listen
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{} = \"{a}\"", i + 1))
            .collect();
        for id in 1..=controllers {
            std::fs::write(
                dir.path().join(format!("controller-{id}.toml")),
                format!(
                    "node_id = {id}\nlisten = \"{}\"\ndata_dir = \"data-{id}\"\nmetrics_listen = \"{}\"\n\
                     [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-{id}.pem\"\nkey = \"pki/controller-{id}.key\"\n\
                     [cluster]\npeers = {{ {} }}\n{telemetry}",
                    listen[id - 1],
                    metrics[id - 1],
                    peers.join(", ")
                ),
            )
            .expect("controller.toml");
        }
        let controllers: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "id = \"leitstelle-1\"\ncontrollers = [{}]\ninterval = \"200ms\"\nstate_dir = \"agent-state\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-leitstelle-1.pem\"\nkey = \"pki/agent-leitstelle-1.key\"\n\
                 [[check]]\nname = \"dispatch-ok\"\nkind = \"exec\"\n\
                 argv = [\"/usr/lib/nagios/plugins/check_dummy\", \"0\", \"fine\"]\ninterval = \"200ms\"\n\
                 [[check]]\nname = \"radio-down\"\nkind = \"exec\"\n\
                 argv = [\"/usr/lib/nagios/plugins/check_dummy\", \"2\", \"down\"]\ninterval = \"200ms\"\n",
                controllers.join(", ")
            ),
        )
        .expect("agent.toml");
        Lab {
            dir,
            listen,
            metrics,
        }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    pub(crate) fn start_controller(&self, id: usize, extra: &[&str]) -> Process {
        let config = self.path(&format!("controller-{id}.toml"));
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["controller", "--config", &config]);
        let p = Process::start(&format!("controller {id}"), &args);
        p.must_log(&["controller serving"]);
        p
    }

    pub(crate) fn start_agent(&self, extra: &[&str]) -> Process {
        let config = self.path("agent.toml");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["agent", "--config", &config]);
        Process::start("agent", &args)
    }
}

/// The sample names (before `{` or the value) of a text exposition.
pub(crate) fn sample_names(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The Leitstand and host metric names a dashboard's PromQL mentions.
fn dashboard_metric_names(dashboard: &Path) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(dashboard).expect("read the dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(!exprs.is_empty(), "no PromQL in {}", dashboard.display());
    exprs
        .iter()
        .flat_map(|expr| {
            // Label matchers (`{…}`) name labels, not metrics.
            let mut outside = String::new();
            let mut depth = 0usize;
            for c in expr.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    c if depth == 0 => outside.push(c),
                    _ => {}
                }
            }
            outside
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|token| {
                    ["leitstand_", "system_", "hw_"]
                        .iter()
                        .any(|prefix| token.starts_with(prefix))
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn collect_exprs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(expr)) => into.push(expr.clone()),
                    _ => collect_exprs(value, into),
                }
            }
        }
        serde_json::Value::Array(values) => values.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

#[test]
fn prometheus_shows_the_clusters_series_and_every_dashboard_metric_exists() {
    // Fail early, before building a cluster, when Prometheus is missing.
    prometheus_binary();
    let lab = Lab::new(3, "");
    let _controllers: Vec<Process> = (1..=3).map(|id| lab.start_controller(id, &[])).collect();
    let agent = lab.start_agent(&[]);
    agent.must_log(&["connected to controller"]);
    let prometheus = Prometheus::start(&lab.metrics);

    // Every controller is scraped.
    prometheus.must_see("up{job=\"leitstand\"} == 1", 3, |v| v == 1.0);

    // Raft: a term, one leader, commits applied, followers seen by the leader.
    prometheus.must_see("leitstand_raft_term >= 1", 3, |v| v >= 1.0);
    prometheus.must_see("sum(leitstand_raft_is_leader)", 1, |v| v == 1.0);
    prometheus.must_see("leitstand_raft_commit_index >= 1", 3, |v| v >= 1.0);
    prometheus.must_see("leitstand_raft_applied_index >= 1", 3, |v| v >= 1.0);
    prometheus.must_see("leitstand_raft_leader_changes_total >= 1", 3, |v| v >= 1.0);
    let lag = prometheus.must_see("leitstand_raft_follower_lag", 2, |v| {
        (0.0..1000.0).contains(&v)
    });
    for (labels, _) in &lag {
        assert!(
            labels["peer"].is_string(),
            "follower lag is labelled by peer: {labels}"
        );
    }
    // Every link is exported; every controller has sent on some (followers
    // only to the leader).
    prometheus.must_see("count(leitstand_raft_peer_messages_sent_total)", 1, |v| {
        v == 6.0
    });
    prometheus.must_see(
        "sum by (instance) (leitstand_raft_peer_messages_sent_total) > 0",
        3,
        |v| v > 0.0,
    );

    // Host metrics, under the semantic-convention names, by agent id.
    let agent_id = "agent_id=\"leitstelle-1\"";
    prometheus.must_see(
        &format!("system_memory_usage_bytes{{{agent_id},system_memory_state=\"used\"}} > 0"),
        1,
        |v| v > 1e6,
    );
    prometheus.must_see(
        &format!("system_memory_limit_bytes{{{agent_id}}}"),
        1,
        |v| v > 1e6,
    );
    prometheus.must_see(
        &format!("system_memory_utilization_ratio{{{agent_id}}}"),
        1,
        |v| v > 0.0 && v <= 1.0,
    );
    prometheus.must_see(
        &format!("system_cpu_utilization_ratio{{{agent_id}}}"),
        1,
        |v| (0.0..=1.0).contains(&v),
    );
    prometheus.must_see(&format!("system_uptime_seconds{{{agent_id}}}"), 1, |v| {
        v > 0.0
    });
    let filesystems = prometheus.query(&format!(
        "system_filesystem_usage_bytes{{{agent_id},system_filesystem_state=\"used\"}}"
    ));
    assert!(
        !filesystems.is_empty()
            && filesystems
                .iter()
                .all(|(labels, _)| labels["system_filesystem_mountpoint"].is_string()),
        "file systems by mount point: {filesystems:?}"
    );
    let network = prometheus.query(&format!("system_network_io_bytes_total{{{agent_id}}}"));
    assert!(
        network
            .iter()
            .any(|(labels, _)| labels["network_io_direction"] == "receive"),
        "network I/O by interface and direction: {network:?}"
    );

    // Checks: 0 OK, 2 CRITICAL (Nagios codes), and the agent's session.
    prometheus.must_see(
        &format!("leitstand_check_status{{{agent_id},check=\"dispatch-ok\"}}"),
        1,
        |v| v == 0.0,
    );
    prometheus.must_see(
        &format!("leitstand_check_status{{{agent_id},check=\"radio-down\"}}"),
        1,
        |v| v == 2.0,
    );
    prometheus.must_see(
        &format!("leitstand_agent_connected{{{agent_id}}}"),
        1,
        |v| v == 1.0,
    );
    prometheus.must_see("sum(leitstand_reports_accepted_total)", 1, |v| v >= 1.0);
    prometheus.must_see("leitstand_decisions_total{outcome=\"succeeded\"}", 3, |v| {
        v == 0.0
    });

    // A deliberately bad connection: plain HTTP to controller 1's TLS port.
    {
        let mut stream = TcpStream::connect(&lab.listen[0]).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: leitstand\r\n\r\n");
        let mut ignored = Vec::new();
        let _ = stream.read_to_end(&mut ignored);
    }
    prometheus.must_see(
        &format!(
            "sum by (reason) (leitstand_tls_handshakes_rejected_total{{instance=\"{}\",reason!=\"closed_before_handshake\"}}) > 0",
            lab.metrics[0]
        ),
        1,
        |v| v >= 1.0,
    );
    prometheus.must_see(
        "count(leitstand_inputs_rejected_total{reason=\"wrong_certificate_kind\"})",
        1,
        |v| v == 3.0,
    );

    // The dashboard asks only for metrics a real scrape has.
    // From the leader that holds the agent's report: if leadership moved
    // (a loaded machine), wait until the agent reports to the new one.
    let mut exported = Default::default();
    let mut leader = 0;
    wait_until(
        "a leader's /metrics with the agent's host metrics",
        Duration::from_secs(30),
        || {
            (0..3).any(|i| {
                let (status, exposition) = http_get(&lab.metrics[i], "/metrics");
                let leads = exposition
                    .lines()
                    .any(|l| l == "leitstand_raft_is_leader 1");
                let names = sample_names(&exposition);
                let ready = status == 200 && leads && names.contains("system_memory_usage_bytes");
                if ready {
                    exported = names;
                    leader = i;
                }
                ready
            })
        },
    );
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/leitstand.json");
    let wanted = dashboard_metric_names(&dashboard);
    assert!(wanted.len() >= 10, "the dashboard queries {wanted:?}");
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/leitstand.json queries metrics the controller does not export: {missing:?}\nexported: {exported:?}"
    );

    // The endpoint serves GET /metrics and nothing else.
    let endpoint = &lab.metrics[leader];
    assert_eq!(http_get(endpoint, "/").0, 404);
    assert_eq!(http_get(endpoint, "/metrics/../").0, 404);
    assert_eq!(
        http_request(
            endpoint,
            "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
        )
        .0,
        405
    );
    let huge = format!(
        "GET /metrics HTTP/1.0\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(
        http_request(endpoint, &huge).0,
        400,
        "an oversized request head"
    );
}
