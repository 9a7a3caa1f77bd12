//! `leitstand drill list` and `leitstand drill run SCENARIO|short|all`: runs
//! scenarios against a fresh sandbox each, heals everything at the end,
//! checks the invariants and writes a report for the security team — a
//! timeline, failover times, leader elections and every
//! invariant's result — as Markdown and JSON.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::invariants::{self, History, Verdict};
use crate::sandbox::{self, BACKUP, EXECUTOR, PRIMARY, Sandbox};
use crate::scenarios::{self, Scenario};

/// After the faults: how long decisions may take to end (result timeout
/// 30 s + verify 15 s, with room).
const SETTLE_WITHIN: Duration = Duration::from_secs(75);
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// How an interrupted run's error begins: no further scenario starts.
const INTERRUPTED: &str = "interrupted";
/// No new decision for this long after all ended: the system is at rest.
const QUIET: Duration = Duration::from_millis(1500);

/// How the sandbox makes and breaks its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A fault-injecting TCP proxy on every link, on loopback (no privileges).
    #[default]
    Proxy,
    /// Root only: a network namespace per process, veths to a bridge,
    /// faults by iptables and tc inside the namespaces.
    Netns,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::Proxy => "proxy",
            Network::Netns => "netns",
        })
    }
}

/// Whether `network` can run here: for netns, root and ip, tc,
/// iptables-restore. The error says what is missing and how to fix it.
pub fn check_network(network: Network) -> anyhow::Result<()> {
    match network {
        Network::Proxy => Ok(()),
        Network::Netns => sandbox::netns::preflight().map(|_| ()),
    }
}

/// One scenario, as `drill list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// In the short set CI runs.
    pub short: bool,
    pub needs_root: bool,
    /// Runs only with `--network netns` (packet-level faults).
    pub needs_netns: bool,
}

pub fn list() -> Vec<ScenarioInfo> {
    scenarios::all()
        .into_iter()
        .map(|s| ScenarioInfo {
            name: s.name,
            summary: s.summary,
            short: s.short,
            needs_root: s.needs_root,
            needs_netns: s.needs_netns,
        })
        .collect()
}

/// What `drill run` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The binary run as `controller` and `agent` (default: the running one).
    pub binary: Option<PathBuf>,
    /// The first seed; run n uses seed + n.
    pub seed: u64,
    /// Runs of each scenario.
    pub runs: u64,
    /// Extra environment for the executor agent (the test-only fencing switch).
    pub executor_env: Vec<(String, String)>,
    pub network: Network,
}

/// Every run's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub network: Network,
    pub runs: Vec<RunReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    /// "passed", "failed", "error" or "skipped".
    pub outcome: String,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub skipped: Option<String>,
    invariants: Vec<Verdict>,
    expectations: Vec<Expectation>,
    timeline: Vec<sandbox::Event>,
    elections: Vec<Election>,
    failovers: Vec<Failover>,
    /// Log tails of the controllers and agents when the run did not pass.
    logs: Vec<(String, String)>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Expectation {
    what: String,
    held: bool,
    detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Election {
    term: u64,
    node: u64,
    at: String,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Failover {
    why: String,
    /// From the clock start (the break, or when the fault that prevented
    /// the failover ended) until the leader proposed the decision
    /// (detection: the path judged failed and the target passing), until
    /// the action's start, and until the harness saw the new active path
    /// in the leader's view.
    detected_ms: Option<i64>,
    failover_ms: Option<i64>,
    observed_ms: Option<i64>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.outcome == "passed" || r.outcome == "skipped")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The report for people: a summary, then each run in detail.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Leitstand drill report\n\n");
        out.push_str(&format!(
            "Leitstand {} · {} run(s) · network {} · {}\n\n",
            leitstand_proto::VERSION,
            self.runs.len(),
            self.network,
            if self.passed() {
                "**every invariant held**"
            } else {
                "**VIOLATIONS OR ERRORS — see below**"
            }
        ));
        out.push_str(
            "| scenario | seed | outcome | duration | invariants |\n|---|---|---|---|---|\n",
        );
        for r in &self.runs {
            let broken: Vec<&str> = r
                .invariants
                .iter()
                .filter(|v| !v.held)
                .map(|v| v.id)
                .collect();
            out.push_str(&format!(
                "| {} | {} | {} | {:.1} s | {} |\n",
                r.scenario,
                r.seed,
                r.outcome,
                r.duration_ms as f64 / 1000.0,
                if r.invariants.is_empty() {
                    "-".to_owned()
                } else if broken.is_empty() {
                    format!("all {} held", r.invariants.len())
                } else {
                    format!("violated: {}", broken.join(", "))
                }
            ));
        }
        for r in &self.runs {
            out.push_str(&r.markdown());
        }
        out
    }
}

