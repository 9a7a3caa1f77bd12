//! `leitstand bench failover`: from breaking a service's active path to the
//! moment the executor starts the action that activates the other path
//! (DESIGN.md §10), with three `leitstand controller` processes (`cluster.rs`)
//! and a `leitstand agent` process whose tcp checks run every 200 ms against
//! two local endpoints, `fail_after = 3`; then keepalived's VRRP between two
//! network namespaces timed the same way in the same run (`keepalived.rs`).
//!
//! "Started" means the same for both systems: the action is a `/bin/sh`
//! script whose first command reads the wall clock (`date +%s%N`) into a
//! journal. The break is timed on the same clock, right before the
//! endpoint's listening socket is closed (ours) or keepalived's process
//! group is sent SIGKILL (the reference).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::operator_client::OperatorClient;
use leitstand_proto::v1::{
    self, CheckStatus, DecisionStage, FreezeRequest, PathState, StatusRequest, SwitchRequest,
    UnfreezeRequest,
};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::Options;
use super::cluster::{Cluster, OPERATOR, START_TIMEOUT};
use super::keepalived;
use crate::sandbox::Endpoint;

const SERVICE: &str = "bench-uplink";
const PRIMARY: &str = "primary";
const BACKUP: &str = "backup";
const AGENT: &str = "bench-agent";
/// The check interval and threshold DESIGN.md §10 names.
pub(super) const CHECK_INTERVAL_MS: u64 = 200;
pub(super) const FAIL_AFTER: u64 = 3;
const RECOVER_AFTER: u64 = 2;
/// The agent's report interval, its smallest: a check result that does not
/// change the check's state (the second and third critical one) waits for
/// the next report, up to this long.
const REPORT_INTERVAL_MS: u64 = 100;
/// The flap guard counts automatic switches per hour; the switch back is an
/// operator's and does not count. Freeze and unfreeze (which starts a fresh
/// hour) before this many.
const MAX_PER_HOUR: u64 = 60;
const RESET_FLAP_GUARD_EVERY: u64 = 50;
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const JOURNAL_POLL: Duration = Duration::from_millis(5);
const STATUS_POLL: Duration = Duration::from_millis(100);
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// DESIGN.md §10.
const TOTAL_MEDIAN_BUDGET_MS: f64 = 1000.0;
const TOTAL_P99_BUDGET_MS: f64 = 1500.0;
const BEYOND_MEDIAN_BUDGET_MS: f64 = 50.0;
const BEYOND_MEDIAN_AIM_MS: f64 = 20.0;
const BEYOND_P99_AIM_MS: f64 = 50.0;

/// The action: its first command reads the clock (keepalived's notify
/// script starts the same way).
const ACTION_SCRIPT: &str = "#!/bin/sh\n\
    t=$(/bin/date +%s%N)\n\
    echo \"$t $1 $2 ${LEITSTAND_DECISION_ID:--} ${LEITSTAND_FENCING_TOKEN:--}\" >> \"$JOURNAL\"\n";

pub(super) async fn run(options: &Options) -> anyhow::Result<serde_json::Value> {
    super::in_scratch_dir("failover", |dir| async move {
        measure_both(&dir, options).await
    })
    .await
}

