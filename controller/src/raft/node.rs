//! The Raft node driver: one tokio task per node that owns a
//! `RawNode<RedbStorage>`, ticks it, steps it with peer messages and
//! proposals, and processes its `Ready`s.
//!
//! # The Ready contract
//!
//! raft-rs decides; the driver makes its decisions durable and visible, in
//! an order that is part of Raft's safety argument. For every `Ready`, in
//! this order (raft-rs 0.7 docs, examples/five_mem_node, NOTES.md):
//!
//! 1. **Send `messages()`.** These need no local persistence: on a leader
//!    they are appends and heartbeats, which may go out before the leader's
//!    own copy is on disk (Raft thesis §10.2.1) because the leader counts
//!    itself towards a quorum only once `advance` says it persisted.
//! 2. **Apply the snapshot**, if any, to storage (log and state replaced)
//!    and hand it to the state machine. It must come before step 4: the
//!    Ready's entries follow the snapshot and would be wiped by it.
//! 3. **Apply `committed_entries()`** to the state machine, collecting its
//!    record changes and the answers to the proposals they resolve.
//!    raft-rs 0.7 only hands out entries that are committed *and* already
//!    persisted here, so this may precede step 4.
//! 4. **Persist `entries()` and `hs()` in one redb transaction**, fsynced
//!    before anything below happens (`Ready::must_sync()`; a commit-only
//!    hard state change is written without fsync, see
//!    [`Flush`](super::storage::Flush)). A vote or an appended entry must be
//!    on disk before any peer can learn of it: a node that forgets its vote
//!    can vote twice in a term, one that forgets an acknowledged entry can
//!    lose a committed decision (DESIGN.md I6).
//! 5. **Send `persisted_messages()`**: votes and append responses, the
//!    promises that step 4 made true.
//! 6. **`advance(ready)`**, which returns a `LightReady`.
//! 7. **Process the light ready**: persist its commit index before applying
//!    anything under it (so the file never says applied > commit; without
//!    fsync, as raft-rs asks none for a commit index), send its messages,
//!    apply its committed entries.
//! 8. **`advance_apply()`.**
//! 9. **Persist the state machine's record changes and the applied index
//!    in one transaction** (the index is the value `Config.applied` takes on
//!    restart, and raft-rs never hands out entries at or below it again: an
//!    applied index written apart from its effects could skip one). It is
//!    written after the commit index, so every prefix of writes a crash can
//!    leave keeps applied ≤ commit; without fsync, since a crash that loses
//!    it loses the effects with it, and the entries are applied again from
//!    the durable log. Only then are the proposals answered and the
//!    linearizable reads waiting for this index released.
//! 10. **Compact**: once the log holds more than `snapshot_after_entries`
//!     applied entries past the latest snapshot, snapshot the state at the
//!     applied index and discard the log before it, keeping
//!     `keep_entries_after_snapshot` entries for followers a little behind.
//!
//! A storage error at any step is fatal for the node (fail-stop): the task
//! ends, the error is returned from [`RaftNode::stop`] and logged, and
//! proposals waiting on it fail with [`ProposeError::Stopped`]. Nothing the
//! failed write was to make durable is acknowledged: persisted messages
//! (votes, append responses) are sent only after step 4 succeeds, and
//! proposals are answered only after step 9. The storage refuses every
//! later write, and the published status says `running: false`, no role
//! but follower and no leader, so nothing in the controller acts as if this
//! node could still commit. raft-rs is not called again, so it cannot
//! panic on the failed storage. Restarting recovers everything
//! acknowledged from the file.
//!
//! # Proposals
//!
//! [`NodeHandle::propose`] resolves with the log index once the entry is
//! applied here, or fails: `NotLeader` (with the leader this node knows of)
//! right away on a follower, `Refused` when the state machine applied the
//! entry as a refusal (the reason comes back; nothing changed), `Dropped`
//! when a leader change overwrote the
//! entry (it was not applied, anywhere), `Timeout` when it was neither
//! applied nor lost in time, `Unknown` when this node skipped past it by
//! snapshot, `Stopped` when the node ended. After the last three the entry
//! may still be (or have been) applied: commands must be idempotent. An
//! entry is identified by (index, term): the index raft-rs gave it and the
//! leader's term at the time.
//!
//! # Membership
//!
//! One change at a time ([`NodeHandle::propose_membership`]): a change is
//! refused while another is uncommitted or the configuration is joint. A
//! single-node ConfChangeV2 moves directly to the new configuration; a
//! leader that finds the cluster in a joint configuration (a change of
//! several nodes at once, or a leader change in the middle of one) proposes
//! the empty change that leaves it. A leader removed from the membership
//! steps down (the Operator API hands leadership away first, so this is a
//! safety net).
//!
//! # Linearizable reads
//!
//! [`NodeHandle::read_index`] asks the leader (through raft-rs's ReadIndex,
//! which confirms leadership with a quorum of heartbeats) for its commit
//! index, then waits until this node has applied it: state read afterwards
//! is at least as new as every write acknowledged before the call.
//!
//! # Blocking
//!
//! Storage writes block (an fsync per `Ready`, ~0.5 ms here). On a
//! multi-thread runtime the Ready processing runs in `block_in_place`, so
//! the worker's other tasks move elsewhere meanwhile; on a current-thread
//! runtime (tests with paused time) it runs inline, which also keeps the
//! paused clock from advancing while the disk works.
//!
//! The task runs on the runtime [`RaftNode::start`] is called within. The
//! controller calls it on the Raft thread ([`super::RaftRuntime`]), so that
//! no other work of the process can delay a tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::domain::NodeId;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::logger;
use super::storage::{Flush, RedbStorage, StateRecords, StateWrites, StoreError};
use super::transport::Transport;

