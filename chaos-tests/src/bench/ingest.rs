//! `leitstand bench ingest`: simulated agents, each with its own mTLS
//! `AgentGateway.Session`, reporting once a second to the leader of three
//! `leitstand controller` processes (`cluster.rs`); the handling latency of
//! every report (sent → its `Ack`), the reports handled per second and the
//! CPU of the leader, the followers and this process (DESIGN.md §10).
//!
//! The agents live in this process as tasks on its runtime: one certificate
//! (kind agent, name = agent id), one TLS connection and one stream each,
//! like the real agent's reporter. They connect through a bounded number of
//! concurrent handshakes, starting at member `i mod 3` and following
//! `NotLeader` hints; a connected agent reports at once on its own schedule,
//! its phase in the second spread evenly over all agents. Once all are
//! connected (or the ramp stalls), a measurement window of `--seconds`
//! counts only the reports sent within it.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use leitstand_proto::domain::bounds;
use leitstand_proto::error_chain;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::{ClientTls, TlsFiles};
use leitstand_proto::v1::agent_gateway_client::AgentGatewayClient;
use leitstand_proto::v1::{self, CheckStatus, agent_message, controller_message};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use super::Options;
use super::cluster::{Cluster, START_TIMEOUT};
use super::failover::{Machine, load_average, round3, summary, unix_ns};

/// Measurement window unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 60;
/// TLS handshakes (with the Hello → Welcome exchange) in flight at once:
/// enough to keep both cores busy during the ramp, few enough that none
/// runs into its 10 s handshake timeout.
const CONNECT_CONCURRENCY: usize = 32;
/// The ramp ends when every agent is connected, or when no agent connected
/// for this long, or at `RAMP_BASE + agents × RAMP_PER_AGENT`.
const RAMP_STALL: Duration = Duration::from_secs(30);
const RAMP_BASE: Duration = Duration::from_secs(60);
const RAMP_PER_AGENT: Duration = Duration::from_millis(20);
/// After the ramp, before the window: every agent on its schedule.
const SETTLE: Duration = Duration::from_secs(3);
/// After the window: how long acks of reports sent in it may still come.
const DRAIN: Duration = Duration::from_secs(5);
/// As the agent's reporter: Welcome or NotLeader within this time.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// As the agent's reporter: leader hints followed in a row before backing off.
const MAX_HINTS_IN_A_ROW: u32 = 3;
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// File descriptors beyond one per agent: logs, listeners, peers, the runtime.
const FD_MARGIN: u64 = 256;
/// Distinct error messages kept; the rest are counted as "other".
const MAX_DISTINCT_ERRORS: usize = 20;

/// DESIGN.md §10: 10 000 agents at 1 report/s on one 2-core machine, p99
/// handling ≤ 50 ms; aim: the same with ≤ 1 core.
const BUDGET_AGENTS: u64 = 10_000;
const BUDGET_P99_MS: f64 = 50.0;
const AIM_LEADER_CPU_PERCENT: f64 = 100.0;
/// Reports handled per second, as a share of one per connected agent, that
/// still counts as "1 report/s each" (the window's edges cut schedules).
const RATE_TOLERANCE: f64 = 0.99;

const CHECKS: [(&str, usize); 3] = [("tcp", 5), ("http", 3), ("exec", 2)];

pub(super) async fn run(options: &Options) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::Builder::new()
        .prefix("leitstand-bench-ingest-")
        .tempdir()
        .context("create a temporary directory")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install a SIGTERM handler")?;
    // Dropping the measurement aborts the agents' tasks and kills the
    // controllers (kill_on_drop); the certificate threads see `cancel`.
    let cancel = Arc::new(AtomicBool::new(false));
    let outcome = tokio::select! {
        result = measure(dir.path(), options, cancel.clone()) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow!("terminated")),
    };
    cancel.store(true, Ordering::Relaxed);
    let path = dir.path().to_owned();
    if let Err(e) = dir.close() {
        tracing::warn!("could not remove {}: {e}", path.display());
    }
    outcome
}

