//! Verdicts (DESIGN.md §5), as pure functions of a path's thresholds, the
//! leader's check windows and the time, so every rule is a table-driven
//! test.
//!
//! - A vantage point is **failing** after `fail_after` consecutive critical
//!   results of its check, **passing** after `recover_after` consecutive ok
//!   results (warning counts as ok), **stale** when its agent sent nothing
//!   for `stale_after` (measured on this controller's clock, so an agent's
//!   skewed clock cannot make it fresh). An UNKNOWN result breaks both
//!   series. A stale vantage point counts as failing only with
//!   `silence_means = "failed"`; otherwise it counts for nothing.
//! - A path is **Healthy** when at least `quorum` fresh vantage points pass,
//!   else **Failed** when at least `quorum` fail, else it keeps its state
//!   (Undetermined never moves a path). Healthy is checked first: a path a
//!   quorum reports healthy is never failed away from (I5), even if other
//!   vantage points disagree.
//! - An agent this leader has not heard from yet is stale only once the
//!   leader has led for `stale_after`: the grace period after a leader
//!   change.

use std::collections::HashMap;

use leitstand_proto::domain::{AgentId, CheckStatus, Report};
use tokio::time::Instant;

use crate::runbook::{Failback, Path, Service, Silence, Vantage};
use crate::state::failover::{DecisionKind, Evidence, PathState, ServiceRecord};

/// The run of equal results of one check on one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckWindow {
    pub(crate) status: CheckStatus,
    /// Consecutive results in this class (ok/warning, critical, unknown).
    pub(crate) consecutive: u32,
    pub(crate) last_observed_ms: i64,
    /// When the first result of this run was observed (agent's clock).
    pub(crate) run_started_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Ok,
    Critical,
    Unknown,
}

fn class(status: CheckStatus) -> Class {
    match status {
        CheckStatus::Ok | CheckStatus::Warning => Class::Ok,
        CheckStatus::Critical => Class::Critical,
        CheckStatus::Unknown => Class::Unknown,
    }
}

impl CheckWindow {
    pub(crate) fn is_ok(&self) -> bool {
        class(self.status) == Class::Ok
    }

    pub(crate) fn is_critical(&self) -> bool {
        class(self.status) == Class::Critical
    }
}

/// The leader's soft state of check results.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    /// By agent, then by check name: a report finds its windows without
    /// building a key (or allocating) per check.
    agents: HashMap<AgentId, AgentWindows>,
}

#[derive(Debug)]
struct AgentWindows {
    seen: Instant,
    checks: HashMap<String, CheckWindow>,
}

impl Windows {
    /// Adds a report received at `now`. A check result counts once: a
    /// report repeating a result (the same observation time) does not
    /// extend its run. An observation time *before* the last one is a new
    /// result all the same: reports arrive in sequence order (the gateway
    /// drops replays), so it means the agent's clock stepped back, and
    /// ignoring it would freeze the vantage point at its last state for as
    /// long as the step (drill `agent-clock-skew`).
    pub(crate) fn record(&mut self, agent: &AgentId, report: &Report, now: Instant) {
        if !self.agents.contains_key(agent) {
            // Only an agent's first report clones its id.
            self.agents.insert(
                agent.clone(),
                AgentWindows {
                    seen: now,
                    checks: HashMap::new(),
                },
            );
        }
        let Some(windows) = self.agents.get_mut(agent) else {
            return;
        };
        windows.seen = now;
        for check in &report.checks {
            match windows.checks.get_mut(check.name.as_str()) {
                Some(window) if check.observed_at_unix_ms == window.last_observed_ms => {}
                Some(window) => {
                    if class(window.status) == class(check.status) {
                        window.consecutive = window.consecutive.saturating_add(1);
                    } else {
                        window.consecutive = 1;
                        window.run_started_ms = check.observed_at_unix_ms;
                    }
                    window.status = check.status;
                    window.last_observed_ms = check.observed_at_unix_ms;
                }
                None => {
                    windows.checks.insert(
                        check.name.as_str().to_owned(),
                        CheckWindow {
                            status: check.status,
                            consecutive: 1,
                            last_observed_ms: check.observed_at_unix_ms,
                            run_started_ms: check.observed_at_unix_ms,
                        },
                    );
                }
            }
        }
    }

