//! What the controllers show an operator: services and their paths,
//! agents, decisions — validated from the wire (`TryFrom<v1::View>`,
//! `TryFrom<v1::ViewDelta>`), kept up to date by applying deltas, and
//! printed as text or as JSON whose shape is ours, not protobuf's.
//!
//! The dashboard and `leitstand status` read the same [`View`], so both
//! tell the same facts.

use std::fmt::Write as _;

use leitstand_proto::domain::InvalidMessage;
use leitstand_proto::domain::bounds::{MAX_IDENTIFIER_BYTES, MAX_REASON_BYTES, MAX_SUMMARY_BYTES};
use leitstand_proto::v1;
use serde::Serialize;

use crate::cluster::ClusterStatus;
use crate::format::{ago, utc};

/// Bounds of operator.proto's View.
pub(crate) const MAX_AGENTS: usize = 10_000;
pub(crate) const MAX_SERVICES: usize = 1_000;
pub(crate) const MAX_DECISIONS: usize = 1_000;
const MAX_PATHS: usize = 16;
const MAX_VANTAGE: usize = 32;
const MAX_CHECKS: usize = 256;
const MAX_EVIDENCE: usize = 64;

/// The caller's role (DESIGN.md §7): what the dashboard enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallerRole {
    /// Not said by the controller: nothing is enabled.
    Unknown,
    Viewer,
    Operator,
    Admin,
}

impl CallerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CallerRole::Unknown => "unknown",
            CallerRole::Viewer => "viewer",
            CallerRole::Operator => "operator",
            CallerRole::Admin => "admin",
        }
    }

    /// Approve, reject, switch, freeze and unfreeze need at least this.
    pub fn may_act(self) -> bool {
        self >= CallerRole::Operator
    }
}

/// A path's health as the controller evaluated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    Unknown,
    Healthy,
    Failed,
}

/// How the controller acts on a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Unknown,
    Auto,
    Approve,
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unknown => "unknown",
            Mode::Auto => "auto",
            Mode::Approve => "approve",
            Mode::DryRun => "dry-run",
        }
    }
}

/// Where a decision is in its lifecycle (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Unknown,
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
    /// The happy path, in order, for showing where a decision stands.
    pub const LIFECYCLE: [Stage; 5] = [
        Stage::Proposed,
        Stage::Approved,
        Stage::Dispatched,
        Stage::Succeeded,
        Stage::Verified,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Stage::Verified | Stage::Abandoned | Stage::Rejected | Stage::Failed | Stage::TimedOut
        )
    }
}