async fn measure(
    dir: &Path,
    options: &Options,
    cancel: Arc<AtomicBool>,
) -> anyhow::Result<serde_json::Value> {
    let agents = options.agents;
    if agents == 0 {
        bail!("--agents must be at least 1");
    }
    let seconds = options.seconds.unwrap_or(DEFAULT_SECONDS);
    must_have_open_files(agents)?;
    let binary = match &options.controller_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("find the running leitstand binary")?,
    };
    if !binary.is_file() {
        bail!(
            "{} is missing; build it first: cargo build --release -p leitstand",
            binary.display()
        );
    }
    let load_before = load_average();
    let mut cluster = Cluster::leitstand(dir, &binary)?;
    let pki_dir = dir.join("pki");
    let issuing = Instant::now();
    issue_agent_certificates(pki_dir.clone(), agents, cancel).await?;
    let issue_seconds = issuing.elapsed().as_secs_f64();
    tracing::info!(
        agents,
        seconds = round3(issue_seconds),
        "agent certificates issued; starting 3 controllers"
    );

    let outcome = measure_started(&mut cluster, pki_dir, agents, seconds).await;
    if outcome.is_err() {
        tracing::error!("the controllers' logs end:\n{}", cluster.log_tails());
    }
    cluster.stop().await;
    let (figures, during, setup) = outcome?;
    let budgets = budgets(agents, &figures);
    Ok(serde_json::json!({
        "benchmark": "ingest",
        "version": leitstand_proto::VERSION,
        "machine": {
            "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "during_window": during,
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "method": {
            "cluster": "3 `leitstand controller` processes on loopback (mTLS, fsync on), a fresh PKI; reports are soft state and not replicated, so the followers see only Raft heartbeats",
            "agents": format!("tasks in this process, one agent certificate each (kind agent, name = agent id), one TLS 1.3 connection and one AgentGateway.Session each; at most {CONNECT_CONCURRENCY} handshakes at once; agent i dials member i mod 3 first and follows NotLeader hints; Hello with 10 check names and a 1 s interval"),
            "reports": "one per second per agent, on a schedule whose phase in the second is spread evenly over the agents (missed ticks are skipped, not caught up); each with host metrics as the agent collects them (2 cores, 3 file systems, 2 interfaces, 1 temperature) and 10 check results (5 tcp, 3 http, 2 exec) with summaries and perfdata, timestamps from the wall clock, sequence numbers from 1",
            "handling_latency": "per report, on the agent's side: from handing the Report to its stream to receiving the Ack that covers its seq (TLS, HTTP/2, decode, validation, registry, engine hand-off, Ack); includes queueing in this process, which shares the machine",
            "window": format!("starts {} s after the ramp ends (every agent connected, or none for {} s); counts the reports sent within it; their acks may come up to {} s after it", SETTLE.as_secs(), RAMP_STALL.as_secs(), DRAIN.as_secs()),
            "reports_per_second_handled": "reports sent in the window and acknowledged, divided by the window's length",
            "cpu": "utime + stime from /proc/<pid>/stat at the window's start and end, as % of one core; the client (this process: every simulated agent) runs on the same machine and its CPU is shown apart",
            "percentiles": "median of an even count: mean of the middle two; p99: nearest rank",
        },
        "setup": setup,
        "figures": figures,
        "budgets": budgets,
        "certificates_issue_seconds": round3(issue_seconds),
    }))
}

type Measured = (serde_json::Value, serde_json::Value, serde_json::Value);

