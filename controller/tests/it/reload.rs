//! TLS reload: new handshakes see new material; open streams continue.

use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki;
use leitstand_proto::tls::HandshakeRejection;

use crate::support::{Session, TestPki};

fn serial(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).expect("parse");
    cert.raw_serial().to_vec()
}

fn serial_of(pem_path: &std::path::Path) -> Vec<u8> {
    serial(&leitstand_proto::tls::read_certificates(pem_path).expect("certificate")[0])
}

#[tokio::test]
async fn reload_applies_new_certificates_and_crl_to_new_handshakes_only() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let address = controller.local_addr();
    let (mut open, _) =
        Session::must_open(&pki.client(PeerKind::Agent, "steady"), address, "steady", 1).await;
    open.must_ack(1).await;
    let soon_revoked = pki.client(PeerKind::Agent, "soon-revoked");
    let (mut revoked_session, _) =
        Session::must_open(&soon_revoked, address, "soon-revoked", 1).await;
    revoked_session.must_ack(1).await;

    // New controller certificate and a CRL that revokes one agent.
    let old_serial = serial_of(&pki::cert_path(&pki.dir(), PeerKind::Controller, "1"));
    pki.issue(PeerKind::Controller, "1");
    let new_serial = serial_of(&pki::cert_path(&pki.dir(), PeerKind::Controller, "1"));
    assert_ne!(old_serial, new_serial);
    pki::revoke(&pki.dir(), PeerKind::Agent, "soon-revoked").expect("revoke");
    controller.reload_tls().expect("reload");

    // A new handshake sees the new server certificate...
    let probe = pki.client(PeerKind::Agent, "probe");
    let (stream, _) = probe.connect(&address.to_string()).await.expect("connect");
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone();
    assert_eq!(
        serial(&presented),
        new_serial,
        "new handshakes get the new certificate"
    );

    // ...and the new CRL.
    let before = controller
        .handshake_counters()
        .rejected(HandshakeRejection::Revoked);
    let refused = Session::open(&soon_revoked, address, "soon-revoked", 2).await;
    assert!(
        refused.is_err(),
        "a revoked agent cannot open a new session"
    );
    assert_eq!(
        controller
            .handshake_counters()
            .rejected(HandshakeRejection::Revoked),
        before + 1
    );

    // The stream opened before the reload keeps working...
    open.must_ack(2).await;
    open.must_ack(3).await;
    // ...unless the new CRL revokes its certificate.
    let status = revoked_session
        .must_end_with(tonic::Code::Unauthenticated)
        .await;
    assert!(status.message().contains("revoked"), "{status:?}");
    assert_eq!(
        controller.rejected(leitstand_controller::Rejection::CertificateRevoked),
        1
    );
}

#[tokio::test]
async fn a_failed_reload_keeps_the_previous_material() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let agent = pki.client(PeerKind::Agent, "after");
    std::fs::write(pki::crl_path(&pki.dir()), "not a CRL").expect("corrupt the CRL");
    let error = controller
        .reload_tls()
        .expect_err("a corrupt CRL is refused");
    assert!(
        format!("{:?}", error).contains("crl.pem"),
        "the error names the file: {error:?}"
    );
    let (mut session, _) = Session::must_open(&agent, controller.local_addr(), "after", 1).await;
    session.must_ack(1).await;
}
