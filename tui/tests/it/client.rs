//! The client finds the leader by itself, gives up within its deadline,
//! and says what it tried and what the controller refused.

use std::time::Duration;

use leitstand_proto::domain::NodeId;
use leitstand_proto::identity::PeerKind;
use leitstand_tui::{Error, OperatorClient, Role};
use tokio::time::Instant;

use crate::support::{StandIn, TestPki, Writes, refused_address};

fn node(id: u64) -> NodeId {
    NodeId::new(id).expect("a node id")
}

#[tokio::test]
async fn a_write_at_a_follower_follows_the_leader_hint_and_the_leader_is_remembered() {
    let pki = TestPki::new();
    let (leader_listener, leader_address) = StandIn::listener().await;
    let follower = StandIn::start(
        &pki,
        1,
        Writes::NotLeader(Some(2), Some(leader_address.clone())),
    )
    .await;
    let leader = StandIn::serve(&pki, 2, leader_listener, Writes::Serve);
    // Only the follower is configured: the leader is found through its hint.
    let client = pki.client(&[follower.address.as_str()]);

    let status = client
        .transfer_leader(node(2))
        .await
        .expect("the leader answers");
    assert_eq!(status.answered_by, node(2));
    assert_eq!(
        status.leader_address.as_deref(),
        Some(leader_address.as_str())
    );
    assert_eq!((follower.calls(), leader.calls()), (1, 1));

    // The next call goes straight to the leader that answered last.
    let added = client
        .add_member(node(3), "127.0.0.1:7403")
        .await
        .expect("the leader answers");
    assert_eq!((follower.calls(), leader.calls()), (1, 2));
    let learner = added
        .members
        .iter()
        .find(|m| m.node_id == node(3))
        .expect("the new member");
    assert_eq!(learner.role, Role::Learner);
    assert!(learner.catching_up);

    let probe = client.probe(b"ping").await.expect("the leader answers");
    assert_eq!(
        (probe.leader_id, probe.payload.as_slice()),
        (node(2), &b"ping"[..])
    );
}

#[tokio::test]
async fn a_read_is_answered_by_the_first_controller_that_is_up() {
    let pki = TestPki::new();
    let down = refused_address().await;
    let follower = StandIn::start(&pki, 1, Writes::NotLeader(None, None)).await;
    let client = pki.client(&[down.as_str(), follower.address.as_str()]);

    let status = client.cluster_status().await.expect("the follower answers");
    assert_eq!(status.answered_by, node(1));
    assert!(!status.confirmed_by_quorum);
    assert_eq!(status.leader_id, None);
    assert!(status.to_text().contains("no quorum confirmed it"));
}

#[tokio::test]
async fn leader_unknown_means_the_next_controller_after_a_pause() {
    let pki = TestPki::new();
    let electing = StandIn::start(&pki, 1, Writes::NotLeader(None, None)).await;
    let leader = StandIn::start(&pki, 2, Writes::Serve).await;
    let client = pki.client(&[electing.address.as_str(), leader.address.as_str()]);

    let status = client.remove_member(node(3)).await.expect("node 2 answers");
    assert_eq!(status.answered_by, node(2));
    assert_eq!((electing.calls(), leader.calls()), (1, 1));
}

#[tokio::test]
async fn all_controllers_down_is_a_clear_error_within_the_deadline() {
    let pki = TestPki::new();
    let (first, second) = (refused_address().await, refused_address().await);
    let client = pki
        .client(&[first.as_str(), second.as_str()])
        .with_deadline(Duration::from_secs(3));
    let started = Instant::now();
    let err = client
        .add_member(node(4), "127.0.0.1:7404")
        .await
        .expect_err("nobody listens");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no controller answered: tried {first} (connection refused), {second} (connection refused)"
        )
    );
    assert_eq!(err.exit_code(), 1);

    // A controller that accepts TCP but never completes a handshake costs
    // at most the deadline, not the TLS handshake timeout of 10 s.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_address = silent.local_addr().expect("address").to_string();
    let client = pki
        .client(&[silent_address.as_str()])
        .with_deadline(Duration::from_millis(1500));
    let started = Instant::now();
    let err = client.cluster_status().await.expect_err("no handshake");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("{silent_address} (no connection within 1.5 s)")),
        "{err}"
    );
}

#[tokio::test]
async fn a_cluster_without_a_leader_is_retried_until_the_deadline() {
    let pki = TestPki::new();
    let electing = StandIn::start(&pki, 1, Writes::NotLeader(None, None)).await;
    let client = pki
        .client(&[electing.address.as_str()])
        .with_deadline(Duration::from_secs(2));
    let started = Instant::now();
    let err = client
        .transfer_leader(node(1))
        .await
        .expect_err("no leader");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "no answer within 2.0 s: tried {} (not leader; leader unknown; ",
            electing.address
        )),
        "{text}"
    );
    // Backoff: a handful of attempts in 2 s, not a busy loop.
    assert!(
        (2..=8).contains(&electing.calls()),
        "{} calls",
        electing.calls()
    );

    // An election ends: the same client finds the new leader.
    electing.set_writes(Writes::Serve);
    client
        .transfer_leader(node(1))
        .await
        .expect("node 1 leads now");
}