async fn measure_started(
    cluster: &mut Cluster,
    pki_dir: PathBuf,
    agents: u64,
    seconds: u64,
) -> anyhow::Result<Measured> {
    cluster.start().await?;
    let (_, view) = cluster.await_leader("after start", START_TIMEOUT).await?;
    let addresses = cluster.addresses();
    let pids: Vec<u32> = (0..addresses.len())
        .map(|i| {
            cluster
                .pid(i)
                .with_context(|| format!("member at {} is not running", addresses[i]))
        })
        .collect::<anyhow::Result<_>>()?;
    tracing::info!(
        leader = view.leader,
        agents,
        "leader elected; connecting the agents"
    );

    let (window_tx, window) = watch::channel(None);
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        addresses: addresses.clone(),
        pki_dir,
        agents,
        connecting: Semaphore::new(CONNECT_CONCURRENCY),
        origin: Instant::now(),
        window,
        stop,
        connected: AtomicU64::new(0),
        ever_connected: AtomicU64::new(0),
        gave_up: AtomicU64::new(0),
        redirects: AtomicU64::new(0),
        sent_in_window: AtomicU64::new(0),
        acked_in_window: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
    });
    let mut tasks = JoinSet::new();
    for index in 0..agents {
        tasks.spawn(simulated_agent(shared.clone(), index));
    }

    // The ramp.
    let ramp_started = Instant::now();
    let ramp_deadline = ramp_started + RAMP_BASE + RAMP_PER_AGENT * agents as u32;
    let mut last_progress = (0, Instant::now());
    let mut logged = Instant::now();
    loop {
        let connected = shared.connected.load(Ordering::Relaxed);
        let gave_up = shared.gave_up.load(Ordering::Relaxed);
        let now = Instant::now();
        if connected != last_progress.0 {
            last_progress = (connected, now);
        }
        if connected + gave_up >= agents {
            break;
        }
        if now - last_progress.1 >= RAMP_STALL || now >= ramp_deadline {
            tracing::warn!(
                connected,
                of = agents,
                "the ramp stalled or ran out of time; measuring the agents that are connected"
            );
            break;
        }
        if now - logged >= Duration::from_secs(2) {
            logged = now;
            tracing::info!(
                connected,
                of = agents,
                redirects = shared.redirects.load(Ordering::Relaxed),
                "connecting agents"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp_seconds = ramp_started.elapsed().as_secs_f64();
    let connected_at_start = shared.connected.load(Ordering::Relaxed);
    tracing::info!(
        connected = connected_at_start,
        of = agents,
        seconds = round3(ramp_seconds),
        "ramp done; measuring for {seconds} s"
    );
    tokio::time::sleep(SETTLE).await;
    // The leader may have changed during the ramp; its CPU is the one measured.
    let (leader, view) = cluster
        .await_leader("at the window's start", START_TIMEOUT)
        .await?;

    // The window.
    let ticks = super::clock_ticks_per_second();
    let machine = Machine::take();
    let start = Instant::now();
    let cpu_before = pids
        .iter()
        .map(|pid| super::sample(*pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client_before = super::sample(std::process::id())?;
    let end = start + Duration::from_secs(seconds);
    let _ = window_tx.send(Some(Window { start, end }));
    let mut next_log = start + Duration::from_secs(10);
    while Instant::now() < end {
        tokio::time::sleep_until(next_log.min(end)).await;
        if Instant::now() >= next_log {
            next_log += Duration::from_secs(10);
            tracing::info!(
                second = (Instant::now() - start).as_secs(),
                of = seconds,
                connected = shared.connected.load(Ordering::Relaxed),
                sent = shared.sent_in_window.load(Ordering::Relaxed),
                acked = shared.acked_in_window.load(Ordering::Relaxed),
                "measuring"
            );
        }
    }
    let cpu_after = pids
        .iter()
        .map(|pid| super::sample(*pid))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("a controller stopped during the window")?;
    let client_after = super::sample(std::process::id())?;
    let window_seconds = start.elapsed().as_secs_f64();
    let during = Machine::take().since(&machine);
    let connected_at_end = shared.connected.load(Ordering::Relaxed);

    // Acks of the window's last reports.
    let drain_deadline = Instant::now() + DRAIN;
    while shared.acked_in_window.load(Ordering::Relaxed)
        < shared.sent_in_window.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut tallies = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(tally) = joined {
                tallies.push(tally);
            }
        }
    })
    .await;
    if collected.is_err() {
        tracing::warn!("some agents did not stop within 10 s; aborting them");
        tasks.abort_all();
    }
    let after = cluster
        .await_leader("after the window", Duration::from_secs(10))
        .await
        .ok();
    let still_leader = after.is_some_and(|(position, v)| position == leader && v.term == view.term);

    let mut latencies = Vec::new();
    let (mut sent, mut acked, mut lost) = (0u64, 0u64, 0u64);
    for tally in &tallies {
        sent += tally.sent;
        acked += tally.acked;
        lost += tally.sessions_lost;
        latencies.extend(tally.latencies_us.iter().map(|us| f64::from(*us) / 1000.0));
    }
    let cpu_percent = |before: &super::Sample, after: &super::Sample| {
        let used = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks as f64;
        round3(100.0 * used / window_seconds)
    };
    let member = |i: usize| {
        serde_json::json!({
            "address": addresses[i],
            "cpu_percent_of_one_core": cpu_percent(&cpu_before[i], &cpu_after[i]),
            "rss_kib": cpu_after[i].rss_kib,
        })
    };
    let followers: Vec<serde_json::Value> = (0..addresses.len())
        .filter(|i| *i != leader)
        .map(member)
        .collect();
    let controllers_cpu: f64 = (0..addresses.len())
        .map(|i| cpu_percent(&cpu_before[i], &cpu_after[i]))
        .sum();
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let figures = serde_json::json!({
        "agents": agents,
        "agents_connected_at_window_start": connected_at_start,
        "agents_connected_at_window_end": connected_at_end,
        "agents_ever_connected": shared.ever_connected.load(Ordering::Relaxed),
        "agents_gave_up": shared.gave_up.load(Ordering::Relaxed),
        "not_leader_redirects_followed": shared.redirects.load(Ordering::Relaxed),
        "sessions_lost_in_window": lost,
        "ramp_seconds": round3(ramp_seconds),
        "window_seconds": round3(window_seconds),
        "reports_expected": connected_at_start * seconds,
        "reports_sent": sent,
        "reports_acked": acked,
        "reports_unacked": sent.saturating_sub(acked),
        "reports_per_second_handled": round3(acked as f64 / window_seconds),
        "handling_latency_ms": summary(&latencies),
        "leader": {
            "node_id": view.leader,
            "unchanged_through_the_window": still_leader,
            "raft_term_at_start": view.term,
            "raft_term_after": after.map(|(_, v)| v.term),
            "cpu_percent_of_one_core": cpu_percent(&cpu_before[leader], &cpu_after[leader]),
            "rss_kib": cpu_after[leader].rss_kib,
        },
        "followers": followers,
        "controllers_cpu_percent_of_one_core": round3(controllers_cpu),
        "client": {
            "cpu_percent_of_one_core": cpu_percent(&client_before, &client_after),
            "rss_kib": client_after.rss_kib,
            "note": "this process: every simulated agent, their TLS and HTTP/2; it shares the machine's cores with the controllers",
        },
        "errors": errors,
    });
    let setup = serde_json::json!({
        "agents": agents,
        "seconds": seconds,
        "report_interval_ms": REPORT_INTERVAL.as_millis() as u64,
        "checks_per_report": CHECKS.iter().map(|(_, n)| n).sum::<usize>(),
        "report_bytes": report_message(Simulated::new(0, agents).report()).encoded_len(),
        "connect_concurrency": CONNECT_CONCURRENCY,
        "clock_ticks_per_second": ticks,
    });
    Ok((figures, during, setup))
}

fn budgets(agents: u64, figures: &serde_json::Value) -> serde_json::Value {
    let connected = figures["agents_connected_at_window_end"]
        .as_u64()
        .unwrap_or(0)
        .min(
            figures["agents_connected_at_window_start"]
                .as_u64()
                .unwrap_or(0),
        );
    let rate = figures["reports_per_second_handled"]
        .as_f64()
        .unwrap_or(0.0);
    let p99 = figures["handling_latency_ms"]["p99"].as_f64();
    let leader_cpu = figures["leader"]["cpu_percent_of_one_core"]
        .as_f64()
        .unwrap_or(f64::INFINITY);
    let all_connected = connected == agents;
    let rate_ok = rate >= RATE_TOLERANCE * agents as f64;
    let p99_ok = p99.is_some_and(|p| p <= BUDGET_P99_MS);
    let cores_ok = std::thread::available_parallelism().is_ok_and(|n| n.get() <= 2);
    let full_scale = agents >= BUDGET_AGENTS;
    let ok = full_scale && cores_ok && all_connected && rate_ok && p99_ok;
    serde_json::json!({
        "agents_at_least": BUDGET_AGENTS,
        "full_scale": full_scale,
        "on_at_most_2_cores": cores_ok,
        "all_agents_connected": all_connected,
        "reports_per_second_at_least": RATE_TOLERANCE * agents as f64,
        "rate_ok": rate_ok,
        "p99_at_most_ms": BUDGET_P99_MS,
        "p99_ok": p99_ok,
        "ok": ok,
        "aim_leader_cpu_at_most_percent_of_one_core": AIM_LEADER_CPU_PERCENT,
        "aim_ok": ok && leader_cpu <= AIM_LEADER_CPU_PERCENT,
    })
}

/// The soft limit of open files must hold one connection per agent: in
/// this process, and in the leader, which inherits it.
fn must_have_open_files(agents: u64) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(words) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
    else {
        return Ok(());
    };
    // "Max open files <soft> <hard> files"; "unlimited" parses as no limit.
    let (Some(soft), hard) = (
        words.get(3).and_then(|w| w.parse::<u64>().ok()),
        words.get(4).copied().unwrap_or("?"),
    ) else {
        return Ok(());
    };
    let need = agents + FD_MARGIN;
    if soft < need {
        bail!(
            "{agents} agents need {need} open files in this process and in the leader (one connection per agent), but the soft limit is {soft} (hard: {hard}); raise it in the shell that starts the benchmark: ulimit -n {need}"
        );
    }
    Ok(())
}