async fn measure_both(dir: &Path, options: &Options) -> anyhow::Result<serde_json::Value> {
    let binary = crate::sandbox::process::leitstand_binary(options.controller_binary.as_deref())?;
    let trials = options.trials;
    let machine_before = load_average();

    tracing::info!(binary = %binary.display(), trials, "leitstand: starting 3 controllers and an agent");
    let ours = leitstand(&dir.join("leitstand"), &binary, trials).await?;
    let reference = if options.keepalived {
        keepalived::run(&dir.join("keepalived"), trials).await
    } else {
        serde_json::json!({ "skipped": "--keepalived off" })
    };
    let budgets = budgets(&ours);
    Ok(serde_json::json!({
        "benchmark": "failover",
        "machine": {
            "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            "load_average_before": machine_before,
            "load_average_after": load_average(),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "method": {
            "clock": "CLOCK_REALTIME of this machine, read by the bench (t0) and by the action script (t1); the agent's check results and the controllers' records carry the same clock in ms",
            "t0": "leitstand: wall clock right before the bench closes the active path's listening socket (the agent's tcp check then gets 'connection refused'); keepalived: wall clock right before the bench spawns /bin/kill -s KILL -- -PGID for the MASTER's keepalived processes",
            "t1": "the first command of the action script, `date +%s%N` (after the fork and exec of /bin/sh and date: see script_start_overhead_ms)",
            "total": "t1 - t0",
            "beyond_detection_window": "t1 - the time the agent observed the check result that made fail_after consecutive critical results (the decision's evidence): report wait + evaluation + 3 Raft commits (path failed, decision, dispatched) + delivery to the executor + its start of the script",
            "beyond_nominal_window": format!("t1 - t0 - fail_after x check interval ({} ms); the first failing check comes 0..{CHECK_INTERVAL_MS} ms after the break, so this may be negative", FAIL_AFTER * CHECK_INTERVAL_MS),
            "leitstand": format!(
                "3 controller processes on loopback (mTLS, fsync on), one agent process: tcp checks every {CHECK_INTERVAL_MS} ms, report interval {REPORT_INTERVAL_MS} ms (its minimum; a state change is reported at once), service mode auto, fail_after {FAIL_AFTER}, recover_after {RECOVER_AFTER}, quorum 1, flap_guard min_interval 0s max_per_hour {MAX_PER_HOUR}; between trials the path is repaired (same port) and an operator Switch goes back"
            ),
            "keepalived": "two network namespaces joined by a veth pair, one keepalived --vrrp each (VRRP version 3, MASTER priority 150, BACKUP priority 100, preempt), the BACKUP's notify_master runs a script with the same first command (date +%s%N); SIGKILL to the MASTER's process group (parent and VRRP child), then it is restarted and preempts back before the next trial",
            "percentiles": "median of an even count: mean of the middle two; p99: nearest rank (with 20 trials, the largest)",
        },
        "leitstand": ours,
        "keepalived": reference,
        "budgets": budgets,
        "reference_in_design": {
            "keepalived_advert_1s_ms": 3220,
            "keepalived_advert_100ms_ms": 293,
        },
    }))
}

fn budgets(ours: &serde_json::Value) -> serde_json::Value {
    let get = |figure: &str, stat: &str| ours[figure][stat].as_f64();
    let at_most = |value: Option<f64>, limit: f64| value.is_some_and(|v| v <= limit);
    let failed = ours["failed_trials"].as_array().map_or(0, Vec::len);
    let verified = ours["decision_stage_reached"]["verified"].as_u64() == ours["trials"].as_u64();
    let total_median = get("total_ms", "median");
    let total_p99 = get("total_ms", "p99");
    let beyond_median = get("beyond_detection_window_ms", "median");
    let beyond_p99 = get("beyond_detection_window_ms", "p99");
    serde_json::json!({
        "every_trial_ran_once": failed == 0,
        "every_decision_verified": verified,
        "total_median_at_most_ms": TOTAL_MEDIAN_BUDGET_MS,
        "total_median_ok": at_most(total_median, TOTAL_MEDIAN_BUDGET_MS),
        "total_p99_at_most_ms": TOTAL_P99_BUDGET_MS,
        "total_p99_ok": at_most(total_p99, TOTAL_P99_BUDGET_MS),
        "beyond_detection_median_at_most_ms": BEYOND_MEDIAN_BUDGET_MS,
        "beyond_detection_median_ok": at_most(beyond_median, BEYOND_MEDIAN_BUDGET_MS),
        "aim_beyond_detection_median_at_most_ms": BEYOND_MEDIAN_AIM_MS,
        "aim_beyond_detection_p99_at_most_ms": BEYOND_P99_AIM_MS,
        "aim_ok": at_most(beyond_median, BEYOND_MEDIAN_AIM_MS) && at_most(beyond_p99, BEYOND_P99_AIM_MS),
        "ok": failed == 0
            && verified
            && at_most(total_median, TOTAL_MEDIAN_BUDGET_MS)
            && at_most(total_p99, TOTAL_P99_BUDGET_MS)
            && at_most(beyond_median, BEYOND_MEDIAN_BUDGET_MS),
    })
}

/// Starts the cluster, measures, and stops it whatever happened.
async fn leitstand(dir: &Path, binary: &Path, trials: u64) -> anyhow::Result<serde_json::Value> {
    let mut cluster = Cluster::leitstand(dir, binary)?;
    let before = Machine::take();
    let outcome = leitstand_started(&mut cluster, dir, binary, trials).await;
    if outcome.is_err() {
        tracing::error!("the controllers' logs end:\n{}", cluster.log_tails());
    }
    cluster.stop().await;
    let mut figures = outcome?;
    if let Some(object) = figures.as_object_mut() {
        object.insert("machine_during".into(), Machine::take().since(&before));
    }
    Ok(figures)
}

async fn leitstand_started(
    cluster: &mut Cluster,
    dir: &Path,
    binary: &Path,
    trials: u64,
) -> anyhow::Result<serde_json::Value> {
    cluster.start().await?;
    let (_, view) = cluster.await_leader("after start", START_TIMEOUT).await?;
    tracing::info!(leader = view.leader, "leader elected; starting the agent");
    let tls = cluster
        .operator_tls()
        .context("the bench cluster has no operator certificate")?;
    let mut site = Site::start(dir, binary, cluster.addresses(), tls).await?;
    let overhead = script_overhead(dir).await?;
    site.apply_runbook().await?;
    site.wait_ready().await?;

    let mut measured = Vec::new();
    let mut failed = Vec::new();
    for trial in 1..=trials {
        if trial % RESET_FLAP_GUARD_EVERY == 0 {
            site.reset_flap_guard().await?;
        }
        match site.trial(trial).await {
            Ok(figures) => {
                tracing::info!(
                    trial,
                    of = trials,
                    total_ms = round3(figures.total_ms()),
                    beyond_detection_ms = round3(figures.beyond_detection_ms()),
                    stage = figures.stage,
                    "leitstand trial"
                );
                measured.push(figures);
            }
            Err(e) => {
                tracing::error!(trial, "leitstand trial failed: {e:#}");
                failed.push(serde_json::json!({ "trial": trial, "error": format!("{e:#}") }));
            }
        }
        site.restore()
            .await
            .with_context(|| format!("restore the primary path after trial {trial}"))?;
    }
    // Anything that runs late runs within this long, or it is not measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Err(e) = site.each_decision_ran_once() {
        failed.push(serde_json::json!({ "trial": "all", "error": format!("{e:#}") }));
    }
    site.stop().await;

    let total: Vec<f64> = measured.iter().map(Figures::total_ms).collect();
    let beyond: Vec<f64> = measured.iter().map(Figures::beyond_detection_ms).collect();
    let nominal: Vec<f64> = measured
        .iter()
        .map(|f| f.total_ms() - (FAIL_AFTER * CHECK_INTERVAL_MS) as f64)
        .collect();
    let part = |f: fn(&Figures) -> f64| summary(&measured.iter().map(f).collect::<Vec<_>>());
    let mut stages: BTreeMap<&str, u64> = BTreeMap::new();
    for figures in &measured {
        *stages.entry(figures.stage).or_default() += 1;
    }
    Ok(serde_json::json!({
        "version": leitstand_proto::VERSION,
        "trials": trials,
        "measured": measured.len(),
        "failed_trials": failed,
        "total_ms": summary(&total),
        "beyond_detection_window_ms": summary(&beyond),
        "beyond_nominal_window_ms": summary(&nominal),
        "breakdown_ms": {
            "break_to_threshold_result": part(|f| f.threshold_observed_ms - f.t0_ms()),
            "threshold_result_to_path_failed": part(|f| f.path_failed_ms - f.threshold_observed_ms),
            "path_failed_to_decided": part(|f| f.decided_ms - f.path_failed_ms),
            "decided_to_action_started": part(|f| f.t1_ms() - f.decided_ms),
            "explained": "threshold_result: when the agent observed the result that made fail_after (evidence); path_failed: the leader's time on its PathStates command (after the report arrived and was evaluated, before its commit); decided: the time on its Decide command (after the path state committed); action_started: the script's first command, after the Decide and Dispatched commits, the ExecuteAction delivery, the agent's token write and its fork/exec. Controller and agent times have ms resolution.",
        },
        "decision_stage_reached": stages,
        "script_start_overhead_ms": overhead,
        "all": measured.iter().map(Figures::json).collect::<Vec<_>>(),
    }))
}

