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
use leitstand_proto::domain::NodeId;
use leitstand_proto::domain::bounds::MAX_ADDRESS_BYTES;
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