fn agent_name(index: u64) -> String {
    format!("bench-{index:05}")
}

/// One certificate per agent, issued on every core; `cancel` stops the
/// threads when the benchmark is interrupted.
async fn issue_agent_certificates(
    pki_dir: PathBuf,
    agents: u64,
    cancel: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    tracing::info!(agents, "issuing agent certificates");
    tokio::task::spawn_blocking(move || {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let next = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            if index >= agents {
                                return Ok(());
                            }
                            if cancel.load(Ordering::Relaxed) {
                                bail!("cancelled");
                            }
                            let name = agent_name(index);
                            pki::issue(
                                &pki_dir,
                                &IssueRequest {
                                    kind: PeerKind::Agent,
                                    name: name.clone(),
                                    dns: vec![],
                                    ips: vec![],
                                    validity: Validity::days_from_now(1),
                                    force: false,
                                },
                            )
                            .with_context(|| format!("issue the certificate of agent {name}"))?;
                            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_multiple_of(1000) {
                                tracing::info!(issued = n, of = agents, "agent certificates");
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|worker| {
                worker
                    .join()
                    .map_err(|_| anyhow!("a certificate thread panicked"))?
            })
        })
    })
    .await
    .context("the certificate threads")?
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        self.start <= t && t < self.end
    }
}