    pub(crate) fn get(&self, agent: &AgentId, check: &str) -> Option<&CheckWindow> {
        self.agents.get(agent)?.checks.get(check)
    }

    pub(crate) fn last_seen(&self, agent: &AgentId) -> Option<Instant> {
        self.agents.get(agent).map(|windows| windows.seen)
    }
}

/// What one vantage point says about its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vote {
    Failing,
    Passing,
    Undetermined,
}

/// What a path's vantage points say together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathVerdict {
    pub(crate) failing: u32,
    pub(crate) passing: u32,
    pub(crate) quorum: u32,
    /// The vantage points that voted, with the results behind their votes.
    pub(crate) evidence: Vec<Evidence>,
}

impl PathVerdict {
    /// The state to commit, if it differs from `current`.
    pub(crate) fn next_state(&self, current: PathState) -> Option<PathState> {
        let next = if self.passing >= self.quorum {
            PathState::Healthy
        } else if self.failing >= self.quorum {
            PathState::Failed
        } else {
            current
        };
        (next != current).then_some(next)
    }
}

fn is_stale(
    path: &Path,
    agent: &AgentId,
    windows: &Windows,
    leader_since: Instant,
    now: Instant,
) -> bool {
    let quiet_since = windows.last_seen(agent).unwrap_or(leader_since);
    now.saturating_duration_since(quiet_since) > path.stale_after
}

/// The vote of `vantage` on `path`, with its evidence.
pub(crate) fn vantage(
    path: &Path,
    vantage: &Vantage,
    windows: &Windows,
    leader_since: Instant,
    now: Instant,
) -> (Vote, Option<Evidence>) {
    let window = windows.get(&vantage.agent, vantage.check.as_str());
    let evidence = |status: &str, window: Option<&CheckWindow>| Evidence {
        agent: vantage.agent.to_string(),
        check: vantage.check.to_string(),
        path: path.name.to_string(),
        status: status.to_owned(),
        observed_at_unix_ms: window.map_or(0, |w| w.last_observed_ms),
        consecutive: window.map_or(0, |w| w.consecutive),
    };
    if is_stale(path, &vantage.agent, windows, leader_since, now) {
        return match path.silence_means {
            Silence::Failed => (Vote::Failing, Some(evidence("stale", window))),
            Silence::Unknown => (Vote::Undetermined, None),
        };
    }
    let Some(window) = window else {
        return (Vote::Undetermined, None);
    };
    if window.is_critical() && window.consecutive >= path.fail_after {
        (Vote::Failing, Some(evidence("critical", Some(window))))
    } else if window.is_ok() && window.consecutive >= path.recover_after {
        let status = if window.status == CheckStatus::Warning {
            "warning"
        } else {
            "ok"
        };
        (Vote::Passing, Some(evidence(status, Some(window))))
    } else {
        (Vote::Undetermined, None)
    }
}

/// The verdict of all of `path`'s vantage points.
pub(crate) fn path(
    path: &Path,
    windows: &Windows,
    leader_since: Instant,
    now: Instant,
) -> PathVerdict {
    let mut verdict = PathVerdict {
        failing: 0,
        passing: 0,
        quorum: path.quorum,
        evidence: Vec::new(),
    };
    for point in &path.vantage {
        let (vote, evidence) = vantage(path, point, windows, leader_since, now);
        match vote {
            Vote::Failing => verdict.failing += 1,
            Vote::Passing => verdict.passing += 1,
            Vote::Undetermined => {}
        }
        verdict.evidence.extend(evidence);
    }
    verdict
}

