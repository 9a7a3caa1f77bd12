//! Fault injection into the Raft storage of real controllers (fail-rs),
//! built only with the `failpoints` feature:
//! `cargo test -p leitstand-controller --features failpoints --test failpoints`.
//!
//! fail-rs's registry is process-wide and the three controllers of a test
//! share this process, so the tests use the node-scoped names
//! (`storage::fsync@2`) and run one at a time.

#[path = "it/nodes.rs"]
mod nodes;
#[path = "it/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leitstand_proto::identity::PeerKind;
use leitstand_proto::v1;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::nodes::Nodes;
use crate::support::{must_log, wait_for};

/// One failpoint test at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Removes every failpoint this test configured, also when it fails.
struct Points(Vec<String>);

impl Points {
    fn cfg(&mut self, name: String, actions: &str) {
        fail::cfg(&name, actions).unwrap_or_else(|error| panic!("failpoint {name}: {error}"));
        self.0.push(name);
    }
}

impl Drop for Points {
    fn drop(&mut self) {
        for name in &self.0 {
            fail::remove(name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_slow_fsync_does_not_stop_the_cluster_committing() {
    let _serial = SERIAL.lock().await;
    let nodes = Nodes::start(3, &[], "").await;
    let leader = nodes.leader().await;
    let slow = (1..=3).find(|&id| id != leader).expect("a follower");
    // `sleep(50)` from FAILPOINTS does the same; a callback also counts,
    // so the test knows the follower's commits really were slowed.
    let slowed = Arc::new(AtomicU64::new(0));
    let counted = slowed.clone();
    #[expect(
        clippy::disallowed_methods,
        reason = "a slow fsync blocks the Raft driver's thread, as fail-rs's sleep() does"
    )]
    fail::cfg_callback(format!("storage::fsync@{slow}"), move || {
        counted.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    })
    .expect("a failpoint callback");
    let _points = Points(vec![format!("storage::fsync@{slow}")]);

    let client = nodes.operator("ops");
    for probe in 0..20u8 {
        client
            .probe(&[probe])
            .await
            .unwrap_or_else(|error| panic!("probe {probe} with node {slow} slow: {error}"));
    }
    let digests = nodes.converged_digests(&[1, 2, 3]).await;
    let distinct: BTreeSet<_> = digests.values().collect();
    assert_eq!(distinct.len(), 1, "{digests:?}");
    assert!(
        slowed.load(Ordering::Relaxed) > 0,
        "node {slow}'s fsyncs passed the failpoint"
    );
    assert!(
        nodes.running[&leader].is_leader(),
        "no leader change needed"
    );
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_fsync_fails_stops_acknowledging_and_its_file_reopens() {
    let _serial = SERIAL.lock().await;
    let nodes = Nodes::start(3, &[], "").await;
    let leader = nodes.leader().await;
    must_fail_stop_and_recover(nodes, leader, "storage::fsync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_applied_state_fails_to_commit_stops_and_its_file_reopens() {
    let _serial = SERIAL.lock().await;
    let nodes = Nodes::start(3, &[], "").await;
    let leader = nodes.leader().await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    must_fail_stop_and_recover(nodes, follower, "storage::apply").await;
}

/// Makes `point` fail on node `victim`, then checks: the node stops (no
/// panic), leads and acknowledges nothing more, says why, the other two go
/// on committing; restarted on the same file it loads and catches up.
async fn must_fail_stop_and_recover(mut nodes: Nodes, victim: u64, point: &str) {
    let client = nodes.operator("ops");
    client.probe(b"before").await.expect("a probe before");
    let mut points = Points(Vec::new());
    points.cfg(format!("{point}@{victim}"), "return");

    // The next write of the victim fails. Whether this probe commits is
    // not the point (another leader may commit its entry later); that the
    // victim stops is.
    let _ = client.probe(b"during").await;
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        nodes.running[&victim].raft_stopped(),
    )
    .await;
    assert!(stopped.is_ok(), "node {victim}'s Raft node stopped");
    must_log(&[&format!("injected by failpoint {point}@{victim}")]).await;
    must_log(&["Raft node stopped", "the disk may be full or failing"]).await;

    let failed = &nodes.running[&victim];
    assert!(
        !failed.is_leader(),
        "a node that cannot persist leads nothing"
    );
    assert_eq!(failed.leader(), None, "nor points anyone to a leader");
    let (applied_at_stop, _) = failed.state_digest().expect("its file still reads");

    // The others elect (or keep) a leader and commit without it.
    let others: Vec<u64> = (1..=3).filter(|&id| id != victim).collect();
    wait_for(
        "a leader among the other two",
        Duration::from_secs(10),
        || others.iter().any(|id| nodes.running[id].is_leader()),
    )
    .await;
    for probe in [b"after1", b"after2"] {
        client
            .probe(probe)
            .await
            .unwrap_or_else(|error| panic!("a probe without node {victim}: {error}"));
    }
    let digests = nodes.converged_digests(&others).await;
    let (applied_by_others, _) = digests[&others[0]];
    let (applied_now, _) = nodes.running[&victim]
        .state_digest()
        .expect("its file still reads");
    assert_eq!(
        applied_now, applied_at_stop,
        "the stopped node applies nothing"
    );
    assert!(applied_by_others > applied_now, "{digests:?}");

    // It refuses: operators get no write and no status, health says so.
    let refused = nodes
        .raw_operator(victim, "ops")
        .await
        .probe(v1::ProbeRequest { payload: vec![] })
        .await
        .expect_err("a stopped node commits nothing");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::FailedPrecondition | tonic::Code::Unavailable
        ),
        "{refused:?}"
    );
    let refused = nodes
        .raw_operator(victim, "guest")
        .await
        .cluster_status(v1::ClusterStatusRequest {})
        .await
        .expect_err("no status from a stopped node");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let channel = nodes
        .pki
        .client(PeerKind::Operator, "guest")
        .channel(&nodes.address(victim))
        .await
        .expect("a channel");
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(health.status, ServingStatus::NotServing as i32);

    // The file is intact: restarted on it, the node loads and catches up.
    drop(points);
    let failed = nodes.running.remove(&victim).expect("the victim");
    failed
        .shutdown(Duration::from_secs(2))
        .await
        .expect("the stopped node shuts down");
    nodes.start_node(victim).await;
    client
        .probe(b"rejoined")
        .await
        .expect("a probe after the restart");
    let digests = nodes.converged_digests(&[1, 2, 3]).await;
    let distinct: BTreeSet<_> = digests.values().collect();
    assert_eq!(distinct.len(), 1, "{digests:?}");
    assert!(digests[&victim].0 > applied_at_stop, "{digests:?}");
    nodes.shutdown().await;
}