/// What every agent task reads and counts into.
#[derive(Debug)]
struct Shared {
    addresses: Vec<String>,
    pki_dir: PathBuf,
    agents: u64,
    connecting: Semaphore,
    /// Every agent's schedule starts here, plus its phase.
    origin: Instant,
    window: watch::Receiver<Option<Window>>,
    stop: watch::Receiver<bool>,
    /// Agents with an open session now.
    connected: AtomicU64,
    ever_connected: AtomicU64,
    /// Agents that could not load their certificate: they never connect.
    gave_up: AtomicU64,
    redirects: AtomicU64,
    sent_in_window: AtomicU64,
    acked_in_window: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, what: String) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if errors.len() < MAX_DISTINCT_ERRORS || errors.contains_key(&what) {
            what
        } else {
            "other".to_owned()
        };
        *errors.entry(key).or_default() += 1;
    }

    fn in_window(&self, t: Instant) -> bool {
        self.window.borrow().is_some_and(|w| w.contains(t))
    }
}

/// What one agent counted for the reports it sent within the window.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked: u64,
    latencies_us: Vec<u32>,
    sessions_lost: u64,
}

enum Opened {
    Welcome(Box<Session>),
    NotLeader(Option<String>),
}

struct Session {
    outbound: mpsc::Sender<v1::AgentMessage>,
    inbound: tonic::Streaming<v1::ControllerMessage>,
}

enum SessionEnd {
    Stopped,
    NotLeader(Option<String>),
    Lost(String),
}

/// One simulated agent: its identity, schedule and report template.
struct Simulated {
    name: String,
    /// Offset of its reports within the second.
    phase: Duration,
    incarnation: u64,
    seq: u64,
    template: v1::Report,
}

impl Simulated {
    fn new(index: u64, agents: u64) -> Simulated {
        let phase = Duration::from_nanos(1_000_000_000 * index / agents.max(1));
        Simulated {
            name: agent_name(index),
            phase,
            incarnation: unix_ms().max(1) as u64,
            seq: 0,
            template: template(index),
        }
    }

    fn hello(&self) -> v1::AgentMessage {
        v1::AgentMessage {
            kind: Some(agent_message::Kind::Hello(v1::Hello {
                agent_id: self.name.clone(),
                version: leitstand_proto::VERSION.to_owned(),
                checks: check_names(),
                actions: vec![],
                report_interval_ms: REPORT_INTERVAL.as_millis() as u32,
                incarnation: self.incarnation,
            })),
        }
    }

