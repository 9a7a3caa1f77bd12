//! Benchmarks with the reference of DESIGN.md §10 measured in the same run.
//!
//! `leitstand bench agent [--seconds N]`: the release `leitstand-agent` with
//! 10 checks at 1 s (5 tcp, 3 http, 2 exec) reporting to a local controller,
//! next to Debian's `prometheus-node-exporter` scraped once a second; both
//! sampled from /proc once a second. Prints one JSON object.
//!
//! `leitstand bench raft`: three controller processes next to a three-member
//! etcd (`raft.rs`; the processes and their clients in `cluster.rs`).
//!
//! `leitstand bench failover`: a broken active path until the executor
//! starts the action, next to keepalived's VRRP between two network
//! namespaces (`failover.rs`, `keepalived.rs`).
//!
//! `leitstand bench ingest [--agents N]`: simulated agents, each with its own
//! mTLS session, reporting once a second to three controllers (`ingest.rs`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};

mod cluster;
mod dashboard;
mod etcd;
mod failover;
mod ingest;
mod keepalived;
mod raft;

/// Budgets of DESIGN.md §10 for the agent.
const RSS_BUDGET_KIB: u64 = 10 * 1024;

/// The benchmarks `leitstand bench` knows.
pub const NAMES: &[&str] = &["agent", "raft", "dashboard", "failover", "ingest"];

/// Measurement time of the agent benchmark unless `--seconds` says otherwise.
const AGENT_DEFAULT_SECONDS: u64 = 120;

/// What `leitstand bench` was asked for; each benchmark reads its part.
#[derive(Debug, Clone)]
pub struct Options {
    /// agent: how long to sample; raft: the throughput phase.
    pub seconds: Option<u64>,
    /// raft: leader kills to time; failover: paths to break.
    pub trials: u64,
    /// raft: sequential proposals for the commit latency.
    pub proposals: u64,
    /// raft: measure etcd too when it is on PATH.
    pub etcd: bool,
    /// raft, failover: the binary run as `controller` (default: the running one).
    pub controller_binary: Option<PathBuf>,
    /// failover: measure keepalived too when it runs here (root, installed).
    pub keepalived: bool,
    /// ingest: simulated agents, each with its own certificate and session.
    pub agents: u64,
}

/// Runs benchmark `name` and returns its JSON report.
pub async fn run(name: &str, options: &Options) -> anyhow::Result<serde_json::Value> {
    match name {
        "agent" => agent(options.seconds.unwrap_or(AGENT_DEFAULT_SECONDS)).await,
        "raft" => raft::run(options).await,
        "dashboard" => dashboard::run(),
        "failover" => failover::run(options).await,
        "ingest" => ingest::run(options).await,
        other => bail!("unknown benchmark {other:?}; known: {}", NAMES.join(", ")),
    }
}

/// Runs `measure` in a fresh temporary directory named after `name`, until
/// it ends, Ctrl-C or SIGTERM; then removes the directory. Dropping the
/// measurement kills every process it started (their guards' Drop).
async fn in_scratch_dir<F, Fut>(name: &str, measure: F) -> anyhow::Result<serde_json::Value>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = anyhow::Result<serde_json::Value>>,
{
    let dir = tempfile::Builder::new()
        .prefix(&format!("leitstand-bench-{name}-"))
        .tempdir()
        .context("create a temporary directory")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install a SIGTERM handler")?;
    let outcome = tokio::select! {
        result = measure(dir.path().to_owned()) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    if outcome.is_err() {
        // The processes dropped with the measurement have been sent
        // SIGKILL; give them a moment to exit before their files go.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let path = dir.path().to_owned();
    if let Err(e) = dir.close() {
        tracing::warn!("could not remove {}: {e}", path.display());
    }
    outcome
}

/// Memory and CPU of one process, from /proc.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    /// utime + stime in clock ticks.
    cpu_ticks: u64,
    /// cutime + cstime: reaped children (the agent's exec checks).
    children_ticks: u64,
}

fn sample(pid: u32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces, in parentheses.
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // stat(5): utime is field 14, stime 15, cutime 16, cstime 17; `after` starts at field 3.
    let at = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    Ok(Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_ticks: at(14) + at(15),
        children_ticks: at(16) + at(17),
    })
}

