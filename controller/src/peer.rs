//! Peer service: Raft traffic between controllers, and the one place where
//! its refusals become `tonic::Status`. Only `controller` certificates may
//! call it.
//!
//! Without a local Raft node ([`PeerService::inbox`] unset, a controller
//! running as a single node) it authenticates and refuses with
//! UNIMPLEMENTED. With one, every stream is checked in this order before
//! anything is decoded (raft-rs's protobuf 2.28 decoder has advisory
//! RUSTSEC-2024-0437, so only bounded bytes from an authenticated
//! controller reach it): certificate kind → the certificate's name is a
//! node id → per batch, `from` equals that id → 1..=4096 messages, each at
//! most [`MAX_RAFT_MESSAGE_BYTES`] and all together at most
//! [`MAX_PEER_MESSAGE_BYTES`] → decode → every message is from the batch's
//! sender and to this node → deliver the whole batch. A refusal is logged
//! with its reason, counted, and ends only this stream.

use std::sync::Arc;
use std::time::SystemTime;

use leitstand_proto::domain::NodeId;
use leitstand_proto::identity::{CertificateInvalid, PeerInfo, PeerKind, SpiffeId, require_kind};
use leitstand_proto::v1::peer_server::Peer;
use leitstand_proto::v1::{RaftBatch, RaftDone};
use protobuf::Message as _;
use raft::eraftpb::Message;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::MAX_PEER_MESSAGE_BYTES;
use crate::counters::{Counters, Rejection};

/// Raft messages per batch (peer.proto).
pub(crate) const MAX_BATCH_MESSAGES: usize = 4096;
/// Bytes of one encoded Raft message: it must fit a batch of its own, with
/// room for the batch's framing.
pub(crate) const MAX_RAFT_MESSAGE_BYTES: usize = MAX_PEER_MESSAGE_BYTES - (1 << 20);

/// Where the Peer service hands decoded Raft messages: the local node.
pub(crate) trait RaftInbox: Send + Sync + 'static {
    /// This node's id: every message must be addressed to it.
    fn node_id(&self) -> NodeId;
    /// Hands `messages` to the node without waiting (a full inbox drops
    /// them, as the network might); `false` when the node has stopped.
    fn deliver(&self, messages: Vec<Message>) -> bool;
}

/// The node id a controller identity names: `controller/<id>`, with the id
/// written canonically (no sign, no leading zeros), or `None`.
pub(crate) fn node_of(identity: &SpiffeId) -> Option<NodeId> {
    if identity.kind() != PeerKind::Controller {
        return None;
    }
    let name = identity.name().as_str();
    let id = name.parse::<u64>().ok().and_then(NodeId::new)?;
    (id.to_string() == name).then_some(id)
}

pub(crate) struct PeerService {
    pub(crate) counters: Arc<Counters>,
    /// The local Raft node; `None` while the controller runs as a single
    /// node.
    pub(crate) inbox: Option<Arc<dyn RaftInbox>>,
}

/// Why a Raft stream ends other than by the peer closing it.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the certificate's name {name:?} is not a node id")]
    NotANode { name: String },
    #[error("a batch from node {claimed}, but the certificate is node {certified}")]
    WrongSender { claimed: u64, certified: NodeId },
    #[error("a batch of {count} Raft messages; 1..={MAX_BATCH_MESSAGES} allowed")]
    BatchLength { count: usize },
    #[error("a Raft message of {bytes} bytes; at most {MAX_RAFT_MESSAGE_BYTES} allowed")]
    MessageTooLarge { bytes: usize },
    #[error("a batch of {bytes} bytes of Raft messages; at most {MAX_PEER_MESSAGE_BYTES} allowed")]
    BatchTooLarge { bytes: usize },
    #[error("Raft message {position} of the batch does not decode")]
    Undecodable {
        position: usize,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error(
        "Raft message {position} of a batch from node {batch_from} is from node {from} to node {to}; \
         this is node {local}"
    )]
    Misaddressed {
        position: usize,
        batch_from: u64,
        from: u64,
        to: u64,
        local: NodeId,
    },
    #[error("the Raft node here has stopped")]
    NodeStopped,
    /// Revoked by a CRL reloaded after the handshake, or past its notAfter.
    #[error(transparent)]
    Certificate(CertificateInvalid),
    /// Raised by tonic while reading the stream.
    #[error("{}", .0.message())]
    Inbound(Status),
}

