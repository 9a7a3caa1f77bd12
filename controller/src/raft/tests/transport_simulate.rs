//! An in-process network for Raft nodes and fault filters over any
//! `Transport`, in the style of TiKV's test_raftstore transport_simulate.rs:
//! isolate a node, partition the cluster, drop messages at a rate.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use raft::eraftpb::Message;

use crate::raft::node::NodeHandle;
use crate::raft::transport::Transport;

/// Delivers messages straight into the nodes' inboxes.
#[derive(Clone, Default)]
pub(super) struct LocalNetwork {
    nodes: Arc<Mutex<HashMap<u64, NodeHandle>>>,
}

impl LocalNetwork {
    /// Routes messages for `handle`'s node to it (again, after a restart).
    pub(super) fn register(&self, handle: NodeHandle) {
        self.nodes
            .lock()
            .expect("network lock")
            .insert(handle.id().get(), handle);
    }

    /// Messages for `id` are lost from now on, as to a dead machine.
    pub(super) fn unregister(&self, id: u64) {
        self.nodes.lock().expect("network lock").remove(&id);
    }
}

impl Transport for LocalNetwork {
    fn send(&self, messages: Vec<Message>) {
        let nodes = self.nodes.lock().expect("network lock");
        for message in messages {
            // Unknown or stopped: lost, as on a real network.
            if let Some(node) = nodes.get(&message.to) {
                node.deliver([message]);
            }
        }
    }
}

/// Decides which messages travel.
pub(super) trait Filter: Send + Sync {
    /// Removes the messages that are lost.
    fn filter(&self, messages: &mut Vec<Message>);
}

/// The filters in force, shared by every node's [`FilteredTransport`].
#[derive(Clone, Default)]
pub(super) struct Filters(Arc<Mutex<Vec<Arc<dyn Filter>>>>);

impl Filters {
    pub(super) fn add(&self, filter: impl Filter + 'static) {
        self.0.lock().expect("filters lock").push(Arc::new(filter));
    }

    /// Heals the network.
    pub(super) fn clear(&self) {
        self.0.lock().expect("filters lock").clear();
    }
}

/// A transport whose messages pass the shared filters first.
pub(super) struct FilteredTransport<T> {
    pub(super) inner: T,
    pub(super) filters: Filters,
}

impl<T: Transport> Transport for FilteredTransport<T> {
    fn send(&self, mut messages: Vec<Message>) {
        let filters = self.filters.0.lock().expect("filters lock").clone();
        for filter in filters {
            filter.filter(&mut messages);
        }
        if !messages.is_empty() {
            self.inner.send(messages);
        }
    }
}

/// Drops everything to and from one node.
pub(super) struct Isolate(pub(super) u64);

impl Filter for Isolate {
    fn filter(&self, messages: &mut Vec<Message>) {
        messages.retain(|message| message.from != self.0 && message.to != self.0);
    }
}

/// Drops everything between the two sides.
pub(super) struct Partition {
    pub(super) left: BTreeSet<u64>,
    pub(super) right: BTreeSet<u64>,
}

impl Filter for Partition {
    fn filter(&self, messages: &mut Vec<Message>) {
        messages.retain(|message| {
            let crosses = (self.left.contains(&message.from) && self.right.contains(&message.to))
                || (self.right.contains(&message.from) && self.left.contains(&message.to));
            !crosses
        });
    }
}

/// Drops each message with probability `percent`/100, from a seeded
/// generator so a failing run can be repeated.
pub(super) struct DropRate {
    percent: u64,
    state: Mutex<u64>,
}

impl DropRate {
    pub(super) fn new(percent: u64, seed: u64) -> Self {
        DropRate {
            percent,
            // xorshift must not start at zero.
            state: Mutex::new(seed | 1),
        }
    }

    fn next(&self) -> u64 {
        let mut state = self.state.lock().expect("rng lock");
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }
}

impl Filter for DropRate {
    fn filter(&self, messages: &mut Vec<Message>) {
        messages.retain(|_| self.next() % 100 >= self.percent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: u64, to: u64) -> Message {
        Message {
            from,
            to,
            ..Default::default()
        }
    }

    fn routes(filter: &dyn Filter) -> Vec<(u64, u64)> {
        let mut messages: Vec<Message> = [(1, 2), (2, 1), (1, 3), (3, 1), (2, 3), (3, 2)]
            .into_iter()
            .map(|(from, to)| message(from, to))
            .collect();
        filter.filter(&mut messages);
        messages.iter().map(|m| (m.from, m.to)).collect()
    }

    #[test]
    fn filters_drop_what_they_say() {
        assert_eq!(routes(&Isolate(1)), vec![(2, 3), (3, 2)]);
        let partition = Partition {
            left: [1].into(),
            right: [2].into(),
        };
        assert_eq!(routes(&partition), vec![(1, 3), (3, 1), (2, 3), (3, 2)]);
        let mut many: Vec<Message> = (0..1000).map(|_| message(1, 2)).collect();
        DropRate::new(30, 7).filter(&mut many);
        assert!(
            (600..800).contains(&many.len()),
            "about 70% of 1000 kept, got {}",
            many.len()
        );
    }
}