/// What one trial saw.
#[derive(Debug)]
struct Figures {
    trial: u64,
    t0_unix_ns: i64,
    t1_unix_ns: i64,
    /// The bench noticed the journal line this long after t0 (monotonic).
    noticed_ms: f64,
    threshold_observed_ms: f64,
    consecutive: u32,
    path_failed_ms: f64,
    decided_ms: f64,
    decision: String,
    stage: &'static str,
}

impl Figures {
    fn t0_ms(&self) -> f64 {
        self.t0_unix_ns as f64 / 1e6
    }
    fn t1_ms(&self) -> f64 {
        self.t1_unix_ns as f64 / 1e6
    }
    fn total_ms(&self) -> f64 {
        (self.t1_unix_ns - self.t0_unix_ns) as f64 / 1e6
    }
    fn beyond_detection_ms(&self) -> f64 {
        self.t1_ms() - self.threshold_observed_ms
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "trial": self.trial,
            "t0_unix_ns": self.t0_unix_ns,
            "t1_unix_ns": self.t1_unix_ns,
            "total_ms": round3(self.total_ms()),
            "beyond_detection_window_ms": round3(self.beyond_detection_ms()),
            "threshold_result_after_break_ms": round3(self.threshold_observed_ms - self.t0_ms()),
            "consecutive_critical_in_evidence": self.consecutive,
            "path_failed_after_break_ms": round3(self.path_failed_ms - self.t0_ms()),
            "decided_after_break_ms": round3(self.decided_ms - self.t0_ms()),
            "bench_noticed_after_break_ms": round3(self.noticed_ms),
            "decision": self.decision,
            "stage": self.stage,
        })
    }
}

