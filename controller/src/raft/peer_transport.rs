//! The gRPC `Peer` transport: Raft messages to the other controllers over
//! mTLS, one long-lived `Peer.Raft` stream per peer.
//!
//! # Shape
//!
//! [`GrpcTransport::send`] only sorts messages into per-peer queues
//! (bounded; a full queue drops and counts, it never waits — the
//! [`Transport`] contract). Each peer has its own task, which
//!
//! 1. connects: first a probe handshake with [`ClientTls::connect`], whose
//!    verified identity must be `controller/<that peer's node id>` (a wrong
//!    node is logged as an error and retried like any failure), then a
//!    gRPC channel to the same address ([`ClientTls::channel`], which
//!    requires a `controller` certificate of our trust domain on every
//!    connection it makes). Between the probe and the channel another
//!    controller could answer on that address; its Peer service then
//!    refuses our messages, because they are not addressed to it. A
//!    connection thus costs two handshakes, both counted as accepted;
//! 2. opens one `Peer.Raft` stream and feeds it batches of what is queued
//!    (up to [`PeerTransportConfig::max_batch_messages`] messages or
//!    [`PeerTransportConfig::max_batch_bytes`] bytes; a larger single
//!    message travels alone), encoded with raft-rs's own protobuf encoding;
//! 3. on any error (connect, handshake, wrong node, the stream ending),
//!    drops the channel, waits an exponential backoff with jitter
//!    ([`Backoff`]) while dropping and counting what is queued for the
//!    peer (Raft retransmits what matters), and starts over. A connection
//!    that lived longer than the maximum backoff resets the backoff.
//!
//! Peers share nothing but the TLS configuration, so an unreachable or
//! slow peer fills only its own queue: the others' messages never wait on
//! it. Messages to one peer keep their order (one queue, one stream).
//!
//! Memory per peer: at most `queue_capacity` queued messages plus
//! `STREAM_BUFFER` batches; raft-rs's flow control (`max_inflight_msgs` ×
//! `max_size_per_msg` per follower, `NodeConfig`) bounds how many of them
//! carry entries.
//!
//! Membership changes add and remove peers at run time
//! ([`GrpcTransport::set_peers`]): a new address starts a link, a removed
//! peer's link is aborted, a changed address restarts it.
//!
//! Dropping the transport aborts the peer tasks and closes their streams.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leitstand_proto::domain::NodeId;
use leitstand_proto::identity::SpiffeId;
use leitstand_proto::tls::{ClientTls, ConnectError};
use leitstand_proto::v1::RaftBatch;
use leitstand_proto::v1::peer_client::PeerClient;
use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::node::NodeHandle;
use super::transport::Transport;
use crate::MAX_PEER_MESSAGE_BYTES;
use crate::peer::{MAX_BATCH_MESSAGES, MAX_RAFT_MESSAGE_BYTES, RaftInbox, node_of};

/// Batches buffered in an open stream before the peer task waits for
/// HTTP/2 flow control (while it waits, the peer's queue fills and drops).
const STREAM_BUFFER: usize = 4;

/// Queueing, batching and reconnecting.
#[derive(Debug, Clone)]
pub(crate) struct PeerTransportConfig {
    /// Messages queued per peer; more are dropped and counted.
    pub(crate) queue_capacity: usize,
    /// Messages per `RaftBatch` (at most the 4096 the contract allows).
    pub(crate) max_batch_messages: usize,
    /// Encoded bytes per `RaftBatch`; a larger single message goes alone.
    pub(crate) max_batch_bytes: usize,
    /// First wait before reconnecting; doubles per failure.
    pub(crate) backoff_min: Duration,
    /// Longest wait before reconnecting.
    pub(crate) backoff_max: Duration,
    /// How long a connection attempt (probe and channel) may take.
    pub(crate) connect_timeout: Duration,
}