fn clock_ticks_per_second() -> u64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; getconf confirms.
    Command::new("getconf")
        .arg("CLK_TCK")
        .stderr(Stdio::null())
        .output_bounded()
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(100)
}

trait OutputBounded {
    fn output_bounded(&mut self) -> Option<String>;
}

impl OutputBounded for Command {
    /// stdout of a short command that prints one line.
    fn output_bounded(&mut self) -> Option<String> {
        let mut child = self.stdout(Stdio::piped()).spawn().ok()?;
        let mut text = String::new();
        child
            .stdout
            .take()?
            .take(4096)
            .read_to_string(&mut text)
            .ok()?;
        child.wait().ok()?;
        Some(text)
    }
}

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

struct Measured {
    peak_kib: u64,
    steady_kib: u64,
    cpu_seconds: f64,
    children_cpu_seconds: f64,
}

fn summarize(samples: &[Sample], ticks: u64) -> Measured {
    let first = samples.first().copied().unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    let steady: Vec<u64> = samples[samples.len() / 2..]
        .iter()
        .map(|s| s.rss_kib)
        .collect();
    Measured {
        peak_kib: samples.iter().map(|s| s.hwm_kib).max().unwrap_or(0),
        steady_kib: median(steady),
        cpu_seconds: last.cpu_ticks.saturating_sub(first.cpu_ticks) as f64 / ticks as f64,
        children_cpu_seconds: last.children_ticks.saturating_sub(first.children_ticks) as f64
            / ticks as f64,
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn json_of(m: &Measured, seconds: u64) -> serde_json::Value {
    serde_json::json!({
        "rss_peak_kib": m.peak_kib,
        "rss_steady_kib": m.steady_kib,
        "cpu_seconds": m.cpu_seconds,
        "cpu_percent_of_one_core": 100.0 * m.cpu_seconds / seconds as f64,
        "children_cpu_seconds": m.children_cpu_seconds,
    })
}

/// A tiny HTTP/1.1 responder for the agent's http checks.
fn serve_http(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 2048];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
}

fn scrape(address: &str) -> anyhow::Result<usize> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = Vec::new();
    stream.take(64 << 20).read_to_end(&mut body)?;
    Ok(body.len())
}

fn free_address() -> anyhow::Result<String> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

fn agent_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("leitstand-agent");
    if !path.exists() {
        bail!(
            "{} is missing; build it first: cargo build --release -p leitstand-agent",
            path.display()
        );
    }
    Ok(path)
}

