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
mod gateway;
mod peer;
mod raft;
mod registry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::domain::{AgentId, Report, bounds};
use leitstand_proto::tls::{ClientTls, HandshakeCounters, ServerTls};
use leitstand_proto::v1::agent_gateway_server::AgentGatewayServer;
use leitstand_proto::v1::peer_server::PeerServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ControllerConfig, Rbac};
pub use counters::Rejection;

/// Largest Raft batch a peer may send.
const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;
/// Concurrent HTTP/2 streams per connection: an agent needs one.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

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
}

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    local_addr: SocketAddr,
    tls: Arc<ServerTls>,
    /// Our client identity towards the other controllers.
    peer_tls: Arc<ClientTls>,
    node: raft::RaftNode,
    registry: Arc<registry::Registry>,
    counters: Arc<counters::Counters>,
    #[allow(missing_debug_implementations)]
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Controller {
    /// Loads TLS material, binds `config.listen` and starts serving.
    pub async fn start(config: ControllerConfig) -> Result<Controller, Error> {
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
        // peers; a log that already has a membership keeps it.
        let voters = raft_proto_conf_state(&config);
        if storage
            .initialize_with_conf_state(voters)
            .map_err(|e| Error::Storage(Box::new(e)))?
        {
            tracing::info!(peers = ?config.peers, "bootstrapped a new Raft log");
        }
        let transport = Arc::new(raft::GrpcTransport::start(
            config.node_id,
            &config.peers,
            peer_tls.clone(),
            raft::PeerTransportConfig::default(),
        ));
        // The replicated state machine arrives with the controller-cluster
        // work (item 4); until then committed entries carry nothing to apply.
        let node = raft::RaftNode::start(
            raft::NodeConfig::new(config.node_id),
            storage,
            transport,
            Box::new(|_| {}),
        )
        .map_err(|e| Error::Raft(Box::new(e)))?;
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
        if config.metrics_listen.is_some() {
            tracing::warn!(
                "metrics_listen is set, but the metrics endpoint is not available yet; ignored"
            );
        }

        let registry = Arc::new(registry::Registry::default());
        let counters = Arc::new(counters::Counters::default());
        let (stop, stop_rx) = watch::channel(false);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AgentGatewayServer<gateway::Gateway>>()
            .await;
        let gateway = gateway::Gateway {
            node_id: config.node_id,
            raft: node.handle(),
            peers: config.peers.clone(),
            registry: registry.clone(),
            counters: counters.clone(),
            tls: tls.clone(),
            shutdown: stop_rx.clone(),
        };
        let peer = peer::PeerService {
            counters: counters.clone(),
            inbox: Some(Arc::new(node.handle())),
        };
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(health_service)
            .add_service(
                AgentGatewayServer::new(gateway)
                    .max_decoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES)
                    .max_encoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES),
            )
            .add_service(PeerServer::new(peer).max_decoding_message_size(MAX_PEER_MESSAGE_BYTES));
        let incoming = leitstand_proto::tls::incoming(listener, tls.clone());
        let mut stop_serving = stop_rx;
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = stop_serving.wait_for(|stop| *stop).await;
        }));
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
            registry,
            counters,
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

    /// The leader this controller knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        self.node.handle().status().leader
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
        if let Err(e) = self.node.stop().await {
            tracing::error!("stopping the Raft node: {e}");
        }
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

fn raft_proto_conf_state(config: &ControllerConfig) -> ::raft::eraftpb::ConfState {
    ::raft::eraftpb::ConfState {
        voters: config.peers.keys().map(|id| id.get()).collect(),
        ..Default::default()
    }
}
