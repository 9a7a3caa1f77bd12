//! The Raft wrapper: durable storage of the replicated log (redb), the
//! `RawNode` driver with its Ready loop, the transport seam, and the bridge
//! from raft-rs's slog logging to `tracing`.
//!
//! Architecture invariant: nothing outside this module touches raft-rs
//! types' persistence; the state machine, the commands and the message
//! router live elsewhere (STYLE.md, "Embedding raft-rs").

mod codec;
mod logger;
mod node;
mod peer_transport;
mod runtime;
mod storage;
mod transport;

pub(crate) use node::{
    Committed, Leadership, MembershipChange, NodeConfig, NodeHandle, ProposeError, RaftNode,
    ReplicationStatus, StateMachine,
};
pub(crate) use peer_transport::{GrpcTransport, LinkStats, PeerTransportConfig};
pub(crate) use runtime::RaftRuntime;
pub(crate) use storage::{RedbStorage, StateRecords, StateWrites, StorageOptions, WeakStorage};

#[cfg(test)]
mod tests;