/// Peer messages a node buffers; more are dropped (Raft retransmits).
const INBOX_CAPACITY: usize = 4096;
/// Proposals waiting for the node task.
const COMMAND_CAPACITY: usize = 1024;
/// How often a node that lost its log says so.
const LOST_LOG_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Timing and flow control of a node.
///
/// # Election timing (DESIGN.md §10: new leader ≤ 1.0 s median, aim 0.5 s)
///
/// Defaults: a tick every 50 ms, heartbeats every 2 ticks (100 ms), and an
/// election timeout of 10 ticks, which raft-rs randomises per follower and
/// per term uniformly in [10, 20) ticks = [500, 1000) ms.
///
/// After the leader dies, the first of the two remaining nodes times out
/// at the minimum of two such timeouts, measured from the last heartbeat
/// it got: median 500 + 500 · (1 − √½) ≈ 646 ms, minus the time between
/// that heartbeat and the death (≈ 50 ms on average), plus half a tick of
/// rounding (25 ms), plus pre-vote and vote (two round trips and an fsync,
/// a few ms): **≈ 0.62 s median, ≤ ~1.05 s worst case** (barring a split
/// vote, which retries after another timeout). `check_quorum` gives
/// followers a lease of one election timeout, so a pre-vote is granted
/// only once the granting follower has not heard from the leader for 500
/// ms either.
///
/// The aim (≤ 0.5 s) needs `election_tick` 7 (median ≈ 0.45 s), at the
/// price of an election after any stall over 350 ms (an fsync hiccup, a
/// busy 2-core machine): 3½ missed heartbeats. etcd's default is 1 s / 100
/// ms. Measure under load before lowering it.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) id: NodeId,
    pub(crate) tick_interval: Duration,
    pub(crate) election_tick: usize,
    pub(crate) heartbeat_tick: usize,
    /// Bytes of entries per append message. raft-rs's default, 0, sends
    /// one entry per message, which makes catching up slow.
    pub(crate) max_size_per_msg: u64,
    /// Append messages in flight per follower. With `max_size_per_msg` this
    /// bounds what a slow follower costs the leader: 64 × 1 MiB.
    pub(crate) max_inflight_msgs: usize,
    /// Bytes of proposed but uncommitted entries before proposals are
    /// dropped (`ProposeError::Dropped`), so a leader cut off from its
    /// followers does not buffer without bound.
    pub(crate) max_uncommitted_size: u64,
    /// How long [`NodeHandle::propose`] waits for the entry to be applied.
    pub(crate) proposal_timeout: Duration,
    /// Applied entries past the latest snapshot before a new snapshot is
    /// taken and the log before it compacted (step 10).
    pub(crate) snapshot_after_entries: u64,
    /// Entries kept before the snapshot's index when compacting, so a
    /// follower a little behind gets entries rather than a whole snapshot.
    pub(crate) keep_entries_after_snapshot: u64,
}

impl NodeConfig {
    pub(crate) fn new(id: NodeId) -> Self {
        NodeConfig {
            id,
            tick_interval: Duration::from_millis(50),
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 64,
            max_uncommitted_size: 16 << 20,
            proposal_timeout: Duration::from_secs(5),
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
        }
    }

    /// The raft-rs configuration; `applied` comes from storage on restart.
    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id.get(),
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight_msgs,
            max_uncommitted_size: self.max_uncommitted_size,
            // Both default to false in raft-rs 0.7. Pre-vote keeps a node
            // that was partitioned away from disrupting the cluster when it
            // returns; check_quorum makes a leader cut off from a majority
            // step down, and gives followers the lease pre-vote relies on.
            pre_vote: true,
            check_quorum: true,
            ..raft::Config::default()
        }
    }
}

/// A committed command, as the state machine receives it (in log order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed<'a> {
    pub(crate) index: u64,
    /// The term of the leader that proposed it (fencing tokens use it).
    pub(crate) term: u64,
    pub(crate) data: &'a [u8],
}

/// A committed membership change, after raft-rs applied it.
#[derive(Debug, Clone)]
pub(crate) struct MembershipChange {
    pub(crate) index: u64,
    pub(crate) changes: Vec<(ConfChangeType, u64)>,
    /// What the proposer attached (ConfChangeV2's context).
    pub(crate) context: Vec<u8>,
    /// The membership from now on.
    pub(crate) conf_state: ConfState,
}