    /// The next report: the template with this second's times and values.
    fn report(&mut self) -> v1::Report {
        self.seq += 1;
        let now = unix_ms();
        let wobble = (self.seq % 17) as f64 / 100.0;
        let mut report = self.template.clone();
        report.seq = self.seq;
        report.observed_at_unix_ms = now;
        if let Some(host) = &mut report.host {
            host.cpu_utilization = 0.05 + wobble;
            for core in &mut host.cpu_utilization_per_core {
                *core = 0.03 + wobble;
            }
            host.uptime_seconds += self.seq;
            for interface in &mut host.network_interfaces {
                interface.received_bytes += 1500 * self.seq;
                interface.transmitted_bytes += 900 * self.seq;
                interface.received_packets += 3 * self.seq;
                interface.transmitted_packets += 2 * self.seq;
            }
        }
        for (i, check) in report.checks.iter_mut().enumerate() {
            check.observed_at_unix_ms = now - 1 - i as i64;
            check.duration_us = 300 + (self.seq * 37 + i as u64 * 101) % 2000;
            if let Some(time) = check.perf.first_mut() {
                time.value = check.duration_us as f64 / 1e6;
            }
        }
        report
    }

    /// The first instant of its schedule that is not in the past.
    fn next_slot(&self, origin: Instant) -> Instant {
        let first = origin + self.phase;
        let now = Instant::now();
        if now <= first {
            return first;
        }
        first + Duration::from_secs((now - first).as_secs() + 1)
    }

