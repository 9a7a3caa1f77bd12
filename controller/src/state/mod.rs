//! The replicated state machine: what every controller applies, in log
//! order, from committed Raft entries (DESIGN.md §4). Later work extends it
//! with runbook versions, path states, decisions and operator actions; it
//! holds the cluster's membership addresses, write probes and the audit
//! chain now.
//!
//! # Shape
//!
//! - [`Command`]: what a leader proposes, encoded as one version byte and
//!   JSON. A command that does not decode, or that the state refuses, is
//!   refused the same way on every replica (nothing changes), and the
//!   proposer gets the reason.
//! - The state is kept twice, in the same shape: typed in memory for
//!   readers, and as records (key → JSON) in the node's redb file, written
//!   in the same transaction as the applied index (`raft::storage`). A
//!   restart loads the records; a snapshot carries them.
//! - Apply is deterministic: a function of the state and the entry. Times
//!   come inside commands (the proposer's clock), never from the applying
//!   node's clock, so every replica writes the same bytes (the state digest
//!   compares them).

mod audit;
pub(crate) mod failover;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use leitstand_proto::domain::NodeId;
use raft::eraftpb::ConfChangeType;
use tokio::sync::watch;

pub use audit::{AuditEntry, ChainBreak, verify};

use crate::raft::{Committed, MembershipChange, StateMachine, StateRecords, StateWrites};

/// The first byte of every encoded command: the encoding's version.
const COMMAND_FORMAT: u8 = 1;

/// Record keys. Fixed-width numbers keep the key order numeric.
mod key {
    pub(super) const PROBES: &str = "probes";
    pub(super) const MEMBER_PREFIX: &str = "member/";
    pub(super) const AUDIT_PREFIX: &str = "audit/";
    pub(super) const RUNBOOK_PREFIX: &str = "runbook/";
    pub(super) const SERVICE_PREFIX: &str = "service/";
    pub(super) const DECISION_PREFIX: &str = "decision/";

    pub(super) fn runbook(version: u64) -> String {
        format!("{RUNBOOK_PREFIX}{version:020}")
    }

    pub(super) fn service(name: &str) -> String {
        format!("{SERVICE_PREFIX}{name}")
    }

    pub(super) fn decision(id: &str) -> String {
        format!("{DECISION_PREFIX}{id}")
    }

    pub(super) fn member(id: u64) -> String {
        format!("{MEMBER_PREFIX}{id:020}")
    }

    pub(super) fn audit(index: u64) -> String {
        format!("{AUDIT_PREFIX}{index:020}")
    }
}

/// What a leader proposes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Command {
    /// A write that changes nothing but the probe count: proves the
    /// cluster commits (Operator.Probe, `leitstand bench raft`).
    Probe {
        at_unix_ms: i64,
    },
    /// The addresses of the members a cluster was bootstrapped with (from
    /// `[cluster] peers`), proposed once by its first leader so that every
    /// member, and every member added later, learns them from the log.
    RecordMembers {
        members: Vec<MemberAddress>,
        actor: String,
        at_unix_ms: i64,
    },
    /// A new runbook version (Operator.ApplyRunbook, admin).
    ApplyRunbook {
        text: String,
        source_name: String,
        actor: String,
        at_unix_ms: i64,
    },
    /// Path state transitions the engine saw, with their evidence.
    PathStates {
        service: String,
        transitions: Vec<(String, failover::PathState)>,
        evidence: Vec<failover::Evidence>,
        at_unix_ms: i64,
    },
    /// A decision: the engine's (failover, failback) or an operator's switch.
    Decide {
        service: String,
        from_path: String,
        to_path: String,
        kind: failover::DecisionKind,
        evidence: Vec<failover::Evidence>,
        operator: String,
        reason: String,
        at_unix_ms: i64,
    },
    Approve {
        decision: String,
        operator: String,
        at_unix_ms: i64,
    },
    Reject {
        decision: String,
        operator: String,
        reason: String,
        at_unix_ms: i64,
    },
    Dispatched {
        decision: String,
        at_unix_ms: i64,
    },
    ActionResult {
        decision: String,
        result: failover::ActionRecord,
        at_unix_ms: i64,
    },
    TimedOut {
        decision: String,
        at_unix_ms: i64,
    },
    /// Verified, or Abandoned when `verified` is false.
    Conclude {
        decision: String,
        verified: bool,
        detail: String,
        at_unix_ms: i64,
    },
    Freeze {
        service: String,
        by: String,
        reason: String,
        at_unix_ms: i64,
    },
    Unfreeze {
        service: String,
        by: String,
        reason: String,
        at_unix_ms: i64,
    },
}

/// A member's node id and listen address. (A list, not a map: JSON map
/// keys are strings, and serde's tagged enums do not read them as numbers.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberAddress {
    pub(crate) node_id: u64,
    pub(crate) address: String,
}