/// The replicated state machine, driven by the node's task: it must not
/// block long. Apply must be deterministic, a function of the state and
/// the entry only (never the clock, never local configuration), or the
/// replicas diverge.
pub(crate) trait StateMachine: Send + 'static {
    /// Applies one committed command, adding its record changes to
    /// `writes`; `Err(reason)` refuses it: nothing changes, and the
    /// proposer learns the reason. Entries with empty data (a new leader's
    /// no-op) are not handed over.
    fn apply(&mut self, entry: Committed<'_>, writes: &mut StateWrites) -> Result<(), String>;

    /// Records a committed membership change (raft-rs has applied it).
    fn apply_membership(&mut self, change: &MembershipChange, writes: &mut StateWrites);

    /// Replaces the whole state with `records` at `applied` (a snapshot
    /// received from the leader because this node fell behind its log).
    fn restore(&mut self, applied: u64, records: StateRecords);
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProposeError {
    #[error("this node is not the Raft leader{}", leader_hint.map(|id| format!("; node {id} is")).unwrap_or_default())]
    NotLeader { leader_hint: Option<u64> },
    #[error(
        "the proposal was not applied within {after:?}; it may still be, so retry only idempotent commands"
    )]
    Timeout { after: Duration },
    #[error("a leader change lost the proposal; it was not applied, retry it with the new leader")]
    Dropped,
    #[error(
        "this node caught up by snapshot past the proposal, so whether it was applied is unknown; retry only idempotent commands"
    )]
    Unknown,
    #[error("the Raft node has stopped; whether the proposal was applied is unknown")]
    Stopped,
    #[error("the command was committed at index {index} but refused: {reason}")]
    Refused { index: u64, reason: String },
    #[error(
        "a membership change is already in progress (uncommitted, or the configuration is joint); retry once it is done"
    )]
    MembershipChangeInProgress,
}

/// Why a linearizable read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(
        "no leader confirmed the read within {after:?}: an election may be under way, or this node is cut off from the majority"
    )]
    Timeout { after: Duration },
    #[error("the Raft node has stopped")]
    Stopped,
}

/// What ends a node.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("cannot start Raft node {node}")]
    Start {
        node: NodeId,
        #[source]
        source: Box<raft::Error>,
    },
    #[error("Raft node {node} stopped: {step} failed; restart it to recover from its log")]
    Storage {
        node: NodeId,
        step: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("Raft node {node} stopped: the membership change at index {index} does not decode")]
    ConfChangeDecode {
        node: NodeId,
        index: u64,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("Raft node {node} stopped: the membership change at index {index} cannot be applied")]
    ConfChange {
        node: NodeId,
        index: u64,
        #[source]
        source: Box<raft::Error>,
    },
    #[error("Raft node {node} stopped: the snapshot it took at index {index} could not be stored")]
    Compaction {
        node: NodeId,
        index: u64,
        #[source]
        source: StoreError,
    },
    #[error("the task of Raft node {node} ended abnormally")]
    Task {
        node: NodeId,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// What a node looks like from outside; published after every step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeStatus {
    pub(crate) id: u64,
    pub(crate) role: StateRole,
    pub(crate) term: u64,
    /// The leader this node knows of.
    pub(crate) leader: Option<u64>,
    pub(crate) commit: u64,
    pub(crate) applied: u64,
    pub(crate) running: bool,
}

/// Whether this node leads and whom it follows: the part of [`NodeStatus`]
/// that agent sessions act on, in a watch of its own so that commits (which
/// change the status) do not wake every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leadership {
    pub(crate) leading: bool,
    /// The leader this node knows of (itself when leading).
    pub(crate) leader: Option<u64>,
}

impl From<&NodeStatus> for Leadership {
    fn from(status: &NodeStatus) -> Self {
        Leadership {
            leading: status.role == StateRole::Leader,
            leader: status.leader,
        }
    }
}

/// The replication picture of a node, on request ([`NodeHandle::inspect`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplicationStatus {
    pub(crate) status: NodeStatus,
    pub(crate) first_index: u64,
    pub(crate) last_index: u64,
    pub(crate) snapshot_index: u64,
    pub(crate) conf_state: ConfState,
    /// Whether a membership change is proposed but not yet applied.
    pub(crate) pending_membership_change: bool,
    /// The leader's view of every other member; empty on a follower.
    pub(crate) followers: Vec<FollowerStatus>,
}

/// The leader's view of one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FollowerStatus {
    pub(crate) id: u64,
    /// The highest index known to be in its log.
    pub(crate) matched: u64,
    /// Being sent a snapshot, or probed for where its log ends.
    pub(crate) catching_up: bool,
    /// Since this node last received a message from it.
    pub(crate) last_contact: Option<Duration>,
}

type Reply<T> = oneshot::Sender<T>;
type ProposalReply = Reply<Result<u64, ProposeError>>;

/// What a handle asks of the node task.
enum Command {
    Propose {
        data: Vec<u8>,
        reply: Reply<Result<u64, ProposeError>>,
    },
    ProposeMembership {
        change: ConfChangeV2,
        reply: Reply<Result<u64, ProposeError>>,
    },
    TransferLeader {
        to: u64,
        reply: Reply<Result<(), ProposeError>>,
    },
    ReadIndex {
        reply: Reply<u64>,
    },
    Inspect {
        reply: Reply<ReplicationStatus>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Propose { data, .. } => f
                .debug_struct("Propose")
                .field("bytes", &data.len())
                .finish_non_exhaustive(),
            Command::ProposeMembership { change, .. } => f
                .debug_struct("ProposeMembership")
                .field("change", change)
                .finish_non_exhaustive(),
            Command::TransferLeader { to, .. } => f
                .debug_struct("TransferLeader")
                .field("to", to)
                .finish_non_exhaustive(),
            Command::ReadIndex { .. } => f.write_str("ReadIndex"),
            Command::Inspect { .. } => f.write_str("Inspect"),
        }
    }
}

