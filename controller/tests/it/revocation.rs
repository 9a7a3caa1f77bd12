//! I8 after the handshake: a certificate revoked by a reloaded CRL, or one
//! whose notAfter passes, ends the open session within about a second, and
//! the connection it came on carries no further session or request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leitstand_controller::Rejection;
use leitstand_proto::domain::AgentId;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, Validity};
use leitstand_proto::tls::{ClientTls, HandshakeRejection};
use leitstand_proto::v1::{self, operator_client::OperatorClient};

use crate::support::{Session, TestPki, must_log};

/// A channel of `tls` to `address`, for several sessions on one connection.
async fn channel(tls: &Arc<ClientTls>, address: std::net::SocketAddr) -> tonic::transport::Channel {
    tls.channel(&address.to_string())
        .await
        .expect("channel to the controller")
}

/// Reads until the session ends, which must be within `within`, with
/// UNAUTHENTICATED naming `reason`.
async fn must_end_unauthenticated(session: &mut Session, within: Duration, reason: &str) {
    let status = tokio::time::timeout(within, session.must_end_with(tonic::Code::Unauthenticated))
        .await
        .unwrap_or_else(|_| panic!("the session did not end within {within:?} ({reason})"));
    assert!(status.message().contains(reason), "{status:?}");
}

#[tokio::test]
async fn a_crl_reload_ends_the_revoked_agents_session_and_its_connection() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let address = controller.local_addr();
    let (mut steady, _) =
        Session::must_open(&pki.client(PeerKind::Agent, "steady"), address, "steady", 1).await;
    steady.must_ack(1).await;
    let tls = pki.client(PeerKind::Agent, "stolen");
    let connection = channel(&tls, address).await;
    let (mut session, first) = Session::open_on(connection.clone(), "stolen", 1)
        .await
        .expect("session opens");
    assert!(crate::support::is_welcome(&first).is_some(), "{first:?}");
    session.must_ack(1).await;
    session.must_ack(2).await;

    pki::revoke(&pki.dir(), PeerKind::Agent, "stolen").expect("revoke");
    controller.reload_tls().expect("reload");
    // The agent is quiet: the reload alone ends its session.
    must_end_unauthenticated(
        &mut session,
        Duration::from_secs(2),
        "revoked by the CRL reloaded at",
    )
    .await;
    assert_eq!(controller.rejected(Rejection::CertificateRevoked), 1);
    must_log(&[
        "agent session refused",
        "reason=\"certificate_revoked\"",
        "agent/stolen",
        "certificate serial",
    ])
    .await;

    // The connection opened before the reload opens no new session...
    let status = match Session::open_on(connection, "stolen", 1).await {
        Err(status) => status,
        Ok((_, first)) => panic!("a revoked agent got {first:?} on its old connection"),
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    assert_eq!(controller.rejected(Rejection::CertificateRevoked), 2);
    // ...nor does a new one, and nothing it sent after the reload counts.
    let before = controller
        .handshake_counters()
        .rejected(HandshakeRejection::Revoked);
    assert!(Session::open(&tls, address, "stolen", 2).await.is_err());
    assert_eq!(
        controller
            .handshake_counters()
            .rejected(HandshakeRejection::Revoked),
        before + 1
    );
    let stolen = AgentId::new("stolen").expect("id");
    assert_eq!(controller.latest_report(&stolen).expect("known").0, 2);
    assert!(!controller.is_connected(&stolen));

    // Other agents noticed nothing.
    steady.must_ack(2).await;
}

#[tokio::test]
async fn a_reload_refuses_further_operator_calls_on_an_open_connection() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let tls = pki.client(PeerKind::Operator, "schicht-1");
    let mut operator = OperatorClient::new(channel(&tls, controller.local_addr()).await);
    // Authenticated (this controller gives the name no role).
    let status = operator
        .status(v1::StatusRequest {})
        .await
        .expect_err("no role");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    pki::revoke(&pki.dir(), PeerKind::Operator, "schicht-1").expect("revoke");
    controller.reload_tls().expect("reload");
    let status = operator
        .status(v1::StatusRequest {})
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("revoked by the CRL reloaded at"),
        "{status:?}"
    );
    must_log(&[
        "operator call refused",
        "reason=\"certificate_revoked\"",
        "operator/schicht-1",
    ])
    .await;
    assert!(
        controller.rejected(Rejection::CertificateRevoked) >= 1,
        "the refused operator call is counted"
    );
}

#[tokio::test]
async fn a_certificate_expiring_during_a_session_ends_it() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let address = controller.local_addr();
    // Certificates count whole seconds; this one ends 3 to 4 s from now.
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::seconds(4);
    pki.issue_with(
        PeerKind::Agent,
        "short-lived",
        Validity {
            not_before: now - time::Duration::minutes(1),
            not_after,
        },
    );
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(not_after.unix_timestamp()).expect("after 1970"));
    let tls = pki.client(PeerKind::Agent, "short-lived");
    let connection = channel(&tls, address).await;
    let (mut session, first) = Session::open_on(connection.clone(), "short-lived", 1)
        .await
        .expect("session opens");
    assert!(crate::support::is_welcome(&first).is_some(), "{first:?}");
    session.must_ack(1).await;

    // The agent stays quiet; the session ends on the controller's timer.
    must_end_unauthenticated(&mut session, Duration::from_secs(10), "; renew it").await;
    let late = SystemTime::now()
        .duration_since(not_after)
        .expect("not before the certificate expired");
    assert!(
        late < Duration::from_millis(2_500),
        "the session ended {late:?} after the certificate expired"
    );
    assert_eq!(controller.rejected(Rejection::CertificateExpired), 1);
    must_log(&[
        "agent session refused",
        "reason=\"certificate_expired\"",
        "agent/short-lived",
        "certificate expired at",
    ])
    .await;

    // The old connection opens no new session.
    let status = match Session::open_on(connection, "short-lived", 1).await {
        Err(status) => status,
        Ok((_, first)) => panic!("an expired agent got {first:?} on its old connection"),
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("certificate expired at"),
        "{status:?}"
    );
    assert_eq!(controller.rejected(Rejection::CertificateExpired), 2);
    let agent = AgentId::new("short-lived").expect("id");
    assert_eq!(controller.latest_report(&agent).expect("known").0, 1);
}