    async fn serve(
        &mut self,
        session: Session,
        shared: &Shared,
        stop: &mut watch::Receiver<bool>,
        tally: &mut Tally,
    ) -> SessionEnd {
        let Session {
            outbound,
            mut inbound,
        } = session;
        let mut ticker = tokio::time::interval_at(self.next_slot(shared.origin), REPORT_INTERVAL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        // seq, sent at, counted (sent within the window)
        let mut pending: VecDeque<(u64, Instant, bool)> = VecDeque::new();
        loop {
            tokio::select! {
                _ = stopped(stop) => return SessionEnd::Stopped,
                _ = ticker.tick() => {
                    let message = report_message(self.report());
                    let sent_at = Instant::now();
                    if outbound.send(message).await.is_err() {
                        return SessionEnd::Lost("the request stream closed".into());
                    }
                    let counted = shared.in_window(sent_at);
                    if counted {
                        tally.sent += 1;
                        shared.sent_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                    pending.push_back((self.seq, sent_at, counted));
                }
                next = inbound.message() => match next {
                    Ok(Some(v1::ControllerMessage { kind: Some(controller_message::Kind::Ack(ack)) })) => {
                        let now = Instant::now();
                        while let Some((_, sent_at, counted)) = pending.front().copied().filter(|p| p.0 <= ack.seq) {
                            pending.pop_front();
                            if counted {
                                tally.acked += 1;
                                shared.acked_in_window.fetch_add(1, Ordering::Relaxed);
                                let us = (now - sent_at).as_micros();
                                tally.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                            }
                        }
                    }
                    Ok(Some(v1::ControllerMessage { kind: Some(controller_message::Kind::NotLeader(not_leader)) })) => {
                        return SessionEnd::NotLeader(hint(not_leader));
                    }
                    // No runbook names these agents, so no ExecuteAction comes.
                    Ok(Some(_)) => {}
                    Ok(None) => return SessionEnd::Lost("the controller closed the stream".into()),
                    Err(status) => return SessionEnd::Lost(format!("{:?}: {}", status.code(), status.message())),
                }
            }
        }
    }
}

/// One agent task: connect (following hints), report until stopped, and
/// reconnect after a lost session, as the real agent does.
async fn simulated_agent(shared: Arc<Shared>, index: u64) -> Tally {
    let mut tally = Tally::default();
    let mut stop = shared.stop.clone();
    let mut agent = Simulated::new(index, shared.agents);
    let members = shared.addresses.len();
    let mut member = index as usize % members;
    let mut address = shared.addresses[member].clone();
    let mut tls: Option<Arc<ClientTls>> = None;
    let mut failures = 0u32;
    let mut hints = 0u32;
    let mut ever_connected = false;
    loop {
        let opened = {
            let _permit = tokio::select! {
                permit = shared.connecting.acquire() => permit,
                _ = stopped(&mut stop) => break,
            };
            let tls = match &tls {
                Some(tls) => tls.clone(),
                None => match load_tls(&shared.pki_dir, &agent.name) {
                    Ok(loaded) => tls.insert(Arc::new(loaded)).clone(),
                    Err(e) => {
                        shared.error(format!("load the agent's certificate: {e:#}"));
                        shared.gave_up.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                },
            };
            open(&tls, &address, agent.hello()).await
        };
        let next_member = |member: usize| (member + 1) % members;
        match opened {
            Ok(Opened::Welcome(session)) => {
                failures = 0;
                hints = 0;
                if !ever_connected {
                    ever_connected = true;
                    shared.ever_connected.fetch_add(1, Ordering::Relaxed);
                }
                shared.connected.fetch_add(1, Ordering::Relaxed);
                let end = agent.serve(*session, &shared, &mut stop, &mut tally).await;
                shared.connected.fetch_sub(1, Ordering::Relaxed);
                match end {
                    SessionEnd::Stopped => break,
                    SessionEnd::NotLeader(hint) => {
                        shared.redirects.fetch_add(1, Ordering::Relaxed);
                        member = next_member(member);
                        failures += u32::from(hint.is_none());
                        hints = u32::from(hint.is_some());
                        address = hint.unwrap_or_else(|| shared.addresses[member].clone());
                    }
                    SessionEnd::Lost(why) => {
                        if shared.window.borrow().is_some() {
                            tally.sessions_lost += 1;
                        }
                        shared.error(format!("session lost: {why}"));
                        failures += 1;
                    }
                }
            }
            Ok(Opened::NotLeader(hint)) => {
                shared.redirects.fetch_add(1, Ordering::Relaxed);
                member = next_member(member);
                // As the agent's reporter: a hint is followed at once, a few
                // in a row; no hint (an election) or stale hints back off.
                hints += 1;
                if hint.is_none() || hints > MAX_HINTS_IN_A_ROW {
                    failures += 1;
                    hints = 0;
                }
                address = hint.unwrap_or_else(|| shared.addresses[member].clone());
            }
            Err(why) => {
                shared.error(format!("connect: {why}"));
                failures += 1;
                hints = 0;
                member = next_member(member);
                address = shared.addresses[member].clone();
            }
        }
        if failures > 0 && hints == 0 {
            // As the agent's backoff: 100 ms doubling to 5 s, with jitter.
            let ceiling = 100u64 << failures.min(6);
            let delay = Duration::from_millis(100 + super::failover::jitter(ceiling.min(5000)));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => break,
            }
        }
    }
    tally
}

fn load_tls(pki_dir: &Path, name: &str) -> anyhow::Result<ClientTls> {
    Ok(ClientTls::load(TlsFiles {
        ca: pki::ca_cert_path(pki_dir),
        cert: pki::cert_path(pki_dir, PeerKind::Agent, name),
        key: pki::key_path(pki_dir, PeerKind::Agent, name),
        crl: None,
        trust_domain: None,
    })?)
}

/// A connection and a Session to `address`, up to its first answer.
async fn open(
    tls: &Arc<ClientTls>,
    address: &str,
    hello: v1::AgentMessage,
) -> Result<Opened, String> {
    let attempt = async {
        let channel = tls.channel(address).await.map_err(|e| error_chain(&e))?;
        let mut client = AgentGatewayClient::new(channel)
            .max_decoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES)
            .max_encoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES);
        let (outbound, outbound_rx) = mpsc::channel(16);
        outbound
            .send(hello)
            .await
            .map_err(|_| "the request stream closed before Hello".to_owned())?;
        let mut inbound = client
            .session(ReceiverStream::new(outbound_rx))
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        let first = inbound
            .message()
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        match first.and_then(|m| m.kind) {
            Some(controller_message::Kind::Welcome(_)) => {
                Ok(Opened::Welcome(Box::new(Session { outbound, inbound })))
            }
            Some(controller_message::Kind::NotLeader(not_leader)) => {
                Ok(Opened::NotLeader(hint(not_leader)))
            }
            Some(_) => Err("the controller's first message was not Welcome".to_owned()),
            None => Err("the controller closed the stream before Welcome".to_owned()),
        }
    };
    tokio::time::timeout(WELCOME_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no Welcome within {} s", WELCOME_TIMEOUT.as_secs())))
}

/// Returns once the benchmark stops the agents (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn hint(not_leader: v1::NotLeader) -> Option<String> {
    Some(not_leader.leader_hint).filter(|h| !h.is_empty())
}

