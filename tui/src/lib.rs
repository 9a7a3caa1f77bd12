//! leitstand-tui: the operator's side of the Operator API: operator.toml
//! ([`OperatorConfig`]), the leader-following client ([`OperatorClient`]),
//! what the controllers show ([`View`], [`ClusterStatus`]) as text and
//! JSON for the command line, and the ratatui [`dashboard`].
//!
//! All network work goes through [`OperatorClient`], so the dashboard and
//! the command-line twins follow the leader the same way.
#![forbid(unsafe_code)]

mod client;
mod cluster;
mod config;
pub mod dashboard;
mod error;
mod format;
mod view;

pub use client::{MAX_AUDIT_ENTRIES, MAX_WATCH_BACKOFF, OperatorClient, WatchUpdate};
pub use cluster::{ClusterStatus, Member, Probe, Role};
pub use config::OperatorConfig;
pub use error::{Error, Tried};
pub use view::{
    ActionOutcome, ActionReply, Agent, AuditEntry, CallerRole, Check, CheckState, Decision, Delta,
    Evidence, HostMetrics, Mode, Path, PathState, Service, Stage, Vantage, View,
};
