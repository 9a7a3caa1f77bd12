//! The replicated half of the failover engine (DESIGN.md §4, §5): runbook
//! versions, path states (transitions only), the active path and freeze
//! of each service, and decisions with their lifecycle. The engine on the
//! leader proposes; every replica applies the same commands here.
//!
//! Rules enforced at apply, so they hold whatever a (possibly stale) leader
//! proposed: a decision only for the service's current active path, one
//! decision in flight per service, no automatic decision for a frozen
//! service, lifecycle steps only in order, the active path changes only
//! when the activation succeeded (DESIGN.md I1).

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use serde::{Deserialize, Serialize};

use crate::runbook::{self, Mode, Runbook};

/// A runbook version as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunbookVersion {
    pub(crate) version: u64,
    pub(crate) sha256: String,
    pub(crate) text: String,
    pub(crate) source_name: String,
    pub(crate) applied_by: String,
    pub(crate) at_unix_ms: i64,
    pub(crate) log_index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PathState {
    Unknown,
    Healthy,
    Failed,
}

impl PathState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PathState::Unknown => "unknown",
            PathState::Healthy => "healthy",
            PathState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathRecord {
    pub(crate) state: PathState,
    pub(crate) since_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Frozen {
    pub(crate) by: String,
    pub(crate) reason: String,
    pub(crate) at_unix_ms: i64,
}

/// A service's replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceRecord {
    pub(crate) active_path: String,
    /// By path name.
    pub(crate) paths: BTreeMap<String, PathRecord>,
    pub(crate) frozen: Option<Frozen>,
    /// Times of the automatic switches of the last hour (flap guard).
    pub(crate) recent_switches_unix_ms: Vec<i64>,
    /// When the active path last changed.
    pub(crate) switched_at_unix_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DecisionKind {
    /// The active path failed; another is healthy.
    Failover,
    /// A preferred path has been healthy for the failback hold time.
    Failback,
    /// An operator's switch.
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    Proposed,
    Approved,
    Dispatched,
    Succeeded,
    Failed,
    TimedOut,
    Verified,
    Abandoned,
    Rejected,
}

impl Stage {
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, Stage::Verified | Stage::Abandoned | Stage::Rejected)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Proposed => "proposed",
            Stage::Approved => "approved",
            Stage::Dispatched => "dispatched",
            Stage::Succeeded => "succeeded",
            Stage::Failed => "failed",
            Stage::TimedOut => "timed_out",
            Stage::Verified => "verified",
            Stage::Abandoned => "abandoned",
            Stage::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ModeName {
    Auto,
    Approve,
    DryRun,
}

impl From<Mode> for ModeName {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Auto => ModeName::Auto,
            Mode::Approve => ModeName::Approve,
            Mode::DryRun => ModeName::DryRun,
        }
    }
}

/// One result that crossed a threshold, as the engine saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Evidence {
    pub(crate) agent: String,
    pub(crate) check: String,
    pub(crate) path: String,
    /// "ok", "warning", "critical", "unknown" or "stale".
    pub(crate) status: String,
    pub(crate) observed_at_unix_ms: i64,
    /// Consecutive results in this status.
    pub(crate) consecutive: u32,
}

/// What the executor reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionRecord {
    /// "succeeded", "failed", "refused", "timed_out" …, as the agent said.
    pub(crate) outcome: String,
    pub(crate) exit_code: Option<i32>,
    pub(crate) output: String,
    pub(crate) reason: String,
    pub(crate) duration_ms: u64,
    pub(crate) replayed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    pub(crate) id: String,
    pub(crate) service: String,
    pub(crate) from_path: String,
    pub(crate) to_path: String,
    pub(crate) kind: DecisionKind,
    pub(crate) stage: Stage,
    pub(crate) mode: ModeName,
    /// (term, index) of the entry that proposed it.
    pub(crate) fencing_term: u64,
    pub(crate) fencing_index: u64,
    pub(crate) runbook_version: u64,
    pub(crate) evidence: Vec<Evidence>,
    /// The executor and its action, from the runbook version.
    pub(crate) executor: String,
    pub(crate) action: String,
    pub(crate) proposed_at_unix_ms: i64,
    pub(crate) updated_at_unix_ms: i64,
    pub(crate) dispatched_at_unix_ms: Option<i64>,
    /// Who approved, rejected or switched; empty for the engine.
    pub(crate) operator: String,
    pub(crate) reason: String,
    pub(crate) result: Option<ActionRecord>,
}