/// Whether this leader may decide for `service`: every vantage agent has
/// reported to it, or the longest `stale_after` has passed since it became
/// leader.
pub(crate) fn grace_over(
    service: &Service,
    windows: &Windows,
    leader_since: Instant,
    now: Instant,
) -> bool {
    let longest = service
        .paths
        .iter()
        .map(|p| p.stale_after)
        .max()
        .unwrap_or_default();
    if now.saturating_duration_since(leader_since) >= longest {
        return true;
    }
    service.paths.iter().flat_map(|p| &p.vantage).all(|v| {
        windows
            .last_seen(&v.agent)
            .is_some_and(|seen| seen >= leader_since)
    })
}

/// What the engine should do about a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing to decide.
    None,
    /// A decision is due, but the flap guard's minimum interval has not
    /// passed since the last switch.
    Wait,
    /// Too many switches this hour: freeze, with this reason.
    Freeze(String),
    /// Propose switching to `target`.
    Decide { target: String, kind: DecisionKind },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub(crate) action: Action,
    /// The active path failed and no path is healthy: the alarm.
    pub(crate) no_healthy_path: bool,
}

/// The decision rules of DESIGN.md §5 over the committed path states:
/// failover from a Failed active path to the Healthy path of highest
/// priority (skipping paths whose activation was `abandoned` recently);
/// failback to a higher-priority path Healthy for the hold time; the flap
/// guard. Freeze, in-flight decisions and the grace period are the
/// caller's (they need no rule, only a check).
pub(crate) fn choose(
    service: &Service,
    record: &ServiceRecord,
    abandoned: &std::collections::HashSet<String>,
    now_unix_ms: i64,
) -> Choice {
    let state_of = |path: &str| record.paths.get(path).map(|p| p.state);
    let healthy = |path: &Path| {
        path.name.as_str() != record.active_path
            && state_of(path.name.as_str()) == Some(PathState::Healthy)
            && !abandoned.contains(path.name.as_str())
    };
    let active_failed = state_of(&record.active_path) == Some(PathState::Failed);
    let no_healthy_path = active_failed
        && !service
            .paths
            .iter()
            .any(|p| state_of(p.name.as_str()) == Some(PathState::Healthy));
    let active_rank = service
        .paths
        .iter()
        .position(|p| p.name.as_str() == record.active_path)
        .unwrap_or(service.paths.len());
    let due = if active_failed {
        service
            .paths
            .iter()
            .find(|p| healthy(p))
            .map(|p| (p, DecisionKind::Failover))
    } else if let Failback::After(hold) = service.failback {
        let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
        service.paths[..active_rank]
            .iter()
            .find(|p| {
                healthy(p)
                    && record
                        .paths
                        .get(p.name.as_str())
                        .is_some_and(|r| now_unix_ms - r.since_unix_ms >= hold_ms)
            })
            .map(|p| (p, DecisionKind::Failback))
    } else {
        None
    };
    let action = match due {
        None => Action::None,
        Some((target, kind)) => {
            let guard = service.flap_guard;
            let switches = record
                .recent_switches_unix_ms
                .iter()
                .filter(|&&t| now_unix_ms - t < 3_600_000)
                .count();
            let min_interval_ms = i64::try_from(guard.min_interval.as_millis()).unwrap_or(i64::MAX);
            if switches >= guard.max_per_hour as usize {
                Action::Freeze(format!(
                    "{switches} automatic switches within an hour (at most {} allowed); an operator must unfreeze",
                    guard.max_per_hour
                ))
            } else if record
                .switched_at_unix_ms
                .is_some_and(|at| now_unix_ms - at < min_interval_ms)
            {
                Action::Wait
            } else {
                Action::Decide {
                    target: target.name.to_string(),
                    kind,
                }
            }
        }
    };
    Choice {
        action,
        no_healthy_path,
    }
}

#[cfg(test)]
mod tests;
