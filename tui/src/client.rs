//! The leader-following client of the Operator API.
//!
//! Reads may be answered by any controller, writes only by the leader; a
//! follower answers a write with the leader's address
//! (`leitstand_proto::operator`). One loop serves both, so reads and writes
//! behave alike after a failover:
//!
//! 1. Candidates in order: the last controller that answered, then the
//!    configured ones. A connection failure, UNAVAILABLE or (for reads) no
//!    answer in time moves on to the next.
//! 2. "Not leader; leader at X": try X next, at most [`MAX_HOPS`] hops in a
//!    row, so two confused followers cannot bounce a call forever.
//! 3. "Not leader; leader unknown": an election may be under way; wait a
//!    short, growing backoff, then the next candidate. While the cluster
//!    answers like that, candidates are tried again from the start.
//! 4. Everything within one overall deadline. A write already sent that
//!    gets no answer in time is not retried elsewhere: it may still be
//!    committed, and the caller is told so.
//!
//! Every error says what was tried, in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leitstand_proto::config::is_host_port;
use leitstand_proto::domain::bounds::{MAX_ADDRESS_BYTES, MAX_REASON_BYTES};
use leitstand_proto::domain::{Identifier, NodeId};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::operator::leader_hint;
use leitstand_proto::tls::{ClientTls, ConnectError};
use leitstand_proto::v1;
use leitstand_proto::v1::operator_client::OperatorClient as Grpc;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cluster::{ClusterStatus, Probe};
use crate::config::{DEFAULT_TIMEOUT, OperatorConfig};
use crate::error::{Error, Tried};
use crate::view::{ActionReply, AuditEntry, Delta, View};

/// Leader hints followed in a row before going back to the configured list.
const MAX_HOPS: usize = 3;
/// Connecting to one controller (TCP and TLS handshake) takes at most this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A read waits this long for one controller before asking the next.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The Operator API's message bound (operator.proto).
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// A controller's error message is shown, but not without limit.
const MAX_SHOWN_MESSAGE_BYTES: usize = 1024;
const MAX_PROBE_PAYLOAD_BYTES: usize = 64;
/// Audit entries one call reads at most; page with `from` for more.
pub const MAX_AUDIT_ENTRIES: u64 = 10_000;
/// The longest pause between two attempts to (re)open a Watch.
pub const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(5);

/// What a Watch delivers to its receiver.
#[derive(Debug, Clone)]
pub enum WatchUpdate {
    /// A stream is open at `address`; a full view follows.
    Connected { address: String },
    /// The whole view: replaces what was there.
    Full(Box<View>),
    /// Changes to apply to the last full view.
    Delta(Box<Delta>),
    /// The stream ended or could not be opened; the next try is in
    /// `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
}

/// A client of the controllers' Operator API that finds the leader itself.
#[derive(Debug)]
pub struct OperatorClient {
    tls: Arc<ClientTls>,
    controllers: Vec<String>,
    deadline: Duration,
    /// Our operator name, for messages about roles.
    operator: String,
    /// The channel to the controller that answered last: asked first next
    /// time, so a steady cluster costs one handshake per client.
    last_good: Mutex<Option<(String, Channel)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// What one attempt at one controller came to.
enum Attempt<T> {
    Answered(T),
    /// Try the next candidate; the outcome is for the error message.
    Failed(String),
    /// A follower; the leader's address if it knows one.
    NotLeader(Option<String>),
    /// An answer that another controller would not change.
    Final(Error),
}

impl OperatorClient {
    /// Loads the operator's TLS material; the certificate must be an
    /// operator's. Connects only when called.
    pub fn new(config: &OperatorConfig) -> Result<Self, Error> {
        let tls = ClientTls::load(config.tls.clone()).map_err(Error::Tls)?;
        let identity = tls.identity();
        if identity.kind() != PeerKind::Operator {
            return Err(Error::NotAnOperator {
                cert: config.tls.cert.clone(),
                identity: identity.to_string(),
            });
        }
        Ok(OperatorClient {
            tls: Arc::new(tls),
            controllers: config.controllers.clone(),
            deadline: config.timeout,
            operator: identity.name().to_string(),
            last_good: Mutex::new(None),
        })
    }