/// The replicated failover state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Failover {
    pub(crate) runbooks: Vec<RunbookVersion>,
    /// The parsed current runbook (parsed again from its text on load).
    pub(crate) runbook: Option<Runbook>,
    pub(crate) services: BTreeMap<String, ServiceRecord>,
    pub(crate) decisions: BTreeMap<String, Decision>,
}

/// A record write the caller turns into storage writes.
pub(crate) enum Write {
    Runbook(Box<RunbookVersion>),
    Service(String, ServiceRecord),
    RemoveService(String),
    Decision(Box<Decision>),
}

/// An audit line for the caller to chain.
pub(crate) struct Audited {
    pub(crate) actor: String,
    pub(crate) kind: &'static str,
    pub(crate) body: serde_json::Value,
}

pub(crate) type Applied = (Vec<Write>, Vec<Audited>);

const HOUR_MS: i64 = 3_600_000;

impl Failover {
    pub(crate) fn current_version(&self) -> u64 {
        self.runbooks.last().map_or(0, |r| r.version)
    }

    /// The decision in flight for `service`, if any.
    pub(crate) fn in_flight(&self, service: &str) -> Option<&Decision> {
        self.decisions
            .values()
            .find(|d| d.service == service && !d.stage.is_terminal())
    }

    /// Loads a stored runbook version (in order).
    pub(crate) fn restore_runbook(&mut self, version: RunbookVersion) -> Result<(), String> {
        let parsed =
            Runbook::parse(FsPath::new(&version.source_name), &version.text).map_err(|error| {
                format!(
                    "runbook version {} no longer parses: {error}",
                    version.version
                )
            })?;
        self.runbook = Some(parsed);
        self.runbooks.push(version);
        Ok(())
    }

    pub(crate) fn apply_runbook(
        &mut self,
        log_index: u64,
        text: String,
        source_name: String,
        actor: String,
        at_unix_ms: i64,
    ) -> Result<Applied, String> {
        let parsed = Runbook::parse(FsPath::new(&source_name), &text).map_err(|e| e.to_string())?;
        let sha256 = runbook::content_sha256(&text);
        if self.runbooks.last().is_some_and(|r| r.sha256 == sha256) {
            return Err(format!(
                "this runbook (SHA-256 {sha256}) is already the current version"
            ));
        }
        let version = RunbookVersion {
            version: self.current_version() + 1,
            sha256: sha256.clone(),
            text,
            source_name,
            applied_by: actor.clone(),
            at_unix_ms,
            log_index,
        };
        let mut writes = vec![Write::Runbook(Box::new(version.clone()))];
        let mut added = Vec::new();
        for service in &parsed.services {
            let name = service.name.to_string();
            let existing = self.services.get(&name).cloned();
            let mut record = existing.unwrap_or_else(|| {
                added.push(name.clone());
                ServiceRecord {
                    // DESIGN.md §5: a newly named service starts on its first
                    // path; nothing runs.
                    active_path: service.paths[0].name.to_string(),
                    paths: BTreeMap::new(),
                    frozen: None,
                    recent_switches_unix_ms: Vec::new(),
                    switched_at_unix_ms: None,
                }
            });
            // Paths of this version only; new ones start Unknown.
            let mut paths = BTreeMap::new();
            for path in &service.paths {
                let name = path.name.to_string();
                let kept = record.paths.remove(&name).unwrap_or(PathRecord {
                    state: PathState::Unknown,
                    since_unix_ms: at_unix_ms,
                });
                paths.insert(name, kept);
            }
            record.paths = paths;
            if service.path(&record.active_path).is_none() {
                // The active path was removed from the runbook: the first path
                // is active from now on (recorded, nothing runs).
                record.active_path = service.paths[0].name.to_string();
            }
            writes.push(Write::Service(name.clone(), record.clone()));
            self.services.insert(name, record);
        }
        let removed: Vec<String> = self
            .services
            .keys()
            .filter(|name| parsed.service(name).is_none())
            .cloned()
            .collect();
        for name in &removed {
            self.services.remove(name);
            writes.push(Write::RemoveService(name.clone()));
        }
        let audit = Audited {
            actor,
            kind: "runbook.applied",
            body: serde_json::json!({
                "version": version.version,
                "sha256": sha256,
                "source": version.source_name,
                "services_added": added,
                "services_removed": removed,
            }),
        };
        self.runbook = Some(parsed);
        self.runbooks.push(version);
        Ok((writes, vec![audit]))
    }