/// Talks to a running node. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct NodeHandle {
    id: NodeId,
    commands: mpsc::Sender<Command>,
    mailbox: mpsc::Sender<Message>,
    status: watch::Receiver<NodeStatus>,
    leadership: watch::Receiver<Leadership>,
    proposal_timeout: Duration,
}

impl NodeHandle {
    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    /// Hands peer messages to the node without waiting: when its inbox is
    /// full (or it stopped) they are dropped, as the network might.
    pub(crate) fn deliver(&self, messages: impl IntoIterator<Item = Message>) {
        for message in messages {
            if self.mailbox.try_send(message).is_err() {
                tracing::debug!(node = %self.id, "Raft inbox full or closed; message dropped");
            }
        }
    }

    /// Whether the node's task has ended (stopped, failed or aborted).
    pub(crate) fn is_stopped(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Proposes `data` and resolves with its log index once applied here.
    pub(crate) async fn propose(&self, data: Vec<u8>) -> Result<u64, ProposeError> {
        self.ask_with_timeout(|reply| Command::Propose { data, reply })
            .await
    }

    /// Proposes a membership change (one at a time; see the module docs)
    /// and resolves with its log index once applied here.
    pub(crate) async fn propose_membership(
        &self,
        change: ConfChangeV2,
    ) -> Result<u64, ProposeError> {
        self.ask_with_timeout(|reply| Command::ProposeMembership { change, reply })
            .await
    }

    /// Asks the leader (this node) to hand leadership to `to`; returns once
    /// asked. Watch [`NodeHandle::status`] for the outcome: raft-rs gives
    /// up after an election timeout if `to` does not catch up.
    pub(crate) async fn transfer_leader(&self, to: u64) -> Result<(), ProposeError> {
        self.ask_with_timeout(|reply| Command::TransferLeader { to, reply })
            .await
    }

    /// Waits until this node has applied everything committed before the
    /// call (ReadIndex, confirmed by a quorum); the applied index then.
    pub(crate) async fn read_index(&self, timeout: Duration) -> Result<u64, ReadError> {
        let (reply, answer) = oneshot::channel();
        let wait = async {
            self.commands
                .send(Command::ReadIndex { reply })
                .await
                .map_err(|_| ReadError::Stopped)?;
            // A dropped request (no leader, leadership lost) closes the
            // reply only at the timeout; raft-rs says nothing.
            answer.await.map_err(|_| ReadError::Stopped)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(ReadError::Timeout { after: timeout }))
    }

    /// The replication picture, from the node's task.
    pub(crate) async fn inspect(&self) -> Option<ReplicationStatus> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Inspect { reply }).await.ok()?;
        answer.await.ok()
    }

    async fn ask_with_timeout<T>(
        &self,
        command: impl FnOnce(Reply<Result<T, ProposeError>>) -> Command,
    ) -> Result<T, ProposeError> {
        let after = self.proposal_timeout;
        let (reply, answer) = oneshot::channel();
        let wait = async {
            self.commands
                .send(command(reply))
                .await
                .map_err(|_| ProposeError::Stopped)?;
            answer.await.map_err(|_| ProposeError::Stopped)?
        };
        tokio::time::timeout(after, wait)
            .await
            .unwrap_or(Err(ProposeError::Timeout { after }))
    }

    /// Changes of the node's status (role, term, leader, commit, applied).
    pub(crate) fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    pub(crate) fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Changes of leadership only (role and known leader). A clone of the
    /// handle's receiver: it has seen no value yet.
    pub(crate) fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }
}

