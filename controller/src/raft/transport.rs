//! How a Raft node hands its messages to the network: the `Transport`
//! trait. The gRPC `Peer` transport implements it later; the tests use an
//! in-process one wrapped in fault filters (`tests/transport_simulate.rs`).

use std::sync::Arc;

use raft::eraftpb::Message;

/// Carries Raft messages to their `to` node.
///
/// Contract: `send` never blocks and never waits for the network. A
/// message that cannot be delivered now (peer unknown, queue full,
/// connection down) is dropped: Raft retransmits what matters (appends
/// are retried on the next heartbeat, votes on the next election), and a
/// node that waited on a slow peer would stop ticking and lose its
/// leadership. Messages to one peer should keep their order.
pub(crate) trait Transport: Send + Sync + 'static {
    fn send(&self, messages: Vec<Message>);
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send(&self, messages: Vec<Message>) {
        (**self).send(messages);
    }
}
