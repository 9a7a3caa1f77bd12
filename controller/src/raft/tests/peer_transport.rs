//! Three Raft nodes on temporary directories, each behind a real tonic
//! server with the Peer service on 127.0.0.1, connected by `GrpcTransport`
//! over mTLS with certificates from `leitstand_proto::pki`: elections and
//! commits, a dead peer that must not slow the others, its restart on the
//! same address, and controllers that are not who they claim to be.
//!
//! These tests use real time (real sockets, real handshakes). Waits are
//! bounded (`wait_for`) and say what they waited for; timings are measured
//! with `tokio::time::Instant`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::domain::NodeId;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::{ClientTls, ServerTls, TlsFiles};
use leitstand_proto::v1::RaftBatch;
use leitstand_proto::v1::peer_client::PeerClient;
use leitstand_proto::v1::peer_server::PeerServer;
use protobuf::Message as _;

use raft::eraftpb::{ConfState, Message};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::node::{AppliedLog, RecordingMachine, TestCluster, node_id, wait_for};
use crate::MAX_PEER_MESSAGE_BYTES;
use crate::counters::{Counters, Rejection};
use crate::peer::{PeerService, RaftInbox};
use crate::raft::node::{NodeConfig, NodeHandle, RaftNode};
use crate::raft::peer_transport::{Backoff, GrpcTransport, PeerTransportConfig};
use crate::raft::storage::{RedbStorage, StorageOptions};
use crate::raft::transport::Transport;

const TRUST_DOMAIN: &str = "test.leitstand.invalid";

/// Reconnects quickly enough for a test that restarts a peer.
fn transport_config() -> PeerTransportConfig {
    PeerTransportConfig {
        backoff_max: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(2),
        ..PeerTransportConfig::default()
    }
}

/// A CA and controller certificates for 127.0.0.1 in a temporary directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(root: &Path) -> Pki {
        let dir = root.join("pki");
        pki::init(&dir, TRUST_DOMAIN, false).expect("pki init");
        Pki { dir }
    }

    fn issue(&self, kind: PeerKind, name: &str) {
        let controller = kind == PeerKind::Controller;
        pki::issue(
            &self.dir,
            &IssueRequest {
                kind,
                name: name.to_owned(),
                dns: vec![],
                ips: if controller {
                    vec![std::net::Ipv4Addr::LOCALHOST.into()]
                } else {
                    vec![]
                },
                validity: Validity::days_from_now(1),
                force: true,
            },
        )
        .expect("pki issue");
    }

    fn files(&self, kind: PeerKind, name: &str) -> TlsFiles {
        pki::peer_files(&self.dir, kind, name)
    }

    fn server(&self, name: &str) -> Arc<ServerTls> {
        Arc::new(ServerTls::load(self.files(PeerKind::Controller, name)).expect("server TLS"))
    }

    fn client(&self, kind: PeerKind, name: &str) -> Arc<ClientTls> {
        Arc::new(ClientTls::load(self.files(kind, name)).expect("client TLS"))
    }
}

/// One running controller: its node, its transport and its Peer server.
struct Running {
    node: RaftNode,
    transport: Arc<GrpcTransport>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

struct Cluster {
    root: tempfile::TempDir,
    pki: Pki,
    addresses: BTreeMap<NodeId, String>,
    running: BTreeMap<u64, Running>,
    counters: BTreeMap<u64, Arc<Counters>>,
    applied: BTreeMap<u64, AppliedLog>,
}

/// Serves the Peer service for `inbox` on `listener` until aborted.
fn serve(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    counters: Arc<Counters>,
    inbox: Option<Arc<dyn RaftInbox>>,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let service = PeerService { counters, inbox };
    let router = tonic::transport::Server::builder()
        .add_service(PeerServer::new(service).max_decoding_message_size(MAX_PEER_MESSAGE_BYTES));
    tokio::spawn(router.serve_with_incoming(leitstand_proto::tls::incoming(listener, tls)))
}

async fn bind_loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port")
}

impl TestCluster for Cluster {
    fn running(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }
    fn handle(&self, id: u64) -> NodeHandle {
        self.running[&id].node.handle()
    }
    fn applied_log(&self, id: u64) -> AppliedLog {
        self.applied[&id].clone()
    }
}