impl Default for PeerTransportConfig {
    fn default() -> Self {
        PeerTransportConfig {
            queue_capacity: 4096,
            max_batch_messages: 1024,
            max_batch_bytes: 4 << 20,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a peer's stream is down; logged, then retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cannot reach node {peer} at {address}")]
    Connect {
        peer: NodeId,
        address: String,
        #[source]
        source: ConnectError,
    },
    #[error("connecting to node {peer} at {address} took longer than {after:?}")]
    ConnectTimeout {
        peer: NodeId,
        address: String,
        after: Duration,
    },
    #[error("{address} presented {found}, but node {expected} is configured there")]
    WrongNode {
        address: String,
        expected: NodeId,
        found: SpiffeId,
    },
    #[error("node {peer} refused or ended the Raft stream")]
    Stream {
        peer: NodeId,
        #[source]
        source: tonic::Status,
    },
    #[error("node {peer} closed the Raft stream after {batches} batches")]
    Closed { peer: NodeId, batches: u64 },
    #[error("the Raft stream to node {peer} stopped taking batches")]
    StreamGone { peer: NodeId },
}

/// What happened on one peer's link, since the transport started.
#[derive(Debug, Default)]
struct LinkCounters {
    sent: AtomicU64,
    batches: AtomicU64,
    connects: AtomicU64,
    failures: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_disconnected: AtomicU64,
    dropped_unsendable: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of one peer link's counters; the metrics exporter exports
/// them (`last_error` only the tests read).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LinkStats {
    /// Messages handed to an open stream.
    pub(crate) sent: u64,
    /// Batches handed to an open stream.
    pub(crate) batches: u64,
    /// Streams opened.
    pub(crate) connects: u64,
    /// Connection attempts and streams that failed.
    pub(crate) failures: u64,
    /// Messages dropped because the peer's queue was full.
    pub(crate) dropped_queue_full: u64,
    /// Messages dropped because the peer was unreachable.
    pub(crate) dropped_disconnected: u64,
    /// Messages dropped because they do not encode or exceed the bounds.
    pub(crate) dropped_unsendable: u64,
    /// Why the link last went down, with its causes.
    pub(crate) last_error: Option<String>,
}

impl LinkCounters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn stats(&self) -> LinkStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LinkStats {
            sent: get(&self.sent),
            batches: get(&self.batches),
            connects: get(&self.connects),
            failures: get(&self.failures),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_disconnected: get(&self.dropped_disconnected),
            dropped_unsendable: get(&self.dropped_unsendable),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The sending end of one peer's link.
#[derive(Debug)]
struct LinkHandle {
    address: String,
    queue: mpsc::Sender<Message>,
    counters: Arc<LinkCounters>,
    task: JoinHandle<()>,
}

/// Raft messages to the other controllers over gRPC and mTLS.
#[derive(Debug)]
pub(crate) struct GrpcTransport {
    local: NodeId,
    tls: Arc<ClientTls>,
    config: Arc<PeerTransportConfig>,
    links: Mutex<BTreeMap<u64, LinkHandle>>,
    dropped_unknown_peer: AtomicU64,
    /// Where links run: the runtime `start` was called on (the controller
    /// calls it on the Raft thread), also for links `set_peers` starts
    /// later from other tasks.
    runtime: tokio::runtime::Handle,
}

impl GrpcTransport {
    /// Starts one task per peer in `peers` (node id → `host:port`, as in
    /// the cluster map; the local node is skipped), on the runtime it is
    /// called within.
    pub(crate) fn start(
        local: NodeId,
        peers: &BTreeMap<NodeId, String>,
        tls: Arc<ClientTls>,
        config: PeerTransportConfig,
    ) -> GrpcTransport {
        let config = Arc::new(PeerTransportConfig {
            max_batch_messages: config.max_batch_messages.clamp(1, MAX_BATCH_MESSAGES),
            max_batch_bytes: config.max_batch_bytes.clamp(1, MAX_RAFT_MESSAGE_BYTES),
            queue_capacity: config.queue_capacity.max(1),
            ..config
        });
        let transport = GrpcTransport {
            local,
            tls,
            config,
            links: Mutex::new(BTreeMap::new()),
            dropped_unknown_peer: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
        };
        transport.set_peers(peers);
        transport
    }

    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, LinkHandle>> {
        // A panic while holding the lock leaves the map consistent.
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `peers` (the local node is skipped) the set of links: new
    /// ones start, missing ones stop, a changed address restarts its link.
    pub(crate) fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        let mut links = self.links();
        links.retain(|&id, link| {
            let keep = NodeId::new(id)
                .and_then(|id| peers.get(&id))
                .is_some_and(|address| *address == link.address);
            if !keep {
                tracing::info!(peer = id, address = %link.address, "Raft peer link closed (membership or address changed)");
                link.task.abort();
            }
            keep
        });
        for (&peer, address) in peers {
            if peer == self.local || links.contains_key(&peer.get()) {
                continue;
            }
            let (queue, inbox) = mpsc::channel(self.config.queue_capacity);
            let counters = Arc::new(LinkCounters::default());
            let link = Link {
                local: self.local,
                peer,
                address: address.clone(),
                tls: self.tls.clone(),
                config: self.config.clone(),
                counters: counters.clone(),
            };
            let task = self.runtime.spawn(link.run(inbox));
            links.insert(
                peer.get(),
                LinkHandle {
                    address: address.clone(),
                    queue,
                    counters,
                    task,
                },
            );
        }
    }

    /// The counters of the link to `peer`, if it is one.
    pub(crate) fn stats(&self, peer: NodeId) -> Option<LinkStats> {
        self.links()
            .get(&peer.get())
            .map(|link| link.counters.stats())
    }

    /// Messages to nodes that are not in the cluster map.
    pub(crate) fn dropped_unknown_peer(&self) -> u64 {
        self.dropped_unknown_peer.load(Ordering::Relaxed)
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        let links = self.links();
        for message in messages {
            let to = message.to;
            let Some(link) = links.get(&to) else {
                self.dropped_unknown_peer.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(to, "Raft message to a node outside the cluster map dropped");
                continue;
            };
            match link.queue.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    LinkCounters::add(&link.counters.dropped_queue_full, 1);
                }
                // The peer task is gone (only when aborted): as unreachable.
                Err(TrySendError::Closed(_)) => {
                    LinkCounters::add(&link.counters.dropped_disconnected, 1);
                }
            }
        }
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        for link in self.links().values() {
            link.task.abort();
        }
    }
}

/// The Peer service delivers into the local node.
impl RaftInbox for NodeHandle {
    fn node_id(&self) -> NodeId {
        self.id()
    }

