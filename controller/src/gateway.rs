//! AgentGateway.Session: one stream per agent. This file is the one place
//! where session errors become `tonic::Status`.
//!
//! Order of checks: certificate still valid and of kind agent → first
//! message is a valid Hello → Hello's agent id equals the certificate's →
//! register (a newer session of the same agent ends the older) → Welcome →
//! reports, acknowledged by sequence number. The certificate is checked
//! again before every message is applied, after every TLS reload (a CRL
//! that revokes it) and when its notAfter passes, so a quiet agent's
//! session ends with UNAUTHENTICATED then too. A session learns of a
//! leadership change from the Raft node's leadership watch and sends the
//! agent on with NotLeader at once. Every refusal is logged with its
//! reason, counted, and ends only this stream.
//!
//! A session task wakes only for these events and its agent's messages.
//! It used to look at leadership and its certificate every 250 ms: 40 000
//! wake-ups a second at 10 000 sessions, for nothing almost always
//! (docs/benchmarks.md, "Ingest").

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leitstand_proto::domain::{AgentId, AgentMessage, NodeId, bounds};
use leitstand_proto::identity::{PeerInfo, PeerKind, require_kind};
use leitstand_proto::tls::ServerTls;
use leitstand_proto::v1::agent_gateway_server::AgentGateway;
use leitstand_proto::v1::{self, controller_message};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::counters::{Counters, Rejection};
use crate::engine::{EngineInbox, Observation};
use crate::operator::AddressBook;
use crate::raft::{Leadership, NodeHandle};
use crate::registry::{Accepted, Registry};

/// The first message must arrive within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a session sleeps before looking at its certificate's
/// notAfter again: the sleep runs on the monotonic clock, notAfter is wall
/// time, and the wall clock may be stepped forward meanwhile.
const EXPIRY_RECHECK: Duration = Duration::from_secs(60);
/// An agent must take an answer within this time.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a Hello that finds no leader known (an election) waits for one
/// before the answer: the agent then learns where to go from this answer
/// instead of asking every controller through the election with backoff.
/// About the length of an election here (median 0.65 s); short, because a
/// controller cut off from the others never learns a leader and holds the
/// agent for all of it (agents pass over a controller that answered without
/// a leader).
const LEADER_WAIT: Duration = Duration::from_secs(1);
const RATE_BURST: f64 = bounds::SESSION_BURST_MESSAGES as f64;
const RATE_PER_SECOND: f64 = bounds::SESSION_MESSAGES_PER_SECOND as f64;

pub(crate) struct Gateway {
    pub(crate) node_id: NodeId,
    pub(crate) raft: NodeHandle,
    /// Node id → address, for the leader hint.
    pub(crate) addresses: AddressBook,
    pub(crate) registry: Arc<Registry>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) tls: Arc<ServerTls>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) engine: EngineInbox,
}

/// How a session ends other than by the agent closing it: what to count
/// (nothing when it is no fault of the agent's) and what to tell it.
struct Refusal {
    why: Option<Rejection>,
    status: Status,
}

impl Refusal {
    fn new(why: Rejection, code: Code, message: impl Into<String>) -> Self {
        Refusal {
            why: Some(why),
            status: Status::new(code, message),
        }
    }

    /// An ending that is no refusal: superseded, shutting down, agent gone.
    fn quiet(code: Code, message: impl Into<String>) -> Self {
        Refusal {
            why: None,
            status: Status::new(code, message),
        }
    }
}

/// Maps an error tonic raised while decoding an inbound message.
fn inbound_error(status: Status) -> Option<Refusal> {
    match status.code() {
        Code::OutOfRange => Some(Refusal::new(
            Rejection::Oversized,
            Code::ResourceExhausted,
            format!(
                "message larger than {} bytes: {}",
                bounds::MAX_AGENT_MESSAGE_BYTES,
                status.message()
            ),
        )),
        Code::Internal => Some(Refusal::new(
            Rejection::InvalidMessage,
            Code::InvalidArgument,
            format!("malformed message: {}", status.message()),
        )),
        // Cancelled, or the connection went away: nothing to refuse.
        _ => None,
    }
}