impl RunReport {
    fn markdown(&self) -> String {
        let mut out = format!(
            "\n## {} (seed {}): {}\n\n",
            self.scenario, self.seed, self.outcome
        );
        if let Some(summary) = scenarios::all()
            .iter()
            .find(|s| s.name == self.scenario)
            .map(|s| s.summary)
        {
            out.push_str(&format!("{summary}\n\n"));
        }
        if let Some(why) = &self.skipped {
            out.push_str(&format!("Skipped: {why}\n"));
            return out;
        }
        if let Some(error) = &self.error {
            out.push_str(&format!("**The drill itself failed:** {error}\n\n"));
        }
        out.push_str(
            "### Invariants\n\n| invariant | result | checked | evidence |\n|---|---|---|---|\n",
        );
        for v in &self.invariants {
            out.push_str(&format!(
                "| {} {} | {} | {} | {} |\n",
                v.id,
                v.title,
                if v.held { "held" } else { "**VIOLATED**" },
                v.checked,
                v.violations.join("<br>").replace('|', "\\|")
            ));
        }
        if !self.expectations.is_empty() {
            out.push_str("\n### Expectations of this scenario\n\n");
            for e in &self.expectations {
                out.push_str(&format!(
                    "- {} {}{}\n",
                    if e.held { "✓ held:" } else { "✗ FAILED:" },
                    e.what,
                    if e.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", e.detail)
                    }
                ));
            }
        }
        if !self.failovers.is_empty() {
            out.push_str("\n### Detection and failover times\n\nFrom the break (or the end of the fault that prevented the failover).\n\n| what | detected (decision proposed) | the action's start | the harness saw it active |\n|---|---|---|---|\n");
            for f in &self.failovers {
                let ms = |v: Option<i64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    f.why,
                    ms(f.detected_ms),
                    ms(f.failover_ms),
                    ms(f.observed_ms)
                ));
            }
        }
        out.push_str("\n### Leader elections\n\n");
        if self.elections.is_empty() {
            out.push_str("none recorded\n");
        }
        for e in &self.elections {
            out.push_str(&format!(
                "- term {}: controller {} ({})\n",
                e.term, e.node, e.at
            ));
        }
        out.push_str("\n### Timeline\n\n| t | event |\n|---|---|\n");
        for e in &self.timeline {
            out.push_str(&format!(
                "| {:>7.3} s | {} |\n",
                e.at_ms as f64 / 1000.0,
                e.what.replace('|', "\\|")
            ));
        }
        for (name, tail) in &self.logs {
            out.push_str(&format!("\n### Last lines of {name}\n\n```\n{tail}\n```\n"));
        }
        out
    }
}

/// `short`, `all`, one scenario's name, or names separated by commas. A
/// scenario named explicitly that needs `--network netns` is a usage error
/// without it; in `all` it is reported as skipped.
pub fn select(what: &str, network: Network) -> anyhow::Result<Vec<&'static str>> {
    let all = scenarios::all();
    let names: Vec<&'static str> = match what {
        "all" => all.iter().map(|s| s.name).collect(),
        "short" => all.iter().filter(|s| s.short).map(|s| s.name).collect(),
        list if list.contains(',') => {
            let mut names = Vec::new();
            for name in list.split(',') {
                names.extend(select(name.trim(), network)?);
            }
            names
        }
        name => match all.iter().find(|s| s.name == name) {
            Some(s) if s.needs_netns && network != Network::Netns => bail!(
                "drill scenario {name} needs --network netns ({NEEDS_NETNS}); run it as root with \
                 `leitstand drill run {name} --network netns`"
            ),
            Some(s) => vec![s.name],
            None => bail!(
                "no drill scenario {name:?}; `leitstand drill list` shows them (or use `short` or `all`)"
            ),
        },
    };
    Ok(names)
}

const NEEDS_NETNS: &str = "its faults are lost and delayed packets, and the proxy relays a byte stream with no packets to lose";

