//! AgentGateway.Session: identity binding, bounds, floods and duplicates.
//! While one client misbehaves, a well-behaved agent keeps being served.

use std::time::Duration;

use leitstand_controller::Rejection;
use leitstand_proto::domain::bounds;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::v1;
use prost::Message;

use crate::support::{Session, TestPki, hello, must_log, raw, report, wait_for};

#[tokio::test]
async fn hello_for_another_agent_is_denied_and_others_are_unaffected() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let address = controller.local_addr();
    let (mut a2, _) =
        Session::must_open(&pki.client(PeerKind::Agent, "a2"), address, "a2", 1).await;
    a2.must_ack(1).await;

    let a1 = pki.client(PeerKind::Agent, "a1");
    let status = match Session::open(&a1, address, "a2", 1).await {
        Err(status) => status,
        Ok((mut session, first)) => {
            assert!(
                crate::support::is_welcome(&first).is_none(),
                "a1 must not be welcomed as a2"
            );
            session.must_end_with(tonic::Code::PermissionDenied).await
        }
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("certificate is for agent \"a1\""),
        "{status:?}"
    );
    assert_eq!(controller.rejected(Rejection::IdentityMismatch), 1);
    must_log(&[
        "agent session refused",
        "reason=\"identity_mismatch\"",
        "agent/a1",
    ])
    .await;

    // The real a2 noticed nothing.
    a2.must_ack(2).await;
    let a2_id = leitstand_proto::domain::AgentId::new("a2").expect("id");
    assert!(controller.is_connected(&a2_id));
}

/// A well-behaved agent reporting every 20 ms while others misbehave; every
/// report must be acknowledged within a second. Publishes each acknowledged
/// seq on `acked`; returns the acknowledged count.
fn keep_reporting(
    mut session: Session,
    stop: tokio::sync::watch::Receiver<bool>,
    acked: tokio::sync::watch::Sender<u64>,
) -> tokio::task::JoinHandle<(u64, Session)> {
    // The session is handed back, so the stream stays open until the test ends.
    tokio::spawn(async move {
        let mut seq = 1;
        while !*stop.borrow() {
            tokio::time::timeout(Duration::from_secs(1), session.must_ack(seq))
                .await
                .unwrap_or_else(|_| {
                    panic!("report {seq} of the good agent was not acknowledged within 1 s")
                });
            acked.send_replace(seq);
            seq += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (seq - 1, session)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_flooding_clients_are_refused_while_a_good_agent_is_served() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let address = controller.local_addr();
    let (good, _) =
        Session::must_open(&pki.client(PeerKind::Agent, "good"), address, "good", 1).await;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0u64);
    let good = keep_reporting(good, stop_rx, acked_tx);
    let bad = pki.client(PeerKind::Agent, "bad");
    let channel = || async { bad.channel(&address.to_string()).await.expect("channel") };

    // Bytes that are no protobuf message.
    let status = raw::session(channel().await, vec![vec![0xff, 0xff, 0xff, 0xff, 0x0f]]).await;
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "malformed: {status:?}"
    );
    assert_eq!(controller.rejected(Rejection::InvalidMessage), 1);

    // A Hello larger than the 1 MiB message bound.
    let mut bytes = hello("bad", 1).encode_to_vec();
    bytes.extend(
        v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
                version: "x".repeat(2 << 20),
                ..Default::default()
            })),
        }
        .encode_to_vec(),
    );
    let status = raw::session(channel().await, vec![bytes]).await;
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "oversized: {status:?}"
    );
    assert_eq!(controller.rejected(Rejection::Oversized), 1);

    // A flood of Hello messages on one stream.
    let flood: Vec<Vec<u8>> = (0..1000).map(|_| hello("bad", 1).encode_to_vec()).collect();
    let status = raw::session(channel().await, flood).await;
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "hello flood: {status:?}"
    );
    assert!(status.message().contains("only once"), "{status:?}");
    assert_eq!(controller.rejected(Rejection::DuplicateHello), 1);

    // A flood of reports beyond the burst allowance.
    let mut flood = vec![hello("bad", 2).encode_to_vec()];
    flood.extend((1..=10_000).map(|seq| report(seq).encode_to_vec()));
    let status = raw::session(channel().await, flood).await;
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "report flood: {status:?}"
    );
    assert_eq!(controller.rejected(Rejection::RateLimited), 1);
    // What the flood sent within the allowance was accepted and is kept.
    let bad_id = leitstand_proto::domain::AgentId::new("bad").expect("id");
    let (kept, _) = controller.latest_report(&bad_id).expect("known");
    assert!(
        (bounds::SESSION_BURST_MESSAGES as u64 - 1..10_000).contains(&kept),
        "reports within the burst allowance are kept: {kept}"
    );

    // A report out of bounds.
    let mut out_of_bounds = report(1);
    if let Some(v1::agent_message::Kind::Report(r)) = &mut out_of_bounds.kind {
        r.host.as_mut().expect("host").cpu_utilization = 7.0;
    }
    let status = raw::session(
        channel().await,
        vec![
            hello("bad", 3).encode_to_vec(),
            out_of_bounds.encode_to_vec(),
        ],
    )
    .await;
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "out of bounds: {status:?}"
    );
    assert!(
        status.message().contains("report.host.cpu_utilization"),
        "names the field: {status:?}"
    );
    assert_eq!(controller.rejected(Rejection::InvalidMessage), 2);
    must_log(&[
        "agent session refused",
        "reason=\"invalid_message\"",
        "report.host.cpu_utilization",
    ])
    .await;

    // Through all of it the good agent kept its session and its reports,
    // and goes on: five more acknowledged after the last refusal (how many
    // fit into the misbehaviour depends on the machine's speed).
    let after_the_flood = *acked.borrow_and_update();
    tokio::time::timeout(
        Duration::from_secs(5),
        acked.wait_for(|seq| *seq >= after_the_flood + 5),
    )
    .await
    .expect("the good agent's reports are acknowledged after the misbehaviour")
    .expect("the good agent's task is running");
    stop.send(true).expect("stop the good agent");
    let (acknowledged, _open) = good.await.expect("the good agent's task");
    assert!(
        acknowledged >= after_the_flood + 5,
        "the good agent reported throughout ({acknowledged} acknowledged)"
    );
    assert!(!controller.is_finished(), "the controller keeps serving");
    let good_id = leitstand_proto::domain::AgentId::new("good").expect("id");
    assert_eq!(
        controller.latest_report(&good_id).expect("known").0,
        acknowledged
    );
    assert!(controller.is_connected(&good_id));
}

