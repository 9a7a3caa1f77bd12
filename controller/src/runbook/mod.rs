//! Runbooks (DESIGN.md §5): what a city's operators declare about their
//! services, in TOML, and what the failover engine acts on.
//!
//! - [`Runbook::parse`] turns TOML text into a validated [`Runbook`], or
//!   errors naming file, line and column (`leitstand runbook check`, exit 2).
//! - [`Runbook::references`] lists the agents, checks and actions it names,
//!   so they can be compared with what agents announced (warnings, never
//!   errors: an agent may not be installed yet).
//! - [`render`] prints the procedures as Markdown for the day the screens
//!   are dark (`leitstand runbook render`).
//!
//! A runbook version is stored in replicated state as its text and its
//! SHA-256; every controller parses the same text the same way, so the
//! parsed form never needs to be replicated.

mod parse;
mod render;
#[cfg(test)]
mod tests;

use std::time::Duration;

use leitstand_proto::domain::{AgentId, Identifier};

pub use parse::RunbookError;
pub use render::render;

/// Services in a runbook, at most.
pub const MAX_SERVICES: usize = 1000;
/// Paths per service, at most (the contract's bound).
pub const MAX_PATHS: usize = 16;
/// Vantage points per path, at most (the contract's bound).
pub const MAX_VANTAGE: usize = 32;
/// Runbook text, at most (the contract's bound).
pub const MAX_RUNBOOK_BYTES: usize = 1 << 20;

/// A validated runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runbook {
    /// In the order written; names are unique.
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: Identifier,
    pub mode: Mode,
    pub failback: Failback,
    pub flap_guard: FlapGuard,
    /// In priority order, the first preferred; names unique within the
    /// service; at least 2.
    pub paths: Vec<Path>,
}

/// Who decides: the engine alone, a person, or nobody (only recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Approve,
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// Only an operator's switch goes back to a preferred path.
    Manual,
    /// Back to a higher-priority path once it was Healthy this long.
    After(Duration),
}

/// Freezes a service that switches too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapGuard {
    /// No automatic switch sooner than this after the previous one.
    pub min_interval: Duration,
    /// More automatic switches than this within an hour freeze the service.
    pub max_per_hour: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub name: Identifier,
    /// At least 1, at most [`MAX_VANTAGE`]; (agent, check) pairs unique.
    pub vantage: Vec<Vantage>,
    /// 1 ≤ quorum ≤ vantage.len().
    pub quorum: u32,
    /// Consecutive critical results before a vantage point is failing (≥ 1).
    pub fail_after: u32,
    /// Consecutive ok (or warning) results before it is passing (≥ 1).
    pub recover_after: u32,
    /// A vantage point whose agent sent nothing this long is stale.
    pub stale_after: Duration,
    pub silence_means: Silence,
    /// What activates this path, and where it runs.
    pub activate: Activate,
    /// What shows the activation worked; `None`: the action's success is
    /// taken as verification.
    pub verify: Option<Vantage>,
}

/// A check as one agent runs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vantage {
    pub agent: AgentId,
    pub check: Identifier,
}

/// An action in one agent's local allowlist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Activate {
    pub agent: AgentId,
    pub action: Identifier,
}

/// What a stale vantage point counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Nothing: missing data is not failure.
    Unknown,
    /// Failing: for an agent whose only route is that very path.
    Failed,
}

/// What a runbook names on agents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub checks: std::collections::BTreeSet<Vantage>,
    pub actions: std::collections::BTreeSet<Activate>,
}

impl Runbook {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name.as_str() == name)
    }

    /// Every check and action the runbook names, by agent.
    pub fn references(&self) -> References {
        let mut references = References::default();
        for path in self.services.iter().flat_map(|s| &s.paths) {
            references.checks.extend(path.vantage.iter().cloned());
            references.checks.extend(path.verify.iter().cloned());
            references.actions.insert(path.activate.clone());
        }
        references
    }
}

impl Service {
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.paths.iter().find(|p| p.name.as_str() == name)
    }
}

/// SHA-256 of a runbook's text, lower-case hex: its identity in the log.
pub fn content_sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