    fn deliver(&self, messages: Vec<Message>) -> bool {
        if self.is_stopped() {
            return false;
        }
        NodeHandle::deliver(self, messages);
        true
    }
}

/// Exponential backoff with jitter: the n-th wait is uniformly random in
/// [½, 1] × min(`min` · 2ⁿ, `max`), so peers that failed together do not
/// retry in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    state: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            current: min,
            // xorshift must not start at zero.
            state: seed | 1,
        }
    }

    /// The next wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let fraction = 0.5 + 0.5 * (self.state >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }

    pub(crate) fn max(&self) -> Duration {
        self.max
    }
}

/// One peer's task state.
struct Link {
    local: NodeId,
    peer: NodeId,
    address: String,
    tls: Arc<ClientTls>,
    config: Arc<PeerTransportConfig>,
    counters: Arc<LinkCounters>,
}

/// How a stream ended.
enum Ended {
    /// The transport is gone: the task ends.
    TransportDropped,
    /// Reconnect after a backoff.
    Failed(LinkError),
}

impl Link {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let seed = RandomState::new().hash_one(self.peer.get());
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max, seed);
        let mut pending = VecDeque::new();
        let mut failures_in_a_row = 0u64;
        loop {
            let mut connected_at = None;
            let error = match self
                .stream(&mut queue, &mut pending, &mut connected_at)
                .await
            {
                Ended::TransportDropped => return,
                Ended::Failed(error) => error,
            };
            LinkCounters::add(&self.counters.failures, 1);
            // A stream that stayed up a while was a recovery, not one more
            // failure of a series.
            if connected_at.is_some_and(|at: Instant| at.elapsed() >= backoff.max()) {
                backoff.reset();
                failures_in_a_row = 0;
            }
            failures_in_a_row += 1;
            let delay = backoff.next_delay();
            let text = leitstand_proto::error_chain(&error);
            *self
                .counters
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text.clone());
            // The first failure of a series is news; the retries are not.
            if matches!(error, LinkError::WrongNode { .. }) {
                tracing::error!(peer = %self.peer, retry_in = ?delay, "Raft peer link: {text}");
            } else if failures_in_a_row == 1 {
                tracing::warn!(peer = %self.peer, retry_in = ?delay, "Raft peer link down: {text}");
            } else {
                tracing::debug!(peer = %self.peer, retry_in = ?delay, failures_in_a_row, "Raft peer link still down: {text}");
            }
            LinkCounters::add(&self.counters.dropped_disconnected, pending.len());
            pending.clear();
            if !self.discard_for(delay, &mut queue).await {
                return;
            }
        }
    }

    /// Drops (and counts) what is queued for `delay`; `false` when the
    /// transport is gone.
    async fn discard_for(&self, delay: Duration, queue: &mut mpsc::Receiver<Message>) -> bool {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return true,
                message = queue.recv() => match message {
                    Some(_) => LinkCounters::add(&self.counters.dropped_disconnected, 1),
                    None => return false,
                },
            }
        }
    }

    /// A probe handshake that checks the peer's node id, then a channel.
    async fn connect(&self) -> Result<tonic::transport::Channel, LinkError> {
        let after = self.config.connect_timeout;
        let attempt = async {
            let (probe, identity) =
                self.tls
                    .connect(&self.address)
                    .await
                    .map_err(|source| LinkError::Connect {
                        peer: self.peer,
                        address: self.address.clone(),
                        source,
                    })?;
            drop(probe);
            if node_of(&identity) != Some(self.peer) {
                return Err(LinkError::WrongNode {
                    address: self.address.clone(),
                    expected: self.peer,
                    found: identity,
                });
            }
            self.tls
                .channel(&self.address)
                .await
                .map_err(|source| LinkError::Connect {
                    peer: self.peer,
                    address: self.address.clone(),
                    source,
                })
        };
        tokio::time::timeout(after, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(LinkError::ConnectTimeout {
                    peer: self.peer,
                    address: self.address.clone(),
                    after,
                })
            })
    }

    /// Connects and feeds one stream until it fails or the transport goes.
    /// `pending` holds encoded messages taken from the queue, not yet sent;
    /// `connected_at` is set once the stream is open.
    async fn stream(
        &self,
        queue: &mut mpsc::Receiver<Message>,
        pending: &mut VecDeque<Vec<u8>>,
        connected_at: &mut Option<Instant>,
    ) -> Ended {
        let channel = match self.connect().await {
            Ok(channel) => channel,
            Err(error) => return Ended::Failed(error),
        };
        let (batches, outbound) = mpsc::channel(STREAM_BUFFER);
        let mut client = PeerClient::new(channel).max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let call = client.raft(ReceiverStream::new(outbound));
        tokio::pin!(call);
        LinkCounters::add(&self.counters.connects, 1);
        *connected_at = Some(Instant::now());
        tracing::debug!(peer = %self.peer, address = %self.address, "Raft peer link up");
        let mut received = Vec::with_capacity(self.config.max_batch_messages);
        loop {
            if pending.is_empty() {
                let count = tokio::select! {
                    result = &mut call => return Ended::Failed(self.call_ended(result)),
                    count = queue.recv_many(&mut received, self.config.max_batch_messages) => count,
                };
                if count == 0 {
                    return Ended::TransportDropped;
                }
                self.encode(received.drain(..), pending);
            }
            let Some(batch) = self.next_batch(pending) else {
                continue;
            };
            let count = batch.messages.len();
            tokio::select! {
                result = &mut call => {
                    LinkCounters::add(&self.counters.dropped_disconnected, count);
                    return Ended::Failed(self.call_ended(result));
                }
                sent = batches.send(batch) => {
                    if sent.is_err() {
                        LinkCounters::add(&self.counters.dropped_disconnected, count);
                        return Ended::Failed(LinkError::StreamGone { peer: self.peer });
                    }
                    LinkCounters::add(&self.counters.sent, count);
                    LinkCounters::add(&self.counters.batches, 1);
                }
            }
        }
    }

    fn call_ended(
        &self,
        result: Result<tonic::Response<leitstand_proto::v1::RaftDone>, tonic::Status>,
    ) -> LinkError {
        match result {
            Ok(done) => LinkError::Closed {
                peer: self.peer,
                batches: done.into_inner().batches,
            },
            Err(source) => LinkError::Stream {
                peer: self.peer,
                source,
            },
        }
    }

    /// Encodes `messages` onto `pending`; drops (and counts) those that do
    /// not encode or exceed the per-message bound.
    fn encode(&self, messages: impl Iterator<Item = Message>, pending: &mut VecDeque<Vec<u8>>) {
        for message in messages {
            match message.write_to_bytes() {
                Ok(encoded) if encoded.len() <= MAX_RAFT_MESSAGE_BYTES => {
                    pending.push_back(encoded)
                }
                Ok(encoded) => {
                    LinkCounters::add(&self.counters.dropped_unsendable, 1);
                    tracing::error!(peer = %self.peer, bytes = encoded.len(), limit = MAX_RAFT_MESSAGE_BYTES, kind = ?message.get_msg_type(), "Raft message too large to send; dropped");
                }
                Err(error) => {
                    LinkCounters::add(&self.counters.dropped_unsendable, 1);
                    tracing::error!(peer = %self.peer, %error, kind = ?message.get_msg_type(), "Raft message does not encode; dropped");
                }
            }
        }
    }

    /// One batch from the front of `pending`, within the batch bounds (a
    /// message larger than `max_batch_bytes` travels alone); `None` if
    /// `pending` is empty.
    fn next_batch(&self, pending: &mut VecDeque<Vec<u8>>) -> Option<RaftBatch> {
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = pending.front() {
            if !messages.is_empty()
                && (bytes + next.len() > self.config.max_batch_bytes
                    || messages.len() >= self.config.max_batch_messages)
            {
                break;
            }
            bytes += next.len();
            messages.extend(pending.pop_front());
        }
        (!messages.is_empty()).then_some(RaftBatch {
            from: self.local.get(),
            messages,
        })
    }
}
