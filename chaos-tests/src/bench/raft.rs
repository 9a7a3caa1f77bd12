//! `leitstand bench raft`: three `leitstand controller` processes on
//! loopback (mTLS, fsync on), measured for commit latency, throughput under
//! 64 proposers and the time from a leader's SIGKILL to a new leader; then a
//! three-member etcd measured the same way in the same run, as DESIGN.md §10
//! asks of every reference.
//!
//! Both systems are driven through one [`Cluster`], so every figure is taken
//! by the same code for both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Options;
use super::cluster::{
    Cluster, MEMBERS, NodeClient, PAYLOAD_BYTES, Poll, REAP_TIMEOUT, START_TIMEOUT, View,
};

/// Length of the throughput phase unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 20;
const PROPOSERS: usize = 64;
/// The proposers share this many HTTP/2 connections: one would put all 64
/// streams on one socket, right at the controller's 64-streams limit.
const CONNECTIONS: usize = 4;
/// Proposals before the sequential measurement: connections, TLS sessions
/// and the storage's first writes are not what the figure is about.
const WARM_UP: u64 = 200;
const POLL: Duration = Duration::from_millis(10);
/// How long one ask after a leader kill may take; with a new ask every
/// 10 ms this keeps at most 25 per survivor open, well inside a
/// controller's 64 streams per connection.
const ASK_TIMEOUT: Duration = Duration::from_millis(250);
const MAX_ASKS_IN_FLIGHT: usize = 32;
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// DESIGN.md §10.
const COMMIT_P50_BUDGET_MS: f64 = 5.0;
const COMMIT_P50_AIM_MS: f64 = 1.5;
const COMMIT_P99_AIM_MS: f64 = 3.0;
const ELECTION_MEDIAN_BUDGET_MS: f64 = 1000.0;
const ELECTION_MEDIAN_AIM_MS: f64 = 500.0;

pub(super) async fn run(options: &Options) -> anyhow::Result<serde_json::Value> {
    super::in_scratch_dir(
        "raft",
        |dir| async move { measure_both(&dir, options).await },
    )
    .await
}

