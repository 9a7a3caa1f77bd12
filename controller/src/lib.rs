//! The Leitstand controller: serves agents (AgentGateway), operators and
//! peers (Peer) over mTLS on one listen address, plus grpc.health.v1.
//!
//! Shape: [`ControllerConfig::load`] → [`Controller::start`] binds and
//! spawns → the binary waits for signals (SIGHUP reloads TLS material,
//! SIGTERM/SIGINT drain) → [`Controller::shutdown`] ends agent sessions with
//! UNAVAILABLE so agents fail over at once, then waits a grace period.
#![forbid(unsafe_code)]

mod config;
mod counters;
mod engine;
mod gateway;
mod operator;
mod peer;
mod raft;
mod registry;
pub mod runbook;
mod state;
mod telemetry;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::domain::NodeId;
use leitstand_proto::domain::{AgentId, Report, bounds};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::tls::{ClientTls, HandshakeCounters, ServerTls, TlsConnection};
use leitstand_proto::v1::agent_gateway_server::AgentGatewayServer;
use leitstand_proto::v1::operator_server::OperatorServer;
use leitstand_proto::v1::peer_server::PeerServer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected as _;

pub use config::{ControllerConfig, RaftSettings, Rbac};
pub use counters::Rejection;
pub use telemetry::TelemetrySettings;

/// The audit chain's entries and their verification (`leitstand audit`).
pub mod audit {
    pub use crate::state::{AuditEntry, ChainBreak, verify};
}

/// Largest Raft batch a peer may send.
const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;
/// Concurrent HTTP/2 streams per connection: an agent needs one, a
/// benchmark's concurrent probes more.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Largest operator request or answer (a runbook is at most 1 MiB).
const MAX_OPERATOR_MESSAGE_BYTES: usize = 4 << 20;