/// One line the action script wrote.
#[derive(Debug, Clone)]
struct Entry {
    unix_ns: i64,
    path: String,
    decision: String,
}

fn read_journal(path: &Path) -> anyhow::Result<Vec<Entry>> {
    crate::sandbox::process::complete_lines(path)?
        .iter()
        .map(|line| {
            let mut words = line.split_whitespace();
            let unix_ns = words
                .next()
                .and_then(|w| w.parse().ok())
                .with_context(|| format!("journal line {line:?}: no time in ns"))?;
            let _system = words.next();
            Ok(Entry {
                unix_ns,
                path: words.next().unwrap_or_default().to_owned(),
                decision: words.next().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// The agent, the endpoints and the operator's view of the cluster.
struct Site {
    dir: PathBuf,
    binary: PathBuf,
    journal: PathBuf,
    agent: Option<Child>,
    primary: Endpoint,
    /// Open for the backup path's check the whole run.
    _backup: Endpoint,
    channels: Vec<(String, Channel)>,
    /// Decision ids the journal has shown so far.
    seen: HashSet<String>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").field("dir", &self.dir).finish()
    }
}

impl Site {
    async fn start(
        dir: &Path,
        binary: &Path,
        addresses: Vec<String>,
        tls: Arc<ClientTls>,
    ) -> anyhow::Result<Site> {
        let pki_dir = dir.join("pki");
        pki::issue(
            &pki_dir,
            &IssueRequest {
                kind: PeerKind::Agent,
                name: AGENT.into(),
                dns: vec![],
                ips: vec![],
                validity: Validity::days_from_now(1),
                force: false,
            },
        )
        .context("issue the bench agent's certificate")?;
        let journal = dir.join("journal");
        let script = dir.join("action.sh");
        write_script(&script, ACTION_SCRIPT)?;
        let primary = Endpoint::open(PRIMARY, "127.0.0.1:0").await?;
        let backup = Endpoint::open(BACKUP, "127.0.0.1:0").await?;
        let listed = addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let toml_string = |path: &Path| {
            let text = path.to_str().context("a non-UTF-8 temporary directory")?;
            Ok::<_, anyhow::Error>(serde_json::Value::from(text).to_string())
        };
        let check = |name: &str, endpoint: &Endpoint| {
            format!(
                "[[check]]\nname = \"{name}\"\nkind = \"tcp\"\ntarget = \"{}\"\ninterval = \"{CHECK_INTERVAL_MS}ms\"\ntimeout = \"150ms\"\n",
                endpoint.address()
            )
        };
        let action = |path: &str| -> anyhow::Result<String> {
            Ok(format!(
                "[[action]]\nname = \"activate-{path}\"\nargv = [{}, \"leitstand\", \"{path}\"]\nenv = {{ JOURNAL = {} }}\ntimeout = \"5s\"\n",
                toml_string(&script)?,
                toml_string(&journal)?,
            ))
        };
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "id = \"{AGENT}\"\ncontrollers = [{listed}]\ninterval = \"{REPORT_INTERVAL_MS}ms\"\nstate_dir = \"agent-state\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-{AGENT}.pem\"\nkey = \"pki/agent-{AGENT}.key\"\n\
                 {}{}{}{}",
                check(PRIMARY, &primary),
                check(BACKUP, &backup),
                action(PRIMARY)?,
                action(BACKUP)?,
            ),
        )
        .context("write agent.toml")?;
        std::fs::write(
            dir.join("operator.toml"),
            format!(
                "controllers = [{listed}]\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-{OPERATOR}.pem\"\nkey = \"pki/operator-{OPERATOR}.key\"\n"
            ),
        )
        .context("write operator.toml")?;
        std::fs::write(dir.join("runbook.toml"), runbook()).context("write runbook.toml")?;

        let agent = spawn_logged(
            binary,
            &[
                "agent".as_ref(),
                "--config".as_ref(),
                dir.join("agent.toml").as_os_str(),
            ],
            &dir.join("agent.log"),
        )
        .context("start the agent")?;
        let mut channels = Vec::new();
        for address in addresses {
            let channel = tls
                .channel(&address)
                .await
                .with_context(|| format!("connect to the controller at {address}"))?;
            channels.push((address, channel));
        }
        Ok(Site {
            dir: dir.to_owned(),
            binary: binary.to_owned(),
            journal,
            agent: Some(agent),
            primary,
            _backup: backup,
            channels,
            seen: HashSet::new(),
        })
    }

    fn agent_log_tail(&self) -> String {
        tail(&self.dir.join("agent.log"))
    }

    async fn apply_runbook(&mut self) -> anyhow::Result<()> {
        let runbook = self.dir.join("runbook.toml");
        let operator = self.dir.join("operator.toml");
        let log = self.dir.join("runbook-apply.log");
        let mut child = spawn_logged(
            &self.binary,
            &[
                "runbook".as_ref(),
                "apply".as_ref(),
                runbook.as_os_str(),
                "--config".as_ref(),
                operator.as_os_str(),
            ],
            &log,
        )?;
        let status = tokio::time::timeout(SETTLE_TIMEOUT, child.wait())
            .await
            .context("leitstand runbook apply did not finish within 30 s")??;
        if !status.success() {
            bail!(
                "leitstand runbook apply exited with {status}:\n{}",
                tail(&log)
            );
        }
        tracing::info!("runbook applied; waiting for both paths to be healthy");
        Ok(())
    }

    /// The leader's view (a follower's, if none leads).
    async fn status(&self) -> anyhow::Result<v1::View> {
        let mut best = None;
        let mut last = String::from("no controller");
        for (address, channel) in &self.channels {
            let mut client = OperatorClient::new(channel.clone());
            let view =
                match tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {})).await {
                    Ok(Ok(view)) => view.into_inner(),
                    Ok(Err(status)) => {
                        last = format!("{address}: {:?}: {}", status.code(), status.message());
                        continue;
                    }
                    Err(_) => {
                        last = format!("{address}: no answer within {STATUS_TIMEOUT:?}");
                        continue;
                    }
                };
            let leads = view
                .cluster
                .as_ref()
                .is_some_and(|c| c.leader_id != 0 && c.leader_id == c.answered_by);
            if leads {
                return Ok(view);
            }
            best.get_or_insert(view);
        }
        best.ok_or_else(|| anyhow!("no controller answered Operator.Status (last: {last})"))
    }

    /// A client of the leader, for the operator's actions.
    async fn leader(&self) -> anyhow::Result<OperatorClient<Channel>> {
        let leader = self
            .status()
            .await?
            .cluster
            .map(|c| c.leader_id)
            .unwrap_or(0);
        let (_, channel) = usize::try_from(leader)
            .ok()
            .and_then(|id| id.checked_sub(1))
            .and_then(|i| self.channels.get(i))
            .context("no controller leads")?;
        Ok(OperatorClient::new(channel.clone()))
    }

    /// Polls the leader's view until `ready` says yes.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&v1::View) -> bool,
    ) -> anyhow::Result<v1::View> {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.status().await;
            if let Ok(view) = &view
                && ready(view)
            {
                return Ok(view.clone());
            }
            if Instant::now() >= deadline {
                let seen = match &view {
                    Ok(view) => describe(view),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "waited {timeout:?} for {what}; the leader's view: {seen}\nthe agent's log ends:\n{}",
                    self.agent_log_tail()
                );
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
    }

    /// Active path primary, both paths healthy, nothing in flight.
    async fn wait_ready(&self) -> anyhow::Result<v1::View> {
        self.wait_for(
            "the primary path to be active and both paths healthy, with no decision in flight",
            SETTLE_TIMEOUT,
            |view| {
                let Some(service) = view.services.iter().find(|s| s.name == SERVICE) else {
                    return false;
                };
                service.active_path == PRIMARY
                    && !service.frozen
                    && service.paths.len() == 2
                    && service
                        .paths
                        .iter()
                        .all(|p| p.state == PathState::Healthy as i32)
                    && view
                        .decisions
                        .iter()
                        .filter(|d| d.service == SERVICE)
                        .all(|d| is_terminal(d.stage))
            },
        )
        .await
    }

    async fn trial(&mut self, trial: u64) -> anyhow::Result<Figures> {
        self.wait_ready().await?;
        // Break at a random phase of the check timer.
        tokio::time::sleep(Duration::from_millis(
            CHECK_INTERVAL_MS + jitter(CHECK_INTERVAL_MS),
        ))
        .await;
        let before = read_journal(&self.journal)?.len();
        // t0: right before the listening socket closes.
        let t0 = self.primary.close().await?;
        let mono = Instant::now();
        let started = loop {
            let journal = read_journal(&self.journal)?;
            if let Some(entry) = journal.get(before) {
                break entry.clone();
            }
            if mono.elapsed() > ACTION_TIMEOUT {
                bail!(
                    "no action started within {ACTION_TIMEOUT:?} of breaking the primary path; the agent's log ends:\n{}",
                    self.agent_log_tail()
                );
            }
            tokio::time::sleep(JOURNAL_POLL).await;
        };
        let noticed_ms = mono.elapsed().as_secs_f64() * 1e3;
        if started.path != BACKUP {
            bail!(
                "the first action after the break activated {:?}, not {BACKUP:?}",
                started.path
            );
        }
        if !self.seen.insert(started.decision.clone()) {
            bail!(
                "decision {} ran twice: it had run in an earlier trial",
                started.decision
            );
        }
        let id = started.decision.clone();
        let view = self
            .wait_for(
                &format!("decision {id} to reach a final stage"),
                SETTLE_TIMEOUT,
                |view| {
                    view.decisions
                        .iter()
                        .any(|d| d.decision_id == id && is_terminal(d.stage))
                },
            )
            .await?;
        let decision = view
            .decisions
            .iter()
            .find(|d| d.decision_id == id)
            .context("the decision left the view")?;
        let stage = stage_name(decision.stage);
        if decision.to_path != BACKUP || decision.service != SERVICE {
            bail!(
                "decision {id} went {} → {} of {}",
                decision.from_path,
                decision.to_path,
                decision.service
            );
        }
        let threshold = decision
            .evidence
            .iter()
            .filter(|e| e.path == PRIMARY && e.status == CheckStatus::Critical as i32)
            .max_by_key(|e| e.observed_at_unix_ms)
            .with_context(|| format!("decision {id} carries no critical evidence of {PRIMARY}"))?;
        let failed_since = view
            .services
            .iter()
            .find(|s| s.name == SERVICE)
            .and_then(|s| s.paths.iter().find(|p| p.name == PRIMARY))
            .filter(|p| p.state == PathState::Failed as i32)
            .map(|p| p.since_unix_ms)
            .with_context(|| format!("{PRIMARY} is not Failed after decision {id}"))?;
        let runs = read_journal(&self.journal)?
            .into_iter()
            .skip(before)
            .filter(|e| e.decision == id)
            .count();
        if runs != 1 {
            bail!("decision {id} ran {runs} times");
        }
        Ok(Figures {
            trial,
            t0_unix_ns: t0,
            t1_unix_ns: started.unix_ns,
            noticed_ms,
            threshold_observed_ms: threshold.observed_at_unix_ms as f64,
            consecutive: threshold.consecutive,
            path_failed_ms: failed_since as f64,
            decided_ms: decision.proposed_at_unix_ms as f64,
            decision: id,
            stage,
        })
    }

    /// Repairs the primary path (same port) and switches back to it by an
    /// operator's Switch, whatever the trial left behind.
    async fn restore(&mut self) -> anyhow::Result<()> {
        if !self.primary.is_open() {
            self.primary.reopen().await?;
        }
        let view = self
            .wait_for(
                "the repaired primary path to be healthy and no decision in flight",
                SETTLE_TIMEOUT,
                |view| {
                    let healthy = view
                        .services
                        .iter()
                        .find(|s| s.name == SERVICE)
                        .and_then(|s| s.paths.iter().find(|p| p.name == PRIMARY))
                        .is_some_and(|p| p.state == PathState::Healthy as i32);
                    healthy
                        && view
                            .decisions
                            .iter()
                            .filter(|d| d.service == SERVICE)
                            .all(|d| is_terminal(d.stage))
                },
            )
            .await?;
        let active = view
            .services
            .iter()
            .find(|s| s.name == SERVICE)
            .map(|s| s.active_path.clone())
            .unwrap_or_default();
        if active != PRIMARY {
            let before = read_journal(&self.journal)?.len();
            self.leader()
                .await?
                .switch(SwitchRequest {
                    service: SERVICE.into(),
                    path: PRIMARY.into(),
                    reason: "leitstand bench failover: back to the repaired primary path".into(),
                })
                .await
                .map_err(|s| anyhow!("Operator.Switch: {:?}: {}", s.code(), s.message()))?;
            let deadline = Instant::now() + ACTION_TIMEOUT;
            loop {
                let journal = read_journal(&self.journal)?;
                if let Some(entry) = journal.get(before) {
                    if entry.path != PRIMARY {
                        bail!("the switch back ran the action of {:?}", entry.path);
                    }
                    if !self.seen.insert(entry.decision.clone()) {
                        bail!("decision {} ran twice", entry.decision);
                    }
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the operator's switch back ran no action within {ACTION_TIMEOUT:?}; the agent's log ends:\n{}",
                        self.agent_log_tail()
                    );
                }
                tokio::time::sleep(JOURNAL_POLL).await;
            }
        }
        self.wait_ready().await?;
        Ok(())
    }

    /// Freeze and unfreeze: the flap guard's hour starts afresh.
    async fn reset_flap_guard(&self) -> anyhow::Result<()> {
        let reason = "leitstand bench failover: a fresh flap-guard hour";
        let mut leader = self.leader().await?;
        leader
            .freeze(FreezeRequest {
                service: SERVICE.into(),
                reason: reason.into(),
            })
            .await
            .map_err(|s| anyhow!("Operator.Freeze: {:?}: {}", s.code(), s.message()))?;
        leader
            .unfreeze(UnfreezeRequest {
                service: SERVICE.into(),
                reason: reason.into(),
            })
            .await
            .map_err(|s| anyhow!("Operator.Unfreeze: {:?}: {}", s.code(), s.message()))?;
        Ok(())
    }

    /// Every decision id appears in the journal once.
    fn each_decision_ran_once(&self) -> anyhow::Result<()> {
        let mut runs: HashMap<String, u32> = HashMap::new();
        for entry in read_journal(&self.journal)? {
            *runs.entry(entry.decision).or_default() += 1;
        }
        let twice: Vec<String> = runs
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, n)| format!("{id} ran {n} times"))
            .collect();
        if !twice.is_empty() {
            bail!("{}", twice.join("; "));
        }
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.wait()).await;
        }
    }
}