async fn measure_both(dir: &Path, options: &Options) -> anyhow::Result<serde_json::Value> {
    let seconds = options.seconds.unwrap_or(DEFAULT_SECONDS);
    let binary = crate::sandbox::process::leitstand_binary(options.controller_binary.as_deref())?;
    let etcd_binary = if options.etcd {
        find_on_path("etcd")
    } else {
        None
    };
    let filesystem = filesystem_of(dir);
    if filesystem.as_deref() == Some("tmpfs") {
        tracing::warn!(
            "{} is on tmpfs, where fsync does nothing: set TMPDIR to a directory on disk for figures that mean something",
            dir.display()
        );
    }
    let machine_before = load_average();
    let runs = Runs {
        proposals: options.proposals,
        seconds,
        trials: options.trials,
    };

    tracing::info!(binary = %binary.display(), "leitstand: starting 3 controllers");
    let ours = measure(Cluster::leitstand(&dir.join("leitstand"), &binary)?, &runs).await?;

    let reference = match (options.etcd, etcd_binary) {
        (false, _) => serde_json::json!({ "skipped": "--etcd off" }),
        (true, None) => {
            tracing::warn!("etcd is not on PATH: measuring leitstand only");
            serde_json::json!({ "skipped": "etcd not found; apt-get install etcd-server" })
        }
        (true, Some(etcd_binary)) => {
            tracing::info!(binary = %etcd_binary.display(), "etcd: starting 3 members");
            match Cluster::etcd(&dir.join("etcd"), &etcd_binary) {
                Ok(cluster) => match measure(cluster, &runs).await {
                    Ok(figures) => figures,
                    Err(e) => reference_failed(e),
                },
                Err(e) => reference_failed(e),
            }
        }
    };

    let budgets = budgets(&ours);
    Ok(serde_json::json!({
        "benchmark": "raft",
        "machine": {
            "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            "load_average_before": machine_before,
            "load_average_after": load_average(),
            // The controllers are this binary: a debug build measures debug code.
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "method": {
            "members": MEMBERS,
            "network": "loopback",
            // fsync is only as real as the file system the data directories are on.
            "data_filesystem": filesystem,
            "payload_bytes": PAYLOAD_BYTES,
            "warm_up_proposals": WARM_UP,
            "commit_latency": "sequential proposals to the leader; a proposal is answered once committed and applied on the leader",
            "throughput": format!("{PROPOSERS} concurrent proposers over {CONNECTIONS} connections to the leader for {seconds} s"),
            "election": "SIGKILL the leader, ask both survivors every 10 ms, stop at the first that names another leader in a higher term, confirmed by a quorum; restart the killed member and wait until all three agree before the next trial",
        },
        "leitstand": ours,
        "etcd": reference,
        "budgets": budgets,
        "reference_in_design": {
            "etcd_commit_p50_ms": 1.49,
            "etcd_commit_p99_ms": 2.35,
            "etcd_election_ms": 1150,
        },
    }))
}

fn reference_failed(e: anyhow::Error) -> serde_json::Value {
    tracing::error!("etcd reference failed: {e:#}");
    serde_json::json!({ "failed": format!("{e:#}") })
}

#[derive(Debug, Clone, Copy)]
struct Runs {
    proposals: u64,
    seconds: u64,
    trials: u64,
}

/// Starts `cluster`, measures it, and stops it whatever happened.
async fn measure(mut cluster: Cluster, runs: &Runs) -> anyhow::Result<serde_json::Value> {
    let before = CpuSnapshot::take();
    let outcome = measure_started(&mut cluster, runs).await;
    cluster.stop().await;
    let noise = CpuSnapshot::take().since(&before);
    let mut figures = outcome?;
    if let Some(object) = figures.as_object_mut() {
        object.insert("machine_during".into(), noise);
    }
    Ok(figures)
}

async fn measure_started(cluster: &mut Cluster, runs: &Runs) -> anyhow::Result<serde_json::Value> {
    let system = cluster.system.name();
    cluster.start().await?;
    let (leader, view) = cluster.await_leader("after start", START_TIMEOUT).await?;
    tracing::info!(
        system,
        leader = view.leader,
        term = view.term,
        proposals = runs.proposals,
        "leader elected; measuring commit latency"
    );
    let mut proposer = cluster.proposer(leader).await?;
    for n in 0..WARM_UP {
        proposer
            .propose(n)
            .await
            .with_context(|| format!("{system}: warm-up proposal {n}"))?;
    }
    let mut latencies = Vec::with_capacity(usize::try_from(runs.proposals).unwrap_or(0));
    for n in 0..runs.proposals {
        let sent = Instant::now();
        proposer
            .propose(WARM_UP + n)
            .await
            .with_context(|| format!("{system}: proposal {n} of the commit latency run"))?;
        latencies.push(sent.elapsed());
    }
    let commit = Summary::of(latencies);
    tracing::info!(
        system,
        p50_ms = commit.p50_ms,
        p99_ms = commit.p99_ms,
        "commit latency measured; measuring throughput for {} s",
        runs.seconds
    );

    let throughput = throughput(cluster, leader, runs.seconds).await?;
    tracing::info!(
        system,
        per_second = throughput["per_second"].as_f64(),
        "throughput measured; timing {} leader kills",
        runs.trials
    );

    let elections = elections(cluster, runs.trials).await?;
    let election = Summary::of(elections.clone());
    tracing::info!(
        system,
        median_ms = election.median_ms,
        max_ms = election.max_ms,
        "election times measured"
    );

    Ok(serde_json::json!({
        "version": cluster.version,
        "transport": cluster.system.transport(),
        "commit_latency_ms": {
            "p50": commit.p50_ms,
            "p99": commit.p99_ms,
            "max": commit.max_ms,
            "n": commit.n,
        },
        "throughput": throughput,
        "election_ms": {
            "trials": election.n,
            "median": election.median_ms,
            "max": election.max_ms,
            "all": elections.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        },
    }))
}

async fn throughput(
    cluster: &Cluster,
    leader: usize,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        connections.push(cluster.proposer(leader).await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut proposers = JoinSet::new();
    for k in 0..PROPOSERS {
        let mut proposer = connections[k % CONNECTIONS].clone();
        let done = done.clone();
        proposers.spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            // Distinct sequence numbers per proposer, so etcd's keys and our
            // payloads differ across proposers as they would in real use.
            let mut n = (k as u64) << 32;
            while Instant::now() < until {
                let sent = Instant::now();
                match proposer.propose(n).await {
                    Ok(()) => {
                        latencies.push(sent.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                        // A failing leader must not turn 64 proposers into a busy loop.
                        tokio::time::sleep(POLL).await;
                    }
                }
                n += 1;
            }
            (latencies, errors, first_error)
        });
    }
    let progress = {
        let done = done.clone();
        let system = cluster.system.name();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            every.tick().await;
            loop {
                every.tick().await;
                tracing::info!(
                    system,
                    proposals = done.load(Ordering::Relaxed),
                    elapsed_s = started.elapsed().as_secs(),
                    "throughput running"
                );
            }
        })
    };
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
    while let Some(joined) = proposers.join_next().await {
        let (l, e, f) = joined.context("a proposer task failed")?;
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    // The last proposals were sent before `until` and answered after it.
    let elapsed = started.elapsed();
    progress.abort();
    if latencies.is_empty() {
        bail!(
            "{}: no proposal succeeded under load; first error: {}",
            cluster.system.name(),
            first_error.unwrap_or_default()
        );
    }
    let load = Summary::of(latencies);
    Ok(serde_json::json!({
        "proposers": PROPOSERS,
        "connections": CONNECTIONS,
        "seconds": round3(elapsed.as_secs_f64()),
        "proposals": load.n,
        "per_second": round3(load.n as f64 / elapsed.as_secs_f64()),
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "max_ms": load.max_ms,
        "errors": errors,
        "first_error": first_error,
    }))
}