/// A running node: its task and a handle. Stop it with [`RaftNode::stop`];
/// dropping it aborts the task.
#[derive(Debug)]
pub(crate) struct RaftNode {
    handle: NodeHandle,
    storage: RedbStorage,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

impl RaftNode {
    /// Starts the node on `storage` (initialized, or recovered from its
    /// file), sending through `transport` and applying to `state_machine`,
    /// which must hold the state of `storage.applied()` (loaded from
    /// `storage.state_records()`). Must be called within a tokio runtime.
    pub(crate) fn start(
        config: NodeConfig,
        storage: RedbStorage,
        transport: Arc<dyn Transport>,
        state_machine: Box<dyn StateMachine>,
    ) -> Result<RaftNode, NodeError> {
        let node = config.id;
        let applied = storage.applied();
        let logger = logger::logger(node.get());
        let raw = RawNode::new(&config.raft_config(applied), storage.clone(), &logger).map_err(
            |source| NodeError::Start {
                node,
                source: Box::new(source),
            },
        )?;
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (mailbox, inbox) = mpsc::channel(INBOX_CAPACITY);
        let initial = NodeStatus {
            id: node.get(),
            role: raw.raft.state,
            term: raw.raft.term,
            leader: None,
            commit: raw.raft.raft_log.committed,
            applied,
            running: true,
        };
        let (leadership_tx, leadership) = watch::channel(Leadership::from(&initial));
        let (status_tx, status) = watch::channel(initial);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let driver = Driver {
            node,
            raw,
            storage: storage.clone(),
            transport,
            state_machine,
            pending: BTreeMap::new(),
            applied,
            writes: StateWrites::default(),
            answers: Vec::new(),
            reads: ReadQueue::default(),
            last_heard: BTreeMap::new(),
            snapshot_after_entries: config.snapshot_after_entries.max(1),
            keep_entries_after_snapshot: config.keep_entries_after_snapshot,
            lost_log_reported: None,
            snapshots_sent: Vec::new(),
            status: status_tx,
            leadership: leadership_tx,
        };
        let task = tokio::spawn(driver.run(config.tick_interval, command_rx, inbox, shutdown_rx));
        Ok(RaftNode {
            handle: NodeHandle {
                id: node,
                commands,
                mailbox,
                status,
                leadership,
                proposal_timeout: config.proposal_timeout,
            },
            storage,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    pub(crate) fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The node's storage, shared with its task (for reading the applied
    /// state and its digest). The file stays open while a clone lives: drop
    /// it before a restart.
    pub(crate) fn storage(&self) -> RedbStorage {
        self.storage.clone()
    }

    /// Stops the task and waits until it (and its storage) are gone; the
    /// error that ended it, if one did.
    pub(crate) async fn stop(mut self) -> Result<(), NodeError> {
        if let Some(shutdown) = self.shutdown.take() {
            // The task may have ended on its own already.
            let _ = shutdown.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(source) => Err(NodeError::Task {
                node: self.handle.id,
                source,
            }),
        }
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A proposal waiting to be applied.
struct Pending {
    term: u64,
    reply: Reply<Result<u64, ProposeError>>,
}

/// Linearizable reads: asked of raft-rs (by context), then confirmed at an
/// index, answered once that index is applied.
#[derive(Default)]
struct ReadQueue {
    next_context: u64,
    asked: BTreeMap<u64, Reply<u64>>,
    /// (index to wait for, reply), in the order confirmed.
    confirmed: Vec<(u64, Reply<u64>)>,
}

/// Where a pending proposal's entry was appended.
struct PendingAt {
    index: u64,
    term: u64,
}

/// The node's task state.
struct Driver {
    node: NodeId,
    raw: RawNode<RedbStorage>,
    storage: RedbStorage,
    transport: Arc<dyn Transport>,
    state_machine: Box<dyn StateMachine>,
    /// By log index.
    pending: BTreeMap<u64, Pending>,
    /// The last index handed to the state machine.
    applied: u64,
    /// Record changes of the entries applied since the last step 9.
    writes: StateWrites,
    /// Answers to proposals, sent once their effects are written (step 9).
    answers: Vec<(ProposalReply, Result<u64, ProposeError>)>,
    reads: ReadQueue,
    /// When each peer was last heard from.
    last_heard: BTreeMap<u64, Instant>,
    snapshot_after_entries: u64,
    keep_entries_after_snapshot: u64,
    /// When a lost log was last reported (see `refuse_lost_log`).
    lost_log_reported: Option<Instant>,
    /// Followers sent a snapshot during this Ready, reported after it.
    snapshots_sent: Vec<u64>,
    status: watch::Sender<NodeStatus>,
    leadership: watch::Sender<Leadership>,
}

/// Runs `f`, which blocks on the disk, without stalling the runtime's other
/// tasks (see the module docs).
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Driver {
    async fn run(
        mut self,
        tick_interval: Duration,
        mut commands: mpsc::Receiver<Command>,
        mut inbox: mpsc::Receiver<Message>,
        mut shutdown: oneshot::Receiver<()>,
    ) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    break blocking(|| self.storage.sync())
                        .map_err(self.storage_error("syncing the log on stop"));
                }
                Some(message) = inbox.recv() => {
                    self.step(message);
                    while let Ok(message) = inbox.try_recv() {
                        self.step(message);
                    }
                }
                Some(command) = commands.recv() => {
                    self.command(command);
                    while let Ok(command) = commands.try_recv() {
                        self.command(command);
                    }
                }
                _ = ticker.tick() => {
                    self.raw.tick();
                    // Callers that gave up need no answer.
                    self.pending.retain(|_, pending| !pending.reply.is_closed());
                    self.reads.asked.retain(|_, reply| !reply.is_closed());
                    self.reads.confirmed.retain(|(_, reply)| !reply.is_closed());
                }
            }
            if let Err(error) = blocking(|| self.on_ready()) {
                break Err(error);
            }
            self.publish_status(true);
        };
        if let Err(error) = &result {
            tracing::error!(node = %self.node, error = %leitstand_proto::error_chain(error), "Raft node stopped");
        }
        self.publish_status(false);
        // Dropping `pending` fails the waiting proposals with `Stopped`.
        result
    }

    fn step(&mut self, message: Message) {
        let (from, kind) = (message.from, message.get_msg_type());
        self.last_heard.insert(from, Instant::now());
        if kind == MessageType::MsgHeartbeat && message.commit > self.raw.raft.raft_log.last_index()
        {
            self.refuse_lost_log(from, message.commit);
            return;
        }
        if let Err(error) = self.raw.step(message) {
            // A message from a node outside the membership, or a local
            // message type from the network: not ours to act on.
            tracing::debug!(node = %self.node, from, ?kind, %error, "Raft message ignored");
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Propose { data, reply } => {
                if let Err(not_leader) = self.require_leader() {
                    let _ = reply.send(Err(not_leader));
                    return;
                }
                let result = self.raw.propose(Vec::new(), data);
                self.track_proposal(result, reply);
            }
            Command::ProposeMembership { change, reply } => {
                if let Err(not_leader) = self.require_leader() {
                    let _ = reply.send(Err(not_leader));
                    return;
                }
                if self.raw.raft.has_pending_conf() || self.is_joint() {
                    let _ = reply.send(Err(ProposeError::MembershipChangeInProgress));
                    return;
                }
                let result = self.raw.propose_conf_change(Vec::new(), change);
                self.track_proposal(result, reply);
            }
            Command::TransferLeader { to, reply } => {
                let result = self.require_leader().map(|()| {
                    tracing::info!(node = %self.node, to, "handing leadership over");
                    self.raw.transfer_leader(to);
                });
                let _ = reply.send(result);
            }
            Command::ReadIndex { reply } => {
                let context = self.reads.next_context;
                self.reads.next_context += 1;
                self.reads.asked.insert(context, reply);
                self.raw.read_index(context.to_le_bytes().to_vec());
            }
            Command::Inspect { reply } => {
                let _ = reply.send(self.replication_status());
            }
        }
    }

    /// A leader only tells a follower of commits it acknowledged holding;
    /// one beyond this log means this node acknowledged entries and then
    /// lost them (a wiped or restored data directory). raft-rs would panic;
    /// carrying on under the same identity could let the cluster lose a
    /// committed entry (this node's old acknowledgement counted towards its
    /// quorum). Refuse, and tell the operator what to do.
    fn refuse_lost_log(&mut self, leader: u64, commit: u64) {
        let now = Instant::now();
        if self
            .lost_log_reported
            .is_some_and(|at| now - at < LOST_LOG_REPORT_INTERVAL)
        {
            return;
        }
        self.lost_log_reported = Some(now);
        tracing::error!(
            node = %self.node,
            leader,
            leader_commit = commit,
            last_index = self.raw.raft.raft_log.last_index(),
            "this node's Raft log is missing entries it acknowledged before (its data directory was wiped or restored from an old copy); \
             it takes no part in the cluster under this identity. Remove it (`leitstand cluster remove {}`), then add it again \
             (`leitstand cluster add {} --address ...`) with [cluster] join = true",
            self.node,
            self.node
        );
    }

    fn require_leader(&self) -> Result<(), ProposeError> {
        if self.raw.raft.state == StateRole::Leader {
            return Ok(());
        }
        let leader_hint = Some(self.raw.raft.leader_id).filter(|&id| id != 0);
        Err(ProposeError::NotLeader { leader_hint })
    }

    fn is_joint(&self) -> bool {
        !self.storage.conf_state().voters_outgoing.is_empty()
    }

    /// Remembers a proposal raft-rs accepted, to answer it once applied.
    fn track_proposal(
        &mut self,
        result: raft::Result<()>,
        reply: Reply<Result<u64, ProposeError>>,
    ) {
        match result {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.pending.insert(index, Pending { term, reply });
            }
            Err(error) => {
                // A leadership transfer in progress, too much uncommitted,
                // or a conf change raft-rs refused: nothing was appended.
                tracing::debug!(node = %self.node, %error, "proposal dropped");
                let _ = reply.send(Err(ProposeError::Dropped));
            }
        }
    }