fn report_message(report: v1::Report) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Report(report)),
    }
}

fn unix_ms() -> i64 {
    unix_ns() / 1_000_000
}

fn check_names() -> Vec<String> {
    CHECKS
        .iter()
        .flat_map(|(kind, n)| (0..*n).map(move |i| format!("{kind}-{i}")))
        .collect()
}

fn perf(label: &str, value: f64, unit: &str) -> v1::PerfDatum {
    v1::PerfDatum {
        label: label.to_owned(),
        value,
        unit: unit.to_owned(),
        ..v1::PerfDatum::default()
    }
}

/// A report as the agent sends it from a small server: host metrics like
/// its collector's and one result per check, in the shapes the tcp, http
/// and exec checks produce.
fn template(index: u64) -> v1::Report {
    let octet = index % 250 + 1;
    let gib = 1u64 << 30;
    let host = v1::HostMetrics {
        cpu_utilization: 0.05,
        cpu_utilization_per_core: vec![0.04, 0.06],
        load_average_1m: 0.12,
        load_average_5m: 0.08,
        load_average_15m: 0.05,
        memory_used_bytes: 3 * gib + index * 4096,
        memory_total_bytes: 8 * gib,
        swap_used_bytes: 0,
        swap_total_bytes: gib,
        uptime_seconds: 86_400 + index,
        filesystems: [
            ("/", "/dev/sda1", "ext4"),
            ("/var", "/dev/sda2", "ext4"),
            ("/boot/efi", "/dev/sda15", "vfat"),
        ]
        .iter()
        .map(|(mountpoint, device, fs)| v1::FilesystemUsage {
            mountpoint: (*mountpoint).to_owned(),
            device: (*device).to_owned(),
            r#type: (*fs).to_owned(),
            used_bytes: 12 * gib,
            total_bytes: 40 * gib,
        })
        .collect(),
        network_interfaces: ["eth0", "lo"]
            .iter()
            .map(|name| v1::NetworkInterface {
                name: (*name).to_owned(),
                received_bytes: 1 << 32,
                transmitted_bytes: 1 << 31,
                received_packets: 1 << 22,
                transmitted_packets: 1 << 21,
                receive_errors: 0,
                transmit_errors: 0,
            })
            .collect(),
        temperatures: vec![v1::Temperature {
            sensor: "coretemp Package id 0".into(),
            celsius: 48.0,
        }],
    };
    let checks = check_names()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let (summary, perf) = if name.starts_with("tcp") {
                (
                    format!("TCP connect to 10.20.{octet}.{}:443 in 0.4 ms", 10 + i),
                    vec![perf("time", 0.0004, "s")],
                )
            } else if name.starts_with("http") {
                (
                    "HTTP/1.1 200 OK - 2318 bytes in 2.1 ms".to_owned(),
                    vec![perf("time", 0.0021, "s"), perf("size", 2318.0, "B")],
                )
            } else {
                ("OK - bench".to_owned(), vec![])
            };
            v1::CheckResult {
                name,
                status: CheckStatus::Ok as i32,
                summary,
                observed_at_unix_ms: 1,
                duration_us: 400,
                perf,
            }
        })
        .collect();
    v1::Report {
        seq: 0,
        observed_at_unix_ms: 1,
        host: Some(host),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_valid_and_numbered_from_one() {
        let mut agent = Simulated::new(3, 10);
        for seq in 1..=3 {
            let report = agent.report();
            assert_eq!(report.seq, seq);
            leitstand_proto::domain::Report::try_from(report)
                .unwrap_or_else(|e| panic!("report {seq} of the simulated agent is invalid: {e}"));
        }
        let Some(agent_message::Kind::Hello(hello)) = agent.hello().kind else {
            panic!("hello() is no Hello");
        };
        leitstand_proto::domain::Hello::try_from(hello).expect("the simulated Hello is valid");
    }

    #[test]
    fn phases_spread_over_one_second() {
        let phases: Vec<Duration> = (0..4).map(|i| Simulated::new(i, 4).phase).collect();
        assert_eq!(
            phases,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
    }
}