fn stripped_size(binary: &Path, dir: &Path) -> Option<u64> {
    let out = dir.join("leitstand-agent.stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .status()
        .ok()?;
    status
        .success()
        .then(|| std::fs::metadata(&out).ok().map(|m| m.len()))?
}

async fn agent(seconds: u64) -> anyhow::Result<serde_json::Value> {
    let exporter = Path::new("/usr/bin/prometheus-node-exporter");
    if !exporter.exists() {
        bail!(
            "the reference needs Debian's prometheus-node-exporter: apt-get install prometheus-node-exporter"
        );
    }
    let agent_bin = agent_binary()?;
    let dir = tempfile::tempdir()?;
    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir, "bench.leitstand.invalid", false)?;
    for (kind, name) in [
        (PeerKind::Controller, "1"),
        (PeerKind::Agent, "bench-agent"),
    ] {
        let loopback = kind == PeerKind::Controller;
        pki::issue(
            &pki_dir,
            &IssueRequest {
                kind,
                name: name.into(),
                dns: vec![],
                ips: if loopback {
                    vec![std::net::Ipv4Addr::LOCALHOST.into()]
                } else {
                    vec![]
                },
                validity: Validity::days_from_now(1),
                force: false,
            },
        )?;
    }
    std::fs::write(
        dir.path().join("controller.toml"),
        "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-1.pem\"\nkey = \"pki/controller-1.key\"\n[cluster]\npeers = { 1 = \"127.0.0.1:0\" }\n",
    )?;
    let controller = leitstand_controller::Controller::start(
        leitstand_controller::ControllerConfig::load(&dir.path().join("controller.toml"))?,
    )
    .await?;

    let tcp_target = TcpListener::bind("127.0.0.1:0")?;
    let tcp_address = tcp_target.local_addr()?;
    let http = TcpListener::bind("127.0.0.1:0")?;
    let http_address = http.local_addr()?;
    serve_http(http);
    let exec = if Path::new("/usr/lib/nagios/plugins/check_dummy").exists() {
        "[\"/usr/lib/nagios/plugins/check_dummy\", \"0\", \"bench\"]"
    } else {
        "[\"/bin/true\"]"
    };
    let mut checks = String::new();
    for i in 0..5 {
        checks.push_str(&format!("[[check]]\nname = \"tcp-{i}\"\nkind = \"tcp\"\ntarget = \"{tcp_address}\"\ninterval = \"1s\"\n"));
    }
    for i in 0..3 {
        checks.push_str(&format!("[[check]]\nname = \"http-{i}\"\nkind = \"http\"\nurl = \"http://{http_address}/\"\ninterval = \"1s\"\n"));
    }
    for i in 0..2 {
        checks.push_str(&format!(
            "[[check]]\nname = \"exec-{i}\"\nkind = \"exec\"\nargv = {exec}\ninterval = \"1s\"\n"
        ));
    }
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "id = \"bench-agent\"\ncontrollers = [\"{}\"]\ninterval = \"1s\"\nstate_dir = \"agent-state\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-bench-agent.pem\"\nkey = \"pki/agent-bench-agent.key\"\n{checks}",
            controller.local_addr()
        ),
    )?;

    let agent = Guard(
        Command::new(&agent_bin)
            .arg("--config")
            .arg(dir.path().join("agent.toml"))
            .env("LEITSTAND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start leitstand-agent")?,
    );
    let exporter_address = free_address()?;
    let node_exporter = Guard(
        Command::new(exporter)
            .arg(format!("--web.listen-address={exporter_address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start prometheus-node-exporter")?,
    );

    // Measure once the agent's first reports are acknowledged and
    // node_exporter answers a scrape.
    let ready = tokio::time::Instant::now() + Duration::from_secs(30);
    while controller.reports_accepted() < 2 || scrape(&exporter_address).is_err() {
        if tokio::time::Instant::now() > ready {
            bail!(
                "within 30 s, the agent delivered no reports or node_exporter did not answer on {exporter_address}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ticks = clock_ticks_per_second();
    let (mut agent_samples, mut exporter_samples) = (Vec::new(), Vec::new());
    let mut scraped_bytes = 0usize;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    for second in 0..=seconds {
        interval.tick().await;
        scraped_bytes += scrape(&exporter_address).context("scrape node_exporter")?;
        agent_samples.push(sample(agent.0.id()).context("the agent stopped during the benchmark")?);
        exporter_samples.push(sample(node_exporter.0.id())?);
        if second % 10 == 0 {
            tracing::info!(second, of = seconds, "benchmark running");
        }
    }
    let reports = controller.reports_accepted();
    drop(agent);
    drop(node_exporter);
    controller.shutdown(Duration::from_secs(2)).await?;

    let a = summarize(&agent_samples, ticks);
    let n = summarize(&exporter_samples, ticks);
    let binary_bytes = std::fs::metadata(&agent_bin)?.len();
    Ok(serde_json::json!({
        "benchmark": "agent",
        "seconds": seconds,
        "clock_ticks_per_second": ticks,
        "agent": {
            "checks": 10,
            "reports_accepted": reports,
            "binary_bytes": binary_bytes,
            "binary_stripped_bytes": stripped_size(&agent_bin, dir.path()),
            "measured": json_of(&a, seconds),
        },
        "node_exporter": {
            "scrapes": seconds + 1,
            "scraped_bytes": scraped_bytes,
            "measured": json_of(&n, seconds),
        },
        "budgets": {
            "rss_at_most_kib": RSS_BUDGET_KIB,
            "rss_ok": a.steady_kib <= RSS_BUDGET_KIB && a.peak_kib <= RSS_BUDGET_KIB,
            // The budget compares the agent with node_exporter, which runs no
            // checks; the plugins the exec checks start are shown apart.
            "cpu_ratio_agent_to_node_exporter": ratio(a.cpu_seconds, n.cpu_seconds),
            "cpu_ratio_with_check_plugins": ratio(a.cpu_seconds + a.children_cpu_seconds, n.cpu_seconds),
            "cpu_ok": a.cpu_seconds <= n.cpu_seconds / 2.0,
        },
    }))
}
