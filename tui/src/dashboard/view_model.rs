//! The dashboard's local model: the last view from Operator.Watch with
//! its deltas applied, where the stream stands, per-agent metric history
//! for sparklines, the polled cluster status and the audit entries read.
//! Nothing here touches the network; events bring the facts in.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::client::WatchUpdate;
use crate::cluster::ClusterStatus;
use crate::view::{AuditEntry, View};

/// Samples kept per agent for a sparkline.
pub(crate) const HISTORY: usize = 48;
/// Audit entries kept in memory; older ones are dropped first.
pub(crate) const MAX_AUDIT_KEPT: usize = 5_000;

/// Where the Watch stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connection {
    /// No stream opened yet.
    Connecting,
    Live {
        address: String,
    },
    Lost {
        reason: String,
        retry_in: Duration,
    },
}

/// CPU and memory use of one agent, in percent, oldest first.
#[derive(Debug, Default, Clone)]
pub(crate) struct History {
    pub(crate) cpu: VecDeque<u8>,
    pub(crate) memory: VecDeque<u8>,
    last_seq: u64,
}

impl History {
    fn push(&mut self, seq: u64, cpu: f64, memory: f64) {
        if seq == self.last_seq && !self.cpu.is_empty() {
            return;
        }
        self.last_seq = seq;
        for (ring, share) in [(&mut self.cpu, cpu), (&mut self.memory, memory)] {
            if ring.len() == HISTORY {
                ring.pop_front();
            }
            ring.push_back(percent(share));
        }
    }
}

fn percent(share: f64) -> u8 {
    // Clamped to 0..=1 on conversion from the wire.
    (share.clamp(0.0, 1.0) * 100.0).round() as u8
}

#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) view: Option<View>,
    pub(crate) connection: Option<Connection>,
    /// Our wall clock when the last full view or delta arrived.
    pub(crate) last_update_unix_ms: Option<i64>,
    pub(crate) history: HashMap<String, History>,
    /// From the periodic ClusterStatus, with when it arrived.
    pub(crate) cluster: Option<(ClusterStatus, i64)>,
    pub(crate) cluster_error: Option<String>,
    pub(crate) audit: Vec<AuditEntry>,
    pub(crate) audit_error: Option<String>,
    pub(crate) audit_loading: bool,
}

impl Model {
    pub(crate) fn connection(&self) -> Connection {
        self.connection.clone().unwrap_or(Connection::Connecting)
    }

    pub(crate) fn on_watch(&mut self, update: WatchUpdate, now_unix_ms: i64) {
        match update {
            WatchUpdate::Connected { address } => {
                self.connection = Some(Connection::Live { address });
            }
            WatchUpdate::Disconnected { reason, retry_in } => {
                self.connection = Some(Connection::Lost { reason, retry_in });
            }
            WatchUpdate::Full(view) => {
                self.history
                    .retain(|id, _| view.agents.iter().any(|a| &a.agent_id == id));
                self.record(&view, None);
                self.view = Some(*view);
                self.last_update_unix_ms = Some(now_unix_ms);
            }
            WatchUpdate::Delta(delta) => {
                let Some(view) = &mut self.view else {
                    // The client sends a full view first; nothing to apply to.
                    return;
                };
                for removed in &delta.removed_agents {
                    self.history.remove(removed);
                }
                let changed: Vec<String> =
                    delta.agents.iter().map(|a| a.agent_id.clone()).collect();
                view.apply(*delta);
                if let Some(view) = self.view.take() {
                    self.record(&view, Some(&changed));
                    self.view = Some(view);
                }
                self.last_update_unix_ms = Some(now_unix_ms);
            }
        }
    }

    /// Adds the latest metrics of `only` (all agents when `None`).
    fn record(&mut self, view: &View, only: Option<&[String]>) {
        let mut add = |agent: &crate::view::Agent| {
            if let Some(host) = &agent.host {
                self.history
                    .entry(agent.agent_id.clone())
                    .or_default()
                    .push(agent.last_seq, host.cpu_utilization, host.memory_share());
            }
        };
        match only {
            None => view.agents.iter().for_each(&mut add),
            Some(ids) => {
                for id in ids {
                    if let Ok(at) = view
                        .agents
                        .binary_search_by(|a| a.agent_id.as_str().cmp(id))
                    {
                        add(&view.agents[at]);
                    }
                }
            }
        }
    }

    pub(crate) fn on_cluster(&mut self, result: Result<ClusterStatus, String>, now_unix_ms: i64) {
        match result {
            Ok(status) => {
                self.cluster = Some((status, now_unix_ms));
                self.cluster_error = None;
            }
            Err(error) => self.cluster_error = Some(error),
        }
    }

    pub(crate) fn on_audit(&mut self, result: Result<Vec<AuditEntry>, String>) {
        self.audit_loading = false;
        match result {
            Ok(entries) => {
                self.audit_error = None;
                let last = self.last_audit_index();
                self.audit
                    .extend(entries.into_iter().filter(|e| e.index > last));
                if self.audit.len() > MAX_AUDIT_KEPT {
                    let extra = self.audit.len() - MAX_AUDIT_KEPT;
                    self.audit.drain(..extra);
                }
            }
            Err(error) => self.audit_error = Some(error),
        }
    }

    pub(crate) fn last_audit_index(&self) -> u64 {
        self.audit.last().map_or(0, |e| e.index)
    }

    /// The freshest cluster status: the polled one, else the view's.
    pub(crate) fn cluster_status(&self) -> Option<(&ClusterStatus, Option<i64>)> {
        match (
            &self.cluster,
            self.view.as_ref().and_then(|v| v.cluster.as_ref()),
        ) {
            (Some((status, at)), _) => Some((status, Some(*at))),
            (None, Some(status)) => Some((status, self.last_update_unix_ms)),
            (None, None) => None,
        }
    }
}