impl Command {
    /// The proposer's clock when it proposed.
    fn at_unix_ms(&self) -> i64 {
        match self {
            Command::Probe { at_unix_ms }
            | Command::RecordMembers { at_unix_ms, .. }
            | Command::ApplyRunbook { at_unix_ms, .. }
            | Command::PathStates { at_unix_ms, .. }
            | Command::Decide { at_unix_ms, .. }
            | Command::Approve { at_unix_ms, .. }
            | Command::Reject { at_unix_ms, .. }
            | Command::Dispatched { at_unix_ms, .. }
            | Command::ActionResult { at_unix_ms, .. }
            | Command::TimedOut { at_unix_ms, .. }
            | Command::Conclude { at_unix_ms, .. }
            | Command::Freeze { at_unix_ms, .. }
            | Command::Unfreeze { at_unix_ms, .. } => *at_unix_ms,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![COMMAND_FORMAT];
        // Serialising these plain structs cannot fail.
        bytes.extend(serde_json::to_vec(self).unwrap_or_default());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Command, String> {
        match bytes.split_first() {
            Some((&COMMAND_FORMAT, json)) => serde_json::from_slice(json)
                .map_err(|error| format!("the command does not decode: {error}")),
            Some((format, _)) => Err(format!(
                "the command is in format {format}, this controller reads format {COMMAND_FORMAT}: upgrade it"
            )),
            None => Err("the command is empty".into()),
        }
    }
}

/// What a membership change carries in its context: who asked, when, and
/// the address of a node being added.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembershipContext {
    pub(crate) actor: String,
    pub(crate) at_unix_ms: i64,
    #[serde(default)]
    pub(crate) address: Option<String>,
}

impl MembershipContext {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A member's stored record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRecord {
    address: String,
}

/// Node id → listen address of every member the log knows of.
pub(crate) type Addresses = BTreeMap<NodeId, String>;

/// Why stored records cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("the applied state's record {key:?} is not valid: {what}")]
pub(crate) struct LoadError {
    key: String,
    what: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    applied: u64,
    probes: u64,
    members: Addresses,
    audit: audit::Chain,
    failover: failover::Failover,
}

/// The state machine. Cheap to clone: clones share the state; the Raft
/// node applies to one, readers read another.
#[derive(Debug, Clone)]
pub(crate) struct ClusterState {
    state: Arc<RwLock<State>>,
    addresses: watch::Sender<Addresses>,
}

impl ClusterState {
    /// The state of `applied` from its stored records.
    pub(crate) fn load(applied: u64, records: &StateRecords) -> Result<Self, LoadError> {
        let state = State::from_records(applied, records)?;
        let (addresses, _) = watch::channel(state.members.clone());
        Ok(ClusterState {
            state: Arc::new(RwLock::new(state)),
            addresses,
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("state machine lock poisoned: a thread panicked while applying")
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .expect("state machine lock poisoned: a thread panicked while applying")
    }

    pub(crate) fn probes(&self) -> u64 {
        self.read().probes
    }

    /// The members' addresses as the log records them; changes are
    /// published to [`ClusterState::watch_addresses`].
    pub(crate) fn addresses(&self) -> Addresses {
        self.read().members.clone()
    }

    pub(crate) fn watch_addresses(&self) -> watch::Receiver<Addresses> {
        self.addresses.subscribe()
    }

    /// Reads the failover state under the lock.
    pub(crate) fn with_failover<T>(&self, read: impl FnOnce(&failover::Failover) -> T) -> T {
        read(&self.read().failover)
    }

    /// Entries in the audit chain.
    pub(crate) fn audit_len(&self) -> u64 {
        self.read().audit.len()
    }

    /// The applied index of what readers see.
    pub(crate) fn applied(&self) -> u64 {
        self.read().applied
    }

    /// Audit entries from `from` (1 is the first), at most `limit`.
    pub(crate) fn audit_entries(&self, from: u64, limit: usize) -> Vec<AuditEntry> {
        self.read().audit.entries(from, limit)
    }

    fn publish_addresses(&self) {
        let members = self.read().members.clone();
        self.addresses.send_if_modified(|current| {
            let changed = *current != members;
            *current = members;
            changed
        });
    }
}

impl StateMachine for ClusterState {
    fn apply(&mut self, entry: Committed<'_>, writes: &mut StateWrites) -> Result<(), String> {
        let command = Command::decode(entry.data)?;
        let changed_members = matches!(command, Command::RecordMembers { .. });
        {
            let mut state = self.write();
            // A refused command changes nothing but the applied index.
            let result = state.apply(entry.index, entry.term, command, writes);
            state.applied = entry.index;
            result?;
        }
        if changed_members {
            self.publish_addresses();
        }
        Ok(())
    }

    fn apply_membership(&mut self, change: &MembershipChange, writes: &mut StateWrites) {
        self.write().apply_membership(change, writes);
        self.publish_addresses();
    }

    fn restore(&mut self, applied: u64, records: StateRecords) {
        match State::from_records(applied, &records) {
            Ok(state) => *self.write() = state,
            Err(error) => {
                // The leader's own records, checksummed on the way: a
                // version mismatch between controllers at most. Keep the
                // index moving so reads do not wait forever, and say so.
                tracing::error!(applied, error = %error, "the snapshot's state does not load; this controller's view of the replicated state is incomplete until it is upgraded to the leader's version");
                let mut state = self.write();
                *state = State::default();
                state.applied = applied;
            }
        }
        self.publish_addresses();
    }
}

impl State {
    fn from_records(applied: u64, records: &StateRecords) -> Result<State, LoadError> {
        let invalid = |key: &str, what: String| LoadError {
            key: key.to_owned(),
            what,
        };
        let mut state = State {
            applied,
            ..State::default()
        };
        for (key, value) in records {
            if key == key::PROBES {
                state.probes = serde_json::from_slice(value)
                    .map_err(|error| invalid(key, error.to_string()))?;
            } else if let Some(id) = key.strip_prefix(key::MEMBER_PREFIX) {
                let id = id
                    .parse()
                    .ok()
                    .and_then(NodeId::new)
                    .ok_or_else(|| invalid(key, "not a node id".into()))?;
                let record: MemberRecord = serde_json::from_slice(value)
                    .map_err(|error| invalid(key, error.to_string()))?;
                state.members.insert(id, record.address);
            } else if key.starts_with(key::RUNBOOK_PREFIX) {
                let version: failover::RunbookVersion = serde_json::from_slice(value)
                    .map_err(|error| invalid(key, error.to_string()))?;
                state
                    .failover
                    .restore_runbook(version)
                    .map_err(|what| invalid(key, what))?;
            } else if let Some(name) = key.strip_prefix(key::SERVICE_PREFIX) {
                let record: failover::ServiceRecord = serde_json::from_slice(value)
                    .map_err(|error| invalid(key, error.to_string()))?;
                state.failover.services.insert(name.to_owned(), record);
            } else if let Some(id) = key.strip_prefix(key::DECISION_PREFIX) {
                let decision: failover::Decision = serde_json::from_slice(value)
                    .map_err(|error| invalid(key, error.to_string()))?;
                state.failover.decisions.insert(id.to_owned(), decision);
            } else if key.starts_with(key::AUDIT_PREFIX) {
                let entry: AuditEntry = serde_json::from_slice(value)
                    .map_err(|error| invalid(key, error.to_string()))?;
                state
                    .audit
                    .restore(entry)
                    .map_err(|what| invalid(key, what))?;
            } else {
                return Err(invalid(
                    key,
                    "unknown record: written by a newer Leitstand? Run that version".into(),
                ));
            }
        }
        Ok(state)
    }

    fn apply(
        &mut self,
        index: u64,
        term: u64,
        command: Command,
        writes: &mut StateWrites,
    ) -> Result<(), String> {
        match command {
            Command::Probe { .. } => {
                self.probes += 1;
                writes.put(key::PROBES.into(), json(&self.probes));
            }
            Command::RecordMembers {
                members,
                actor,
                at_unix_ms,
            } => {
                // Only addresses not yet known: a membership change may have
                // recorded some already, and its address is the newer one.
                let mut recorded = BTreeMap::new();
                for MemberAddress { node_id, address } in members {
                    let id = NodeId::new(node_id).ok_or("node id 0 is not a node id")?;
                    if !self.members.contains_key(&id) {
                        recorded.insert(id, address);
                    }
                }
                if recorded.is_empty() {
                    return Err("every member's address is already recorded".into());
                }
                for (id, address) in &recorded {
                    writes.put(
                        key::member(id.get()),
                        json(&MemberRecord {
                            address: address.clone(),
                        }),
                    );
                }
                let body = serde_json::json!({
                    "members": recorded.iter().map(|(id, address)| (id.to_string(), address.clone())).collect::<BTreeMap<_, _>>(),
                });
                self.members.extend(recorded);
                self.audit_append(
                    index,
                    at_unix_ms,
                    actor,
                    "membership.bootstrap",
                    body,
                    writes,
                );
            }
            failover_command => {
                let at_unix_ms = failover_command.at_unix_ms();
                let (records, audited) = self.apply_failover(index, term, failover_command)?;
                for record in records {
                    match record {
                        failover::Write::Runbook(version) => {
                            writes.put(key::runbook(version.version), json(&version));
                        }
                        failover::Write::Service(name, record) => {
                            writes.put(key::service(&name), json(&record));
                        }
                        failover::Write::RemoveService(name) => writes.delete(key::service(&name)),
                        failover::Write::Decision(decision) => {
                            writes.put(key::decision(&decision.id), json(&decision));
                        }
                    }
                }
                for entry in audited {
                    self.audit_append(
                        index,
                        at_unix_ms,
                        entry.actor,
                        entry.kind,
                        entry.body,
                        writes,
                    );
                }
            }
        }
        // The caller moves `applied`, also for a refused command.
        Ok(())
    }

    fn apply_failover(
        &mut self,
        index: u64,
        term: u64,
        command: Command,
    ) -> Result<failover::Applied, String> {
        let failover = &mut self.failover;
        match command {
            Command::ApplyRunbook {
                text,
                source_name,
                actor,
                at_unix_ms,
            } => failover.apply_runbook(index, text, source_name, actor, at_unix_ms),
            Command::PathStates {
                service,
                transitions,
                evidence,
                at_unix_ms,
            } => failover.record_path_states(&service, &transitions, evidence, at_unix_ms),
            Command::Decide {
                service,
                from_path,
                to_path,
                kind,
                evidence,
                operator,
                reason,
                at_unix_ms,
            } => failover.decide(
                term, index, &service, &from_path, &to_path, kind, evidence, operator, reason,
                at_unix_ms,
            ),
            Command::Approve {
                decision,
                operator,
                at_unix_ms,
            } => failover.approve(&decision, &operator, at_unix_ms),
            Command::Reject {
                decision,
                operator,
                reason,
                at_unix_ms,
            } => failover.reject(&decision, &operator, &reason, at_unix_ms),
            Command::Dispatched {
                decision,
                at_unix_ms,
            } => failover.dispatched(&decision, at_unix_ms),
            Command::ActionResult {
                decision,
                result,
                at_unix_ms,
            } => failover.result(&decision, result, at_unix_ms),
            Command::TimedOut {
                decision,
                at_unix_ms,
            } => failover.timed_out(&decision, at_unix_ms),
            Command::Conclude {
                decision,
                verified,
                detail,
                at_unix_ms,
            } => failover.conclude(&decision, verified, &detail, at_unix_ms),
            Command::Freeze {
                service,
                by,
                reason,
                at_unix_ms,
            } => failover.freeze(&service, &by, &reason, at_unix_ms),
            Command::Unfreeze {
                service,
                by,
                reason,
                at_unix_ms,
            } => failover.unfreeze(&service, &by, &reason, at_unix_ms),
            Command::Probe { .. } | Command::RecordMembers { .. } => {
                Err("not a failover command".into())
            }
        }
    }

    fn apply_membership(&mut self, change: &MembershipChange, writes: &mut StateWrites) {
        let context: Option<MembershipContext> = serde_json::from_slice(&change.context).ok();
        for &(kind, id) in &change.changes {
            let Some(node) = NodeId::new(id) else {
                continue;
            };
            let kind_name = match kind {
                ConfChangeType::AddNode => "membership.voter_added",
                ConfChangeType::AddLearnerNode => "membership.learner_added",
                ConfChangeType::RemoveNode => "membership.removed",
            };
            match kind {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Some(address) = context.as_ref().and_then(|c| c.address.clone()) {
                        writes.put(
                            key::member(id),
                            json(&MemberRecord {
                                address: address.clone(),
                            }),
                        );
                        self.members.insert(node, address);
                    }
                }
                ConfChangeType::RemoveNode => {
                    writes.delete(key::member(id));
                    self.members.remove(&node);
                }
            }
            let body = serde_json::json!({
                "node_id": id,
                "address": self.members.get(&node),
                "voters": change.conf_state.voters,
                "learners": change.conf_state.learners,
                "outgoing_voters": change.conf_state.voters_outgoing,
            });
            let (actor, at) = context
                .as_ref()
                .map(|c| (c.actor.clone(), c.at_unix_ms))
                .unwrap_or_else(|| ("controller/unknown".into(), 0));
            self.audit_append(change.index, at, actor, kind_name, body, writes);
        }
        if change.changes.is_empty() {
            // The empty change that leaves a joint configuration.
            let body = serde_json::json!({ "voters": change.conf_state.voters });
            self.audit_append(
                change.index,
                0,
                "controller/leader".into(),
                "membership.joint_left",
                body,
                writes,
            );
        }
        self.applied = change.index;
    }

    fn audit_append(
        &mut self,
        log_index: u64,
        at_unix_ms: i64,
        actor: String,
        kind: &str,
        body: serde_json::Value,
        writes: &mut StateWrites,
    ) {
        let entry = self.audit.append(log_index, at_unix_ms, actor, kind, &body);
        writes.put(key::audit(entry.index), json(&entry));
    }
}

/// A record's value.
fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain structs and numbers: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Milliseconds since the epoch, for commands (never read while applying).
pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
