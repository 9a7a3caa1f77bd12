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
//! 3. **Apply `committed_entries()`** to the state machine and resolve the
//!    proposals they answer. raft-rs 0.7 only hands out entries that are
//!    committed *and* already persisted here, so this may precede step 4.
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
//! 9. **Persist the applied index** (the value `Config.applied` takes on
//!    restart). It is written after the commit index, so every prefix of
//!    writes a crash can leave keeps applied ≤ commit; written without
//!    fsync, since losing it only means entries are handed to the state
//!    machine again after a crash (at least once, never skipped). A state
//!    machine that persists its own state must record the applied index in
//!    the same transaction as its effects instead.
//!
//! A storage error at any step is fatal for the node (fail-stop): the task
//! ends, the error is returned from [`RaftNode::stop`] and logged, and
//! proposals waiting on it fail with [`ProposeError::Stopped`]. Restarting
//! recovers everything acknowledged from the file.
//!
//! # Proposals
//!
//! [`NodeHandle::propose`] resolves with the log index once the entry is
//! applied here, or fails: `NotLeader` (with the leader this node knows of)
//! right away on a follower, `Dropped` when a leader change overwrote the
//! entry (it was not applied, anywhere), `Timeout` when it was neither
//! applied nor lost in time, `Unknown` when this node skipped past it by
//! snapshot, `Stopped` when the node ended. After the last three the entry
//! may still be (or have been) applied: commands must be idempotent. An
//! entry is identified by (index, term): the index raft-rs gave it and the
//! leader's term at the time.
//!
//! # Blocking
//!
//! Storage writes block (an fsync per `Ready`, ~0.5 ms here). On a
//! multi-thread runtime the Ready processing runs in `block_in_place`, so
//! the worker's other tasks move elsewhere meanwhile; on a current-thread
//! runtime (tests with paused time) it runs inline, which also keeps the
//! paused clock from advancing while the disk works.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::domain::NodeId;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::logger;
use super::storage::{Flush, RedbStorage, StoreError};
use super::transport::Transport;

/// Peer messages a node buffers; more are dropped (Raft retransmits).
const INBOX_CAPACITY: usize = 4096;
/// Proposals waiting for the node task.
const COMMAND_CAPACITY: usize = 1024;

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