    fn replication_status(&self) -> ReplicationStatus {
        let raft = &self.raw.raft;
        let now = Instant::now();
        let followers = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .filter(|&(&id, _)| id != raft.id)
                .map(|(&id, progress)| FollowerStatus {
                    id,
                    matched: progress.matched,
                    catching_up: progress.state != ProgressState::Replicate,
                    last_contact: self.last_heard.get(&id).map(|at| now - *at),
                })
                .collect()
        } else {
            Vec::new()
        };
        let snapshot_index = self.storage.snapshot_metadata().index;
        ReplicationStatus {
            status: self.current_status(true),
            first_index: self.storage.truncated().index + 1,
            last_index: raft.raft_log.last_index(),
            snapshot_index,
            conf_state: self.storage.conf_state(),
            pending_membership_change: raft.has_pending_conf(),
            followers,
        }
    }

    /// One pass of the Ready contract (module docs); the step numbers
    /// refer to the list there.
    fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(soft) = ready.ss() {
            // Readers (sessions, operators) see the new role before anyone
            // reads the log line announcing it.
            self.publish_status(true);
            let term = self.raw.raft.term;
            match soft.raft_state {
                StateRole::Leader => {
                    tracing::info!(node = %self.node, term, "this controller now leads the cluster")
                }
                role => tracing::info!(
                    node = %self.node,
                    term,
                    ?role,
                    leader = soft.leader_id,
                    "this controller follows; leader is node {} (0: none known)",
                    soft.leader_id
                ),
            }
        }