/// UNAUTHENTICATED, naming the reason, once the peer's certificate was
/// revoked by a CRL loaded after the handshake or passed its notAfter.
fn certificate_still_valid(peer: &PeerInfo) -> Result<(), Refusal> {
    peer.still_valid(SystemTime::now()).map_err(|invalid| {
        Refusal::new(
            Rejection::from(&invalid),
            Code::Unauthenticated,
            invalid.to_string(),
        )
    })
}

/// When to look at the certificate's validity next: just after its
/// notAfter (`still_valid` fails only once it has passed), at most
/// [`EXPIRY_RECHECK`] from now.
fn expiry_check_at(peer: &PeerInfo) -> Instant {
    let left = peer
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + (left + Duration::from_millis(1)).min(EXPIRY_RECHECK)
}

struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new() -> Self {
        TokenBucket {
            tokens: RATE_BURST,
            updated: Instant::now(),
        }
    }
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.updated).as_secs_f64() * RATE_PER_SECOND;
        self.tokens = (self.tokens + refill).min(RATE_BURST);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Outbound = mpsc::Sender<Result<v1::ControllerMessage, Status>>;

fn message(kind: controller_message::Kind) -> v1::ControllerMessage {
    v1::ControllerMessage { kind: Some(kind) }
}

#[tonic::async_trait]
impl AgentGateway for Gateway {
    type SessionStream = ReceiverStream<Result<v1::ControllerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // A connection opened before its certificate was revoked or expired
        // opens no new session.
        if let Some(peer) = request.extensions().get::<PeerInfo>()
            && let Err(refusal) = certificate_still_valid(peer)
        {
            if let Some(why) = refusal.why {
                self.counters.reject(why);
                tracing::warn!(
                    peer = %peer.remote_addr,
                    identity = %peer.identity,
                    reason = why.as_str(),
                    "session refused: {}",
                    refusal.status.message()
                );
            }
            return Err(refusal.status);
        }
        let peer = match require_kind(&request, PeerKind::Agent) {
            Ok(peer) => peer.clone(),
            Err(status) => {
                if status.code() == Code::PermissionDenied {
                    self.counters.reject(Rejection::WrongKind);
                    tracing::warn!(
                        reason = Rejection::WrongKind.as_str(),
                        "session refused: {}",
                        status.message()
                    );
                }
                return Err(status);
            }
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let session = SessionTask {
            node_id: self.node_id,
            raft: self.raft.clone(),
            addresses: self.addresses.clone(),
            registry: self.registry.clone(),
            counters: self.counters.clone(),
            tls: self.tls.clone(),
            shutdown: self.shutdown.clone(),
            engine: self.engine.clone(),
            peer,
            tx,
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct SessionTask {
    node_id: NodeId,
    raft: NodeHandle,
    addresses: AddressBook,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    tls: Arc<ServerTls>,
    shutdown: watch::Receiver<bool>,
    engine: EngineInbox,
    peer: PeerInfo,
    tx: Outbound,
}

impl SessionTask {
    async fn run(mut self, mut inbound: Streaming<v1::AgentMessage>) {
        let Err(refusal) = self.serve(&mut inbound).await else {
            return;
        };
        match refusal.why {
            Some(why) => {
                self.counters.reject(why);
                tracing::warn!(
                    peer = %self.peer.remote_addr,
                    identity = %self.peer.identity,
                    reason = why.as_str(),
                    code = ?refusal.status.code(),
                    "agent session refused: {}",
                    refusal.status.message()
                );
            }
            None => tracing::info!(
                identity = %self.peer.identity,
                "agent session closed: {}",
                refusal.status.message()
            ),
        }
        // The agent may be gone already; then nobody needs to hear it.
        let _ = self.tx.send(Err(refusal.status)).await;
    }

    /// `None` on the leader; otherwise where the leader is, as far as known.
    /// This node's leadership; while no leader is known, waits up to
    /// [`LEADER_WAIT`] for one (or for this node to lead).
    async fn leadership_after_election(&self) -> Leadership {
        let mut watch = self.raft.watch_leadership();
        let known = |l: &Leadership| l.leading || l.leader.is_some();
        // Timed out or the node stopped: the current value is the answer.
        let _ = tokio::time::timeout(LEADER_WAIT, watch.wait_for(known)).await;
        *watch.borrow()
    }

    fn not_leader(&self, leadership: Leadership) -> Option<v1::NotLeader> {
        if leadership.leading {
            return None;
        }
        let leader = leadership.leader.and_then(NodeId::new);
        Some(v1::NotLeader {
            leader_id: leader.map_or(0, NodeId::get),
            leader_hint: leader
                .and_then(|id| self.addresses.get(id.get()))
                .unwrap_or_default(),
        })
    }

    async fn send(&self, kind: controller_message::Kind) -> Result<(), Refusal> {
        // Almost always there is room: no timer for those (one per Ack is
        // a measurable share of a report's cost at 10 000 agents).
        let message = match self.tx.try_send(Ok(message(kind))) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Refusal::quiet(Code::Cancelled, "the agent went away"));
            }
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        // An agent that stops reading must not pin this task (and its
        // buffers) for ever.
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Refusal::quiet(Code::Cancelled, "the agent went away")),
            Err(_) => Err(Refusal::new(
                Rejection::Unresponsive,
                Code::DeadlineExceeded,
                format!("the agent read nothing for {} s", SEND_TIMEOUT.as_secs()),
            )),
        }
    }

    async fn serve(&mut self, inbound: &mut Streaming<v1::AgentMessage>) -> Result<(), Refusal> {
        let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(Refusal::new(
                    Rejection::HelloMissing,
                    Code::InvalidArgument,
                    "no Hello within 10 s of opening the session",
                ));
            }
            Ok(Err(status)) => return inbound_error(status).map_or(Ok(()), Err),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(first))) => first,
        };
        let hello = match AgentMessage::try_from(first) {
            Ok(AgentMessage::Hello(hello)) => hello,
            Ok(_) => {
                return Err(Refusal::new(
                    Rejection::HelloMissing,
                    Code::InvalidArgument,
                    "the first message of a session must be a Hello",
                ));
            }
            Err(e) => {
                return Err(Refusal::new(
                    Rejection::InvalidMessage,
                    Code::InvalidArgument,
                    e.to_string(),
                ));
            }
        };
        // The Hello may have waited for up to HELLO_TIMEOUT.
        certificate_still_valid(&self.peer)?;
        let certified = AgentId::from(self.peer.identity.name().clone());
        if hello.agent_id != certified {
            return Err(Refusal::new(
                Rejection::IdentityMismatch,
                Code::PermissionDenied,
                format!(
                    "Hello names agent {:?} but the certificate is for agent {:?}",
                    hello.agent_id.as_str(),
                    certified.as_str()
                ),
            ));
        }
        if let Some(not_leader) = self.not_leader(self.leadership_after_election().await) {
            tracing::debug!(agent = %hello.agent_id, leader = not_leader.leader_id, "not the leader; sent the agent on");
            self.send(controller_message::Kind::NotLeader(not_leader))
                .await?;
            return Ok(());
        }
        let agent = hello.agent_id.clone();
        let version = hello.version.clone();
        let Some(registration) = self.registry.register(hello) else {
            return Err(Refusal::new(
                Rejection::TooManyAgents,
                Code::ResourceExhausted,
                format!(
                    "this controller serves at most {} agents",
                    crate::registry::MAX_AGENTS
                ),
            ));
        };
        tracing::info!(agent = %agent, %version, peer = %self.peer.remote_addr, "agent connected");
        self.engine.observe(Observation::Connected {
            agent: agent.clone(),
        });
        let result = self.serve_registered(inbound, &agent, registration).await;
        tracing::info!(agent = %agent, "agent session ended");
        result
    }

    async fn serve_registered(
        &mut self,
        inbound: &mut Streaming<v1::AgentMessage>,
        agent: &AgentId,
        registration: crate::registry::Registration,
    ) -> Result<(), Refusal> {
        let session = registration.session;
        let mut superseded = registration.superseded;
        let mut commands = registration.commands;
        let result = async {
            self.send(controller_message::Kind::Welcome(v1::Welcome {
                node_id: self.node_id.get(),
                last_acked_seq: registration.last_acked_seq,
                max_message_bytes: bounds::MAX_AGENT_MESSAGE_BYTES as u32,
                controller_version: leitstand_proto::VERSION.to_owned(),
            }))
            .await?;
            let mut bucket = TokenBucket::new();
            let mut shutdown = self.shutdown.clone();
            let mut reloads = self.tls.reloads();
            let mut leadership = self.raft.watch_leadership();
            // Leadership may have moved since the Hello was answered: look
            // once at the start, then at every change.
            leadership.mark_changed();
            let expiry = tokio::time::sleep_until(expiry_check_at(&self.peer));
            tokio::pin!(expiry);
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    changed = leadership.changed() => {
                        // A closed watch means the node stopped: no longer
                        // leading, which is what the last value says.
                        let now = *leadership.borrow_and_update();
                        if let Some(not_leader) = self.not_leader(now) {
                            tracing::info!(agent = %agent, leader = not_leader.leader_id, "leadership moved; sending the agent on");
                            self.send(controller_message::Kind::NotLeader(not_leader)).await?;
                            return Ok(());
                        }
                        if changed.is_err() {
                            return Err(Refusal::quiet(Code::Unavailable, "the Raft node stopped"));
                        }
                        continue;
                    }
                    () = &mut expiry => {
                        // A quiet agent's certificate expires too.
                        certificate_still_valid(&self.peer)?;
                        expiry.as_mut().reset(expiry_check_at(&self.peer));
                        continue;
                    }
                    Some(command) = commands.recv() => {
                        self.send(controller_message::Kind::ExecuteAction(command)).await?;
                        continue;
                    }
                    _ = &mut superseded => {
                        return Err(Refusal::quiet(Code::Aborted, "a newer session of this agent replaced this one"));
                    }
                    () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                        return Err(Refusal::quiet(Code::Unavailable, "controller shutting down"));
                    }
                    Ok(()) = reloads.changed() => {
                        // A reloaded CRL may revoke it: at once.
                        certificate_still_valid(&self.peer)?;
                        continue;
                    }
                };
                let msg = match next {
                    Ok(Some(msg)) => msg,
                    Ok(None) => return Ok(()),
                    Err(status) => return inbound_error(status).map_or(Ok(()), Err),
                };
                // Nothing is applied on the word of an invalid certificate.
                certificate_still_valid(&self.peer)?;
                if !bucket.take() {
                    return Err(Refusal::new(
                        Rejection::RateLimited,
                        Code::ResourceExhausted,
                        format!("more than {RATE_PER_SECOND} messages per second (burst {RATE_BURST})"),
                    ));
                }
                match AgentMessage::try_from(msg) {
                    Ok(AgentMessage::Report(report)) => {
                        // One copy, shared by the registry and the engine.
                        let report = Arc::new(report);
                        let seq = report.seq;
                        match self.registry.accept_report(agent, session, report.clone()) {
                            Accepted::New => {
                                self.counters
                                    .reports_accepted
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::debug!(agent = %agent, seq, "report accepted");
                                self.engine.observe(Observation::Report { agent: agent.clone(), report });
                                self.send(controller_message::Kind::Ack(v1::Ack { seq })).await?;
                            }
                            Accepted::Duplicate { last_seq } => {
                                self.counters
                                    .reports_duplicate
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::debug!(agent = %agent, seq, last_seq, "duplicate report ignored");
                                self.send(controller_message::Kind::Ack(v1::Ack { seq: last_seq })).await?;
                            }
                            Accepted::Stale => return Ok(()),
                        }
                    }
                    Ok(AgentMessage::Hello(_)) => {
                        return Err(Refusal::new(
                            Rejection::DuplicateHello,
                            Code::InvalidArgument,
                            "Hello may be sent only once per session",
                        ));
                    }
                    Ok(AgentMessage::Announce(announce)) => {
                        tracing::info!(
                            agent = %agent,
                            checks = announce.checks.len(),
                            actions = announce.actions.len(),
                            "agent announced a reloaded configuration"
                        );
                        self.registry.announce(agent, session, announce);
                    }
                    Ok(AgentMessage::ActionResult(result)) => {
                        self.engine.observe(Observation::ActionResult { agent: agent.clone(), result });
                    }
                    Err(e) => {
                        return Err(Refusal::new(Rejection::InvalidMessage, Code::InvalidArgument, e.to_string()));
                    }
                }
            }
        }
        .await;
        self.registry.disconnect(agent, session);
        result
    }
}