/// What the state machine receives, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApplyEvent {
    /// A committed command. Entries with empty data (a new leader's no-op,
    /// an empty proposal) are not handed over; membership changes are
    /// applied by the driver.
    Entry {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
    /// Replace the whole state with the snapshot's (received from the
    /// leader because this node fell behind its log).
    Snapshot {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
}

/// Receives applied entries, on the node's task: it must not block long.
pub(crate) type ApplyFn = Box<dyn FnMut(ApplyEvent) + Send>;

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

/// What a handle asks of the node task.
enum Command {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<u64, ProposeError>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Propose { data, .. } => f
                .debug_struct("Propose")
                .field("bytes", &data.len())
                .finish_non_exhaustive(),
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
        let after = self.proposal_timeout;
        let (reply, answer) = oneshot::channel();
        let wait = async {
            self.commands
                .send(Command::Propose { data, reply })
                .await
                .map_err(|_| ProposeError::Stopped)?;
            answer.await.map_err(|_| ProposeError::Stopped)?
        };
        tokio::time::timeout(after, wait)
            .await
            .unwrap_or(Err(ProposeError::Timeout { after }))
    }

    pub(crate) fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
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
    /// file), sending through `transport` and applying through `apply`.
    /// Must be called within a tokio runtime.
    pub(crate) fn start(
        config: NodeConfig,
        storage: RedbStorage,
        transport: Arc<dyn Transport>,
        apply: ApplyFn,
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
        let (status_tx, status) = watch::channel(NodeStatus {
            id: node.get(),
            role: raw.raft.state,
            term: raw.raft.term,
            leader: None,
            commit: raw.raft.raft_log.committed,
            applied,
            running: true,
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let driver = Driver {
            node,
            raw,
            storage: storage.clone(),
            transport,
            apply,
            pending: BTreeMap::new(),
            applied,
            snapshots_sent: Vec::new(),
            status: status_tx,
        };
        let task = tokio::spawn(driver.run(config.tick_interval, command_rx, inbox, shutdown_rx));
        Ok(RaftNode {
            handle: NodeHandle {
                id: node,
                commands,
                mailbox,
                status,
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

    /// The node's storage, shared with its task: for the state machine to
    /// store snapshots and compact the log (`create_snapshot` at an applied
    /// index, then `compact`), which raft-rs reads on its next access. The
    /// file stays open while a clone lives: drop it before a restart.
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
    reply: oneshot::Sender<Result<u64, ProposeError>>,
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
    apply: ApplyFn,
    /// By log index.
    pending: BTreeMap<u64, Pending>,
    /// The last index handed to `apply`.
    applied: u64,
    /// Followers sent a snapshot during this Ready, reported after it.
    snapshots_sent: Vec<u64>,
    status: watch::Sender<NodeStatus>,
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
                    // Proposals whose caller gave up need no answer.
                    self.pending.retain(|_, pending| !pending.reply.is_closed());
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
        if let Err(error) = self.raw.step(message) {
            // A message from a node outside the membership, or a local
            // message type from the network: not ours to act on.
            tracing::debug!(node = %self.node, from, ?kind, %error, "Raft message ignored");
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Propose { data, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let leader_hint = Some(self.raw.raft.leader_id).filter(|&id| id != 0);
                    let _ = reply.send(Err(ProposeError::NotLeader { leader_hint }));
                    return;
                }
                match self.raw.propose(Vec::new(), data) {
                    Ok(()) => {
                        let index = self.raw.raft.raft_log.last_index();
                        let term = self.raw.raft.term;
                        self.pending.insert(index, Pending { term, reply });
                    }
                    Err(error) => {
                        // A leadership transfer in progress, or too much
                        // uncommitted: nothing was appended.
                        tracing::debug!(node = %self.node, %error, "proposal dropped");
                        let _ = reply.send(Err(ProposeError::Dropped));
                    }
                }
            }
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
            let snapshot = ready.snapshot().clone();
            self.storage
                .apply_snapshot(&snapshot)
                .map_err(self.storage_error("applying a snapshot"))?;
            let metadata = snapshot.get_metadata();
            self.applied = metadata.index;
            (self.apply)(ApplyEvent::Snapshot {
                index: metadata.index,
                term: metadata.term,
                data: snapshot.get_data().to_vec(),
            });
            // Whether our proposals up to here made it is unknown: their
            // entries are inside the snapshot, if anywhere.
            self.answer_up_to(metadata.index, |_| Err(ProposeError::Unknown));
        }

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
        if self.applied > self.storage.applied() {
            self.storage
                .set_applied_with(self.applied, Flush::WithNextSync)
                .map_err(self.storage_error("persisting the applied index"))?;
        }

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
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if !entry.data.is_empty() {
                        (self.apply)(ApplyEvent::Entry {
                            index,
                            term,
                            data: entry.data.to_vec(),
                        });
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
                    self.persist_conf_state(index, applied)?;
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
                    self.persist_conf_state(index, applied)?;
                }
            }
            self.applied = index;
            // An entry is its index and term: ours if both match,
            // overwritten by a leader change otherwise.
            self.answer_up_to(index, |pending| {
                if pending.index == index && pending.term == term {
                    Ok(index)
                } else {
                    Err(ProposeError::Dropped)
                }
            });
        }
        Ok(())
    }

    /// Persists the membership a conf change at `index` produced (raft-rs
    /// does not re-export the `ConfChangeI` trait, so the two kinds are
    /// applied by the caller).
    fn persist_conf_state(
        &mut self,
        index: u64,
        applied: raft::Result<raft::eraftpb::ConfState>,
    ) -> Result<(), NodeError> {
        let conf_state = applied.map_err(|source| NodeError::ConfChange {
            node: self.node,
            index,
            source: Box::new(source),
        })?;
        self.storage
            .set_conf_state(&conf_state)
            .map_err(self.storage_error("persisting the membership"))
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
            // The caller may have given up (timeout); nothing to tell then.
            let _ = pending.reply.send(result);
        }
    }

    fn storage_error(&self, step: &'static str) -> impl FnOnce(StoreError) -> NodeError {
        let node = self.node;
        move |source| NodeError::Storage { node, step, source }
    }

    fn publish_status(&self, running: bool) {
        let raft = &self.raw.raft;
        let status = NodeStatus {
            id: self.node.get(),
            role: raft.state,
            term: raft.term,
            leader: Some(raft.leader_id).filter(|&id| id != 0),
            commit: raft.raft_log.committed,
            applied: self.applied,
            running,
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }
}
