//! The failover engine on the leader (DESIGN.md §5), shaped like omicron's
//! reconcilers: one task that, on every report and every tick, looks at the
//! replicated state and the fresh observations and proposes what is
//! missing. It keeps nothing that matters across a leader change: after
//! one, the new leader's engine reads the log and finishes what is in
//! flight through the same code path as normal operation.
//!
//! Each activation, in order:
//! 1. **Path states** ([`evaluate`]): vantage verdicts from this leader's
//!    own check windows; only transitions are proposed, with evidence.
//! 2. **Decisions**: the active path Failed and another Healthy → a
//!    failover to the Healthy path of highest priority (not one whose
//!    activation was abandoned in the last five minutes); a preferred path
//!    Healthy for the failback hold → a failback. Not for a frozen service,
//!    not within the flap guard's minimum interval, and over its hourly
//!    limit the service is frozen instead. None until the vantage points
//!    concerned have reported to this leader, or `stale_after` has passed
//!    since it became leader (the grace period).
//! 3. **Lifecycle**: Approved → Dispatched (committed before ExecuteAction
//!    is sent, so a new leader re-sends the same decision id and the
//!    executor's stored result answers: at most once); Dispatched without a
//!    result past its timeout → TimedOut; Succeeded → Verified once the
//!    verify check passes after the action (Abandoned if it fails or stays
//!    silent); Failed or TimedOut → Abandoned, after which step 2 tries the
//!    next healthy path.
//!
//! Soft state (never replicated): per (agent, check) the consecutive
//! results in one status, per agent when it last reported, and which
//! decisions this leader has already sent.

pub(crate) mod evaluate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::domain::{ActionOutcome, ActionResult, AgentId, Report};
use leitstand_proto::v1;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::raft::NodeHandle;
use crate::registry::Registry;
use crate::runbook::Runbook;
use crate::state::failover::{ActionRecord, DecisionKind, Evidence, PathState, Stage};
use crate::state::{ClusterState, Command, now_unix_ms};
use crate::telemetry::Recorder;

pub(crate) use evaluate::Windows;

/// How often the engine looks even when no report arrives.
const TICK: Duration = Duration::from_millis(100);
/// An executor does not start an action later than this after dispatch.
const ACTION_DEADLINE: Duration = Duration::from_secs(10);
/// A dispatched decision without a result is TimedOut after this.
const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the verify check may take to pass after the action.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);
/// A path whose activation was abandoned is not tried again this soon.
const ABANDONED_COOLDOWN_MS: i64 = 5 * 60 * 1000;
/// Observations buffered between the sessions and the engine.
const OBSERVATION_CAPACITY: usize = 65_536;

/// A service's name, active path and path states, for the metrics.
type PublishedService = (String, String, Vec<(String, PathState)>);

/// What the agent sessions tell the engine.
#[derive(Debug)]
pub(crate) enum Observation {
    Report {
        agent: AgentId,
        /// The registry keeps the same report.
        report: Arc<Report>,
    },
    ActionResult {
        agent: AgentId,
        result: ActionResult,
    },
    /// A new session of `agent` registered: what was sent down the old one
    /// may be lost with it.
    Connected { agent: AgentId },
}

/// The sessions' end of the engine.
#[derive(Debug, Clone)]
pub(crate) struct EngineInbox {
    tx: mpsc::Sender<Observation>,
    counters: Arc<crate::counters::Counters>,
}

impl EngineInbox {
    /// Never waits: a full inbox drops and counts (the engine then sees the
    /// agent as quieter than it is, never as failing: staleness counts as
    /// failure only where a runbook says so).
    pub(crate) fn observe(&self, observation: Observation) {
        if self.tx.try_send(observation).is_err() {
            let dropped = self
                .counters
                .observations_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The first of a series is news; a full inbox stays full a while.
            if dropped.is_power_of_two() || dropped == 0 {
                tracing::warn!(
                    dropped_total = dropped + 1,
                    "the failover engine's inbox is full; observations dropped"
                );
            }
        }
    }
}

