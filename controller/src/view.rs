//! What operators see (Operator.Status and Watch): the replicated failover
//! state joined with the leader's soft state of agents, as `v1::View`, and
//! the difference between two views as `v1::ViewDelta`.

use std::collections::BTreeMap;

use leitstand_proto::domain::AgentId;
use leitstand_proto::v1;

use crate::registry::Registry;
use crate::state::ClusterState;
use crate::state::failover::{Decision, ModeName, PathState, Stage};

/// An agent's latest check states by check name: status and when observed.
type CheckStates = BTreeMap<String, (v1::CheckStatus, i64)>;

/// Recent decisions in a view, at most (the contract's bound).
const MAX_DECISIONS: usize = 1000;

pub(crate) fn path_state(state: PathState) -> v1::PathState {
    match state {
        PathState::Unknown => v1::PathState::Unknown,
        PathState::Healthy => v1::PathState::Healthy,
        PathState::Failed => v1::PathState::Failed,
    }
}

fn mode(mode: ModeName) -> v1::ServiceMode {
    match mode {
        ModeName::Auto => v1::ServiceMode::Auto,
        ModeName::Approve => v1::ServiceMode::Approve,
        ModeName::DryRun => v1::ServiceMode::DryRun,
    }
}

fn stage(stage: Stage) -> v1::DecisionStage {
    match stage {
        Stage::Proposed => v1::DecisionStage::Proposed,
        Stage::Approved => v1::DecisionStage::Approved,
        Stage::Dispatched => v1::DecisionStage::Dispatched,
        Stage::Succeeded => v1::DecisionStage::Succeeded,
        Stage::Failed => v1::DecisionStage::Failed,
        Stage::TimedOut => v1::DecisionStage::TimedOut,
        Stage::Verified => v1::DecisionStage::Verified,
        Stage::Abandoned => v1::DecisionStage::Abandoned,
        Stage::Rejected => v1::DecisionStage::Rejected,
    }
}

fn check_status(status: &str) -> v1::CheckStatus {
    match status {
        "ok" => v1::CheckStatus::Ok,
        "warning" => v1::CheckStatus::Warning,
        "critical" => v1::CheckStatus::Critical,
        _ => v1::CheckStatus::Unknown,
    }
}

pub(crate) fn decision_view(decision: &Decision) -> v1::DecisionView {
    v1::DecisionView {
        decision_id: decision.id.clone(),
        service: decision.service.clone(),
        from_path: decision.from_path.clone(),
        to_path: decision.to_path.clone(),
        stage: stage(decision.stage) as i32,
        mode: mode(decision.mode) as i32,
        fencing_token: Some(v1::FencingToken {
            term: decision.fencing_term,
            index: decision.fencing_index,
        }),
        runbook_version: decision.runbook_version,
        evidence: decision
            .evidence
            .iter()
            .take(64)
            .map(|e| v1::Evidence {
                agent_id: e.agent.clone(),
                check: e.check.clone(),
                path: e.path.clone(),
                status: check_status(&e.status) as i32,
                observed_at_unix_ms: e.observed_at_unix_ms,
                consecutive: e.consecutive,
            })
            .collect(),
        proposed_at_unix_ms: decision.proposed_at_unix_ms,
        updated_at_unix_ms: decision.updated_at_unix_ms,
        operator: decision.operator.clone(),
        reason: decision.reason.chars().take(1024).collect(),
    }
}