/// A check result state (the Nagios plugin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    Unknown,
    Ok,
    Warning,
    Critical,
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub applied_index: u64,
    pub generated_at_unix_ms: i64,
    pub caller_role: CallerRole,
    pub runbook_version: u64,
    /// In the controller's order (the runbook's).
    pub services: Vec<Service>,
    /// Ordered by id.
    pub agents: Vec<Agent>,
    /// Newest first (by when they were proposed).
    pub decisions: Vec<Decision>,
    pub cluster: Option<ClusterStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub mode: Mode,
    pub active_path: String,
    /// In priority order.
    pub paths: Vec<Path>,
    pub frozen: bool,
    pub frozen_reason: String,
    pub no_healthy_path: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Path {
    pub name: String,
    pub state: PathState,
    pub since_unix_ms: i64,
    pub vantage: Vec<Vantage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vantage {
    pub agent_id: String,
    pub check: String,
    pub last_status: CheckState,
    pub last_seen_unix_ms: i64,
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub agent_id: String,
    pub version: String,
    pub connected: bool,
    pub last_seen_unix_ms: i64,
    pub host: Option<HostMetrics>,
    pub checks: Vec<Check>,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostMetrics {
    /// 0.0 ..= 1.0
    pub cpu_utilization: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub load_average_1m: f64,
    pub uptime_seconds: u64,
}

impl HostMetrics {
    /// Memory in use as a share of the total, 0.0 ..= 1.0.
    pub fn memory_share(&self) -> f64 {
        if self.memory_total_bytes == 0 {
            0.0
        } else {
            (self.memory_used_bytes as f64 / self.memory_total_bytes as f64).clamp(0.0, 1.0)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckState,
    pub summary: String,
    pub observed_at_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub decision_id: String,
    pub service: String,
    pub from_path: String,
    pub to_path: String,
    pub stage: Stage,
    pub mode: Mode,
    /// (term, index); `None` before it was committed.
    pub fencing_token: Option<(u64, u64)>,
    pub runbook_version: u64,
    pub evidence: Vec<Evidence>,
    pub proposed_at_unix_ms: i64,
    pub updated_at_unix_ms: i64,
    pub operator: String,
    pub reason: String,
}

impl Decision {
    /// Waiting for a person: the dashboard's Approvals.
    pub fn is_pending(&self) -> bool {
        self.stage == Stage::Proposed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub agent_id: String,
    pub check: String,
    pub path: String,
    pub status: CheckState,
    pub observed_at_unix_ms: i64,
    pub consecutive: u32,
}

/// What changed since the previous event of a Watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub applied_index: u64,
    pub generated_at_unix_ms: i64,
    pub services: Vec<Service>,
    pub agents: Vec<Agent>,
    pub decisions: Vec<Decision>,
    pub cluster: Option<ClusterStatus>,
    pub removed_services: Vec<String>,
    pub removed_agents: Vec<String>,
}

/// One entry of the hash-chained audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub index: u64,
    pub log_index: u64,
    pub at_unix_ms: i64,
    pub actor: String,
    pub kind: String,
    pub body_json: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What an operator action came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionReply {
    pub committed_index: u64,
    pub audit_index: u64,
    /// The decision created or affected, if any.
    pub decision_id: Option<String>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidMessage {
    InvalidMessage {
        field: field.into(),
        reason: reason.into(),
    }
}

fn bounded<T>(field: &str, list: Vec<T>, max: usize) -> Result<Vec<T>, InvalidMessage> {
    if list.len() > max {
        return Err(invalid(
            field,
            format!("has {} entries, at most {max} allowed", list.len()),
        ));
    }
    Ok(list)
}

/// Text shown on a terminal: at most `max` bytes, without control
/// characters (which could move the cursor or change colours).
fn shown(text: String, max: usize) -> String {
    let clean = |c: char| !c.is_control();
    if text.len() <= max && text.chars().all(clean) {
        return text;
    }
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if clean(c) { c } else { '�' };
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

fn ident(text: String) -> String {
    shown(text, MAX_IDENTIFIER_BYTES)
}

fn path_state(raw: i32) -> PathState {
    match v1::PathState::try_from(raw) {
        Ok(v1::PathState::Healthy) => PathState::Healthy,
        Ok(v1::PathState::Failed) => PathState::Failed,
        _ => PathState::Unknown,
    }
}

fn mode(raw: i32) -> Mode {
    match v1::ServiceMode::try_from(raw) {
        Ok(v1::ServiceMode::Auto) => Mode::Auto,
        Ok(v1::ServiceMode::Approve) => Mode::Approve,
        Ok(v1::ServiceMode::DryRun) => Mode::DryRun,
        _ => Mode::Unknown,
    }
}

fn stage(raw: i32) -> Stage {
    use v1::DecisionStage as S;
    match S::try_from(raw) {
        Ok(S::Proposed) => Stage::Proposed,
        Ok(S::Approved) => Stage::Approved,
        Ok(S::Dispatched) => Stage::Dispatched,
        Ok(S::Succeeded) => Stage::Succeeded,
        Ok(S::Failed) => Stage::Failed,
        Ok(S::TimedOut) => Stage::TimedOut,
        Ok(S::Verified) => Stage::Verified,
        Ok(S::Abandoned) => Stage::Abandoned,
        Ok(S::Rejected) => Stage::Rejected,
        _ => Stage::Unknown,
    }
}

fn check_state(raw: i32) -> CheckState {
    match v1::CheckStatus::try_from(raw) {
        Ok(v1::CheckStatus::Ok) => CheckState::Ok,
        Ok(v1::CheckStatus::Warning) => CheckState::Warning,
        Ok(v1::CheckStatus::Critical) => CheckState::Critical,
        _ => CheckState::Unknown,
    }
}

fn caller_role(raw: i32) -> CallerRole {
    match v1::Role::try_from(raw) {
        Ok(v1::Role::Viewer) => CallerRole::Viewer,
        Ok(v1::Role::Operator) => CallerRole::Operator,
        Ok(v1::Role::Admin) => CallerRole::Admin,
        _ => CallerRole::Unknown,
    }
}

impl TryFrom<v1::ServiceView> for Service {
    type Error = InvalidMessage;
    fn try_from(s: v1::ServiceView) -> Result<Self, InvalidMessage> {
        let paths = bounded("services[].paths", s.paths, MAX_PATHS)?
            .into_iter()
            .map(|p| {
                Ok(Path {
                    name: ident(p.name),
                    state: path_state(p.state),
                    since_unix_ms: p.since_unix_ms,
                    vantage: bounded("services[].paths[].vantage", p.vantage, MAX_VANTAGE)?
                        .into_iter()
                        .map(|v| Vantage {
                            agent_id: ident(v.agent_id),
                            check: ident(v.check),
                            last_status: check_state(v.last_status),
                            last_seen_unix_ms: v.last_seen_unix_ms,
                            stale: v.stale,
                        })
                        .collect(),
                })
            })
            .collect::<Result<_, InvalidMessage>>()?;
        if s.name.is_empty() {
            return Err(invalid("services[].name", "is empty"));
        }
        Ok(Service {
            name: ident(s.name),
            mode: mode(s.mode),
            active_path: ident(s.active_path),
            paths,
            frozen: s.frozen,
            frozen_reason: shown(s.frozen_reason, MAX_REASON_BYTES),
            no_healthy_path: s.no_healthy_path,
        })
    }
}

impl TryFrom<v1::AgentView> for Agent {
    type Error = InvalidMessage;
    fn try_from(a: v1::AgentView) -> Result<Self, InvalidMessage> {
        if a.agent_id.is_empty() {
            return Err(invalid("agents[].agent_id", "is empty"));
        }
        let host = a.host.map(|h| HostMetrics {
            cpu_utilization: if h.cpu_utilization.is_finite() {
                h.cpu_utilization.clamp(0.0, 1.0)
            } else {
                0.0
            },
            memory_used_bytes: h.memory_used_bytes,
            memory_total_bytes: h.memory_total_bytes,
            load_average_1m: if h.load_average_1m.is_finite() {
                h.load_average_1m.max(0.0)
            } else {
                0.0
            },
            uptime_seconds: h.uptime_seconds,
        });
        Ok(Agent {
            agent_id: ident(a.agent_id),
            version: shown(a.version, 64),
            connected: a.connected,
            last_seen_unix_ms: a.last_seen_unix_ms,
            host,
            checks: bounded("agents[].checks", a.checks, MAX_CHECKS)?
                .into_iter()
                .map(|c| Check {
                    name: ident(c.name),
                    status: check_state(c.status),
                    summary: shown(c.summary, MAX_SUMMARY_BYTES),
                    observed_at_unix_ms: c.observed_at_unix_ms,
                })
                .collect(),
            last_seq: a.last_seq,
        })
    }
}

impl TryFrom<v1::DecisionView> for Decision {
    type Error = InvalidMessage;
    fn try_from(d: v1::DecisionView) -> Result<Self, InvalidMessage> {
        if d.decision_id.is_empty() {
            return Err(invalid("decisions[].decision_id", "is empty"));
        }
        Ok(Decision {
            decision_id: ident(d.decision_id),
            service: ident(d.service),
            from_path: ident(d.from_path),
            to_path: ident(d.to_path),
            stage: stage(d.stage),
            mode: mode(d.mode),
            fencing_token: d.fencing_token.map(|t| (t.term, t.index)),
            runbook_version: d.runbook_version,
            evidence: bounded("decisions[].evidence", d.evidence, MAX_EVIDENCE)?
                .into_iter()
                .map(|e| Evidence {
                    agent_id: ident(e.agent_id),
                    check: ident(e.check),
                    path: ident(e.path),
                    status: check_state(e.status),
                    observed_at_unix_ms: e.observed_at_unix_ms,
                    consecutive: e.consecutive,
                })
                .collect(),
            proposed_at_unix_ms: d.proposed_at_unix_ms,
            updated_at_unix_ms: d.updated_at_unix_ms,
            operator: ident(d.operator),
            reason: shown(d.reason, MAX_REASON_BYTES),
        })
    }
}

impl From<v1::AuditEntry> for AuditEntry {
    fn from(e: v1::AuditEntry) -> Self {
        AuditEntry {
            index: e.index,
            log_index: e.log_index,
            at_unix_ms: e.at_unix_ms,
            actor: shown(e.actor, 160),
            kind: shown(e.kind, 64),
            body_json: shown(e.body_json, 64 << 10),
            prev_hash: shown(e.prev_hash, 64),
            hash: shown(e.hash, 64),
        }
    }
}

impl From<v1::OperatorActionReply> for ActionReply {
    fn from(r: v1::OperatorActionReply) -> Self {
        ActionReply {
            committed_index: r.committed_index,
            audit_index: r.audit_index,
            decision_id: (!r.decision_id.is_empty()).then(|| ident(r.decision_id)),
        }
    }
}

fn convert<W, T: TryFrom<W, Error = InvalidMessage>>(
    field: &str,
    list: Vec<W>,
    max: usize,
) -> Result<Vec<T>, InvalidMessage> {
    bounded(field, list, max)?
        .into_iter()
        .map(T::try_from)
        .collect()
}

fn cluster(reply: Option<v1::ClusterStatusReply>) -> Result<Option<ClusterStatus>, InvalidMessage> {
    reply
        .map(|c| {
            ClusterStatus::try_from(c)
                .map_err(|e| invalid(format!("cluster.{}", e.field), e.reason))
        })
        .transpose()
}

impl TryFrom<v1::View> for View {
    type Error = InvalidMessage;
    fn try_from(v: v1::View) -> Result<Self, InvalidMessage> {
        let mut view = View {
            applied_index: v.applied_index,
            generated_at_unix_ms: v.generated_at_unix_ms,
            caller_role: caller_role(v.caller_role),
            runbook_version: v.runbook_version,
            services: convert("services", v.services, MAX_SERVICES)?,
            agents: convert("agents", v.agents, MAX_AGENTS)?,
            decisions: convert("decisions", v.decisions, MAX_DECISIONS)?,
            cluster: cluster(v.cluster)?,
        };
        view.agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        view.agents.dedup_by(|a, b| a.agent_id == b.agent_id);
        view.sort_decisions();
        Ok(view)
    }
}

impl TryFrom<v1::ViewDelta> for Delta {
    type Error = InvalidMessage;
    fn try_from(d: v1::ViewDelta) -> Result<Self, InvalidMessage> {
        Ok(Delta {
            applied_index: d.applied_index,
            generated_at_unix_ms: d.generated_at_unix_ms,
            services: convert("services", d.services, MAX_SERVICES)?,
            agents: convert("agents", d.agents, MAX_AGENTS)?,
            decisions: convert("decisions", d.decisions, MAX_DECISIONS)?,
            cluster: cluster(d.cluster)?,
            removed_services: bounded("removed_services", d.removed_services, MAX_SERVICES)?
                .into_iter()
                .map(ident)
                .collect(),
            removed_agents: bounded("removed_agents", d.removed_agents, MAX_AGENTS)?
                .into_iter()
                .map(ident)
                .collect(),
        })
    }
}

impl View {
    /// Applies a delta: services, agents and decisions it names are
    /// replaced whole (or added), removed ones removed, the cluster
    /// replaced when present.
    pub fn apply(&mut self, delta: Delta) {
        self.applied_index = delta.applied_index;
        self.generated_at_unix_ms = delta.generated_at_unix_ms;
        for service in delta.services {
            match self.services.iter_mut().find(|s| s.name == service.name) {
                Some(old) => *old = service,
                None => self.services.push(service),
            }
        }
        self.services
            .retain(|s| !delta.removed_services.contains(&s.name));
        let agents_changed = !delta.agents.is_empty() || !delta.removed_agents.is_empty();
        for agent in delta.agents {
            match self
                .agents
                .binary_search_by(|a| a.agent_id.as_str().cmp(&agent.agent_id))
            {
                Ok(at) => self.agents[at] = agent,
                Err(at) => self.agents.insert(at, agent),
            }
        }
        if !delta.removed_agents.is_empty() {
            let mut removed = delta.removed_agents;
            removed.sort();
            self.agents
                .retain(|a| removed.binary_search(&a.agent_id).is_err());
        }
        debug_assert!(
            !agents_changed || self.agents.is_sorted_by(|a, b| a.agent_id < b.agent_id),
            "agents must stay ordered by id after a delta"
        );
        let decisions_changed = !delta.decisions.is_empty();
        for decision in delta.decisions {
            match self
                .decisions
                .iter_mut()
                .find(|d| d.decision_id == decision.decision_id)
            {
                Some(old) => *old = decision,
                None => self.decisions.push(decision),
            }
        }
        if decisions_changed {
            self.sort_decisions();
            self.decisions.truncate(MAX_DECISIONS);
        }
        if let Some(cluster) = delta.cluster {
            self.cluster = Some(cluster);
        }
    }

    fn sort_decisions(&mut self) {
        self.decisions.sort_by(|a, b| {
            b.proposed_at_unix_ms
                .cmp(&a.proposed_at_unix_ms)
                .then_with(|| a.decision_id.cmp(&b.decision_id))
        });
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Decisions waiting for a person.
    pub fn pending(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.is_pending())
    }

    /// Pretty-printed JSON with the field names of these structs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Only non-finite floats fail, and conversion clamps them.
            format!("{{\"error\": {:?}}}", e.to_string())
        })
    }

    /// The plain-text view for `leitstand status`: the dashboard's facts,
    /// in the same words and symbols, for scripts and screen readers.
    pub fn to_text(&self, now_unix_ms: i64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "view at log index {} (built {}), runbook version {}, your role: {}",
            self.applied_index,
            utc(self.generated_at_unix_ms),
            self.runbook_version,
            self.caller_role.as_str()
        );
        let _ = writeln!(out, "\nSERVICES");
        if self.services.is_empty() {
            let _ = writeln!(out, "  none (no runbook applied)");
        }
        for s in &self.services {
            let mut flags = String::new();
            if s.frozen {
                let _ = write!(flags, ", ‖ frozen: {}", s.frozen_reason);
            }
            if s.no_healthy_path {
                flags.push_str(", ✖ ALARM: no healthy path");
            }
            let _ = writeln!(out, "  {} (mode {}{flags})", s.name, s.mode.as_str());
            for p in &s.paths {
                let active = if p.name == s.active_path {
                    "▶ active "
                } else {
                    "         "
                };
                let _ = writeln!(
                    out,
                    "    {active}{:<16} {} since {}",
                    p.name,
                    path_word(p.state),
                    ago(now_unix_ms, p.since_unix_ms)
                );
                for v in &p.vantage {
                    let _ = writeln!(
                        out,
                        "                vantage {}/{}: {}{}, seen {}",
                        v.agent_id,
                        v.check,
                        check_word(v.last_status),
                        if v.stale { " (stale)" } else { "" },
                        ago(now_unix_ms, v.last_seen_unix_ms)
                    );
                }
            }
        }
        let _ = writeln!(out, "\nAGENTS");
        if self.agents.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for a in &self.agents {
            let host = a.host.as_ref().map_or_else(
                || "no metrics yet".to_owned(),
                |h| {
                    format!(
                        "cpu {:.0} %, memory {:.0} %, load {:.2}",
                        h.cpu_utilization * 100.0,
                        h.memory_share() * 100.0,
                        h.load_average_1m
                    )
                },
            );
            let _ = writeln!(
                out,
                "  {:<24} {} seen {}, {host}, version {}",
                a.agent_id,
                if a.connected {
                    "● connected,   "
                } else {
                    "○ disconnected,"
                },
                ago(now_unix_ms, a.last_seen_unix_ms),
                a.version
            );
            for c in &a.checks {
                let _ = writeln!(
                    out,
                    "    {:<22} {} {}",
                    c.name,
                    check_word(c.status),
                    c.summary
                );
            }
        }
        let _ = writeln!(out, "\nDECISIONS");
        if self.decisions.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for d in &self.decisions {
            let _ = writeln!(
                out,
                "  {} {}: {} → {}, {}{}, mode {}, proposed {}",
                d.decision_id,
                d.service,
                d.from_path,
                d.to_path,
                stage_word(d.stage),
                if d.is_pending() {
                    " (waiting for approval)"
                } else {
                    ""
                },
                d.mode.as_str(),
                ago(now_unix_ms, d.proposed_at_unix_ms)
            );
            if !d.operator.is_empty() || !d.reason.is_empty() {
                let _ = writeln!(out, "    by {:?}: {}", d.operator, d.reason);
            }
            for e in &d.evidence {
                let _ = writeln!(
                    out,
                    "    evidence: {}/{} on {}: {} {} times, at {}",
                    e.agent_id,
                    e.check,
                    e.path,
                    check_word(e.status),
                    e.consecutive,
                    utc(e.observed_at_unix_ms)
                );
            }
        }
        if let Some(cluster) = &self.cluster {
            let _ = writeln!(out, "\nCLUSTER");
            for line in cluster.to_text().lines() {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        out
    }
}

/// The English word with its symbol, for plain text.
fn path_word(s: PathState) -> &'static str {
    match s {
        PathState::Healthy => "✔ healthy",
        PathState::Failed => "✖ failed",
        PathState::Unknown => "? unknown",
    }
}

fn check_word(s: CheckState) -> &'static str {
    match s {
        CheckState::Ok => "✔ ok",
        CheckState::Warning => "⚠ warning",
        CheckState::Critical => "✖ critical",
        CheckState::Unknown => "? unknown",
    }
}

fn stage_word(s: Stage) -> &'static str {
    match s {
        Stage::Unknown => "? unknown",
        Stage::Proposed => "◇ proposed",
        Stage::Approved => "◆ approved",
        Stage::Dispatched => "→ dispatched",
        Stage::Succeeded => "✔ succeeded",
        Stage::Failed => "✖ failed",
        Stage::TimedOut => "◔ timed out",
        Stage::Verified => "✔ verified",
        Stage::Abandoned => "∅ abandoned",
        Stage::Rejected => "✗ rejected",
    }
}

/// An operator action and where the cluster recorded it: what
/// `leitstand approve|reject|switch|freeze|unfreeze` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// approve, reject, switch, freeze or unfreeze.
    pub action: &'static str,
    pub decision_id: Option<String>,
    pub service: Option<String>,
    pub path: Option<String>,
    pub committed_index: u64,
    pub audit_index: u64,
}