pub(crate) struct Engine {
    raft: NodeHandle,
    state: ClusterState,
    registry: Arc<Registry>,
    windows: Windows,
    leader_since: Option<Instant>,
    /// Decisions sent to their executor by this leader, and when.
    sent: HashMap<String, Instant>,
    /// Services whose no-healthy-path alarm was raised (logged once).
    alarmed: HashSet<String>,
    recorder: Recorder,
    /// Services whose metrics were published last time.
    published: HashSet<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Starts the engine task; it runs until `stop` is set.
pub(crate) fn start(
    raft: NodeHandle,
    state: ClusterState,
    registry: Arc<Registry>,
    recorder: Recorder,
    counters: Arc<crate::counters::Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (EngineInbox, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(OBSERVATION_CAPACITY);
    let inbox = EngineInbox { tx, counters };
    let mut engine = Engine {
        raft,
        state,
        registry,
        windows: Windows::default(),
        leader_since: None,
        sent: HashMap::new(),
        alarmed: HashSet::new(),
        recorder,
        published: HashSet::new(),
    };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                observation = rx.recv() => {
                    let Some(observation) = observation else { return };
                    engine.observe(observation).await;
                    while let Ok(observation) = rx.try_recv() {
                        engine.observe(observation).await;
                    }
                }
                _ = tick.tick() => {}
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => return,
            }
            engine.reconcile().await;
        }
    });
    (inbox, task)
}

impl Engine {
    async fn observe(&mut self, observation: Observation) {
        match observation {
            Observation::Report { agent, report } => {
                self.windows.record(&agent, &report, Instant::now());
            }
            Observation::ActionResult { agent, result } => self.action_result(agent, result).await,
            Observation::Connected { agent } => {
                // Resent at this activation rather than after the resend
                // period: an executor that comes back (a healed link, a
                // restart) runs its pending action at once (DESIGN.md I7).
                // The executor's stored results keep a repeat harmless (I3).
                let pending: Vec<String> = self.state.with_failover(|f| {
                    f.decisions
                        .values()
                        .filter(|d| d.stage == Stage::Dispatched && d.executor == agent.as_str())
                        .map(|d| d.id.clone())
                        .collect()
                });
                for id in pending {
                    self.sent.remove(&id);
                }
            }
        }
    }