impl Refusal {
    /// What to count: nothing when it is no fault of the peer's.
    fn rejection(&self) -> Option<Rejection> {
        match self {
            Refusal::NotANode { .. } | Refusal::WrongSender { .. } => Some(Rejection::NodeMismatch),
            Refusal::BatchLength { .. }
            | Refusal::Undecodable { .. }
            | Refusal::Misaddressed { .. } => Some(Rejection::InvalidMessage),
            Refusal::MessageTooLarge { .. } | Refusal::BatchTooLarge { .. } => {
                Some(Rejection::Oversized)
            }
            Refusal::NodeStopped => None,
            Refusal::Certificate(invalid) => Some(Rejection::from(invalid)),
            Refusal::Inbound(status) => match status.code() {
                Code::OutOfRange => Some(Rejection::Oversized),
                Code::Internal => Some(Rejection::InvalidMessage),
                // Cancelled, or the connection went away.
                _ => None,
            },
        }
    }

    fn code(&self) -> Code {
        match self {
            Refusal::NotANode { .. } | Refusal::WrongSender { .. } => Code::PermissionDenied,
            Refusal::BatchLength { .. }
            | Refusal::Undecodable { .. }
            | Refusal::Misaddressed { .. } => Code::InvalidArgument,
            Refusal::MessageTooLarge { .. } | Refusal::BatchTooLarge { .. } => {
                Code::ResourceExhausted
            }
            Refusal::NodeStopped => Code::Unavailable,
            Refusal::Certificate(_) => Code::Unauthenticated,
            Refusal::Inbound(status) => match status.code() {
                Code::OutOfRange => Code::ResourceExhausted,
                Code::Internal => Code::InvalidArgument,
                code => code,
            },
        }
    }

    /// Counts, logs and turns the refusal into the stream's status: the
    /// one place for that.
    fn into_status(self, counters: &Counters, peer: &SpiffeId) -> Status {
        let text = leitstand_proto::error_chain(&self);
        match self.rejection() {
            Some(why) => {
                counters.reject(why);
                tracing::warn!(%peer, reason = why.as_str(), "peer stream refused: {text}");
            }
            None => tracing::debug!(%peer, "peer stream ended: {text}"),
        }
        Status::new(self.code(), text)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        // A connection opened before its certificate was revoked or expired
        // opens no new Raft stream (I8).
        if let Some(info) = request.extensions().get::<PeerInfo>()
            && let Err(invalid) = info.still_valid(SystemTime::now())
        {
            return Err(Refusal::Certificate(invalid).into_status(&self.counters, &info.identity));
        }
        let peer = require_kind(&request, PeerKind::Controller).inspect_err(|status| {
            if status.code() == Code::PermissionDenied {
                self.counters.reject(Rejection::WrongKind);
                tracing::warn!(
                    reason = Rejection::WrongKind.as_str(),
                    "peer stream refused: {}",
                    status.message()
                );
            }
        })?;
        let identity = peer.identity.clone();
        let certificate = peer.clone();
        let Some(inbox) = &self.inbox else {
            tracing::warn!(peer = %identity, "Raft traffic from a peer, but this controller runs as a single node");
            return Err(Status::unimplemented(
                "this controller runs as a single node; Raft replication is not available yet",
            ));
        };
        match receive(inbox.as_ref(), &certificate, request.into_inner()).await {
            Ok(batches) => Ok(Response::new(RaftDone { batches })),
            Err(refusal) => Err(refusal.into_status(&self.counters, &identity)),
        }
    }
}

/// Reads batches until the peer closes the stream; the number received.
async fn receive(
    inbox: &dyn RaftInbox,
    certificate: &PeerInfo,
    mut stream: Streaming<RaftBatch>,
) -> Result<u64, Refusal> {
    let identity = &certificate.identity;
    let sender = node_of(identity).ok_or_else(|| Refusal::NotANode {
        name: identity.name().as_str().to_owned(),
    })?;
    let mut batches = 0;
    while let Some(batch) = stream.message().await.map_err(Refusal::Inbound)? {
        // Every batch: a link outlives neither a revocation nor its notAfter.
        certificate
            .still_valid(SystemTime::now())
            .map_err(Refusal::Certificate)?;
        let messages = open_batch(batch, sender, inbox.node_id())?;
        if !inbox.deliver(messages) {
            return Err(Refusal::NodeStopped);
        }
        batches += 1;
    }
    Ok(batches)
}

