//! Controller clusters in this process: every node a real `Controller`
//! started from a real controller.toml, on its own loopback port with its
//! own redb file, talking Raft over mTLS gRPC; operators use the real
//! leader-following client with operator certificates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use leitstand_controller::Rejection;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::v1;

use crate::nodes::{Nodes, Relay, node};
use crate::support::{Session, wait_for};

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
async fn an_agent_on_the_leader_is_sent_on_as_soon_as_leadership_moves() {
    let nodes = Nodes::start(3, &[], "").await;
    let leader = nodes.leader().await;
    let successor = (1..=3).find(|&id| id != leader).expect("a follower");
    nodes.pki.issue(PeerKind::Agent, "mover");
    let tls = nodes.pki.client(PeerKind::Agent, "mover");
    let (mut session, _) =
        Session::must_open(&tls, nodes.running[&leader].local_addr(), "mover", 1).await;
    session.must_ack(1).await;

    let mut admin = nodes.raw_operator(leader, "admin").await;
    admin
        .transfer_leader(v1::TransferLeaderRequest {
            to_node_id: successor,
        })
        .await
        .expect("the transfer succeeds");
    // The transfer answers once the old leader knows the new one; the
    // session heard of the step-down before that, from the node's
    // leadership watch, without waiting for any timer of its own.
    let first = tokio::time::timeout(Duration::from_secs(1), session.next())
        .await
        .expect("NotLeader within 1 s of the transfer");
    match first {
        Ok(v1::ControllerMessage {
            kind: Some(v1::controller_message::Kind::NotLeader(not_leader)),
        }) => {
            // At the step-down the old leader may not know its successor yet.
            assert!(
                [0, successor].contains(&not_leader.leader_id),
                "{not_leader:?}"
            );
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_carries_equal_state_digests_at_equal_applied_index() {
    let nodes = Nodes::start(3, &[], "").await;
    nodes.leader().await;
    let client = nodes.operator("ops");
    for payload in [b"a", b"b", b"c"] {
        client.probe(payload).await.expect("a probe commits");
    }

    // Asked of each node itself, over the wire, as the chaos checker does.
    let mut replies = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for id in 1..=3 {
            replies.insert(id, nodes.cluster_status(id).await);
        }
        let indexes: BTreeSet<u64> = replies
            .values()
            .map(|reply| reply.digest_applied_index)
            .collect();
        if indexes.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes never answered at one applied index: {indexes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let digests: BTreeSet<&str> = replies
        .values()
        .map(|reply| reply.state_digest.as_str())
        .collect();
    assert_eq!(
        digests.len(),
        1,
        "equal digests at equal index: {replies:#?}"
    );
    let digest = *digests.first().expect("a digest");
    assert_eq!(digest.len(), 64, "{digest}");
    assert!(
        digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "lower-case hex: {digest}"
    );
    // Taken after the probes: bootstrap snapshot, then at least the three.
    let reply = &replies[&1];
    assert!(reply.digest_applied_index >= 4, "{reply:?}");
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_route_carries_the_raft_traffic_and_clients_see_only_advertised_addresses() {
    // As in the chaos sandbox: node 2 is advertised at an address where
    // nothing listens (the sandbox's proxy), and listens elsewhere. Node 1
    // reaches it only through a relay named in its peer_routes; node 3 has
    // a route straight to where node 2 listens.
    let mut nodes = Nodes::prepare(3, &[], "");
    let advertised = format!("127.0.0.1:{}", crate::nodes::free_port());
    nodes.advertised.insert(2, advertised.clone());
    let relay = Relay::start(nodes.address(2)).await;
    nodes.node_toml.insert(
        1,
        format!("peer_routes = {{ 2 = \"{}\" }}\n", relay.address),
    );
    nodes.node_toml.insert(
        3,
        format!("peer_routes = {{ 2 = \"{}\" }}\n", nodes.address(2)),
    );
    nodes.start_all().await;

    nodes.leader().await;
    let client = nodes.operator("ops");
    for payload in [b"r1", b"r2", b"r3"] {
        client.probe(payload).await.expect("a probe commits");
    }
    let digests = nodes.converged_digests(&[1, 2, 3]).await;
    let distinct: BTreeSet<_> = digests.values().collect();
    assert_eq!(distinct.len(), 1, "{digests:?}");
    assert!(digests[&2].0 >= 4, "node 2 applied the probes: {digests:?}");
    assert!(
        relay.bytes() > 0,
        "node 1's Raft traffic to node 2 went through the relay"
    );

    // Everyone is told the advertised address of node 2, never a route:
    // in the status of every node and in the replicated records.
    for id in 1..=3 {
        let status = nodes.cluster_status(id).await;
        let member = status
            .members
            .iter()
            .find(|member| member.node_id == 2)
            .unwrap_or_else(|| panic!("node 2 in {status:?}"));
        assert_eq!(member.address, advertised, "as node {id} tells it");
    }
    nodes.shutdown().await;
}
