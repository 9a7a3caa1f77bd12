//! The Raft wrapper: durable storage of the replicated log (redb), the
//! `RawNode` driver with its Ready loop, the transport seam, and the bridge
//! from raft-rs's slog logging to `tracing`.
//!
//! Architecture invariant: nothing outside this module touches raft-rs
//! types' persistence; the state machine, the commands and the message
//! router live elsewhere (STYLE.md, "Embedding raft-rs").

// Not wired into the running controller yet: the controller-cluster work
// wires this module into `Controller`. Until then only the tests use it.
#![cfg_attr(not(test), allow(dead_code))]

mod codec;
mod logger;
mod node;
mod peer_transport;
mod storage;
mod transport;

#[cfg(test)]
mod tests;