    /// Proposes `command`; a refusal or a lost proposal is logged and the
    /// next activation looks again.
    async fn propose(&self, command: Command, what: &str) -> bool {
        match self.raft.propose(command.encode()).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, what, "engine proposal not applied");
                false
            }
        }
    }

    async fn action_result(&mut self, agent: AgentId, result: ActionResult) {
        let id = result.decision_id.as_str().to_owned();
        let expected = self.state.with_failover(|f| {
            f.decisions.get(&id).map(|d| {
                (
                    d.stage,
                    d.executor.clone(),
                    (d.fencing_term, d.fencing_index),
                )
            })
        });
        let Some((stage, executor, token)) = expected else {
            tracing::warn!(%agent, decision = %id, "an action result for an unknown decision ignored");
            return;
        };
        let result_token = (result.fencing_token.term, result.fencing_token.index);
        if executor != agent.as_str() || token != result_token {
            tracing::warn!(%agent, decision = %id, "an action result from the wrong agent or with the wrong fencing token ignored");
            return;
        }
        if stage != Stage::Dispatched {
            tracing::debug!(decision = %id, stage = stage.as_str(), "a repeated action result ignored");
            return;
        }
        let outcome = match result.outcome {
            ActionOutcome::Succeeded => "succeeded",
            ActionOutcome::Failed => "failed",
            ActionOutcome::TimedOut => "timed_out",
            ActionOutcome::Refused => "refused",
        };
        tracing::info!(decision = %id, %agent, outcome, replayed = result.replayed, fencing_token = %result.fencing_token, "action result");
        let proposed_at = self
            .state
            .with_failover(|f| f.decisions.get(&id).map(|d| d.proposed_at_unix_ms));
        let record = ActionRecord {
            outcome: outcome.into(),
            exit_code: result.exit_code,
            output: result.output,
            reason: result.reason,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            replayed: result.replayed,
        };
        let now_ms = now_unix_ms();
        if self
            .propose(
                Command::ActionResult {
                    decision: id,
                    result: record,
                    at_unix_ms: now_ms,
                },
                "recording an action result",
            )
            .await
        {
            self.recorder.record_decision(if outcome == "succeeded" {
                "succeeded"
            } else if outcome == "timed_out" {
                "timed_out"
            } else {
                "failed"
            });
            if let Some(at) = proposed_at {
                self.recorder
                    .observe_failover_latency((now_ms - at) as f64 / 1000.0);
            }
        }
    }

    /// Path states and active paths as metrics, on every controller, from
    /// the replicated state.
    fn publish_metrics(&mut self) {
        let services: Vec<PublishedService> = self.state.with_failover(|f| {
            f.services
                .iter()
                .map(|(name, record)| {
                    let paths = record
                        .paths
                        .iter()
                        .map(|(p, r)| (p.clone(), r.state))
                        .collect();
                    (name.clone(), record.active_path.clone(), paths)
                })
                .collect()
        });
        let current: HashSet<String> = services.iter().map(|(name, _, _)| name.clone()).collect();
        for gone in self.published.difference(&current) {
            self.recorder.forget_service(gone);
        }
        for (name, active, paths) in &services {
            self.recorder.record_active_path(name, active);
            for (path, state) in paths {
                self.recorder.record_path_state(name, path, state.as_str());
            }
        }
        self.published = current;
    }

    /// One activation (module docs).
    async fn reconcile(&mut self) {
        self.publish_metrics();
        let status = self.raft.status();
        if status.role != raft::StateRole::Leader {
            if self.leader_since.take().is_some() {
                self.windows = Windows::default();
                self.sent.clear();
            }
            return;
        }
        let leader_since = *self.leader_since.get_or_insert_with(Instant::now);
        let Some(runbook) = self.state.with_failover(|f| f.runbook.clone()) else {
            return;
        };
        let now = Instant::now();
        self.update_path_states(&runbook, leader_since, now).await;
        self.decide(&runbook, leader_since, now).await;
        self.advance_decisions(&runbook, now).await;
    }

    async fn update_path_states(&mut self, runbook: &Runbook, leader_since: Instant, now: Instant) {
        for service in &runbook.services {
            let committed: BTreeMap<String, PathState> = self.state.with_failover(|f| {
                f.services
                    .get(service.name.as_str())
                    .map(|s| s.paths.iter().map(|(k, v)| (k.clone(), v.state)).collect())
                    .unwrap_or_default()
            });
            let mut transitions = Vec::new();
            let mut evidence = Vec::new();
            for path in &service.paths {
                let current = committed
                    .get(path.name.as_str())
                    .copied()
                    .unwrap_or(PathState::Unknown);
                let verdict = evaluate::path(path, &self.windows, leader_since, now);
                if let Some(next) = verdict.next_state(current) {
                    transitions.push((path.name.to_string(), next));
                    evidence.extend(verdict.evidence);
                }
            }
            if !transitions.is_empty() {
                tracing::info!(service = %service.name, ?transitions, "path states changed");
                self.propose(
                    Command::PathStates {
                        service: service.name.to_string(),
                        transitions,
                        evidence,
                        at_unix_ms: now_unix_ms(),
                    },
                    "recording path states",
                )
                .await;
            }
        }
    }

    async fn decide(&mut self, runbook: &Runbook, leader_since: Instant, now: Instant) {
        let now_ms = now_unix_ms();
        for service in &runbook.services {
            let name = service.name.as_str();
            let Some((record, in_flight, abandoned)) = self.state.with_failover(|f| {
                let record = f.services.get(name)?.clone();
                let abandoned: HashSet<String> = f
                    .decisions
                    .values()
                    .filter(|d| {
                        d.service == name
                            && d.stage == Stage::Abandoned
                            && now_ms - d.updated_at_unix_ms < ABANDONED_COOLDOWN_MS
                    })
                    .map(|d| d.to_path.clone())
                    .collect();
                Some((record, f.in_flight(name).is_some(), abandoned))
            }) else {
                continue;
            };
            let choice = evaluate::choose(service, &record, &abandoned, now_ms);
            if choice.no_healthy_path {
                if self.alarmed.insert(name.to_owned()) {
                    tracing::error!(service = name, active = %record.active_path, "ALARM: no healthy path left; nothing is switched");
                }
            } else {
                self.alarmed.remove(name);
            }
            if in_flight || record.frozen.is_some() {
                continue;
            }
            if !evaluate::grace_over(service, &self.windows, leader_since, now) {
                continue;
            }
            let (target, kind) = match choice.action {
                evaluate::Action::None | evaluate::Action::Wait => continue,
                evaluate::Action::Freeze(reason) => {
                    tracing::warn!(service = name, %reason, "flap guard: freezing the service");
                    self.propose(
                        Command::Freeze {
                            service: name.to_owned(),
                            by: "controller/flap-guard".into(),
                            reason,
                            at_unix_ms: now_ms,
                        },
                        "freezing a flapping service",
                    )
                    .await;
                    continue;
                }
                evaluate::Action::Decide { target, kind } => (target, kind),
            };
            let Some(target) = service.path(&target) else {
                continue;
            };
            // The committed state says Healthy, but a path keeps its state
            // until a quorum says otherwise: it may be failing right now
            // (drill `all-paths-down`). Only a target a quorum of fresh
            // vantage points passes now is switched to, so the decision's
            // evidence proves it (I4).
            let target_verdict = evaluate::path(target, &self.windows, leader_since, now);
            if target_verdict.passing < target_verdict.quorum {
                tracing::debug!(
                    service = name,
                    target = %target.name,
                    passing = target_verdict.passing,
                    quorum = target_verdict.quorum,
                    "not switching: the target's vantage points do not pass right now"
                );
                continue;
            }
            let active_verdict = service
                .path(&record.active_path)
                .map(|active| evaluate::path(active, &self.windows, leader_since, now));
            // Likewise the failed path: its Failed state may have been
            // committed by a previous leader (an entry the new leader
            // committed after an election, drill `partition-asymmetric`),
            // while this leader's own windows have not seen it fail yet. The
            // decision waits for them, so its evidence proves the failure.
            if kind == DecisionKind::Failover
                && active_verdict.as_ref().is_none_or(|v| v.failing < v.quorum)
            {
                tracing::debug!(
                    service = name,
                    active = %record.active_path,
                    "not switching yet: this leader has not seen the active path fail itself"
                );
                continue;
            }
            let mut evidence: Vec<Evidence> = Vec::new();
            if let Some(verdict) = active_verdict {
                evidence.extend(verdict.evidence);
            }
            evidence.extend(target_verdict.evidence);
            let reason = match kind {
                DecisionKind::Failover => format!(
                    "path {} failed; {} is the healthy path of highest priority",
                    record.active_path, target.name
                ),
                _ => format!(
                    "path {} has been healthy for the failback hold time",
                    target.name
                ),
            };
            tracing::info!(service = name, from = %record.active_path, to = %target.name, ?kind, "proposing a decision");
            if kind == DecisionKind::Failover {
                // From the first critical result of the runs that failed the path.
                let started = service.path(&record.active_path).and_then(|active| {
                    active
                        .vantage
                        .iter()
                        .filter_map(|v| self.windows.get(&v.agent, v.check.as_str()))
                        .filter(|w| w.is_critical())
                        .map(|w| w.run_started_ms)
                        .min()
                });
                if let Some(started) = started {
                    self.recorder
                        .observe_detection_latency((now_ms - started) as f64 / 1000.0);
                }
            }
            self.propose(
                Command::Decide {
                    service: name.to_owned(),
                    from_path: record.active_path.clone(),
                    to_path: target.name.to_string(),
                    kind,
                    evidence,
                    operator: String::new(),
                    reason,
                    at_unix_ms: now_ms,
                },
                "proposing a decision",
            )
            .await;
        }
    }

    async fn advance_decisions(&mut self, runbook: &Runbook, now: Instant) {
        let now_ms = now_unix_ms();
        let open: Vec<_> = self.state.with_failover(|f| {
            f.decisions
                .values()
                .filter(|d| !d.stage.is_terminal() && d.stage != Stage::Proposed)
                .cloned()
                .collect()
        });
        for decision in open {
            let id = decision.id.clone();
            match decision.stage {
                Stage::Approved => {
                    let dispatched = self
                        .propose(
                            Command::Dispatched {
                                decision: id.clone(),
                                at_unix_ms: now_ms,
                            },
                            "marking a decision dispatched",
                        )
                        .await;
                    if dispatched {
                        self.send(&decision, now_ms, now);
                    }
                }
                Stage::Dispatched => {
                    let dispatched = decision.dispatched_at_unix_ms.unwrap_or(now_ms);
                    let timeout_ms = i64::try_from(RESULT_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
                    if now_ms - dispatched > timeout_ms {
                        tracing::warn!(decision = %id, executor = %decision.executor, "no action result in time");
                        if self
                            .propose(
                                Command::TimedOut {
                                    decision: id,
                                    at_unix_ms: now_ms,
                                },
                                "timing a decision out",
                            )
                            .await
                        {
                            self.recorder.record_decision("timed_out");
                        }
                    } else {
                        // Sent by an earlier leader, or not yet delivered: the
                        // executor's stored result answers a repeat.
                        let resend = self
                            .sent
                            .get(&id)
                            .is_none_or(|at| now - *at > Duration::from_secs(2));
                        if resend {
                            self.send(&decision, dispatched, now);
                        }
                    }
                }
                Stage::Succeeded => {
                    let verdict = self.verify(runbook, &decision, now_ms);
                    if let Some((verified, detail)) = verdict {
                        self.conclude(id, verified, detail, now_ms).await;
                    }
                }
                Stage::Failed | Stage::TimedOut => {
                    let detail = match decision.stage {
                        Stage::Failed => "the activation failed",
                        _ => "the executor did not answer in time",
                    };
                    self.conclude(id, false, detail.into(), now_ms).await;
                }
                _ => {}
            }
        }
    }

    async fn conclude(&self, decision: String, verified: bool, detail: String, now_ms: i64) {
        let concluded = self
            .propose(
                Command::Conclude {
                    decision,
                    verified,
                    detail,
                    at_unix_ms: now_ms,
                },
                "concluding a decision",
            )
            .await;
        if concluded {
            self.recorder
                .record_decision(if verified { "verified" } else { "abandoned" });
        }
    }

    /// Sends ExecuteAction to the decision's executor, if it is connected.
    fn send(
        &mut self,
        decision: &crate::state::failover::Decision,
        dispatched_ms: i64,
        now: Instant,
    ) {
        let Ok(agent) = AgentId::new(&decision.executor) else {
            return;
        };
        let deadline = dispatched_ms + i64::try_from(ACTION_DEADLINE.as_millis()).unwrap_or(0);
        let command = v1::ExecuteAction {
            decision_id: decision.id.clone(),
            service: decision.service.clone(),
            action: decision.action.clone(),
            fencing_token: Some(v1::FencingToken {
                term: decision.fencing_term,
                index: decision.fencing_index,
            }),
            deadline_unix_ms: deadline,
        };
        if self.registry.execute(&agent, command) {
            tracing::info!(decision = %decision.id, executor = %agent, action = %decision.action, fencing_token = %format!("{}.{}", decision.fencing_term, decision.fencing_index), "dispatched");
            self.sent.insert(decision.id.clone(), now);
        }
    }

    /// Whether a succeeded activation is verified: `None` while waiting.
    fn verify(
        &self,
        runbook: &Runbook,
        decision: &crate::state::failover::Decision,
        now_ms: i64,
    ) -> Option<(bool, String)> {
        let path = runbook
            .service(&decision.service)
            .and_then(|s| s.path(&decision.to_path));
        let Some(check) = path.and_then(|p| p.verify.clone()) else {
            return Some((true, "no verify check: the action's success counts".into()));
        };
        let since = decision.updated_at_unix_ms;
        if let Some(window) = self
            .windows
            .get(&check.agent, check.check.as_str())
            .filter(|w| w.last_observed_ms > since)
        {
            {
                if window.is_ok() {
                    return Some((true, format!("{} on {} passed", check.check, check.agent)));
                }
                let fail_after = path.map_or(1, |p| p.fail_after);
                if window.is_critical() && window.consecutive >= fail_after {
                    return Some((
                        false,
                        format!("{} on {} stayed critical", check.check, check.agent),
                    ));
                }
            }
        }
        let timeout_ms = i64::try_from(VERIFY_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        (now_ms - since > timeout_ms).then(|| {
            (
                false,
                format!(
                    "{} on {} did not pass within {} s",
                    check.check,
                    check.agent,
                    VERIFY_TIMEOUT.as_secs()
                ),
            )
        })
    }
}