impl Cluster {
    /// Nodes 1..=3 with one membership; `start` says which run now (the
    /// others only have an address, where nothing answers until started).
    async fn start(start: &[u64]) -> Cluster {
        let root = tempfile::tempdir().expect("a temporary directory");
        let pki = Pki::new(root.path());
        let mut listeners = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for id in 1..=3u64 {
            pki.issue(PeerKind::Controller, &id.to_string());
            let listener = bind_loopback().await;
            let address = listener.local_addr().expect("bound address");
            addresses.insert(node_id(id), address.to_string());
            listeners.insert(id, listener);
            let dir = root.path().join(format!("node-{id}"));
            std::fs::create_dir(&dir).expect("node directory");
            let storage = RedbStorage::open(&dir, node_id(id), StorageOptions::default())
                .expect("opening a node's Raft log");
            let voters = ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            };
            assert!(storage.bootstrap(voters).expect("bootstrap"));
        }
        let mut cluster = Cluster {
            root,
            pki,
            addresses,
            running: BTreeMap::new(),
            counters: (1..=3).map(|id| (id, Arc::default())).collect(),
            applied: (1..=3).map(|id| (id, AppliedLog::default())).collect(),
        };
        for (id, listener) in listeners {
            if start.contains(&id) {
                cluster.start_node(id, listener);
            }
        }
        cluster
    }

    fn address(&self, id: u64) -> SocketAddr {
        self.addresses[&node_id(id)]
            .parse()
            .expect("a socket address")
    }

    fn start_node(&mut self, id: u64, listener: TcpListener) {
        let storage = RedbStorage::open(
            &self.root.path().join(format!("node-{id}")),
            node_id(id),
            StorageOptions::default(),
        )
        .expect("opening a node's Raft log");
        let transport = Arc::new(GrpcTransport::start(
            node_id(id),
            &self.addresses,
            self.pki.client(PeerKind::Controller, &id.to_string()),
            transport_config(),
        ));
        let machine = Box::new(RecordingMachine(self.applied[&id].clone()));
        let node = RaftNode::start(
            NodeConfig::new(node_id(id)),
            storage,
            transport.clone(),
            machine,
        )
        .expect("starting a node");
        let server = serve(
            listener,
            self.pki.server(&id.to_string()),
            self.counters[&id].clone(),
            Some(Arc::new(node.handle())),
        );
        self.running.insert(
            id,
            Running {
                node,
                transport,
                server,
            },
        );
    }

    /// Stops node `id`: its server stops accepting, its node stops (its
    /// open streams answer UNAVAILABLE from then on), its links close.
    async fn stop(&mut self, id: u64) {
        let running = self.running.remove(&id).expect("a running node");
        running.server.abort();
        running
            .node
            .stop()
            .await
            .unwrap_or_else(|error| panic!("node {id} ended with an error: {error}"));
        drop(running.transport);
    }

    /// Starts node `id` again from its files, on its old address.
    async fn restart(&mut self, id: u64) {
        let address = self.address(id);
        // The old listener closes as its accept task notices the server
        // is gone.
        let mut listener = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while listener.is_none() {
            match TcpListener::bind(address).await {
                Ok(bound) => listener = Some(bound),
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot listen on {address} again within 5 s: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        self.start_node(id, listener.expect("bound"));
    }

    fn transport(&self, id: u64) -> &GrpcTransport {
        &self.running[&id].transport
    }

    async fn stop_all(mut self) {
        for id in self.running.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_and_commit_over_mtls() {
    let cluster = Cluster::start(&[1, 2, 3]).await;
    let leader = cluster.must_elect(Duration::from_secs(5)).await;
    let first = cluster.must_commit(leader, b"first").await;
    let second = cluster.must_commit(leader, b"second").await;
    assert_eq!(second, first + 1);
    let mut took = Vec::new();
    for i in 0..20u8 {
        let started = Instant::now();
        cluster
            .handle(leader)
            .propose(vec![i])
            .await
            .unwrap_or_else(|error| panic!("proposal {i}: {error}"));
        took.push(started.elapsed());
    }
    took.sort();
    eprintln!(
        "commit latency over mTLS, 3 nodes: median {:?}, max {:?}",
        took[10], took[19]
    );
    // The followers apply what the leader applied.
    cluster.must_commit(leader, b"last").await;
    let on_leader = cluster.applied_data(leader);
    for id in 1..=3 {
        assert_eq!(cluster.applied_data(id), on_leader, "node {id}");
    }
    // Everything went over the links, one stream each, without drops.
    for id in 1..=3 {
        for peer in (1..=3).filter(|&peer| peer != id) {
            let stats = cluster
                .transport(id)
                .stats(node_id(peer))
                .expect("a link per peer");
            // Followers talk to the leader, not to each other.
            if id == leader || peer == leader {
                assert!(
                    stats.sent > 0 && stats.batches > 0,
                    "{id} → {peer}: {stats:?}"
                );
            }
            assert_eq!(stats.connects, 1, "{id} → {peer}: {stats:?}");
            assert_eq!(stats.failures, 0, "{id} → {peer}: {stats:?}");
            assert_eq!(stats.dropped_queue_full, 0, "{id} → {peer}: {stats:?}");
            assert_eq!(stats.dropped_unsendable, 0, "{id} → {peer}: {stats:?}");
        }
        assert_eq!(cluster.transport(id).dropped_unknown_peer(), 0);
        for why in Rejection::ALL {
            assert_eq!(cluster.counters[&id].rejected(why), 0, "node {id}: {why:?}");
        }
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_neither_slows_the_others_nor_misses_anything_after_restart() {
    let mut cluster = Cluster::start(&[1, 2, 3]).await;
    let leader = cluster.must_elect(Duration::from_secs(5)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.must_commit(leader, b"before").await;

    cluster.stop(follower).await;
    // A burst of proposals commits on the remaining majority at disk and
    // loopback speed, not at the dead peer's timeouts.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20u8 {
        let one = Instant::now();
        cluster
            .handle(leader)
            .propose(vec![b'a' + i])
            .await
            .unwrap_or_else(|error| panic!("proposal {i} with a peer down: {error}"));
        slowest = slowest.max(one.elapsed());
    }
    let burst = started.elapsed();
    eprintln!("20 proposals with a peer down: {burst:?}, slowest {slowest:?}");
    assert!(
        burst < Duration::from_secs(1),
        "20 proposals took {burst:?} (slowest {slowest:?}) with node {follower} down"
    );
    cluster.must_commit(leader, b"during").await;
    // The leader noticed: the link went down and what was queued for the
    // dead peer was dropped, not kept.
    wait_for(
        "the leader's link to the stopped peer to fail",
        Duration::from_secs(5),
        || {
            let stats = cluster.transport(leader).stats(node_id(follower))?;
            (stats.failures > 0).then_some(())
        },
    )
    .await;

    cluster.restart(follower).await;
    let target = cluster.handle(leader).status().applied;
    let restarted = cluster.handle(follower);
    let caught_up = Instant::now();
    wait_for(
        &format!("the restarted node {follower} to apply up to index {target}"),
        Duration::from_secs(5),
        || (restarted.status().applied >= target).then_some(()),
    )
    .await;
    eprintln!("restarted node caught up in {:?}", caught_up.elapsed());
    assert_eq!(
        cluster.applied_data(follower),
        cluster.applied_data(leader),
        "the restarted node applied the same entries, each once"
    );
    let leader = cluster.must_elect(Duration::from_secs(5)).await;
    cluster.must_commit(leader, b"after").await;
    let stats = cluster
        .transport(leader)
        .stats(node_id(follower))
        .expect("a link");
    assert!(stats.connects >= 1, "{stats:?}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_does_not_slow_the_majority() {
    // Node 3's address accepts TCP connections and never says a word: the
    // worst case, every connection attempt to it waits for a timeout.
    let mut cluster = Cluster::start(&[1, 2]).await;
    let black_hole = TcpListener::bind(cluster.address(3))
        .await
        .expect("node 3's address");
    let leader = cluster.must_elect(Duration::from_secs(5)).await;
    // Were sends to node 3 waiting on its connection, a proposal would
    // wait out the connect timeout; without that, each takes milliseconds.
    // The bound is that timeout, not a speed: a loaded machine stays far
    // below it, a blocking transport reaches it.
    let connect_timeout = transport_config().connect_timeout;
    let mut slowest = Duration::ZERO;
    for i in 0..20u8 {
        let started = Instant::now();
        cluster
            .handle(leader)
            .propose(vec![i])
            .await
            .unwrap_or_else(|error| panic!("proposal {i} with a silent peer: {error}"));
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("20 proposals with a silent peer: the slowest took {slowest:?}");
    assert!(
        slowest < connect_timeout,
        "a proposal took {slowest:?} with node 3 silent: sends wait for its connection ({connect_timeout:?})"
    );
    let stats = cluster
        .transport(leader)
        .stats(node_id(3))
        .expect("a link to node 3");
    assert_eq!(stats.connects, 0, "{stats:?}");
    assert_eq!(stats.sent, 0, "{stats:?}");
    drop(black_hole);
    // Once node 3 runs, it joins and catches up.
    cluster.restart(3).await;
    cluster.must_commit(leader, b"with three").await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_is_not_who_it_claims_is_refused() {
    let cluster = Cluster::start(&[1]).await;
    let address = cluster.address(1).to_string();

    // Server side: controller 3's certificate, claiming to be node 2.
    cluster.pki.issue(PeerKind::Controller, "3");
    let impostor = cluster.pki.client(PeerKind::Controller, "3");
    let send = |from: u64, messages: Vec<Vec<u8>>| {
        let impostor = impostor.clone();
        let address = address.clone();
        async move {
            let channel = impostor.channel(&address).await.expect("channel");
            PeerClient::new(channel)
                .raft(tokio_stream::iter(vec![RaftBatch { from, messages }]))
                .await
        }
    };
    let status = send(2, vec![encoded(2, 1)])
        .await
        .expect_err("node 3 must not speak for node 2");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("a batch from node 2, but the certificate is node 3"),
        "{status:?}"
    );
    assert_eq!(cluster.counters[&1].rejected(Rejection::NodeMismatch), 1);
    // A batch whose messages claim another sender is refused too.
    let status = send(3, vec![encoded(2, 1)])
        .await
        .expect_err("a message from node 2 inside node 3's batch");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(cluster.counters[&1].rejected(Rejection::InvalidMessage), 1);
    // Its own, well-addressed messages are taken.
    let done = send(3, vec![encoded(3, 1)])
        .await
        .expect("node 3 speaking for itself");
    assert_eq!(done.into_inner().batches, 1);
    assert_eq!(cluster.counters[&1].rejected(Rejection::NodeMismatch), 1);

    // A controller certificate whose name is no node id.
    cluster.pki.issue(PeerKind::Controller, "backup");
    let unnamed = cluster.pki.client(PeerKind::Controller, "backup");
    let channel = unnamed.channel(&address).await.expect("channel");
    let status = PeerClient::new(channel)
        .raft(tokio_stream::iter(vec![RaftBatch {
            from: 1,
            messages: vec![encoded(1, 1)],
        }]))
        .await
        .expect_err("no node id, no Raft");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(cluster.counters[&1].rejected(Rejection::NodeMismatch), 2);

    // Client side: a transport that expects node 2 at node 1's address
    // refuses to send there.
    let misconfigured = GrpcTransport::start(
        node_id(3),
        &BTreeMap::from([(node_id(2), address.clone())]),
        impostor.clone(),
        transport_config(),
    );
    misconfigured.send(vec![Message {
        from: 3,
        to: 2,
        ..Default::default()
    }]);
    let stats = wait_for(
        "the link to the wrong node to fail",
        Duration::from_secs(5),
        || {
            misconfigured
                .stats(node_id(2))
                .filter(|stats| stats.failures > 0)
        },
    )
    .await;
    assert_eq!((stats.connects, stats.sent), (0, 0), "{stats:?}");
    let error = stats.last_error.expect("the reason");
    assert!(
        error.contains("controller/1, but node 2 is configured there"),
        "{error}"
    );
    drop(misconfigured);
    cluster.stop_all().await;
}

#[test]
fn backoff_doubles_with_jitter_up_to_its_maximum() {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5), 7);
    let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
    for (n, delay) in delays.iter().enumerate() {
        let ceiling = (Duration::from_millis(50) * 2u32.pow(n as u32)).min(Duration::from_secs(5));
        assert!(
            *delay >= ceiling / 2 && *delay <= ceiling,
            "wait {n} is {delay:?}, outside [{:?}, {ceiling:?}]",
            ceiling / 2
        );
    }
    backoff.reset();
    assert!(backoff.next_delay() <= Duration::from_millis(50));
}

/// Hands what arrives to the test.
struct ChannelInbox {
    id: NodeId,
    arrivals: tokio::sync::mpsc::UnboundedSender<Vec<Message>>,
}

impl RaftInbox for ChannelInbox {
    fn node_id(&self) -> NodeId {
        self.id
    }
    fn deliver(&self, messages: Vec<Message>) -> bool {
        self.arrivals.send(messages).is_ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_in_order_and_in_batches_without_delay() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(root.path());
    pki.issue(PeerKind::Controller, "1");
    pki.issue(PeerKind::Controller, "2");
    let listener = bind_loopback().await;
    let address = listener.local_addr().expect("bound address").to_string();
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let server = serve(
        listener,
        pki.server("2"),
        counters.clone(),
        Some(Arc::new(ChannelInbox {
            id: node_id(2),
            arrivals,
        })),
    );
    let transport = GrpcTransport::start(
        node_id(1),
        &BTreeMap::from([
            (node_id(1), "127.0.0.1:1".to_owned()),
            (node_id(2), address),
        ]),
        pki.client(PeerKind::Controller, "1"),
        transport_config(),
    );
    let message = |index: u64| Message {
        from: 1,
        to: 2,
        index,
        ..Default::default()
    };
    let next = async |arrived: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<Message>>| {
        tokio::time::timeout(Duration::from_secs(5), arrived.recv())
            .await
            .expect("a batch within 5 s")
            .expect("the inbox is open")
    };

    // One at a time: the time from send to delivery on the other side.
    let mut took = Vec::new();
    for index in 0..50 {
        let started = Instant::now();
        transport.send(vec![message(index)]);
        let batch = next(&mut arrived).await;
        took.push(started.elapsed());
        assert_eq!(
            batch.iter().map(|m| m.index).collect::<Vec<_>>(),
            vec![index]
        );
    }
    took.sort();
    eprintln!(
        "one message across the transport: median {:?}, max {:?}",
        took[25], took[49]
    );
    assert!(
        took[25] < Duration::from_millis(20),
        "median {:?} from send to delivery: {took:?}",
        took[25]
    );

    // Many at once: batched, and in order.
    transport.send((100..3100).map(message).collect());
    let mut indexes = Vec::new();
    let mut batches = 0;
    while indexes.len() < 3000 {
        let batch = next(&mut arrived).await;
        assert!(batch.len() <= 1024, "a batch of {}", batch.len());
        batches += 1;
        indexes.extend(batch.iter().map(|m| m.index));
    }
    assert_eq!(indexes, (100..3100).collect::<Vec<_>>());
    assert!(batches < 3000, "{batches} batches for 3000 messages");
    // The local node and unknown nodes have no link.
    transport.send(vec![Message {
        from: 1,
        to: 7,
        ..Default::default()
    }]);
    assert_eq!(transport.dropped_unknown_peer(), 1);
    assert!(transport.stats(node_id(1)).is_none());
    let stats = transport.stats(node_id(2)).expect("a link to node 2");
    assert_eq!(stats.sent, 3050, "{stats:?}");
    assert_eq!(stats.connects, 1, "{stats:?}");
    for why in Rejection::ALL {
        assert_eq!(counters.rejected(why), 0, "{why:?}");
    }
    drop(transport);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(root.path());
    pki.issue(PeerKind::Controller, "1");
    // Accepts TCP, never completes a handshake: the link stays connecting.
    let black_hole = bind_loopback().await;
    let address = black_hole.local_addr().expect("bound address").to_string();
    let transport = GrpcTransport::start(
        node_id(1),
        &BTreeMap::from([(node_id(2), address)]),
        pki.client(PeerKind::Controller, "1"),
        PeerTransportConfig {
            queue_capacity: 8,
            ..transport_config()
        },
    );
    let started = Instant::now();
    for index in 0..100 {
        transport.send(vec![Message {
            from: 1,
            to: 2,
            index,
            ..Default::default()
        }]);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(50),
        "100 sends to a stuck peer took {took:?}"
    );
    let stats = transport.stats(node_id(2)).expect("a link to node 2");
    assert_eq!(stats.dropped_queue_full, 92, "{stats:?}");
    assert_eq!((stats.connects, stats.sent), (0, 0), "{stats:?}");
    drop(transport);
    drop(black_hole);
}