#[tokio::test]
async fn the_first_message_must_be_hello() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let tls = pki.client(PeerKind::Agent, "eager");
    let channel = tls
        .channel(&controller.local_addr().to_string())
        .await
        .expect("channel");
    let status = raw::session(channel, vec![report(1).encode_to_vec()]).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("must be a Hello"), "{status:?}");
    assert_eq!(controller.rejected(Rejection::HelloMissing), 1);
}

#[tokio::test]
async fn duplicates_are_ignored_and_reconnects_resume_after_the_last_ack() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let address = controller.local_addr();
    let tls = pki.client(PeerKind::Agent, "ww-2");

    let (mut first, welcome) = Session::must_open(&tls, address, "ww-2", 100).await;
    assert_eq!(welcome.last_acked_seq, 0);
    first.must_ack(1).await;
    first.must_ack(2).await;
    // A replayed report is acknowledged with the highest seq, and ignored
    // (counted in leitstand_reports_duplicate_total); the session goes on.
    let accepted = controller.reports_accepted();
    first.must_ack_as(1, 2).await;
    first.must_ack_as(2, 2).await;
    assert_eq!(
        controller.reports_accepted(),
        accepted,
        "a replay is not applied"
    );
    let id = leitstand_proto::domain::AgentId::new("ww-2").expect("id");
    assert_eq!(controller.latest_report(&id).expect("known").0, 2);

    // The same process reconnects: the newer session replaces the older,
    // and learns where to resume.
    let (mut second, welcome) = Session::must_open(&tls, address, "ww-2", 100).await;
    assert_eq!(
        welcome.last_acked_seq, 2,
        "resume after the last acknowledged report"
    );
    let status = first.must_end_with(tonic::Code::Aborted).await;
    assert!(status.message().contains("newer session"), "{status:?}");
    second.must_ack(3).await;

    // A restarted agent (new incarnation) numbers from 1 again.
    let (mut third, welcome) = Session::must_open(&tls, address, "ww-2", 200).await;
    assert_eq!(welcome.last_acked_seq, 0, "a new incarnation starts afresh");
    third.must_ack(1).await;
    wait_for(
        "the replaced session to be counted as no refusal",
        Duration::from_secs(5),
        || controller.rejected(Rejection::DuplicateHello) == 0,
    )
    .await;
}

#[tokio::test]
async fn garbage_mid_session_ends_that_stream_and_keeps_what_was_accepted() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let tls = pki.client(PeerKind::Agent, "garbled");
    let channel = tls
        .channel(&controller.local_addr().to_string())
        .await
        .expect("channel");
    let status = raw::session(
        channel,
        vec![
            hello("garbled", 1).encode_to_vec(),
            report(1).encode_to_vec(),
            report(2).encode_to_vec(),
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            report(3).encode_to_vec(),
        ],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(controller.rejected(Rejection::InvalidMessage), 1);
    let id = leitstand_proto::domain::AgentId::new("garbled").expect("id");
    assert_eq!(
        controller.latest_report(&id).expect("known").0,
        2,
        "reports before the garbage are kept, none after it is applied"
    );
    assert!(!controller.is_finished(), "the controller keeps serving");
}