/// Checks a batch from `sender` to `local` and decodes its messages: all
/// of them, or a refusal.
fn open_batch(batch: RaftBatch, sender: NodeId, local: NodeId) -> Result<Vec<Message>, Refusal> {
    if batch.from != sender.get() {
        return Err(Refusal::WrongSender {
            claimed: batch.from,
            certified: sender,
        });
    }
    let count = batch.messages.len();
    if !(1..=MAX_BATCH_MESSAGES).contains(&count) {
        return Err(Refusal::BatchLength { count });
    }
    let mut total = 0usize;
    for bytes in &batch.messages {
        if bytes.len() > MAX_RAFT_MESSAGE_BYTES {
            return Err(Refusal::MessageTooLarge { bytes: bytes.len() });
        }
        total = total.saturating_add(bytes.len());
    }
    if total > MAX_PEER_MESSAGE_BYTES {
        return Err(Refusal::BatchTooLarge { bytes: total });
    }
    let mut messages = Vec::with_capacity(count);
    for (position, bytes) in batch.messages.iter().enumerate() {
        let message = Message::parse_from_bytes(bytes)
            .map_err(|source| Refusal::Undecodable { position, source })?;
        if message.from != sender.get() || message.to != local.get() {
            return Err(Refusal::Misaddressed {
                position,
                batch_from: batch.from,
                from: message.from,
                to: message.to,
                local,
            });
        }
        messages.push(message);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "test.leitstand.invalid";

    fn id(n: u64) -> NodeId {
        NodeId::new(n).expect("positive")
    }

    fn encoded(from: u64, to: u64) -> Vec<u8> {
        Message {
            from,
            to,
            ..Default::default()
        }
        .write_to_bytes()
        .expect("encodes")
    }

    #[test]
    fn node_ids_are_read_from_controller_names_only() {
        let of = |kind, name| node_of(&SpiffeId::new(TD, kind, name).expect("valid"));
        assert_eq!(of(PeerKind::Controller, "2"), Some(id(2)));
        assert_eq!(of(PeerKind::Controller, "02"), None);
        assert_eq!(of(PeerKind::Controller, "0"), None);
        assert_eq!(of(PeerKind::Controller, "two"), None);
        assert_eq!(of(PeerKind::Agent, "2"), None);
    }

    #[test]
    fn batches_are_checked_before_and_after_decoding() {
        let check = |from, messages: Vec<Vec<u8>>| {
            open_batch(RaftBatch { from, messages }, id(2), id(1)).map(|decoded| decoded.len())
        };
        assert_eq!(check(2, vec![encoded(2, 1), encoded(2, 1)]).ok(), Some(2));
        let refusal = |result: Result<usize, Refusal>| {
            let refusal = result.expect_err("refused");
            (refusal.code(), refusal.rejection())
        };
        assert_eq!(
            refusal(check(3, vec![encoded(3, 1)])),
            (Code::PermissionDenied, Some(Rejection::NodeMismatch))
        );
        assert_eq!(
            refusal(check(2, vec![])),
            (Code::InvalidArgument, Some(Rejection::InvalidMessage))
        );
        assert_eq!(
            refusal(check(2, vec![encoded(2, 1); MAX_BATCH_MESSAGES + 1])),
            (Code::InvalidArgument, Some(Rejection::InvalidMessage))
        );
        assert_eq!(
            refusal(check(2, vec![vec![0u8; MAX_RAFT_MESSAGE_BYTES + 1]])),
            (Code::ResourceExhausted, Some(Rejection::Oversized))
        );
        assert_eq!(
            refusal(check(2, vec![vec![0xFF; 8]])),
            (Code::InvalidArgument, Some(Rejection::InvalidMessage))
        );
        // A message relayed for another node, or to another node.
        assert_eq!(
            refusal(check(2, vec![encoded(2, 1), encoded(3, 1)])),
            (Code::InvalidArgument, Some(Rejection::InvalidMessage))
        );
        assert_eq!(
            refusal(check(2, vec![encoded(2, 3)])),
            (Code::InvalidArgument, Some(Rejection::InvalidMessage))
        );
    }
}