async fn elections(cluster: &mut Cluster, trials: u64) -> anyhow::Result<Vec<Duration>> {
    let system = cluster.system.name();
    let mut times = Vec::new();
    for trial in 1..=trials {
        let (leader, view) = cluster
            .await_leader(&format!("before election trial {trial}"), START_TIMEOUT)
            .await?;
        let survivors = cluster.clients_except(leader);
        let mut killed = cluster.kill(leader)?;
        let killed_at = Instant::now();
        let seen = first_new_leader(survivors, view.leader, view.term, killed_at).await;
        if tokio::time::timeout(REAP_TIMEOUT, killed.wait())
            .await
            .is_err()
        {
            bail!(
                "{system}: node {} did not exit within {REAP_TIMEOUT:?} of SIGKILL",
                view.leader
            );
        }
        let (seen_at, new) = seen.with_context(|| {
            format!(
                "{system}: election trial {trial} after killing node {}\n{}",
                view.leader,
                cluster.log_tails()
            )
        })?;
        let took = seen_at.duration_since(killed_at);
        tracing::info!(
            system,
            trial,
            of = trials,
            killed = view.leader,
            new_leader = new.leader,
            term = new.term,
            ms = ms(took),
            "new leader"
        );
        times.push(took);
        cluster.restart(leader)?;
    }
    cluster
        .await_leader("after the last election trial", START_TIMEOUT)
        .await?;
    Ok(times)
}

/// The moment the first survivor names a leader other than `killed`, in a
/// term after `term`, confirmed by a quorum.
///
/// Asks overlap: a new ask starts every 10 ms whether or not the earlier
/// ones have answered. A member holds a confirming read until a leader
/// answers it, and one sent to the dead leader, or to a new one before its
/// first commit, is never answered: waiting for each answer in turn would
/// add that wait (our controller's is 1 s) to the figure.
async fn first_new_leader(
    survivors: Vec<NodeClient>,
    killed: u64,
    term: u64,
    killed_at: Instant,
) -> anyhow::Result<(Instant, View)> {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    let mut in_flight = vec![0usize; survivors.len()];
    let mut asks: JoinSet<(usize, anyhow::Result<Poll>)> = JoinSet::new();
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if Instant::now() >= deadline {
                    bail!("no survivor named a new leader confirmed by a quorum within {ELECTION_TIMEOUT:?}");
                }
                for (i, client) in survivors.iter().enumerate() {
                    if in_flight[i] < MAX_ASKS_IN_FLIGHT {
                        in_flight[i] += 1;
                        let client = client.clone();
                        asks.spawn(async move { (i, client.view(ASK_TIMEOUT).await) });
                    }
                }
            }
            Some(joined) = asks.join_next() => {
                let (i, answer) = joined.context("an ask task failed")?;
                in_flight[i] -= 1;
                if let Poll::Answer(view) = answer?
                    && view.leader != 0
                    && view.leader != killed
                    && view.term > term
                {
                    if view.confirmed {
                        return Ok((Instant::now(), view));
                    }
                    // Tells a slow election from a slow confirming read.
                    tracing::debug!(
                        leader = view.leader,
                        term = view.term,
                        ms = ms(killed_at.elapsed()),
                        "new leader named, not yet confirmed"
                    );
                }
            }
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The type of the file system `path` is on, from the longest mount point
/// that contains it.
fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, kind)| kind)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect()
}

/// Machine-wide CPU time (/proc/stat) next to this process's own and its
/// reaped children's (the members), so the JSON can say how busy the rest
/// of the machine was while a system was measured.
#[derive(Debug)]
struct CpuSnapshot {
    at: Instant,
    load: Vec<f64>,
    /// user + nice + system, all cores, in clock ticks.
    processes: u64,
    /// Every non-idle tick, all cores.
    busy: u64,
    total: u64,
    /// This process and its reaped children.
    ours: u64,
}