    pub(crate) fn record_path_states(
        &mut self,
        service: &str,
        transitions: &[(String, PathState)],
        evidence: Vec<Evidence>,
        at_unix_ms: i64,
    ) -> Result<Applied, String> {
        let record = self
            .services
            .get_mut(service)
            .ok_or_else(|| format!("no service {service:?} in the current runbook"))?;
        let mut changed = Vec::new();
        for (path, state) in transitions {
            let Some(current) = record.paths.get_mut(path) else {
                return Err(format!("service {service:?} has no path {path:?}"));
            };
            if current.state != *state {
                changed.push(serde_json::json!({
                    "path": path, "from": current.state.as_str(), "to": state.as_str(),
                }));
                *current = PathRecord {
                    state: *state,
                    since_unix_ms: at_unix_ms,
                };
            }
        }
        if changed.is_empty() {
            return Err("no path state changes".into());
        }
        let audit = Audited {
            actor: "controller/engine".into(),
            kind: "path.state_changed",
            body: serde_json::json!({ "service": service, "changes": changed, "evidence": evidence }),
        };
        Ok((
            vec![Write::Service(service.to_owned(), record.clone())],
            vec![audit],
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide(
        &mut self,
        term: u64,
        index: u64,
        service: &str,
        from: &str,
        to: &str,
        kind: DecisionKind,
        evidence: Vec<Evidence>,
        operator: String,
        reason: String,
        at_unix_ms: i64,
    ) -> Result<Applied, String> {
        let runbook = self.runbook.as_ref().ok_or("no runbook is applied")?;
        let spec = runbook
            .service(service)
            .ok_or_else(|| format!("no service {service:?} in the current runbook"))?;
        let target = spec
            .path(to)
            .ok_or_else(|| format!("service {service:?} has no path {to:?}"))?;
        let record = self
            .services
            .get(service)
            .ok_or_else(|| format!("no state for service {service:?}"))?;
        if record.active_path != from {
            return Err(format!(
                "the decision starts from path {from:?}, but {:?} is active (a stale proposal)",
                record.active_path
            ));
        }
        if from == to {
            return Err(format!("path {to:?} is already active"));
        }
        if let Some(other) = self.in_flight(service) {
            return Err(format!(
                "decision {} for service {service:?} is still in flight",
                other.id
            ));
        }
        let manual = kind == DecisionKind::Manual;
        if !manual && record.frozen.is_some() {
            return Err(format!("service {service:?} is frozen"));
        }
        let mode = if manual { Mode::Auto } else { spec.mode };
        let (stage, reason) = match mode {
            Mode::Auto => (Stage::Approved, reason),
            Mode::Approve => (Stage::Proposed, reason),
            Mode::DryRun => (
                Stage::Abandoned,
                format!("{reason}; dry-run: recorded, not executed"),
            ),
        };
        let decision = Decision {
            id: format!("d-{term}-{index}"),
            service: service.to_owned(),
            from_path: from.to_owned(),
            to_path: to.to_owned(),
            kind,
            stage,
            mode: spec.mode.into(),
            fencing_term: term,
            fencing_index: index,
            runbook_version: self.current_version(),
            evidence,
            executor: target.activate.agent.to_string(),
            action: target.activate.action.to_string(),
            proposed_at_unix_ms: at_unix_ms,
            updated_at_unix_ms: at_unix_ms,
            dispatched_at_unix_ms: None,
            operator: operator.clone(),
            reason,
            result: None,
        };
        let actor = if manual {
            format!("operator/{operator}")
        } else {
            "controller/engine".into()
        };
        let audit = Audited {
            actor,
            kind: if manual {
                "operator.switch"
            } else {
                "decision.proposed"
            },
            body: serde_json::to_value(&decision).unwrap_or_default(),
        };
        self.decisions.insert(decision.id.clone(), decision.clone());
        Ok((vec![Write::Decision(Box::new(decision))], vec![audit]))
    }

    /// Moves decision `id` from one of `from` to `to`, with `update`.
    fn step(
        &mut self,
        id: &str,
        from: &[Stage],
        to: Stage,
        at_unix_ms: i64,
        update: impl FnOnce(&mut Decision),
    ) -> Result<Decision, String> {
        let decision = self
            .decisions
            .get_mut(id)
            .ok_or_else(|| format!("no decision {id:?}"))?;
        if !from.contains(&decision.stage) {
            return Err(format!(
                "decision {id} is {}, so it cannot become {}",
                decision.stage.as_str(),
                to.as_str()
            ));
        }
        decision.stage = to;
        decision.updated_at_unix_ms = at_unix_ms;
        update(decision);
        Ok(decision.clone())
    }

    fn audited(
        decision: Decision,
        actor: String,
        kind: &'static str,
        extra: serde_json::Value,
    ) -> Applied {
        let body = serde_json::json!({
            "decision": decision.id,
            "service": decision.service,
            "to_path": decision.to_path,
            "stage": decision.stage.as_str(),
            "fencing_token": format!("{}.{}", decision.fencing_term, decision.fencing_index),
            "detail": extra,
        });
        (
            vec![Write::Decision(Box::new(decision))],
            vec![Audited { actor, kind, body }],
        )
    }

    pub(crate) fn approve(&mut self, id: &str, operator: &str, at: i64) -> Result<Applied, String> {
        let decision = self.step(id, &[Stage::Proposed], Stage::Approved, at, |d| {
            d.operator = operator.to_owned();
        })?;
        Ok(Self::audited(
            decision,
            format!("operator/{operator}"),
            "operator.approve",
            serde_json::Value::Null,
        ))
    }

    pub(crate) fn reject(
        &mut self,
        id: &str,
        operator: &str,
        reason: &str,
        at: i64,
    ) -> Result<Applied, String> {
        let decision = self.step(id, &[Stage::Proposed], Stage::Rejected, at, |d| {
            d.operator = operator.to_owned();
            d.reason = reason.to_owned();
        })?;
        Ok(Self::audited(
            decision,
            format!("operator/{operator}"),
            "operator.reject",
            serde_json::json!({ "reason": reason }),
        ))
    }

    pub(crate) fn dispatched(&mut self, id: &str, at: i64) -> Result<Applied, String> {
        let decision = self.step(id, &[Stage::Approved], Stage::Dispatched, at, |d| {
            d.dispatched_at_unix_ms = Some(at);
        })?;
        Ok(Self::audited(
            decision,
            "controller/engine".into(),
            "decision.dispatched",
            serde_json::Value::Null,
        ))
    }

    pub(crate) fn result(
        &mut self,
        id: &str,
        record: ActionRecord,
        at: i64,
    ) -> Result<Applied, String> {
        let succeeded = record.outcome == "succeeded";
        let stage = if succeeded {
            Stage::Succeeded
        } else {
            Stage::Failed
        };
        let detail = serde_json::to_value(&record).unwrap_or_default();
        let decision = self.step(id, &[Stage::Dispatched], stage, at, |d| {
            d.result = Some(record)
        })?;
        let mut applied = Self::audited(
            decision.clone(),
            format!("agent/{}", decision.executor),
            "decision.result",
            detail,
        );
        if succeeded {
            // I1: the active path changes only once its activation ran.
            if let Some(service) = self.services.get_mut(&decision.service) {
                service.active_path = decision.to_path.clone();
                service.switched_at_unix_ms = Some(at);
                if decision.kind != DecisionKind::Manual {
                    service.recent_switches_unix_ms.retain(|t| at - t < HOUR_MS);
                    service.recent_switches_unix_ms.push(at);
                }
                applied
                    .0
                    .push(Write::Service(decision.service.clone(), service.clone()));
            }
        }
        Ok(applied)
    }

    pub(crate) fn timed_out(&mut self, id: &str, at: i64) -> Result<Applied, String> {
        let decision = self.step(id, &[Stage::Dispatched], Stage::TimedOut, at, |_| {})?;
        Ok(Self::audited(
            decision,
            "controller/engine".into(),
            "decision.timed_out",
            serde_json::Value::Null,
        ))
    }

    /// Verified (or not) after Succeeded; a Failed or TimedOut decision is
    /// closed as Abandoned.
    pub(crate) fn conclude(
        &mut self,
        id: &str,
        verified: bool,
        detail: &str,
        at: i64,
    ) -> Result<Applied, String> {
        let to = if verified {
            Stage::Verified
        } else {
            Stage::Abandoned
        };
        let from: &[Stage] = if verified {
            &[Stage::Succeeded]
        } else {
            &[
                Stage::Succeeded,
                Stage::Failed,
                Stage::TimedOut,
                Stage::Approved,
                Stage::Proposed,
            ]
        };
        let decision = self.step(id, from, to, at, |d| {
            if !detail.is_empty() {
                d.reason = if d.reason.is_empty() {
                    detail.to_owned()
                } else {
                    format!("{}; {detail}", d.reason)
                };
            }
        })?;
        let kind = if verified {
            "decision.verified"
        } else {
            "decision.abandoned"
        };
        Ok(Self::audited(
            decision,
            "controller/engine".into(),
            kind,
            serde_json::json!({ "detail": detail }),
        ))
    }

    pub(crate) fn freeze(
        &mut self,
        service: &str,
        by: &str,
        reason: &str,
        at: i64,
    ) -> Result<Applied, String> {
        let record = self
            .services
            .get_mut(service)
            .ok_or_else(|| format!("no service {service:?} in the current runbook"))?;
        if record.frozen.is_some() {
            return Err(format!("service {service:?} is already frozen"));
        }
        record.frozen = Some(Frozen {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at_unix_ms: at,
        });
        let audit = Audited {
            actor: by.to_owned(),
            kind: if by.starts_with("operator/") {
                "operator.freeze"
            } else {
                "service.frozen"
            },
            body: serde_json::json!({ "service": service, "reason": reason }),
        };
        Ok((
            vec![Write::Service(service.to_owned(), record.clone())],
            vec![audit],
        ))
    }

    pub(crate) fn unfreeze(
        &mut self,
        service: &str,
        by: &str,
        reason: &str,
        at: i64,
    ) -> Result<Applied, String> {
        let record = self
            .services
            .get_mut(service)
            .ok_or_else(|| format!("no service {service:?} in the current runbook"))?;
        if record.frozen.is_none() {
            return Err(format!("service {service:?} is not frozen"));
        }
        record.frozen = None;
        // A fresh hour for the flap guard.
        record.recent_switches_unix_ms.retain(|t| at - t < 0);
        let audit = Audited {
            actor: by.to_owned(),
            kind: "operator.unfreeze",
            body: serde_json::json!({ "service": service, "reason": reason, "at_unix_ms": at }),
        };
        Ok((
            vec![Write::Service(service.to_owned(), record.clone())],
            vec![audit],
        ))
    }
}
