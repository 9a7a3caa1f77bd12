//! Soft state of the leader: the agents it has heard from, their latest
//! report and the sessions that carry them. Never replicated; after a leader
//! change it is rebuilt from fresh reports (DESIGN.md §4).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use leitstand_proto::domain::{AgentId, Announce, Hello, Report};
use leitstand_proto::v1::ExecuteAction;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The agent limit of one controller; Hello from a new agent beyond it is
/// refused with RESOURCE_EXHAUSTED.
pub(crate) const MAX_AGENTS: usize = 20_000;

#[derive(Debug)]
pub(crate) struct AgentRecord {
    pub(crate) hello: Hello,
    pub(crate) last_seq: u64,
    /// Shared with the engine, which gets the same report without a copy.
    pub(crate) latest_report: Option<Arc<Report>>,
    pub(crate) last_seen: Instant,
    /// Which session owns the record; an older session must not touch it.
    session: u64,
    /// Ends the current session when a newer one takes over.
    supersede: Option<oneshot::Sender<()>>,
    /// ExecuteAction for the current session to send down.
    commands: Option<mpsc::Sender<ExecuteAction>>,
}

/// ExecuteAction messages a session may have queued.
const COMMAND_QUEUE: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    agents: Mutex<HashMap<AgentId, AgentRecord>>,
    next_session: std::sync::atomic::AtomicU64,
}

/// What a session learns when it registers.
pub(crate) struct Registration {
    pub(crate) session: u64,
    pub(crate) last_acked_seq: u64,
    pub(crate) superseded: oneshot::Receiver<()>,
    /// What the engine asks this session to send down.
    pub(crate) commands: mpsc::Receiver<ExecuteAction>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accepted {
    New,
    Duplicate {
        last_seq: u64,
    },
    /// The session was replaced by a newer one of the same agent.
    Stale,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, AgentRecord>> {
        // Every critical section below leaves the map consistent at each
        // statement, so a poisoned lock holds valid data.
        self.agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session for `hello.agent_id`, ending any older session.
    /// `None` when the agent is new and the limit is reached.
    pub(crate) fn register(&self, hello: Hello) -> Option<Registration> {
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (tx, rx) = oneshot::channel();
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let mut agents = self.lock();
        let last_acked_seq = match agents.get_mut(&hello.agent_id) {
            Some(record) => {
                if let Some(older) = record.supersede.take() {
                    let _ = older.send(());
                }
                if record.hello.incarnation != hello.incarnation {
                    // A restarted agent numbers its reports from 1 again.
                    record.last_seq = 0;
                }
                record.hello = hello;
                record.session = session;
                record.supersede = Some(tx);
                record.commands = Some(commands_tx);
                record.last_seen = Instant::now();
                record.last_seq
            }
            None => {
                if agents.len() >= MAX_AGENTS {
                    return None;
                }
                agents.insert(
                    hello.agent_id.clone(),
                    AgentRecord {
                        hello,
                        last_seq: 0,
                        latest_report: None,
                        last_seen: Instant::now(),
                        session,
                        supersede: Some(tx),
                        commands: Some(commands_tx),
                    },
                );
                0
            }
        };
        Some(Registration {
            session,
            last_acked_seq,
            superseded: rx,
            commands,
        })
    }

    /// Keeps `report` as the agent's latest unless its sequence number was
    /// seen already.
    pub(crate) fn accept_report(
        &self,
        agent: &AgentId,
        session: u64,
        report: Arc<Report>,
    ) -> Accepted {
        let mut agents = self.lock();
        let Some(record) = agents.get_mut(agent).filter(|r| r.session == session) else {
            return Accepted::Stale;
        };
        record.last_seen = Instant::now();
        if report.seq <= record.last_seq {
            return Accepted::Duplicate {
                last_seq: record.last_seq,
            };
        }
        record.last_seq = report.seq;
        record.latest_report = Some(report);
        Accepted::New
    }

    /// Replaces the announced checks and actions of the session's agent.
    pub(crate) fn announce(&self, agent: &AgentId, session: u64, announce: Announce) {
        if let Some(record) = self.lock().get_mut(agent).filter(|r| r.session == session) {
            record.hello.checks = announce.checks;
            record.hello.actions = announce.actions;
        }
    }

    /// Called when a session ends; a newer session's state is left alone.
    pub(crate) fn disconnect(&self, agent: &AgentId, session: u64) {
        if let Some(record) = self.lock().get_mut(agent).filter(|r| r.session == session) {
            record.supersede = None;
            record.commands = None;
        }
    }

    /// Queues `command` for the agent's open session; false when it has
    /// none (or its queue is full: the engine sends again later).
    pub(crate) fn execute(&self, agent: &AgentId, command: ExecuteAction) -> bool {
        self.lock()
            .get(agent)
            .and_then(|r| r.commands.as_ref())
            .is_some_and(|commands| commands.try_send(command).is_ok())
    }

    /// The checks and actions the agent announced, if it is known.
    pub(crate) fn announced(&self, agent: &AgentId) -> Option<(Vec<String>, Vec<String>)> {
        self.lock().get(agent).map(|r| {
            (
                r.hello.checks.iter().map(|c| c.to_string()).collect(),
                r.hello.actions.iter().map(|a| a.to_string()).collect(),
            )
        })
    }

    pub(crate) fn is_connected(&self, agent: &AgentId) -> bool {
        self.lock()
            .get(agent)
            .is_some_and(|r| r.supersede.is_some())
    }

    /// Calls `visit` for every agent with whether it has an open session and
    /// its latest report, holding the lock: `visit` must only copy numbers
    /// out (the metrics exporter does, once per collection).
    pub(crate) fn visit(&self, mut visit: impl FnMut(&AgentId, bool, Option<&Report>)) {
        for (agent, record) in self.lock().iter() {
            visit(
                agent,
                record.supersede.is_some(),
                record.latest_report.as_deref(),
            );
        }
    }

    pub(crate) fn latest(&self, agent: &AgentId) -> Option<(u64, Option<Report>)> {
        self.lock()
            .get(agent)
            .map(|r| (r.last_seq, r.latest_report.as_deref().cloned()))
    }
}