    /// The same client with another overall deadline per call (by default
    /// operator.toml's `timeout`, else 10 s).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = if deadline.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            deadline
        };
        self
    }

    /// Members, leader and replication state, from any controller.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, Error> {
        let (reply, address) = self
            .call(Kind::Read, |mut c, t| async move {
                c.cluster_status(request(v1::ClusterStatusRequest {}, t))
                    .await
            })
            .await?;
        cluster_status(reply, address)
    }

    /// Adds a controller (admin); answers with the resulting status.
    pub async fn add_member(&self, node_id: NodeId, address: &str) -> Result<ClusterStatus, Error> {
        if !is_host_port(address) || address.len() > MAX_ADDRESS_BYTES {
            return Err(Error::Usage(format!(
                "{address:?} is not host:port (at most {MAX_ADDRESS_BYTES} bytes), e.g. \"10.0.0.4:7401\""
            )));
        }
        let message = v1::AddMemberRequest {
            node_id: node_id.get(),
            address: address.to_owned(),
        };
        let (reply, address) = self
            .call(Kind::Write, |mut c, t| {
                let message = message.clone();
                async move { c.add_member(request(message, t)).await }
            })
            .await?;
        cluster_status(reply, address)
    }

    /// Removes a controller (admin), the leader included.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<ClusterStatus, Error> {
        let (reply, address) = self
            .call(Kind::Write, |mut c, t| async move {
                let message = v1::RemoveMemberRequest {
                    node_id: node_id.get(),
                };
                c.remove_member(request(message, t)).await
            })
            .await?;
        cluster_status(reply, address)
    }

    /// Hands leadership to `to` (admin).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<ClusterStatus, Error> {
        let (reply, address) = self
            .call(Kind::Write, |mut c, t| async move {
                let message = v1::TransferLeaderRequest {
                    to_node_id: to.get(),
                };
                c.transfer_leader(request(message, t)).await
            })
            .await?;
        cluster_status(reply, address)
    }

    /// Commits a probe entry through Raft (operator): proves the cluster
    /// can commit right now.
    pub async fn probe(&self, payload: &[u8]) -> Result<Probe, Error> {
        if payload.len() > MAX_PROBE_PAYLOAD_BYTES {
            return Err(Error::Usage(format!(
                "a probe payload has at most {MAX_PROBE_PAYLOAD_BYTES} bytes"
            )));
        }
        let message = v1::ProbeRequest {
            payload: payload.to_vec(),
        };
        let (reply, address) = self
            .call(Kind::Write, |mut c, t| {
                let message = message.clone();
                async move { c.probe(request(message, t)).await }
            })
            .await?;
        Probe::try_from(reply).map_err(|e| Error::BadReply {
            address,
            reason: e.to_string(),
        })
    }

    /// Commits `toml` as a new runbook version (admin): its version, hash,
    /// log index, and warnings for names no agent announced.
    pub async fn apply_runbook(
        &self,
        toml: &str,
        source_name: &str,
    ) -> Result<v1::ApplyRunbookReply, Error> {
        let message = v1::ApplyRunbookRequest {
            toml: toml.to_owned(),
            source_name: source_name.chars().take(256).collect(),
        };
        let (reply, _) = self
            .call(Kind::Write, |mut c, t| {
                let message = message.clone();
                async move { c.apply_runbook(request(message, t)).await }
            })
            .await
            .map_err(|e| unimplemented(e, "ApplyRunbook"))?;
        Ok(reply)
    }

    /// A committed runbook version's text (`version` 0: the current one).
    pub async fn runbook(&self, version: u64) -> Result<v1::RunbookReply, Error> {
        let (reply, _) = self
            .call(Kind::Read, |mut c, t| async move {
                c.runbook(request(v1::RunbookRequest { version }, t)).await
            })
            .await
            .map_err(|e| unimplemented(e, "Runbook"))?;
        Ok(reply)
    }

    /// The current view once (any role may read it).
    pub async fn status(&self) -> Result<View, Error> {
        let (reply, address) = self
            .call(Kind::Read, |mut c, t| async move {
                c.status(request(v1::StatusRequest {}, t)).await
            })
            .await
            .map_err(|e| unimplemented(e, "Status"))?;
        View::try_from(reply).map_err(|e| Error::BadReply {
            address,
            reason: e.to_string(),
        })
    }

    /// Approves a proposed decision (operator).
    pub async fn approve(&self, decision_id: &str) -> Result<ActionReply, Error> {
        let message = v1::ApproveRequest {
            decision_id: identifier("decision id", decision_id)?,
        };
        self.act("Approve", message, |mut c, m, t| async move {
            c.approve(request(m, t)).await
        })
        .await
    }

    /// Rejects a proposed decision (operator); a reason is required.
    pub async fn reject(&self, decision_id: &str, reason: &str) -> Result<ActionReply, Error> {
        let message = v1::RejectRequest {
            decision_id: identifier("decision id", decision_id)?,
            reason: reason_text(reason, true)?,
        };
        self.act("Reject", message, |mut c, m, t| async move {
            c.reject(request(m, t)).await
        })
        .await
    }

    /// Switches a service to a path by hand (operator); a reason is required.
    pub async fn switch(
        &self,
        service: &str,
        path: &str,
        reason: &str,
    ) -> Result<ActionReply, Error> {
        let message = v1::SwitchRequest {
            service: identifier("service", service)?,
            path: identifier("path", path)?,
            reason: reason_text(reason, true)?,
        };
        self.act("Switch", message, |mut c, m, t| async move {
            c.switch(request(m, t)).await
        })
        .await
    }

    /// Stops automatic decisions for a service (operator).
    pub async fn freeze(&self, service: &str, reason: &str) -> Result<ActionReply, Error> {
        let message = v1::FreezeRequest {
            service: identifier("service", service)?,
            reason: reason_text(reason, false)?,
        };
        self.act("Freeze", message, |mut c, m, t| async move {
            c.freeze(request(m, t)).await
        })
        .await
    }

    /// Resumes automatic decisions for a frozen service (operator).
    pub async fn unfreeze(&self, service: &str, reason: &str) -> Result<ActionReply, Error> {
        let message = v1::UnfreezeRequest {
            service: identifier("service", service)?,
            reason: reason_text(reason, false)?,
        };
        self.act("Unfreeze", message, |mut c, m, t| async move {
            c.unfreeze(request(m, t)).await
        })
        .await
    }

    /// Audit entries in chain order from index `from` (1 is the first),
    /// at most `limit` (0: all there are, but never more than
    /// [`MAX_AUDIT_ENTRIES`]), read within the overall deadline.
    pub async fn audit(&self, from: u64, limit: u64) -> Result<Vec<AuditEntry>, Error> {
        let cap = if limit == 0 {
            MAX_AUDIT_ENTRIES
        } else {
            limit.min(MAX_AUDIT_ENTRIES)
        };
        let deadline = Instant::now() + self.deadline;
        let (mut stream, address) = self
            .call(Kind::Read, |mut c, _| async move {
                let message = v1::AuditRequest {
                    from_index: from.max(1),
                    limit: cap,
                };
                c.audit(request(message, self.deadline)).await
            })
            .await
            .map_err(|e| unimplemented(e, "Audit"))?;
        let mut entries = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, stream.message()).await;
            match next {
                Ok(Ok(Some(entry))) => {
                    entries.push(AuditEntry::from(entry));
                    if entries.len() as u64 >= cap {
                        return Ok(entries);
                    }
                }
                Ok(Ok(None)) => return Ok(entries),
                Ok(Err(status)) => {
                    return Err(Error::Rpc {
                        address,
                        code: status.code(),
                        message: shown(status.message()),
                    });
                }
                Err(_) => {
                    return Err(Error::Deadline {
                        deadline: self.deadline,
                        tried: {
                            let mut tried = Tried::default();
                            tried.push(&address, "the audit stream stalled");
                            tried
                        },
                    });
                }
            }
        }
    }

    /// Follows Operator.Watch for as long as the receiver lives: a full
    /// view after every (re)connection, then deltas. Connection losses are
    /// events too, then it reconnects through the same leader following as
    /// every call, with a growing pause (at most [`MAX_WATCH_BACKOFF`]).
    /// The receiving side never waits on the network.
    pub fn watch(self: &Arc<Self>, capacity: usize) -> tokio::sync::mpsc::Receiver<WatchUpdate> {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let client = Arc::clone(self);
        tokio::spawn(async move { client.follow(tx).await });
        rx
    }

    async fn follow(&self, tx: tokio::sync::mpsc::Sender<WatchUpdate>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let call = self
                .call(Kind::Read, |mut c, _| async move {
                    // No deadline on the request: the stream lives on.
                    c.watch(tonic::Request::new(v1::WatchRequest {})).await
                })
                .await
                .map_err(|e| unimplemented(e, "Watch"));
            let reason = match call {
                Ok((mut stream, address)) => {
                    if tx
                        .send(WatchUpdate::Connected {
                            address: address.clone(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut first = true;
                    loop {
                        let update = match stream.message().await {
                            Ok(Some(event)) => match watch_event(event, first) {
                                Ok(update) => update,
                                Err(reason) => break format!("{address} sent {reason}"),
                            },
                            Ok(None) => break format!("{address} ended the stream"),
                            Err(status) => break format!("{address}: {}", shown(status.message())),
                        };
                        first = false;
                        backoff = FIRST_BACKOFF;
                        if tx.send(update).await.is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    if matches!(error, Error::Unimplemented { .. }) {
                        backoff = MAX_WATCH_BACKOFF;
                    }
                    leitstand_proto::error_chain(&error)
                }
            };
            let retry_in = backoff;
            if tx
                .send(WatchUpdate::Disconnected { reason, retry_in })
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(retry_in) => {}
                () = tx.closed() => return,
            }
            backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
        }
    }

    /// An operator action: a write whose UNIMPLEMENTED names `rpc`.
    async fn act<M, F, Fut>(
        &self,
        rpc: &'static str,
        message: M,
        send: F,
    ) -> Result<ActionReply, Error>
    where
        M: Clone,
        F: Fn(Grpc<Channel>, M, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<v1::OperatorActionReply>, tonic::Status>>,
    {
        let (reply, _) = self
            .call(Kind::Write, |c, t| send(c, message.clone(), t))
            .await
            .map_err(|e| unimplemented(e, rpc))?;
        Ok(ActionReply::from(reply))
    }

    /// Runs `rpc` at controllers until one answers (see the module
    /// documentation); returns the answer and who gave it.
    async fn call<T, F, Fut>(&self, kind: Kind, rpc: F) -> Result<(T, String), Error>
    where
        F: Fn(Grpc<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.deadline;
        let mut tried = Tried::default();
        let mut candidates = self.candidates();
        let mut hint: Option<String> = None;
        let mut hops = 0;
        let mut backoff = FIRST_BACKOFF;
        // Whether this round met controllers that are up but know no
        // leader: worth another round while the deadline allows.
        let mut leaderless = false;
        // Whether this round already waited for an election.
        let mut paused = false;
        loop {
            let address = match (hint.take(), candidates.pop_front()) {
                (Some(hinted), next) => {
                    if let Some(next) = next {
                        candidates.push_front(next);
                    }
                    hinted
                }
                (None, Some(next)) => {
                    hops = 0;
                    next
                }
                (None, None) if leaderless => {
                    if !paused {
                        pause(&mut backoff, deadline).await;
                    }
                    (leaderless, paused) = (false, false);
                    candidates = self.candidates();
                    continue;
                }
                (None, None) => return Err(Error::Unreachable { tried }),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Deadline {
                    deadline: self.deadline,
                    tried,
                });
            }
            match self.attempt(&address, kind, deadline - now, &rpc).await {
                Attempt::Answered(answer) => return Ok((answer, address)),
                Attempt::Final(error) => return Err(error),
                Attempt::Failed(outcome) => {
                    tracing::debug!(%address, %outcome, "controller did not answer");
                    tried.push(&address, outcome);
                }
                Attempt::NotLeader(Some(leader)) if hops < MAX_HOPS && leader != address => {
                    tried.push(&address, format!("not leader; leader at {leader}"));
                    hops += 1;
                    hint = Some(leader);
                    leaderless = true;
                }
                Attempt::NotLeader(leader) => {
                    tried.push(
                        &address,
                        match leader {
                            Some(leader) if leader == address => {
                                "not leader, yet names itself the leader".to_owned()
                            }
                            Some(leader) => format!(
                                "not leader; leader at {leader}, not followed after {MAX_HOPS} hops"
                            ),
                            None => "not leader; leader unknown".to_owned(),
                        },
                    );
                    (leaderless, paused) = (true, true);
                    pause(&mut backoff, deadline).await;
                }
            }
        }
    }

    async fn attempt<T, F, Fut>(
        &self,
        address: &str,
        kind: Kind,
        remaining: Duration,
        rpc: &F,
    ) -> Attempt<T>
    where
        F: Fn(Grpc<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel = match self.channel(address, remaining).await {
            Ok(channel) => channel,
            Err(outcome) => return Attempt::Failed(outcome),
        };
        let wait = match kind {
            Kind::Read => READ_TIMEOUT.min(remaining),
            Kind::Write => remaining,
        };
        let client = Grpc::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let status = match tokio::time::timeout(wait, rpc(client, wait)).await {
            Ok(Ok(response)) => {
                self.remember(address, channel);
                return Attempt::Answered(response.into_inner());
            }
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::deadline_exceeded("no answer in time"),
        };
        if let Some(hint) = leader_hint(&status) {
            let leader = (!hint.leader_hint.is_empty()).then_some(hint.leader_hint);
            return Attempt::NotLeader(leader);
        }
        let address = address.to_owned();
        let message = shown(status.message());
        match status.code() {
            tonic::Code::Unavailable => {
                self.forget(&address);
                Attempt::Failed(format!("unavailable: {message}"))
            }
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled if kind == Kind::Read => {
                self.forget(&address);
                Attempt::Failed(format!("no answer within {:.1} s", wait.as_secs_f64()))
            }
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                self.forget(&address);
                Attempt::Final(Error::Unconfirmed {
                    address,
                    waited: wait,
                })
            }
            tonic::Code::PermissionDenied => Attempt::Final(Error::PermissionDenied {
                address,
                operator: self.operator.clone(),
                message,
            }),
            tonic::Code::Unauthenticated => {
                Attempt::Final(Error::Unauthenticated { address, message })
            }
            tonic::Code::InvalidArgument => {
                Attempt::Final(Error::InvalidArgument { address, message })
            }
            tonic::Code::FailedPrecondition => {
                Attempt::Final(Error::Precondition { address, message })
            }
            code => Attempt::Final(Error::Rpc {
                address,
                code,
                message,
            }),
        }
    }

    /// The cached channel to `address`, or a new connection.
    async fn channel(&self, address: &str, remaining: Duration) -> Result<Channel, String> {
        if let Some((cached, channel)) = &*self.last_good()
            && cached == address
        {
            return Ok(channel.clone());
        }
        let wait = CONNECT_TIMEOUT.min(remaining);
        match tokio::time::timeout(wait, self.tls.channel(address)).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(connect_failure(&e)),
            Err(_) => Err(format!("no connection within {:.1} s", wait.as_secs_f64())),
        }
    }

    /// The last controller that answered, then the configured ones.
    fn candidates(&self) -> VecDeque<String> {
        let first = self
            .last_good()
            .as_ref()
            .map(|(address, _)| address.clone());
        first
            .iter()
            .chain(
                self.controllers
                    .iter()
                    .filter(|c| Some(*c) != first.as_ref()),
            )
            .cloned()
            .collect()
    }

    fn remember(&self, address: &str, channel: Channel) {
        *self.last_good() = Some((address.to_owned(), channel));
    }

    fn forget(&self, address: &str) {
        let mut last_good = self.last_good();
        if last_good
            .as_ref()
            .is_some_and(|(cached, _)| cached == address)
        {
            *last_good = None;
        }
    }

    fn last_good(&self) -> std::sync::MutexGuard<'_, Option<(String, Channel)>> {
        // The guarded value is replaced whole, never left half-written.
        self.last_good
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Waits `backoff` (not past `deadline`) and doubles it for next time.
async fn pause(backoff: &mut Duration, deadline: Instant) {
    tokio::time::sleep((*backoff).min(deadline.saturating_duration_since(Instant::now()))).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// UNIMPLEMENTED from a controller that predates `rpc`, said plainly.
fn unimplemented(error: Error, rpc: &'static str) -> Error {
    match error {
        Error::Rpc {
            address,
            code: tonic::Code::Unimplemented,
            ..
        } => Error::Unimplemented { address, rpc },
        other => other,
    }
}

fn identifier(what: &str, value: &str) -> Result<String, Error> {
    Identifier::new(value)
        .map(|id| id.as_str().to_owned())
        .map_err(|e| Error::Usage(format!("{what} {value:?}: {}", e.reason)))
}

fn reason_text(reason: &str, required: bool) -> Result<String, Error> {
    let reason = reason.trim();
    if required && reason.is_empty() {
        return Err(Error::Usage(
            "a reason is required: say why, for the audit log".to_owned(),
        ));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::Usage(format!(
            "a reason has at most {MAX_REASON_BYTES} bytes; this one has {}",
            reason.len()
        )));
    }
    Ok(reason.to_owned())
}

