//! Tests of the Raft wrapper: raft-rs 0.7's `MemStorage` cases ported as
//! data against `RedbStorage` on a temporary directory, recovery after a
//! reopen, refusal of damaged and foreign files, the slog bridge,
//! three in-process nodes over a fault-injecting transport, and three
//! nodes over the gRPC Peer transport with real mTLS sockets.

mod logger;
mod node;
mod peer_transport;
mod storage;
mod transport_simulate;
