//! Peer service: Raft traffic between controllers. Only `controller`
//! certificates may call it. Replication itself arrives with the
//! controller-cluster issue; until then the service authenticates and
//! refuses with UNIMPLEMENTED.

use std::sync::Arc;

use leitstand_proto::identity::{PeerKind, require_kind};
use leitstand_proto::v1::peer_server::Peer;
use leitstand_proto::v1::{RaftBatch, RaftDone};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::counters::{Counters, Rejection};

pub(crate) struct PeerService {
    pub(crate) counters: Arc<Counters>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
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
        tracing::warn!(peer = %peer.identity, "Raft traffic from a peer, but this controller runs as a single node");
        Err(Status::unimplemented(
            "this controller runs as a single node; Raft replication is not available yet",
        ))
    }
}