/// One event of a Watch stream, validated; the first must be a full view.
fn watch_event(event: v1::WatchEvent, first: bool) -> Result<WatchUpdate, String> {
    match event.kind {
        Some(v1::watch_event::Kind::Full(view)) => View::try_from(view)
            .map(|v| WatchUpdate::Full(Box::new(v)))
            .map_err(|e| format!("an invalid view: {e}")),
        Some(v1::watch_event::Kind::Delta(_)) if first => {
            Err("a delta before the full view".to_owned())
        }
        Some(v1::watch_event::Kind::Delta(delta)) => Delta::try_from(delta)
            .map(|d| WatchUpdate::Delta(Box::new(d)))
            .map_err(|e| format!("an invalid delta: {e}")),
        None => Err("an empty event".to_owned()),
    }
}

fn request<M>(message: M, timeout: Duration) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    // Tells the controller when we stop listening, so it can stop too.
    request.set_timeout(timeout);
    request
}

fn cluster_status(reply: v1::ClusterStatusReply, address: String) -> Result<ClusterStatus, Error> {
    ClusterStatus::try_from(reply).map_err(|e| Error::BadReply {
        address,
        reason: e.to_string(),
    })
}

/// A controller's message, cut at a character boundary.
fn shown(message: &str) -> String {
    if message.len() <= MAX_SHOWN_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_SHOWN_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Why a connection failed, in a few words: the innermost reason that
/// `ClientTls` names, without the layers tonic wraps around it.
fn connect_failure(error: &ConnectError) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        match e.downcast_ref::<ConnectError>() {
            Some(ConnectError::Tcp { source, .. }) => {
                return match source.kind() {
                    std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                    std::io::ErrorKind::TimedOut => "no connection in time".to_owned(),
                    _ => format!("cannot connect: {source}"),
                };
            }
            Some(ConnectError::Handshake { source, .. }) => {
                return format!("TLS handshake failed: {source}");
            }
            Some(ConnectError::NotAController { source, .. }) => {
                return format!("not a controller of our trust domain: {source}");
            }
            Some(ConnectError::WrongKind { found, .. }) => {
                return format!("presented {found}, not a controller");
            }
            Some(ConnectError::Address { .. }) => return "not host:port".to_owned(),
            Some(ConnectError::Channel { .. }) | None => cause = e.source(),
        }
    }
    leitstand_proto::error_chain(error)
}
