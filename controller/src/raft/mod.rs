//! The Raft wrapper: durable storage of the replicated log (redb), the
//! `RawNode` driver with its Ready loop, the transport seam, and the bridge
//! from raft-rs's slog logging to `tracing`.
//!
//! Architecture invariant: nothing outside this module touches raft-rs
//! types' persistence; the state machine, the commands and the message
//! router live elsewhere (STYLE.md, "Embedding raft-rs").

// `Controller` runs the node, its storage and the peer transport; the
// proposal API and parts of the storage API wait for the replicated state
// machine (the controller-cluster issue, item 4), the link statistics for
// cluster status (item 8), compaction (item 5). All of it is tested; remove
// this line when the last of them is wired.
#![cfg_attr(not(test), allow(dead_code))]

mod codec;
mod logger;
mod node;
mod peer_transport;
mod storage;
mod transport;

pub(crate) use node::{NodeConfig, NodeHandle, RaftNode};
pub(crate) use peer_transport::{GrpcTransport, PeerTransportConfig};
pub(crate) use storage::{RedbStorage, StorageOptions};

#[cfg(test)]
mod tests;