        // 1. Messages that need no local persistence.
        self.send(ready.take_messages());

        // 2. The snapshot, before the entries that follow it.
        if ready.snapshot().get_metadata().index > 0 {
            let snapshot = ready.snapshot();
            let index = snapshot.get_metadata().index;
            // Effects of entries before the snapshot are inside it.
            self.flush_applied()?;
            let records = self
                .storage
                .install_snapshot(snapshot)
                .map_err(self.storage_error("installing a snapshot"))?;
            tracing::info!(node = %self.node, index, records = records.len(), "caught up from the leader's snapshot");
            self.applied = index;
            self.state_machine.restore(index, records);
            // Whether our proposals up to here made it is unknown: their
            // entries are inside the snapshot, if anywhere.
            self.answer_up_to(index, |_| Err(ProposeError::Unknown));
        }
        self.reads_confirmed(ready.take_read_states());

        // 3. Committed (and locally persisted) entries.
        self.apply_entries(ready.take_committed_entries())?;

        // 4. Entries and hard state, one transaction, durable first.
        let flush = if ready.must_sync() {
            Flush::Now
        } else {
            Flush::WithNextSync
        };
        self.storage
            .append_with(ready.entries(), ready.hs(), flush)
            .map_err(self.storage_error("persisting entries and hard state"))?;

        // 5. Messages that promise what step 4 made durable.
        self.send(ready.take_persisted_messages());

        // 6.
        let mut light = self.raw.advance(ready);