impl CpuSnapshot {
    fn take() -> CpuSnapshot {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .unwrap_or_default()
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let at = |n: usize| fields.get(n).copied().unwrap_or(0);
        // proc(5): user nice system idle iowait irq softirq steal (guest is in user).
        let total: u64 = (0..8).map(at).sum();
        let ours = super::sample(std::process::id())
            .map(|s| s.cpu_ticks + s.children_ticks)
            .unwrap_or(0);
        CpuSnapshot {
            at: Instant::now(),
            load: load_average(),
            processes: at(0) + at(1) + at(2),
            busy: total - at(3) - at(4),
            total,
            ours,
        }
    }

    fn since(&self, before: &CpuSnapshot) -> serde_json::Value {
        let ticks = super::clock_ticks_per_second() as f64;
        let busy = self.busy.saturating_sub(before.busy) as f64;
        let total = self.total.saturating_sub(before.total) as f64;
        let ours = self.ours.saturating_sub(before.ours);
        let others = self
            .processes
            .saturating_sub(before.processes)
            .saturating_sub(ours);
        serde_json::json!({
            "wall_seconds": round3(self.at.duration_since(before.at).as_secs_f64()),
            "load_average_before": before.load,
            "load_average_after": self.load,
            "cpu_busy_percent_of_all_cores": round3(if total > 0.0 { 100.0 * busy / total } else { 0.0 }),
            "cpu_seconds_bench_and_members": round3(ours as f64 / ticks),
            // Approximate: loopback networking runs in softirq and is left out.
            "cpu_seconds_other_processes": round3(others as f64 / ticks),
        })
    }
}

#[derive(Debug)]
struct Summary {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    median_ms: f64,
    max_ms: f64,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        let n = samples.len();
        // Nearest rank: the smallest sample with at least p % at or below it.
        let rank = |p: f64| {
            let at = ((p / 100.0) * n as f64).ceil() as usize;
            samples
                .get(at.clamp(1, n.max(1)) - 1)
                .copied()
                .map(ms)
                .unwrap_or(0.0)
        };
        let median = match n {
            0 => 0.0,
            n if n % 2 == 1 => samples.get(n / 2).copied().map(ms).unwrap_or(0.0),
            n => {
                let (a, b) = (samples[n / 2 - 1], samples[n / 2]);
                round3((ms(a) + ms(b)) / 2.0)
            }
        };
        Summary {
            n,
            p50_ms: rank(50.0),
            p99_ms: rank(99.0),
            median_ms: median,
            max_ms: samples.last().copied().map(ms).unwrap_or(0.0),
        }
    }
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn budgets(ours: &serde_json::Value) -> serde_json::Value {
    let p50 = ours["commit_latency_ms"]["p50"].as_f64();
    let p99 = ours["commit_latency_ms"]["p99"].as_f64();
    let election = ours["election_ms"]["median"].as_f64();
    let at_most = |measured: Option<f64>, limit: f64| measured.map(|m| m <= limit);
    let commit_ok = at_most(p50, COMMIT_P50_BUDGET_MS);
    let election_ok = at_most(election, ELECTION_MEDIAN_BUDGET_MS);
    serde_json::json!({
        "source": "DESIGN.md §10",
        "commit_p50_ms": {
            "budget": COMMIT_P50_BUDGET_MS,
            "aim": COMMIT_P50_AIM_MS,
            "measured": p50,
            "pass": commit_ok,
            "aim_met": at_most(p50, COMMIT_P50_AIM_MS),
        },
        "commit_p99_ms": {
            "aim": COMMIT_P99_AIM_MS,
            "measured": p99,
            "aim_met": at_most(p99, COMMIT_P99_AIM_MS),
        },
        "election_median_ms": {
            "budget": ELECTION_MEDIAN_BUDGET_MS,
            "aim": ELECTION_MEDIAN_AIM_MS,
            "measured": election,
            "pass": election_ok,
            "aim_met": at_most(election, ELECTION_MEDIAN_AIM_MS),
        },
        "pass": commit_ok == Some(true) && election_ok == Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(samples_ms: &[u64], expected: (f64, f64, f64, f64)) {
        let summary = Summary::of(
            samples_ms
                .iter()
                .map(|m| Duration::from_millis(*m))
                .collect(),
        );
        assert_eq!(
            (
                summary.p50_ms,
                summary.p99_ms,
                summary.median_ms,
                summary.max_ms
            ),
            expected,
            "{samples_ms:?}"
        );
    }

    #[test]
    fn summaries_use_nearest_rank_and_a_true_median() {
        check(&[], (0.0, 0.0, 0.0, 0.0));
        check(&[7], (7.0, 7.0, 7.0, 7.0));
        check(&[4, 1, 3, 2], (2.0, 4.0, 2.5, 4.0));
        check(&(1..=100).collect::<Vec<_>>(), (50.0, 99.0, 50.5, 100.0));
        check(
            &(1..=1000).collect::<Vec<_>>(),
            (500.0, 990.0, 500.5, 1000.0),
        );
    }
}
