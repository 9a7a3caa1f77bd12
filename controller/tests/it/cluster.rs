//! Controller clusters in this process: every node a real `Controller`
//! started from a real controller.toml, on its own loopback port with its
//! own redb file, talking Raft over mTLS gRPC; operators use the real
//! leader-following client with operator certificates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use leitstand_controller::{Controller, ControllerConfig, Rejection};
use leitstand_proto::domain::NodeId;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::v1::{self, operator_client::OperatorClient as RawOperatorClient};
use leitstand_tui::{OperatorClient, OperatorConfig};

use crate::support::{TestPki, wait_for};

fn node(id: u64) -> NodeId {
    NodeId::new(id).expect("a node id")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

struct Nodes {
    pki: TestPki,
    ports: BTreeMap<u64, u16>,
    bootstrap: BTreeSet<u64>,
    /// Extra `[cluster]` lines for every node.
    cluster_toml: String,
    running: BTreeMap<u64, Controller>,
}

impl Nodes {
    /// Nodes `1..=bootstrap` form the cluster; `joining` start empty with
    /// `join = true`, waiting to be added.
    async fn start(bootstrap: u64, joining: &[u64], cluster_toml: &str) -> Nodes {
        let pki = TestPki::new();
        let ids: Vec<u64> = (1..=bootstrap).chain(joining.iter().copied()).collect();
        for &id in &ids {
            pki.issue(PeerKind::Controller, &id.to_string());
        }
        for (name, _) in OPERATORS {
            pki.issue(PeerKind::Operator, name);
        }
        let mut nodes = Nodes {
            pki,
            ports: ids.iter().map(|&id| (id, free_port())).collect(),
            bootstrap: (1..=bootstrap).collect(),
            cluster_toml: cluster_toml.to_owned(),
            running: BTreeMap::new(),
        };
        for id in ids {
            nodes.start_node(id).await;
        }
        nodes
    }

    fn address(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id])
    }

    async fn start_node(&mut self, id: u64) {
        let join = !self.bootstrap.contains(&id);
        // A bootstrapping node lists the bootstrap members; a joining one
        // them and itself.
        let peers: Vec<String> = self
            .bootstrap
            .iter()
            .copied()
            .chain(join.then_some(id))
            .map(|peer| format!("{peer} = \"{}\"", self.address(peer)))
            .collect();
        let path = self.pki.root.path().join(format!("controller-{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = {id}\nlisten = \"{address}\"\ndata_dir = \"data-{id}\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-{id}.pem\"\nkey = \"pki/controller-{id}.key\"\n\
                 [cluster]\npeers = {{ {peers} }}\njoin = {join}\n{extra}\
                 [rbac]\nadmin = [\"admin\"]\noperator = [\"ops\"]\nviewer = [\"*\"]\n",
                address = self.address(id),
                peers = peers.join(", "),
                extra = self.cluster_toml,
            ),
        )
        .expect("write controller.toml");
        let config = ControllerConfig::load(&path).expect("a valid controller.toml");
        let controller = Controller::start(config)
            .await
            .expect("the controller starts");
        self.running.insert(id, controller);
    }

    /// The leader, once every bootstrap member follows it.
    async fn leader(&self) -> u64 {
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

    /// An operator client as `name`, with every running node's address.
    fn operator(&self, name: &str) -> OperatorClient {
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
    async fn raw_operator(
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

    /// Waits until `ids` have applied the same index and returns their
    /// state digests (which must then be equal).
    async fn converged_digests(&self, ids: &[u64]) -> BTreeMap<u64, (u64, [u8; 32])> {
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

    async fn shutdown(self) {
        for (_, controller) in self.running {
            controller
                .shutdown(Duration::from_secs(2))
                .await
                .expect("a clean shutdown");
        }
    }
}

const OPERATORS: [(&str, &str); 3] = [("admin", "admin"), ("ops", "operator"), ("guest", "viewer")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_apply_1000_probes_to_identical_states_across_snapshots() {
    let nodes = Nodes::start(
        3,
        &[],
        "snapshot_after_entries = 300\nkeep_entries_after_snapshot = 50\n",
    )
    .await;
    let leader = nodes.leader().await;
    let client = Arc::new(nodes.operator("ops"));
    let mut proposers = Vec::new();
    for proposer in 0..8u8 {
        let client = client.clone();
        proposers.push(tokio::spawn(async move {
            let mut indexes = Vec::new();
            for _ in 0..125 {
                let probe = client
                    .probe(&[proposer])
                    .await
                    .unwrap_or_else(|error| panic!("a probe of proposer {proposer}: {error}"));
                indexes.push(probe.committed_index);
            }
            indexes
        }));
    }
    let mut indexes = BTreeSet::new();
    for proposer in proposers {
        indexes.extend(proposer.await.expect("a proposer task"));
    }
    assert_eq!(
        indexes.len(),
        1000,
        "1000 probes at 1000 distinct log indexes"
    );

    let digests = nodes.converged_digests(&[1, 2, 3]).await;
    let distinct: BTreeSet<_> = digests.values().collect();
    assert_eq!(
        distinct.len(),
        1,
        "equal state at equal applied index: {digests:?}"
    );
    for (id, controller) in &nodes.running {
        assert_eq!(controller.probes_applied(), 1000, "node {id}");
    }

    // Every node snapshotted and compacted its log on its own.
    let status = client.cluster_status().await.expect("cluster status");
    assert!(status.confirmed_by_quorum);
    assert_eq!(status.leader_id, Some(node(leader)));
    assert!(status.snapshot_index >= 300, "{status:?}");
    assert!(status.first_index > 1, "the log was compacted: {status:?}");
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|member| member.voter));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_an_operator_may_do_and_followers_point_to_the_leader() {
    let nodes = Nodes::start(3, &[], "").await;
    let leader = nodes.leader().await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");

    // A viewer reads, but may not write.
    let mut guest = nodes.raw_operator(leader, "guest").await;
    let status = guest
        .cluster_status(v1::ClusterStatusRequest {})
        .await
        .expect("a viewer reads the cluster status")
        .into_inner();
    assert_eq!(status.leader_id, leader);
    let refused = guest
        .probe(v1::ProbeRequest { payload: vec![] })
        .await
        .expect_err("a viewer may not probe");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("operator role"),
        "{}",
        refused.message()
    );
    assert_eq!(
        nodes.running[&leader].rejected(Rejection::PermissionDenied),
        1
    );
    let refused = nodes
        .raw_operator(leader, "ops")
        .await
        .add_member(v1::AddMemberRequest {
            node_id: 9,
            address: "127.0.0.1:1".into(),
        })
        .await
        .expect_err("an operator may not change membership");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // A follower answers a write with the leader's address.
    let refused = nodes
        .raw_operator(follower, "ops")
        .await
        .probe(v1::ProbeRequest { payload: vec![] })
        .await
        .expect_err("a follower does not commit");
    let hint = leitstand_proto::operator::leader_hint(&refused).expect("a not-leader answer");
    assert_eq!(hint.leader_id, leader);
    assert_eq!(hint.leader_hint, nodes.address(leader));

    // Out-of-bounds input is refused, and the controller stays up.
    let refused = nodes
        .raw_operator(leader, "ops")
        .await
        .probe(v1::ProbeRequest {
            payload: vec![0; 65],
        })
        .await
        .expect_err("an oversized probe");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    nodes.operator("ops").probe(b"ok").await.expect("a probe");
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_to_five_and_shrinks_to_three_without_its_first_leader_while_probes_run() {
    let nodes = Nodes::start(3, &[4, 5], "").await;
    let first_leader = nodes.leader().await;
    let admin = nodes.operator("admin");

    // Probes run throughout; a leader change may fail a few, never all.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let prober = {
        let client = nodes.operator("ops");
        let (stop, committed, failed) = (stop.clone(), committed.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.probe(b"m").await {
                    Ok(_) => committed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let progress = |what: &str, before: u64| {
        let committed = committed.clone();
        let what = what.to_owned();
        async move {
            wait_for(
                &format!("probes to commit {what}"),
                Duration::from_secs(10),
                || committed.load(Ordering::Relaxed) > before + 5,
            )
            .await;
        }
    };
    progress("at the start", 0).await;

    for id in [4, 5] {
        let status = admin
            .add_member(node(id), &nodes.address(id))
            .await
            .unwrap_or_else(|error| panic!("adding node {id}: {error}"));
        let member = status
            .members
            .iter()
            .find(|member| member.node_id == node(id))
            .unwrap_or_else(|| panic!("node {id} in {status:?}"));
        assert!(member.voter, "node {id} is promoted to voter: {status:?}");
        progress(
            &format!("after adding node {id}"),
            committed.load(Ordering::Relaxed),
        )
        .await;
    }
    let status = admin.cluster_status().await.expect("status");
    assert_eq!(
        status.members.iter().filter(|m| m.voter).count(),
        5,
        "{status:?}"
    );

    // Removing the leader: it hands over first; the client follows.
    let other = (1..=3)
        .find(|&id| id != first_leader)
        .expect("another original");
    for id in [first_leader, other] {
        let status = admin
            .remove_member(node(id))
            .await
            .unwrap_or_else(|error| panic!("removing node {id}: {error}"));
        assert!(
            status
                .members
                .iter()
                .all(|member| member.node_id != node(id)),
            "node {id} is gone: {status:?}"
        );
        progress(
            &format!("after removing node {id}"),
            committed.load(Ordering::Relaxed),
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    prober.await.expect("the prober");

    let remaining: Vec<u64> = (1..=5)
        .filter(|&id| id != first_leader && id != other)
        .collect();
    let status = admin.cluster_status().await.expect("status");
    let members: Vec<u64> = status.members.iter().map(|m| m.node_id.get()).collect();
    assert_eq!(members, remaining, "{status:?}");
    assert!(status.members.iter().all(|m| m.voter));
    assert!(!status.joint_configuration);
    assert_ne!(status.leader_id, Some(node(first_leader)));
    let digests = nodes.converged_digests(&remaining).await;
    let distinct: BTreeSet<_> = digests.values().map(|(_, digest)| digest).collect();
    assert_eq!(distinct.len(), 1, "{digests:?}");
    assert!(
        failed.load(Ordering::Relaxed) < committed.load(Ordering::Relaxed),
        "probes mostly commit through the changes: {} failed, {} committed",
        failed.load(Ordering::Relaxed),
        committed.load(Ordering::Relaxed)
    );

    // Every change is in the audit chain, with the admin as actor.
    let leader = status.leader_id.expect("a leader").get();
    let mut audit = nodes
        .raw_operator(leader, "guest")
        .await
        .audit(v1::AuditRequest {
            from_index: 1,
            limit: 0,
        })
        .await
        .expect("the audit stream")
        .into_inner();
    let mut entries = Vec::new();
    while let Some(entry) = audit.message().await.expect("an audit entry") {
        entries.push(entry);
    }
    let changes: Vec<(String, String)> = entries
        .iter()
        .filter(|entry| entry.kind != "membership.bootstrap")
        .map(|entry| (entry.kind.clone(), entry.actor.clone()))
        .collect();
    let admin_did = |kind: &str| (kind.to_owned(), "operator/admin".to_owned());
    assert_eq!(
        changes,
        [
            admin_did("membership.learner_added"),
            admin_did("membership.voter_added"),
            admin_did("membership.learner_added"),
            admin_did("membership.voter_added"),
            admin_did("membership.removed"),
            admin_did("membership.removed"),
        ]
    );
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "the chain links");
    }
    nodes.shutdown().await;
}