/// Runs `names`, each `options.runs` times with seeds seed, seed+1, …
pub async fn run(names: &[&str], options: &Options) -> anyhow::Result<Report> {
    let binary = sandbox::process::leitstand_binary(options.binary.as_deref())?;
    check_network(options.network)?;
    let network = options.network;
    let mut runs = Vec::new();
    let catalogue = scenarios::all();
    for name in names {
        let scenario = catalogue
            .iter()
            .find(|s| s.name == *name)
            .with_context(|| format!("no drill scenario {name:?}"))?;
        for n in 0..options.runs.max(1) {
            let seed = options.seed.wrapping_add(n);
            tracing::info!(scenario = scenario.name, seed, "drill starts");
            let report = run_one(scenario, &binary, seed, options).await;
            tracing::info!(scenario = scenario.name, seed, outcome = %report.outcome, "drill ends");
            let stop = report
                .error
                .as_ref()
                .is_some_and(|e| e.starts_with(INTERRUPTED));
            runs.push(report);
            if stop {
                return Ok(Report { network, runs });
            }
        }
    }
    Ok(Report { network, runs })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

async fn run_one(scenario: &Scenario, binary: &Path, seed: u64, options: &Options) -> RunReport {
    let started = tokio::time::Instant::now();
    let mut report = RunReport {
        scenario: scenario.name.to_owned(),
        seed,
        outcome: "error".into(),
        duration_ms: 0,
        error: None,
        skipped: None,
        invariants: Vec::new(),
        expectations: Vec::new(),
        timeline: Vec::new(),
        elections: Vec::new(),
        failovers: Vec::new(),
        logs: Vec::new(),
    };
    if scenario.needs_root && !is_root() {
        report.outcome = "skipped".into();
        report.skipped =
            Some("needs root (it mounts a small tmpfs as a controller's data directory)".into());
        return report;
    }
    if scenario.needs_netns && options.network != Network::Netns {
        report.outcome = "skipped".into();
        report.skipped = Some(format!("needs --network netns ({NEEDS_NETNS})"));
        return report;
    }
    let mut spec = (scenario.spec)();
    spec.executor_env = options.executor_env.clone();
    spec.network = options.network;
    // Listening before the sandbox starts: an interrupt while it starts
    // drops the half-built sandbox (processes, namespaces) too.
    let mut interrupts = Interrupts::new();
    let interrupted =
        |how: &str| anyhow::anyhow!("{INTERRUPTED} ({how}); everything started is torn down");
    let start = tokio::select! {
        sandbox = Sandbox::start(binary, spec, seed) => {
            sandbox.map_err(|e| format!("the sandbox did not start: {e:#}"))
        }
        how = interrupts.next() => Err(interrupted(how).to_string()),
    };
    let mut sandbox = match start {
        Ok(sandbox) => sandbox,
        Err(e) => {
            report.error = Some(e);
            report.duration_ms = started.elapsed().as_millis() as u64;
            return report;
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let outcome = tokio::select! {
        outcome = (scenario.run)(&mut sandbox, &mut rng) => outcome,
        how = interrupts.next() => Err(interrupted(how)),
    };
    if outcome
        .as_ref()
        .is_err_and(|e| e.to_string().starts_with(INTERRUPTED))
    {
        report.error = outcome.err().map(|e| e.to_string());
        report.duration_ms = started.elapsed().as_millis() as u64;
        // Dropping the sandbox kills every process and removes its directory.
        return report;
    }
    if let Err(e) = &outcome {
        sandbox.note(format!("the scenario stopped early: {e:#}"));
        report.error = Some(format!("{e:#}"));
    }
    let converged = finale(&mut sandbox).await;
    let mut proposals = Vec::new();
    let verdicts = match evidence(&mut sandbox, converged, &mut proposals).await {
        Ok(verdicts) => verdicts,
        Err(e) => {
            report.error = Some(format!(
                "{}collecting the evidence failed: {e:#}",
                report
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!("{e}; "))
            ));
            Vec::new()
        }
    };
    let record = &sandbox.record;
    report.expectations = record
        .expectations
        .iter()
        .map(|(what, held, detail)| Expectation {
            what: what.clone(),
            held: *held,
            detail: detail.clone(),
        })
        .collect();
    report.elections = elections(&sandbox);
    report.failovers = failovers(&sandbox, &proposals);
    report.timeline = sandbox.record.timeline.clone();
    let passed = report.error.is_none()
        && !verdicts.is_empty()
        && verdicts.iter().all(|v| v.held)
        && report.expectations.iter().all(|e| e.held);
    report.invariants = verdicts;
    report.outcome = if passed {
        "passed"
    } else if report.error.is_some() {
        "error"
    } else {
        "failed"
    }
    .into();
    if !passed {
        for c in &sandbox.controllers {
            report
                .logs
                .push((c.process.name.clone(), c.process.tail(15)));
        }
        for a in sandbox.agents.values() {
            report
                .logs
                .push((a.process.name.clone(), a.process.tail(15)));
        }
    }
    sandbox.stop_observing();
    drop(sandbox);
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// SIGINT (Ctrl-C) and SIGTERM, registered once per run: a signal that
/// arrives while nobody awaits it is still seen by the next `next`.
struct Interrupts {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Interrupts {
        use tokio::signal::unix::{SignalKind, signal};
        Interrupts {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Which signal came.
    async fn next(&mut self) -> &'static str {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let Interrupts {
            interrupt,
            terminate,
        } = self;
        tokio::select! {
            () = one(interrupt) => "Ctrl-C",
            () = one(terminate) => "SIGTERM",
        }
    }
}

/// Heals every fault, lets decisions end, and waits for the replicas to
/// agree: Ok(applied index) or why not.
async fn finale(s: &mut Sandbox) -> Result<u64, String> {
    if let Err(e) = s.heal_network().await {
        // Left broken, the convergence check below says what it did.
        s.note(format!("finale: {e:#}"));
    }
    for c in &mut s.controllers {
        if c.process.is_stopped() {
            let _ = c.process.thaw();
        }
        if !c.process.is_running()
            && let Err(e) = c.process.start()
        {
            tracing::warn!("restarting {} for the finale: {e:#}", c.process.name);
        }
    }
    for a in s.agents.values_mut() {
        if a.process.is_stopped() {
            let _ = a.process.thaw();
        }
        if !a.process.is_running()
            && let Err(e) = a.process.start()
        {
            tracing::warn!("restarting {} for the finale: {e:#}", a.process.name);
        }
    }
    s.note("finale: faults healed, every process running");
    settle_quietly(s).await;
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    loop {
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for id in s.ids() {
            match s.cluster_status(id).await {
                Ok(status) if !status.state_digest.is_empty() => {
                    seen.insert((status.digest_applied_index, status.state_digest));
                }
                Ok(_) => missing.push(format!("controller {id} sent no digest")),
                Err(e) => missing.push(format!("{e:#}")),
            }
        }
        if missing.is_empty() && seen.len() == 1 {
            let (index, _) = seen.into_iter().next().unwrap_or_default();
            s.note(format!(
                "finale: every controller at applied index {index} with one state digest"
            ));
            return Ok(index);
        }
        let last = format!("{seen:?} {missing:?}");
        if tokio::time::Instant::now() >= deadline {
            s.note(format!(
                "finale: no convergence within {CONVERGE_WITHIN:?}: {last}"
            ));
            return Err(format!("within {CONVERGE_WITHIN:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every decision is terminal and no new one appeared for a
/// quiet period: healing (an unfrozen service, a repaired path) may start
/// one more decision, which must end too before the evidence is read.
async fn settle_quietly(s: &mut Sandbox) {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    let mut previous: Option<usize> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match s.settle(left).await {
            Ok(view) if previous == Some(view.decisions.len()) => {
                s.note(format!(
                    "finale: every decision ({}) reached a terminal stage; none new for {} ms",
                    view.decisions.len(),
                    QUIET.as_millis()
                ));
                return;
            }
            Ok(view) => previous = Some(view.decisions.len()),
            Err(e) => {
                s.note(format!("finale: {e:#}"));
                return;
            }
        }
        tokio::time::sleep(QUIET).await;
    }
}

/// Checks every invariant; `proposals` gets every automatic proposal in
/// the longest audit chain (when, to which path) for the detection times.
async fn evidence(
    s: &mut Sandbox,
    converged: Result<u64, String>,
    proposals: &mut Vec<(i64, String)>,
) -> anyhow::Result<Vec<Verdict>> {
    let mut audits = std::collections::BTreeMap::new();
    for id in s.ids() {
        match s.audit(id).await {
            Ok(chain) => {
                audits.insert(id, chain);
            }
            Err(e) => s.note(format!("controller {id} served no audit chain: {e:#}")),
        }
    }
    if let Some(longest) = audits.values().max_by_key(|chain| chain.len()) {
        *proposals = longest
            .iter()
            .filter(|e| e.kind == "decision.proposed")
            .filter_map(|e| {
                let body: serde_json::Value = serde_json::from_str(&e.body_json).ok()?;
                Some((e.at_unix_ms, body["to_path"].as_str()?.to_owned()))
            })
            .collect();
    }
    let executions = s.executions()?;
    let allowlist = [PRIMARY, BACKUP]
        .iter()
        .map(|p| (EXECUTOR.to_owned(), (*p).to_owned()))
        .collect();
    let history = History {
        audits,
        executions,
        samples: s.observations.samples(),
        claims: s.leadership_claims(),
        record: Some(&s.record),
        converged: Some(converged),
        allowlist,
    };
    Ok(invariants::check(&history))
}

fn elections(s: &Sandbox) -> Vec<Election> {
    let mut all: Vec<Election> = s
        .record
        .earlier
        .iter()
        .flat_map(|e| e.claims.iter())
        .chain(s.leadership_claims().iter())
        .map(|(node, term, at)| Election {
            term: *term,
            node: *node,
            at: at.clone(),
        })
        .collect();
    all.sort_by(|a, b| a.at.cmp(&b.at));
    all
}

fn failovers(s: &Sandbox, proposals: &[(i64, String)]) -> Vec<Failover> {
    let executions = s.executions().unwrap_or_default();
    s.record
        .liveness
        .iter()
        .map(|l| {
            let failover_ms = executions
                .iter()
                .filter(|e| e.path == l.to_path && e.unix_ns / 1_000_000 >= l.clock_from_unix_ms)
                .map(|e| e.unix_ns / 1_000_000 - l.clock_from_unix_ms)
                .min();
            // The proposal that led to that action: the last one before it
            // (a rebuilt cluster's chain may hold later ones too); without
            // an action, the first one.
            let candidates = proposals
                .iter()
                .map(|(at, path)| (at - l.clock_from_unix_ms, path))
                .filter(|(ms, path)| {
                    **path == l.to_path && *ms >= 0 && failover_ms.is_none_or(|f| *ms <= f)
                })
                .map(|(ms, _)| ms);
            let detected_ms = if failover_ms.is_some() {
                candidates.max()
            } else {
                candidates.min()
            };
            let observed_ms = s
                .record
                .timeline
                .iter()
                .find(|e| {
                    e.unix_ms >= l.clock_from_unix_ms
                        && e.what
                            .contains(&format!("{} becomes the active path", l.to_path))
                })
                .map(|e| e.unix_ms - l.clock_from_unix_ms);
            Failover {
                why: l.why.clone(),
                detected_ms,
                failover_ms,
                observed_ms,
            }
        })
        .collect()
}

/// Writes the report as Markdown to `path` and as JSON next to it.
pub fn write(report: &Report, path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::write(path, report.markdown()).with_context(|| format!("write {}", path.display()))?;
    let json_path = path.with_extension("json");
    let json = serde_json::to_string_pretty(&report.json()).context("encode the report")?;
    std::fs::write(&json_path, json).with_context(|| format!("write {}", json_path.display()))?;
    Ok(json_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(network: Network) -> Options {
        Options {
            // Never started: the scenario is skipped before any sandbox.
            binary: Some(PathBuf::from("/bin/true")),
            seed: 1,
            runs: 1,
            executor_env: Vec::new(),
            network,
        }
    }

    #[test]
    fn a_netns_scenario_named_without_netns_is_a_usage_error() {
        let e = select("lossy-links", Network::Proxy).expect_err("needs netns");
        assert!(format!("{e:#}").contains("--network netns"), "{e:#}");
        let e = select("leader-isolated,lossy-links", Network::Proxy).expect_err("in a list too");
        assert!(format!("{e:#}").contains("lossy-links needs"), "{e:#}");
        assert_eq!(
            select("leader-isolated, lossy-links", Network::Netns).expect("netns"),
            ["leader-isolated", "lossy-links"]
        );
        assert!(
            select("all", Network::Proxy)
                .expect("all")
                .contains(&"lossy-links")
        );
        assert!(
            !select("short", Network::Proxy)
                .expect("short")
                .contains(&"lossy-links")
        );
    }

    #[tokio::test]
    async fn in_a_proxy_run_of_a_set_a_netns_scenario_is_skipped_with_its_reason() {
        let report = run(&["lossy-links"], &options(Network::Proxy))
            .await
            .expect("a run");
        let run = &report.runs[0];
        assert_eq!(run.outcome, "skipped");
        assert!(
            run.skipped
                .as_deref()
                .is_some_and(|why| why.contains("needs --network netns")),
            "{:?}",
            run.skipped
        );
        assert!(report.passed(), "a skip is not a failure");
        assert!(report.markdown().contains("Skipped: needs --network netns"));
    }
}
