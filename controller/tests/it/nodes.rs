//! `Nodes`: a controller cluster in this process, every node a real
//! `Controller` started from a real controller.toml on its own loopback
//! port with its own redb file, talking Raft over mTLS gRPC. Shared by the
//! `it` and `failpoints` test targets.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leitstand_controller::{Controller, ControllerConfig};
use leitstand_proto::domain::NodeId;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::v1::{self, operator_client::OperatorClient as RawOperatorClient};
use leitstand_tui::{OperatorClient, OperatorConfig};

use crate::support::{TestPki, wait_for};

pub fn node(id: u64) -> NodeId {
    NodeId::new(id).expect("a node id")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

pub const OPERATORS: [(&str, &str); 3] =
    [("admin", "admin"), ("ops", "operator"), ("guest", "viewer")];

pub struct Nodes {
    pub pki: TestPki,
    pub ports: BTreeMap<u64, u16>,
    pub bootstrap: BTreeSet<u64>,
    /// Extra `[cluster]` lines for every node.
    pub cluster_toml: String,
    /// Extra `[cluster]` lines for one node (after `cluster_toml`).
    pub node_toml: BTreeMap<u64, String>,
    /// The address a node is listed at in `[cluster] peers`, where it is
    /// not the one it listens on (behind a proxy, say).
    pub advertised: BTreeMap<u64, String>,
    pub running: BTreeMap<u64, Controller>,
}

impl Nodes {
    /// Nodes `1..=bootstrap` form the cluster; `joining` start empty with
    /// `join = true`, waiting to be added.
    pub async fn start(bootstrap: u64, joining: &[u64], cluster_toml: &str) -> Nodes {
        let mut nodes = Nodes::prepare(bootstrap, joining, cluster_toml);
        nodes.start_all().await;
        nodes
    }

    /// [`Nodes::start`] without starting anyone: ports and certificates are
    /// chosen, so a test can add per-node configuration first.
    pub fn prepare(bootstrap: u64, joining: &[u64], cluster_toml: &str) -> Nodes {
        let pki = TestPki::new();
        let ids: Vec<u64> = (1..=bootstrap).chain(joining.iter().copied()).collect();
        for &id in &ids {
            pki.issue(PeerKind::Controller, &id.to_string());
        }
        for (name, _) in OPERATORS {
            pki.issue(PeerKind::Operator, name);
        }
        Nodes {
            pki,
            ports: ids.iter().map(|&id| (id, free_port())).collect(),
            bootstrap: (1..=bootstrap).collect(),
            cluster_toml: cluster_toml.to_owned(),
            node_toml: BTreeMap::new(),
            advertised: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }

    /// Starts every node not running yet.
    pub async fn start_all(&mut self) {
        let ids: Vec<u64> = self.ports.keys().copied().collect();
        for id in ids {
            if !self.running.contains_key(&id) {
                self.start_node(id).await;
            }
        }
    }

    /// Where node `id` listens.
    pub fn address(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id])
    }

    /// Where `[cluster] peers` says node `id` is.
    pub fn advertised_address(&self, id: u64) -> String {
        self.advertised
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.address(id))
    }

    pub async fn start_node(&mut self, id: u64) {
        let join = !self.bootstrap.contains(&id);
        // A bootstrapping node lists the bootstrap members; a joining one
        // them and itself.
        let peers: Vec<String> = self
            .bootstrap
            .iter()
            .copied()
            .chain(join.then_some(id))
            .map(|peer| format!("{peer} = \"{}\"", self.advertised_address(peer)))
            .collect();
        let path = self.pki.root.path().join(format!("controller-{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = {id}\nlisten = \"{address}\"\ndata_dir = \"data-{id}\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-{id}.pem\"\nkey = \"pki/controller-{id}.key\"\n\
                 [cluster]\npeers = {{ {peers} }}\njoin = {join}\n{extra}{own}\
                 [rbac]\nadmin = [\"admin\"]\noperator = [\"ops\"]\nviewer = [\"*\"]\n",
                address = self.address(id),
                peers = peers.join(", "),
                extra = self.cluster_toml,
                own = self.node_toml.get(&id).map_or("", String::as_str),
            ),
        )
        .expect("write controller.toml");
        let config = ControllerConfig::load(&path).expect("a valid controller.toml");
        let controller = Controller::start(config)
            .await
            .expect("the controller starts");
        self.running.insert(id, controller);
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.pki.root.path().join(format!("data-{id}"))
    }

    /// The leader, once every running bootstrap member follows it.
    pub async fn leader(&self) -> u64 {
        let mut leader = 0;
        wait_for(
            "one leader that the members agree on",
            Duration::from_secs(10),
            || {
                let leaders: BTreeSet<Option<u64>> = self
                    .running
                    .iter()
                    .filter(|(id, _)| self.bootstrap.contains(id))
                    .map(|(_, controller)| controller.leader())
                    .collect();
                match (leaders.len(), leaders.first()) {
                    (1, Some(&Some(id))) if self.running[&id].is_leader() => {
                        leader = id;
                        true
                    }
                    _ => false,
                }
            },
        )
        .await;
        leader
    }

    /// An operator client as `name`, with every node's address.
    pub fn operator(&self, name: &str) -> OperatorClient {
        let controllers: Vec<String> = self
            .ports
            .keys()
            .map(|&id| format!("\"{}\"", self.address(id)))
            .collect();
        let path = self.pki.root.path().join(format!("operator-{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "controllers = [{}]\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-{name}.pem\"\nkey = \"pki/operator-{name}.key\"\n",
                controllers.join(", ")
            ),
        )
        .expect("write operator.toml");
        let config = OperatorConfig::load(&path).expect("a valid operator.toml");
        OperatorClient::new(&config).expect("an operator client")
    }

    /// The generated client, straight to node `id`, as `name`.
    pub async fn raw_operator(
        &self,
        id: u64,
        name: &str,
    ) -> RawOperatorClient<tonic::transport::Channel> {
        let tls = self.pki.client(PeerKind::Operator, name);
        let channel = tls
            .channel(&self.address(id))
            .await
            .expect("a channel to the controller");
        RawOperatorClient::new(channel)
    }

    /// Node `id`'s ClusterStatus, asked of it directly (as a viewer).
    pub async fn cluster_status(&self, id: u64) -> v1::ClusterStatusReply {
        self.raw_operator(id, "guest")
            .await
            .cluster_status(v1::ClusterStatusRequest {})
            .await
            .unwrap_or_else(|status| panic!("ClusterStatus of node {id}: {status:?}"))
            .into_inner()
    }

    /// Waits until `ids` have applied the same index and returns their
    /// state digests (which must then be equal).
    pub async fn converged_digests(&self, ids: &[u64]) -> BTreeMap<u64, (u64, [u8; 32])> {
        let mut digests = BTreeMap::new();
        wait_for(
            &format!("nodes {ids:?} to apply the same index"),
            Duration::from_secs(10),
            || {
                digests = ids
                    .iter()
                    .map(|&id| (id, self.running[&id].state_digest().expect("state digest")))
                    .collect();
                digests
                    .values()
                    .map(|(applied, _)| applied)
                    .collect::<BTreeSet<_>>()
                    .len()
                    == 1
            },
        )
        .await;
        digests
    }

    pub async fn shutdown(self) {
        for (_, controller) in self.running {
            controller
                .shutdown(Duration::from_secs(2))
                .await
                .expect("a clean shutdown");
        }
    }
}

/// A TCP relay on loopback that forwards every connection to `target` and
/// counts the bytes it carried both ways: proof that traffic went through
/// it. Stops when dropped.
pub struct Relay {
    pub address: String,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the relay");
        let address = listener.local_addr().expect("relay address").to_string();
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = bytes.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let counted = counted.clone();
                connections.spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_target, to_target) = outbound.into_split();
                    // Either direction ending ends the connection.
                    tokio::select! {
                        () = pump(from_client, to_target, &counted) => {}
                        () = pump(from_target, to_client, &counted) => {}
                    }
                });
            }
        });
        Relay {
            address,
            bytes,
            task,
        }
    }

    /// Bytes carried so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, counting as it goes (a Raft stream never ends,
/// so counting at the end would see nothing).
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    counted: &std::sync::atomic::AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 16 << 10];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                counted.fetch_add(read as u64, std::sync::atomic::Ordering::Relaxed);
                if to.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
}