/// What stops a controller from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in controller.toml (binaries exit 2).
    #[error(transparent)]
    Config(leitstand_proto::Error),
    #[error("TLS material")]
    Tls(#[source] leitstand_proto::Error),
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server stopped")]
    Serve(#[source] tonic::transport::Error),
    /// The Raft log in the data directory cannot be used (corrupt,
    /// truncated, another node's); it is never reset automatically.
    #[error("the Raft log")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the Raft node")]
    Raft(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot start the Raft thread")]
    RaftThread(#[source] std::io::Error),
}

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    local_addr: SocketAddr,
    tls: Arc<ServerTls>,
    /// Our client identity towards the other controllers.
    peer_tls: Arc<ClientTls>,
    node: raft::RaftNode,
    /// Runs `node` and its peer links; declared after `node` so that, when
    /// a controller is dropped without `shutdown`, it is dropped after it.
    raft_runtime: raft::RaftRuntime,
    /// Serves the other controllers' connections on the Raft thread.
    controller_server: JoinHandle<Result<(), tonic::transport::Error>>,
    state: state::ClusterState,
    /// Keeps the transport's peers and the recorded addresses current.
    membership: JoinHandle<()>,
    /// Stops serving health once the Raft node stopped on its own.
    raft_watch: JoinHandle<()>,
    /// The failover engine (acts while this node leads).
    engine: JoinHandle<()>,
    registry: Arc<registry::Registry>,
    counters: Arc<counters::Counters>,
    telemetry: telemetry::Telemetry,
    #[allow(missing_debug_implementations)]
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Controller {
    /// Loads TLS material, binds `config.listen` and starts serving.
    pub async fn start(config: ControllerConfig) -> Result<Controller, Error> {
        #[cfg(feature = "failpoints")]
        failpoints_from_environment();
        leitstand_proto::files::create_private_dir(&config.data_dir).map_err(|source| {
            Error::DataDir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        let tls = Arc::new(ServerTls::load(config.tls.clone()).map_err(Error::Tls)?);
        let peer_tls = Arc::new(ClientTls::load(config.tls.clone()).map_err(Error::Tls)?);
        let storage = raft::RedbStorage::open(
            &config.data_dir,
            config.node_id,
            raft::StorageOptions::default(),
        )
        .map_err(|e| Error::Storage(Box::new(e)))?;
        // Every member bootstraps the same voters from the same [cluster]
        // peers; a log that already has a membership keeps it. A joining
        // node starts without one and learns it from the leader.
        if config.raft.join {
            if storage.conf_state() == ::raft::eraftpb::ConfState::default() {
                tracing::info!(
                    "joining an existing cluster: waiting to be added (`leitstand cluster add`)"
                );
            }
        } else if storage
            .bootstrap(raft_proto_conf_state(&config))
            .map_err(|e| Error::Storage(Box::new(e)))?
        {
            tracing::info!(peers = ?config.peers, "bootstrapped a new Raft log");
        }
        let records = storage
            .state_records()
            .map_err(|e| Error::Storage(Box::new(e)))?;
        let state = state::ClusterState::load(storage.applied(), &records)
            .map_err(|e| Error::Storage(Box::new(e)))?;
        let addresses = operator::AddressBook {
            configured: Arc::new(config.peers.clone()),
            replicated: state.watch_addresses(),
            routes: Arc::new(config.peer_routes.clone()),
        };
        if !config.peer_routes.is_empty() {
            tracing::info!(routes = ?config.peer_routes, "dialling these peers through [cluster] peer_routes");
        }
        // The node's driver and its peer links run on a thread of their
        // own, so a gateway busy with thousands of sessions cannot delay
        // ticks and heartbeats into an election (raft/runtime.rs).
        let raft_runtime = raft::RaftRuntime::start().map_err(Error::RaftThread)?;
        let (transport, node) = {
            let _on_raft_thread = raft_runtime.enter();
            let transport = Arc::new(raft::GrpcTransport::start(
                config.node_id,
                &addresses.dial_targets(),
                peer_tls.clone(),
                raft::PeerTransportConfig::default(),
            ));
            let node = raft::RaftNode::start(
                node_config(&config),
                storage,
                transport.clone(),
                Box::new(state.clone()),
            )
            .map_err(|e| Error::Raft(Box::new(e)))?;
            (transport, node)
        };
        let membership = tokio::spawn(keep_membership_current(
            config.node_id,
            node.handle(),
            state.clone(),
            addresses.clone(),
            transport.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                address: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            address: config.listen,
            source,
        })?;
        let registry = Arc::new(registry::Registry::default());
        let counters = Arc::new(counters::Counters::default());
        let telemetry = telemetry::Telemetry::start(
            &config,
            telemetry::Sources {
                node_id: config.node_id,
                raft: node.handle(),
                registry: registry.clone(),
                counters: counters.clone(),
                tls: tls.clone(),
                transport,
            },
        )
        .await?;
        let (stop, stop_rx) = watch::channel(false);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AgentGatewayServer<gateway::Gateway>>()
            .await;
        let raft_watch = tokio::spawn(refuse_when_raft_stops(
            node.handle(),
            health_reporter.clone(),
        ));
        let (engine_inbox, engine) = engine::start(
            node.handle(),
            state.clone(),
            registry.clone(),
            telemetry.recorder(),
            counters.clone(),
            stop_rx.clone(),
        );
        let gateway = gateway::Gateway {
            node_id: config.node_id,
            raft: node.handle(),
            addresses: addresses.clone(),
            registry: registry.clone(),
            counters: counters.clone(),
            tls: tls.clone(),
            shutdown: stop_rx.clone(),
            engine: engine_inbox,
        };
        let operator = operator::OperatorService {
            node_id: config.node_id,
            raft: node.handle(),
            state: state.clone(),
            addresses,
            rbac: config.rbac.clone(),
            counters: counters.clone(),
            registry: registry.clone(),
            storage: node.storage().downgrade(),
        };
        let peer = peer::PeerService {
            counters: counters.clone(),
            inbox: Some(Arc::new(node.handle())),
        };
        let agent_gateway = AgentGatewayServer::new(gateway)
            .max_decoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES)
            .max_encoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES);
        let operator = OperatorServer::new(operator)
            .max_decoding_message_size(MAX_OPERATOR_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_OPERATOR_MESSAGE_BYTES);
        let peer = PeerServer::new(peer).max_decoding_message_size(MAX_PEER_MESSAGE_BYTES);
        // The same services behind two servers, which differ only in where
        // their connections run (`split_incoming`).
        let router = || {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(5)))
                .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                .add_service(health_service.clone())
                .add_service(agent_gateway.clone())
                .add_service(operator.clone())
                .add_service(peer.clone())
        };
        let (incoming, from_controllers) =
            split_incoming(leitstand_proto::tls::incoming(listener, tls.clone()));
        let mut stop_serving = stop_rx.clone();
        let server = tokio::spawn(router().serve_with_incoming_shutdown(incoming, async move {
            let _ = stop_serving.wait_for(|stop| *stop).await;
        }));
        let controller_server = {
            let _on_raft_thread = raft_runtime.enter();
            tokio::spawn(router().serve_with_incoming(from_controllers))
        };
        tracing::info!(
            node_id = %config.node_id,
            listen = %local_addr,
            identity = %tls.identity(),
            "controller serving"
        );
        Ok(Controller {
            local_addr,
            tls,
            peer_tls,
            node,
            raft_runtime,
            controller_server,
            state,
            membership,
            raft_watch,
            engine,
            registry,
            counters,
            telemetry,
            health: health_reporter,
            stop,
            server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Re-reads certificate, key, CA bundle and CRL (on SIGHUP). New
    /// handshakes use the new material; open streams continue.
    pub fn reload_tls(&self) -> Result<(), Error> {
        self.tls.reload().map_err(Error::Tls)?;
        self.peer_tls.reload().map_err(Error::Tls)
    }

    /// Whether this controller is the Raft leader now.
    pub fn is_leader(&self) -> bool {
        self.node.handle().status().role == ::raft::StateRole::Leader
    }

    /// Resolves once this controller's Raft node has stopped: at shutdown,
    /// or on its own when it could not persist (a failed write to the Raft
    /// log; see `raft/node.rs`). A stopped node acknowledges nothing more;
    /// the controller then refuses all work until it is restarted, so a
    /// binary may as well exit (code 1) when this resolves before shutdown.
    pub async fn raft_stopped(&self) {
        let mut status = self.node.handle().watch_status();
        // The sender lives in the node's task: closed means stopped too.
        let _ = status.wait_for(|status| !status.running).await;
    }

    /// The leader this controller knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        self.node.handle().status().leader
    }

    /// The applied index and a SHA-256 of the replicated state at that
    /// index, read from this node's file: equal on every member at the same
    /// applied index.
    pub fn state_digest(&self) -> Result<(u64, [u8; 32]), Error> {
        self.node
            .storage()
            .state_digest()
            .map_err(|e| Error::Storage(Box::new(e)))
    }

    /// Write probes applied so far (Operator.Probe).
    pub fn probes_applied(&self) -> u64 {
        self.state.probes()
    }

    pub fn handshake_counters(&self) -> &HandshakeCounters {
        self.tls.counters()
    }

    pub fn rejected(&self, why: Rejection) -> u64 {
        self.counters.rejected(why)
    }

    pub fn reports_accepted(&self) -> u64 {
        self.counters
            .reports_accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `agent` has an open session.
    pub fn is_connected(&self, agent: &AgentId) -> bool {
        self.registry.is_connected(agent)
    }

    /// The highest accepted sequence number and latest report of `agent`.
    pub fn latest_report(&self, agent: &AgentId) -> Option<(u64, Option<Report>)> {
        self.registry.latest(agent)
    }

    /// Whether the server task has stopped (it should not, until shutdown).
    pub fn is_finished(&self) -> bool {
        self.server.is_finished()
    }

    /// Stops accepting, ends agent sessions with UNAVAILABLE, and waits up
    /// to `grace` for connections to close.
    pub async fn shutdown(self, grace: Duration) -> Result<(), Error> {
        // Health checkers and load balancers see the drain before it starts.
        self.health
            .set_not_serving::<AgentGatewayServer<gateway::Gateway>>()
            .await;
        let _ = self.stop.send(true);
        self.raft_watch.abort();
        self.membership.abort();
        self.engine.abort();
        if let Err(e) = self.node.stop().await {
            tracing::error!("stopping the Raft node: {e}");
        }
        // The node's task is done: its peers' connections and its own peer
        // links end with the thread.
        self.controller_server.abort();
        drop(self.raft_runtime);
        self.telemetry.shutdown().await;
        let mut server = self.server;
        match tokio::time::timeout(grace, &mut server).await {
            Ok(Ok(result)) => result.map_err(Error::Serve),
            Ok(Err(join)) => {
                tracing::error!(error = %join, "the server task ended abnormally");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(grace = ?grace, "connections still open after the grace period; closing them");
                server.abort();
                Ok(())
            }
        }
    }
}

type Incoming = ReceiverStream<Result<TlsConnection, std::io::Error>>;

/// Sends the connections of other controllers (Raft traffic) to the server
/// on the Raft thread and all others to the main one. A leader busy with
/// thousands of agent sessions would otherwise read its followers' answers
/// late, and check_quorum would make it step down although every follower
/// heard its heartbeats (measured at 5 000 agents on a loaded machine,
/// docs/benchmarks.md "Ingest"). Ends, closing the listener, when the main
/// server stops.
fn split_incoming(incoming: Incoming) -> (Incoming, Incoming) {
    let mut incoming = incoming.into_inner();
    let (main_tx, main_rx) = mpsc::channel(64);
    let (raft_tx, raft_rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let connection = tokio::select! {
                next = incoming.recv() => match next {
                    Some(connection) => connection,
                    None => return,
                },
                () = main_tx.closed() => return,
            };
            let from_controller = matches!(&connection, Ok(connection)
                if connection.connect_info().identity.kind() == PeerKind::Controller);
            let server = if from_controller { &raft_tx } else { &main_tx };
            // A server that has stopped takes no more connections: dropped.
            let _ = server.send(connection).await;
        }
    });
    (ReceiverStream::new(main_rx), ReceiverStream::new(raft_rx))
}

/// Configures fail-rs from `FAILPOINTS` (e.g.
/// `FAILPOINTS="storage::fsync=sleep(200)"`) once per process. fail-rs's
/// scenario is process-wide and resets every point when set up, so the
/// first controller of a process sets it up and keeps it for good; points
/// configured later (`fail::cfg`, tests) are left alone. An invalid
/// `FAILPOINTS` panics at start (fail-rs), which only a failpoints build
/// can meet.
#[cfg(feature = "failpoints")]
fn failpoints_from_environment() {
    static SETUP: std::sync::Once = std::sync::Once::new();
    SETUP.call_once(|| {
        let scenario = fail::FailScenario::setup();
        tracing::warn!(configured = ?fail::list(), "this controller is built with failpoints (FAILPOINTS)");
        // Dropping it would clear every point again.
        std::mem::forget(scenario);
    });
}

/// Once the Raft node stops on its own (a storage error: the disk is full
/// or failing), this controller can acknowledge nothing: the node's status
/// already says it leads nothing (sessions and operator writes are sent
/// on, peers get no answer). This also tells health checkers and load
/// balancers, and says in the log what an operator must do.
async fn refuse_when_raft_stops(
    raft: raft::NodeHandle,
    health: tonic_health::server::HealthReporter,
) {
    let mut status = raft.watch_status();
    if status.wait_for(|status| !status.running).await.is_err() {
        // The node was dropped without a word (the controller itself was
        // dropped): nothing left to tell.
        return;
    }
    health
        .set_not_serving::<AgentGatewayServer<gateway::Gateway>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tracing::error!(
        "this controller's Raft node has stopped (see the error above): it acknowledges nothing and refuses agents, operators and peers until it is restarted; fix the disk, then restart it, and it recovers from its Raft log"
    );
}

fn node_config(config: &ControllerConfig) -> raft::NodeConfig {
    let settings = &config.raft;
    raft::NodeConfig {
        tick_interval: settings.tick,
        election_tick: settings.election_ticks,
        heartbeat_tick: settings.heartbeat_ticks,
        snapshot_after_entries: settings.snapshot_after_entries,
        keep_entries_after_snapshot: settings.keep_entries_after_snapshot,
        ..raft::NodeConfig::new(config.node_id)
    }
}

/// Follows the replicated membership: points the transport at every known
/// member (through its `[cluster] peer_routes` entry where there is one),
/// and has the first leader record the bootstrap members' advertised
/// addresses in the log, so nodes added later learn them.
async fn keep_membership_current(
    node_id: NodeId,
    raft: raft::NodeHandle,
    state: state::ClusterState,
    addresses: operator::AddressBook,
    transport: Arc<raft::GrpcTransport>,
) {
    let mut replicated = state.watch_addresses();
    let mut status = raft.watch_status();
    loop {
        transport.set_peers(&addresses.dial_targets());
        let leading = status.borrow_and_update().role == ::raft::StateRole::Leader;
        if leading {
            record_bootstrap_addresses(node_id, &raft, &state, &addresses).await;
        }
        tokio::select! {
            changed = replicated.changed() => if changed.is_err() { return },
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

async fn record_bootstrap_addresses(
    node_id: NodeId,
    raft: &raft::NodeHandle,
    state: &state::ClusterState,
    addresses: &operator::AddressBook,
) {
    let Some(replication) = raft.inspect().await else {
        return;
    };
    let recorded = state.addresses();
    let missing: Vec<state::MemberAddress> = replication
        .conf_state
        .voters
        .iter()
        .chain(&replication.conf_state.learners)
        .filter_map(|&id| {
            let node = NodeId::new(id)?;
            if recorded.contains_key(&node) {
                return None;
            }
            Some(state::MemberAddress {
                node_id: id,
                address: addresses.configured.get(&node)?.clone(),
            })
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let command = state::Command::RecordMembers {
        members: missing,
        actor: format!("controller/{node_id}"),
        at_unix_ms: state::now_unix_ms(),
    };
    if let Err(error) = raft.propose(command.encode()).await {
        // The next leadership or membership change tries again.
        tracing::debug!(%error, "recording the members' addresses did not commit");
    }
}

fn raft_proto_conf_state(config: &ControllerConfig) -> ::raft::eraftpb::ConfState {
    ::raft::eraftpb::ConfState {
        voters: config.peers.keys().map(|id| id.get()).collect(),
        ..Default::default()
    }
}