impl ActionOutcome {
    pub fn new(
        action: &'static str,
        service: Option<&str>,
        path: Option<&str>,
        decision_id: Option<&str>,
        reply: &ActionReply,
    ) -> Self {
        ActionOutcome {
            action,
            decision_id: decision_id
                .map(str::to_owned)
                .or_else(|| reply.decision_id.clone()),
            service: service.map(str::to_owned),
            path: path.map(str::to_owned),
            committed_index: reply.committed_index,
            audit_index: reply.audit_index,
        }
    }

    /// Pretty-printed JSON with the field names of this struct.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// "Approved decision d-42; committed at log index 1240, audit entry 7."
    pub fn to_text(&self) -> String {
        let id = self.decision_id.as_deref().unwrap_or("-");
        let service = self.service.as_deref().unwrap_or("-");
        let done = match self.action {
            "approve" => format!("Approved decision {id}"),
            "reject" => format!("Rejected decision {id}"),
            "switch" => format!(
                "Switching {service} to {} (decision {id})",
                self.path.as_deref().unwrap_or("-")
            ),
            "freeze" => format!("Froze {service}: no automatic decisions until unfrozen"),
            "unfreeze" => format!("Unfroze {service}: automatic decisions resume"),
            other => format!("{other} done"),
        };
        format!(
            "{done}; committed at log index {}, audit entry {}.",
            self.committed_index, self.audit_index
        )
    }
}

impl AuditEntry {
    pub fn to_text(&self) -> String {
        format!(
            "{:>6}  {}  {:<24} {:<22} {}",
            self.index,
            utc(self.at_unix_ms),
            self.actor,
            self.kind,
            self.body_json
        )
    }
}