        // 7. The light ready: commit index first, then messages and entries.
        if let Some(commit) = light.commit_index() {
            self.storage
                .set_commit_with(commit, Flush::WithNextSync)
                .map_err(self.storage_error("persisting the commit index"))?;
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;

        // 8.
        self.raw.advance_apply();

        // 9.
        self.flush_applied()?;

        // 10.
        self.maybe_compact()?;
        self.leave_joint_configuration();

        // Snapshots were handed to the transport, which gives no receipt:
        // report them sent, and raft-rs probes the follower to see.
        for to in std::mem::take(&mut self.snapshots_sent) {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        self.snapshots_sent.extend(
            messages
                .iter()
                .filter(|message| message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot)
                .map(|message| message.to),
        );
        self.transport.send(messages);
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for entry in entries {
            let (index, term) = (entry.index, entry.term);
            let mut refusal = None;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if !entry.data.is_empty() {
                        let committed = Committed {
                            index,
                            term,
                            data: &entry.data,
                        };
                        refusal = self.state_machine.apply(committed, &mut self.writes).err();
                    }
                }
                EntryType::EntryConfChange => {
                    let change = ConfChange::parse_from_bytes(&entry.data).map_err(|source| {
                        NodeError::ConfChangeDecode {
                            node: self.node,
                            index,
                            source,
                        }
                    })?;
                    let applied = self.raw.apply_conf_change(&change);
                    let conf_state = self.persist_conf_state(index, applied)?;
                    let changes = vec![(change.get_change_type(), change.node_id)];
                    self.membership_applied(index, changes, change.context.to_vec(), conf_state);
                }
                EntryType::EntryConfChangeV2 => {
                    let change = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|source| {
                        NodeError::ConfChangeDecode {
                            node: self.node,
                            index,
                            source,
                        }
                    })?;
                    let applied = self.raw.apply_conf_change(&change);
                    let conf_state = self.persist_conf_state(index, applied)?;
                    let changes = change
                        .get_changes()
                        .iter()
                        .map(|single| (single.get_change_type(), single.node_id))
                        .collect();
                    self.membership_applied(index, changes, change.context.to_vec(), conf_state);
                }
            }
            self.applied = index;
            // An entry is its index and term: ours if both match,
            // overwritten by a leader change otherwise.
            self.answer_up_to(index, |pending| {
                if pending.index != index || pending.term != term {
                    Err(ProposeError::Dropped)
                } else if let Some(reason) = &refusal {
                    Err(ProposeError::Refused {
                        index,
                        reason: reason.clone(),
                    })
                } else {
                    Ok(index)
                }
            });
        }
        Ok(())
    }

    fn membership_applied(
        &mut self,
        index: u64,
        changes: Vec<(ConfChangeType, u64)>,
        context: Vec<u8>,
        conf_state: ConfState,
    ) {
        tracing::info!(node = %self.node, index, ?changes, voters = ?conf_state.voters, learners = ?conf_state.learners, outgoing = ?conf_state.voters_outgoing, "membership changed");
        let change = MembershipChange {
            index,
            changes,
            context,
            conf_state,
        };
        self.state_machine
            .apply_membership(&change, &mut self.writes);
        let raft = &mut self.raw.raft;
        if raft.state == StateRole::Leader
            && !change.conf_state.voters.contains(&raft.id)
            && !change.conf_state.voters_outgoing.contains(&raft.id)
        {
            // raft-rs 0.7 leaves a removed leader leading a configuration
            // it is not part of (post_conf_change, "untested"). Step down in
            // the same term; the remaining voters elect a leader.
            tracing::warn!(node = %self.node, "this controller was removed from the cluster while leading; stepping down");
            let term = raft.term;
            raft.become_follower(term, raft::INVALID_ID);
        }
    }

    /// Step 9: the applied entries' record changes and the applied index in
    /// one transaction, then the answers and the reads now satisfied.
    fn flush_applied(&mut self) -> Result<(), NodeError> {
        if self.applied > self.storage.applied() || !self.writes.is_empty() {
            let writes = std::mem::take(&mut self.writes);
            self.storage
                .apply_state(self.applied, &writes, Flush::WithNextSync)
                .map_err(self.storage_error("persisting the applied state"))?;
        }
        for (reply, answer) in self.answers.drain(..) {
            // The caller may have given up (timeout); nothing to tell then.
            let _ = reply.send(answer);
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads.confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads.confirmed = waiting;
        for (_, reply) in ready {
            let _ = reply.send(applied);
        }
        Ok(())
    }

    fn reads_confirmed(&mut self, states: Vec<raft::ReadState>) {
        for state in states {
            let Ok(context) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(reply) = self.reads.asked.remove(&u64::from_le_bytes(context)) {
                self.reads.confirmed.push((state.index, reply));
            }
        }
    }

    /// Step 10 (module docs).
    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        if self.storage.take_snapshot_request() {
            // A new member needs a snapshot that includes it.
            let index = self.applied;
            self.storage
                .snapshot_state(self.storage.conf_state())
                .map_err(|source| NodeError::Compaction {
                    node: self.node,
                    index,
                    source,
                })?;
            tracing::info!(node = %self.node, index, "took a snapshot for a new member");
        }
        let snapshot_index = self.storage.snapshot_metadata().index;
        if self.applied < snapshot_index + self.snapshot_after_entries {
            return Ok(());
        }
        let index = self.applied;
        let compaction_error = |source| NodeError::Compaction {
            node: self.node,
            index,
            source,
        };
        let meta = self
            .storage
            .snapshot_state(self.storage.conf_state())
            .map_err(compaction_error)?;
        let compact_index = (meta.index + 1).saturating_sub(self.keep_entries_after_snapshot);
        self.storage
            .compact(compact_index)
            .map_err(compaction_error)?;
        tracing::info!(node = %self.node, snapshot_index = meta.index, first_index = self.storage.truncated().index + 1, "took a snapshot and compacted the log");
        Ok(())
    }

    /// A leader in a joint configuration proposes the empty change that
    /// leaves it (NOTES.md: raft-rs does not, after a leader change).
    fn leave_joint_configuration(&mut self) {
        if self.raw.raft.state != StateRole::Leader
            || !self.is_joint()
            || self.raw.raft.has_pending_conf()
        {
            return;
        }
        tracing::info!(node = %self.node, "leaving a joint configuration");
        if let Err(error) = self
            .raw
            .propose_conf_change(Vec::new(), ConfChangeV2::default())
        {
            tracing::warn!(node = %self.node, %error, "could not propose leaving the joint configuration; retrying");
        }
    }

    /// Persists the membership a conf change at `index` produced (raft-rs
    /// does not re-export the `ConfChangeI` trait, so the two kinds are
    /// applied by the caller).
    fn persist_conf_state(
        &mut self,
        index: u64,
        applied: raft::Result<ConfState>,
    ) -> Result<ConfState, NodeError> {
        let conf_state = applied.map_err(|source| NodeError::ConfChange {
            node: self.node,
            index,
            source: Box::new(source),
        })?;
        self.storage
            .set_conf_state(&conf_state)
            .map_err(self.storage_error("persisting the membership"))?;
        Ok(conf_state)
    }

    /// Answers the proposals at or below `index` with `answer`.
    fn answer_up_to(
        &mut self,
        index: u64,
        answer: impl Fn(&PendingAt) -> Result<u64, ProposeError>,
    ) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > index {
                break;
            }
            let at = *entry.key();
            let pending = entry.remove();
            let result = answer(&PendingAt {
                index: at,
                term: pending.term,
            });
            self.answers.push((pending.reply, result));
        }
    }

    fn storage_error(&self, step: &'static str) -> impl FnOnce(StoreError) -> NodeError {
        let node = self.node;
        move |source| NodeError::Storage { node, step, source }
    }

    /// What readers see. A stopped node leads and follows no one, whatever
    /// its `RawNode` last said: a leader whose disk failed must not go on
    /// welcoming agents or deciding as if it could commit.
    fn current_status(&self, running: bool) -> NodeStatus {
        let raft = &self.raw.raft;
        NodeStatus {
            id: self.node.get(),
            role: if running {
                raft.state
            } else {
                StateRole::Follower
            },
            term: raft.term,
            leader: Some(raft.leader_id).filter(|&id| running && id != 0),
            commit: raft.raft_log.committed,
            applied: self.applied,
            running,
        }
    }

    fn publish_status(&self, running: bool) {
        let status = self.current_status(running);
        let leadership = Leadership::from(&status);
        self.leadership.send_if_modified(|current| {
            let changed = *current != leadership;
            if changed {
                *current = leadership;
            }
            changed
        });
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }
}