/// The view as of now; `cluster` and `role` come from the caller.
pub(crate) fn build(
    state: &ClusterState,
    registry: &Registry,
    caller_role: v1::Role,
    cluster: Option<v1::ClusterStatusReply>,
    now_unix_ms: i64,
) -> v1::View {
    // Agents: the leader's soft state.
    let mut agents = Vec::new();
    let mut latest: BTreeMap<String, (i64, CheckStates)> = BTreeMap::new();
    registry.visit(|agent: &AgentId, connected, report| {
        let checks: BTreeMap<String, (v1::CheckStatus, i64)> = report
            .map(|r| {
                r.checks
                    .iter()
                    .map(|c| (c.name.to_string(), (c.status.into(), c.observed_at_unix_ms)))
                    .collect()
            })
            .unwrap_or_default();
        let last_seen = report.map_or(0, |r| r.observed_at_unix_ms);
        agents.push(v1::AgentView {
            agent_id: agent.to_string(),
            version: String::new(),
            connected,
            last_seen_unix_ms: last_seen,
            host: report
                .and_then(|r| r.host.as_ref())
                .map(|h| v1::HostMetricsSummary {
                    cpu_utilization: h.cpu_utilization,
                    memory_used_bytes: h.memory_used_bytes,
                    memory_total_bytes: h.memory_total_bytes,
                    load_average_1m: h.load_average_1m,
                    uptime_seconds: h.uptime_seconds,
                }),
            checks: report
                .map(|r| {
                    r.checks
                        .iter()
                        .take(256)
                        .map(|c| v1::CheckSummary {
                            name: c.name.to_string(),
                            status: v1::CheckStatus::from(c.status) as i32,
                            summary: c.summary.clone(),
                            observed_at_unix_ms: c.observed_at_unix_ms,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            last_seq: report.map_or(0, |r| r.seq),
        });
        latest.insert(agent.to_string(), (last_seen, checks));
    });
    agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));

    let (services, decisions, runbook_version) = state.with_failover(|failover| {
        let mut services = Vec::new();
        if let Some(runbook) = &failover.runbook {
            for spec in &runbook.services {
                let Some(record) = failover.services.get(spec.name.as_str()) else {
                    continue;
                };
                let paths: Vec<v1::PathView> = spec
                    .paths
                    .iter()
                    .map(|path| {
                        let stored = record.paths.get(path.name.as_str());
                        v1::PathView {
                            name: path.name.to_string(),
                            state: path_state(stored.map_or(PathState::Unknown, |p| p.state))
                                as i32,
                            since_unix_ms: stored.map_or(0, |p| p.since_unix_ms),
                            vantage: path
                                .vantage
                                .iter()
                                .map(|v| {
                                    let agent = latest.get(v.agent.as_str());
                                    let check =
                                        agent.and_then(|(_, checks)| checks.get(v.check.as_str()));
                                    let last_seen = agent.map_or(0, |(seen, _)| *seen);
                                    let stale_ms = i64::try_from(path.stale_after.as_millis())
                                        .unwrap_or(i64::MAX);
                                    v1::VantageView {
                                        agent_id: v.agent.to_string(),
                                        check: v.check.to_string(),
                                        last_status: check.map_or(v1::CheckStatus::Unknown, |c| c.0)
                                            as i32,
                                        last_seen_unix_ms: last_seen,
                                        stale: last_seen == 0 || now_unix_ms - last_seen > stale_ms,
                                    }
                                })
                                .collect(),
                        }
                    })
                    .collect();
                let healthy = record.paths.values().any(|p| p.state == PathState::Healthy);
                let active_failed = record
                    .paths
                    .get(&record.active_path)
                    .is_some_and(|p| p.state == PathState::Failed);
                services.push(v1::ServiceView {
                    name: spec.name.to_string(),
                    mode: mode(spec.mode.into()) as i32,
                    active_path: record.active_path.clone(),
                    paths,
                    frozen: record.frozen.is_some(),
                    frozen_reason: record
                        .frozen
                        .as_ref()
                        .map(|f| format!("{} ({})", f.reason, f.by))
                        .unwrap_or_default()
                        .chars()
                        .take(1024)
                        .collect(),
                    no_healthy_path: active_failed && !healthy,
                });
            }
        }
        let mut decisions: Vec<&Decision> = failover.decisions.values().collect();
        decisions.sort_by_key(|d| std::cmp::Reverse((d.proposed_at_unix_ms, d.fencing_index)));
        let decisions = decisions
            .into_iter()
            .take(MAX_DECISIONS)
            .map(decision_view)
            .collect::<Vec<_>>();
        (services, decisions, failover.current_version())
    });
    v1::View {
        applied_index: state.applied(),
        generated_at_unix_ms: now_unix_ms,
        caller_role: caller_role as i32,
        services,
        agents,
        decisions,
        cluster,
        runbook_version,
    }
}

/// What changed from `old` to `new`; `None` when nothing did (times aside).
pub(crate) fn delta(old: &v1::View, new: &v1::View) -> Option<v1::ViewDelta> {
    fn changed<T: Clone + PartialEq>(
        old: &[T],
        new: &[T],
        key: impl Fn(&T) -> &str,
    ) -> (Vec<T>, Vec<String>) {
        let before: BTreeMap<&str, &T> = old.iter().map(|item| (key(item), item)).collect();
        let after: BTreeMap<&str, &T> = new.iter().map(|item| (key(item), item)).collect();
        let updated = new
            .iter()
            .filter(|item| before.get(key(item)) != Some(item))
            .cloned()
            .collect();
        let removed = before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| (*k).to_owned())
            .collect();
        (updated, removed)
    }
    let (services, removed_services) = changed(&old.services, &new.services, |s| &s.name);
    let (agents, removed_agents) = changed(&old.agents, &new.agents, |a| &a.agent_id);
    let (decisions, _) = changed(&old.decisions, &new.decisions, |d| &d.decision_id);
    let cluster = (old.cluster != new.cluster)
        .then(|| new.cluster.clone())
        .flatten();
    if services.is_empty()
        && agents.is_empty()
        && decisions.is_empty()
        && removed_services.is_empty()
        && removed_agents.is_empty()
        && cluster.is_none()
        && old.applied_index == new.applied_index
    {
        return None;
    }
    Some(v1::ViewDelta {
        applied_index: new.applied_index,
        generated_at_unix_ms: new.generated_at_unix_ms,
        services,
        agents,
        decisions,
        cluster,
        removed_services,
        removed_agents,
    })
}