fn runbook() -> String {
    let path = |name: &str| {
        format!(
            "[[service.path]]\nname = \"{name}\"\nvantage = [{{ agent = \"{AGENT}\", check = \"{name}\" }}]\n\
             quorum = 1\nfail_after = {FAIL_AFTER}\nrecover_after = {RECOVER_AFTER}\nstale_after = \"3s\"\n\
             silence_means = \"unknown\"\nactivate = {{ agent = \"{AGENT}\", action = \"activate-{name}\" }}\n\
             verify = {{ agent = \"{AGENT}\", check = \"{name}\" }}\n"
        )
    };
    format!(
        "[[service]]\nname = \"{SERVICE}\"\nmode = \"auto\"\nfailback = \"manual\"\n\
         flap_guard = {{ min_interval = \"0s\", max_per_hour = {MAX_PER_HOUR} }}\n\n{}\n{}",
        path(PRIMARY),
        path(BACKUP)
    )
}

/// Time from spawning the action script to its first command, as the bench
/// sees it: what t1 includes beyond "the executor started the action".
async fn script_overhead(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let script = dir.join("action.sh");
    let journal = dir.join("overhead-journal");
    let mut samples = Vec::new();
    for _ in 0..20 {
        let spawned = unix_ns();
        let mut child = Command::new(&script)
            .args(["overhead", "-"])
            .env_clear()
            .env("JOURNAL", &journal)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("run the action script")?;
        child.wait().await?;
        let entries = read_journal(&journal)?;
        let last = entries.last().context("the action script wrote nothing")?;
        samples.push((last.unix_ns - spawned) as f64 / 1e6);
    }
    Ok(summary(&samples))
}