#[tokio::test]
async fn two_followers_pointing_at_each_other_do_not_bounce_a_call_forever() {
    let pki = TestPki::new();
    let (listener_1, address_1) = StandIn::listener().await;
    let (listener_2, address_2) = StandIn::listener().await;
    let one = StandIn::serve(
        &pki,
        1,
        listener_1,
        Writes::NotLeader(Some(2), Some(address_2.clone())),
    );
    let two = StandIn::serve(
        &pki,
        2,
        listener_2,
        Writes::NotLeader(Some(1), Some(address_1.clone())),
    );
    let client = pki
        .client(&[address_1.as_str()])
        .with_deadline(Duration::from_secs(1));
    let err = client.probe(b"").await.expect_err("nobody leads");
    assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not followed after 3 hops"),
        "{err}"
    );
    assert!(
        one.calls() + two.calls() < 40,
        "{} calls",
        one.calls() + two.calls()
    );
}

#[tokio::test]
async fn permission_denied_says_which_role_is_missing() {
    let pki = TestPki::new();
    let leader = StandIn::start(
        &pki,
        1,
        Writes::Fail(tonic::Status::permission_denied(
            "operator/alice has role viewer; membership changes need admin",
        )),
    )
    .await;
    let client = pki.client(&[leader.address.as_str()]);
    let err = client.remove_member(node(2)).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let text = err.to_string();
    for needle in [
        leader.address.as_str(),
        "your operator certificate's name (alice) has no role that allows this",
        "[rbac] in controller.toml",
        "membership changes need admin",
    ] {
        assert!(text.contains(needle), "{text:?} says {needle:?}");
    }
    assert_eq!(err.exit_code(), 1);
    assert_eq!(leader.calls(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn refusals_map_to_their_own_errors() {
    let pki = TestPki::new();
    let leader = StandIn::start(&pki, 1, Writes::Serve).await;
    let client = pki.client(&[leader.address.as_str()]);
    let cases = [
        (
            tonic::Status::failed_precondition("a membership change is already in progress"),
            "the cluster cannot do this now: a membership change is already in progress",
            1,
        ),
        (
            tonic::Status::invalid_argument("node 9 is not a member"),
            "rejected the request: node 9 is not a member",
            2,
        ),
        (
            tonic::Status::unauthenticated("certificate revoked"),
            "did not accept your certificate: certificate revoked",
            1,
        ),
        (
            tonic::Status::deadline_exceeded("commit took too long"),
            "did not confirm the change within",
            1,
        ),
        (
            tonic::Status::resource_exhausted("too many requests"),
            "failed the request: too many requests",
            1,
        ),
    ];
    for (status, needle, exit_code) in cases {
        leader.set_writes(Writes::Fail(status.clone()));
        let err = client.transfer_leader(node(1)).await.expect_err("refused");
        assert!(err.to_string().contains(needle), "{status:?}: {err}");
        assert_eq!(err.exit_code(), exit_code, "{status:?}: {err}");
    }
}

#[tokio::test]
async fn a_certificate_of_another_kind_is_refused_before_connecting() {
    let pki = TestPki::new();
    pki.issue(PeerKind::Agent, "pump-1");
    let config = pki.operator_config("agent", "pump-1", &["127.0.0.1:7401"]);
    let err = OperatorClient::new(&config).expect_err("not an operator");
    assert!(matches!(err, Error::NotAnOperator { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("/agent/pump-1, not an operator certificate"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test]
async fn bad_arguments_are_refused_before_sending() {
    let pki = TestPki::new();
    let client = pki.client(&["127.0.0.1:1"]);
    let err = client
        .add_member(node(4), "nowhere")
        .await
        .expect_err("not host:port");
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test]
async fn a_controller_without_the_call_says_to_upgrade_it() {
    let pki = TestPki::new();
    let controller = StandIn::start(&pki, 1, Writes::Serve).await;
    let client = pki.client(&[&controller.address]);
    let err = client
        .status()
        .await
        .expect_err("the stand-in has no Status");
    assert!(
        matches!(err, Error::Unimplemented { rpc: "Status", .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("does not offer Status yet: upgrade it"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);
    let err = client.approve("d-0042").await.expect_err("no Approve");
    assert!(
        err.to_string().contains("does not offer Approve yet"),
        "{err}"
    );
    let err = client
        .switch("leitstelle-uplink", "lte", "fiber cut")
        .await
        .expect_err("no Switch");
    assert!(
        err.to_string().contains("does not offer Switch yet"),
        "{err}"
    );
    let err = client.audit(1, 10).await.expect_err("no Audit");
    assert!(
        err.to_string().contains("does not offer Audit yet"),
        "{err}"
    );

    // The Watch says so as an event and keeps trying, slowly.
    let client = std::sync::Arc::new(client);
    let mut updates = client.watch(4);
    let update = tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("an event within 10 s")
        .expect("the watch runs");
    match update {
        leitstand_tui::WatchUpdate::Disconnected { reason, retry_in } => {
            assert!(reason.contains("does not offer Watch yet"), "{reason}");
            assert_eq!(retry_in, leitstand_tui::MAX_WATCH_BACKOFF);
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

#[tokio::test]
async fn actions_are_checked_before_sending() {
    let pki = TestPki::new();
    let controller = StandIn::start(&pki, 1, Writes::Serve).await;
    let client = pki.client(&[&controller.address]);
    let cases = [
        client.reject("d-0042", "  ").await,
        client.reject("d 42", "why").await,
        client.switch("svc", "lte", "").await,
        client.freeze("svc/../x", "").await,
        client.unfreeze("svc", &"x".repeat(1025)).await,
    ];
    for result in cases {
        let err = result.expect_err("refused");
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        assert_eq!(err.exit_code(), 2);
    }
    assert_eq!(controller.calls(), 0, "nothing was sent");
}