pub(super) fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Starts `program args` (no shell) with its output appended to `log`.
pub(super) fn spawn_logged(
    program: &Path,
    args: &[&std::ffi::OsStr],
    log: &Path,
) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    Command::new(program)
        .args(args)
        .env_clear()
        .env("LEITSTAND_LOG", "info")
        .env("NO_COLOR", "1")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", program.display()))
}

pub(super) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

fn describe(view: &v1::View) -> String {
    let service = view.services.iter().find(|s| s.name == SERVICE);
    let paths = service.map(|s| {
        s.paths
            .iter()
            .map(|p| {
                let state = PathState::try_from(p.state)
                    .map_or("?", |s| s.as_str_name())
                    .trim_start_matches("PATH_STATE_");
                format!("{} {state}", p.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    let decisions = view
        .decisions
        .iter()
        .filter(|d| d.service == SERVICE)
        .map(|d| {
            format!(
                "{} {}→{} {}",
                d.decision_id,
                d.from_path,
                d.to_path,
                stage_name(d.stage)
            )
        })
        .collect::<Vec<_>>();
    format!(
        "active {:?}, frozen {:?}, paths [{}], decisions {decisions:?}",
        service.map(|s| s.active_path.as_str()),
        service.map(|s| s.frozen_reason.as_str()),
        paths.unwrap_or_default()
    )
}

fn is_terminal(stage: i32) -> bool {
    [
        DecisionStage::Verified,
        DecisionStage::Abandoned,
        DecisionStage::Rejected,
    ]
    .iter()
    .any(|s| *s as i32 == stage)
}

fn stage_name(stage: i32) -> &'static str {
    match DecisionStage::try_from(stage) {
        Ok(DecisionStage::Proposed) => "proposed",
        Ok(DecisionStage::Approved) => "approved",
        Ok(DecisionStage::Dispatched) => "dispatched",
        Ok(DecisionStage::Succeeded) => "succeeded",
        Ok(DecisionStage::Failed) => "failed",
        Ok(DecisionStage::TimedOut) => "timed_out",
        Ok(DecisionStage::Verified) => "verified",
        Ok(DecisionStage::Abandoned) => "abandoned",
        Ok(DecisionStage::Rejected) => "rejected",
        Ok(DecisionStage::Unspecified) | Err(_) => "unknown",
    }
}

pub(super) use crate::sandbox::unix_ns;

/// 0..bound ms, from the clock's low bits: enough to spread the break
/// over the phase of a timer.
pub(super) fn jitter(bound_ms: u64) -> u64 {
    u64::try_from(unix_ns()).unwrap_or(0) / 1000 % bound_ms.max(1)
}

/// n, min, median (of an even count: mean of the middle two), p99 (nearest
/// rank), max, in ms rounded to µs.
pub(super) fn summary(values: &[f64]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return serde_json::json!({ "n": 0 });
    }
    let median = if n.is_multiple_of(2) {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    } else {
        sorted[n / 2]
    };
    let rank = (0.99 * n as f64).ceil() as usize;
    serde_json::json!({
        "n": n,
        "min": round3(sorted[0]),
        "median": round3(median),
        "p99": round3(sorted[rank.clamp(1, n) - 1]),
        "max": round3(sorted[n - 1]),
    })
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(super) fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Load averages and the machine's busy share over a part of the run.
#[derive(Debug)]
pub(super) struct Machine {
    at: Instant,
    load: Vec<f64>,
    /// (busy, total) jiffies of all cores from /proc/stat.
    jiffies: (u64, u64),
}

impl Machine {
    pub(super) fn take() -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        // idle and iowait
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Machine {
            at: Instant::now(),
            load: load_average(),
            jiffies: (total.saturating_sub(idle), total),
        }
    }

    pub(super) fn since(&self, before: &Machine) -> serde_json::Value {
        let busy = self.jiffies.0.saturating_sub(before.jiffies.0);
        let total = self.jiffies.1.saturating_sub(before.jiffies.1);
        serde_json::json!({
            "seconds": round3((self.at - before.at).as_secs_f64()),
            "load_average_before": before.load,
            "load_average_after": self.load,
            "all_cores_busy_percent": (total > 0).then(|| round3(100.0 * busy as f64 / total as f64)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_use_nearest_rank_and_a_true_median() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = summary(&values);
        assert_eq!(s["median"], 10.5);
        assert_eq!(s["p99"], 20.0);
        assert_eq!(s["max"], 20.0);
        assert_eq!(summary(&[3.0, 1.0, 2.0])["median"], 2.0);
        assert_eq!(summary(&[])["n"], 0);
    }

    #[test]
    fn a_journal_line_is_read_once_complete() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = dir.path().join("journal");
        std::fs::write(
            &journal,
            "1700000000000000001 leitstand backup d-1-5 1.5\n17000",
        )
        .expect("write");
        let entries = read_journal(&journal).expect("read");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].unix_ns, 1_700_000_000_000_000_001);
        assert_eq!(entries[0].path, "backup");
        assert_eq!(entries[0].decision, "d-1-5");
    }
}
