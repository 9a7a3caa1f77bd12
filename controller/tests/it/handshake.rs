//! Handshakes: a certificate from our CA gets through; everything else is
//! refused before any request is read, with a log line and a counter.

use std::sync::Arc;
use std::time::Duration;

use leitstand_controller::Rejection;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki;
use leitstand_proto::tls::{HandshakeRejection, crypto_provider, read_certificates};
use leitstand_proto::v1::RaftBatch;
use leitstand_proto::v1::peer_client::PeerClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Session, TestPki, expired, must_log, wait_for};

#[tokio::test]
async fn handshake_and_report_round_trip() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let tls = pki.client(PeerKind::Agent, "ww-1");
    let (mut session, welcome) = Session::must_open(&tls, controller.local_addr(), "ww-1", 7).await;
    assert_eq!(welcome.node_id, 1);
    assert_eq!(
        welcome.last_acked_seq, 0,
        "a new agent has nothing acknowledged"
    );
    session.must_ack(1).await;
    session.must_ack(2).await;
    let agent = leitstand_proto::domain::AgentId::new("ww-1").expect("valid id");
    let (last_seq, latest) = controller
        .latest_report(&agent)
        .expect("the controller knows ww-1");
    assert_eq!(last_seq, 2);
    assert_eq!(latest.expect("a latest report").seq, 2);
    assert!(controller.handshake_counters().accepted() >= 1);
}

/// How a refused client is built.
enum Client {
    /// Certificate from a different CA.
    OtherCa,
    /// No client certificate at all.
    NoCertificate,
    /// Our CA, but expired yesterday.
    Expired,
    /// Our CA, listed in the CRL.
    Revoked,
    /// A valid certificate, but the client offers only TLS 1.2.
    Tls12Only,
}

fn roots(pki: &TestPki) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(&pki::ca_cert_path(&pki.dir())).expect("CA") {
        roots.add(cert).expect("CA usable as root");
    }
    Arc::new(roots)
}

fn client_config(pki: &TestPki, other: &TestPki, client: &Client) -> ClientConfig {
    let cert_of = |p: &TestPki, name: &str| {
        let chain =
            read_certificates(&pki::cert_path(&p.dir(), PeerKind::Agent, name)).expect("cert");
        let key = PrivateKeyDer::from_pem_file(pki::key_path(&p.dir(), PeerKind::Agent, name))
            .expect("key");
        (chain, key)
    };
    let tls13 = || {
        ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots(pki))
    };
    let mut config = match client {
        Client::NoCertificate => tls13().with_no_client_auth(),
        Client::OtherCa => {
            let (chain, key) = cert_of(other, "intruder");
            tls13()
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        Client::Expired => {
            let (chain, key) = cert_of(pki, "expired");
            tls13()
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        Client::Revoked => {
            let (chain, key) = cert_of(pki, "revoked");
            tls13()
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        Client::Tls12Only => {
            let (chain, key) = cert_of(pki, "valid");
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .expect("TLS 1.2")
                .with_root_certificates(roots(pki))
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Connects, and tries to get one byte of an answer; the connection must
/// end without one. Returns the client's local address for the log line.
async fn must_be_refused(
    config: ClientConfig,
    address: std::net::SocketAddr,
) -> std::net::SocketAddr {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("TCP connect");
    let local = tcp.local_addr().expect("local address");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from("127.0.0.1").expect("server name");
    // In TLS 1.3 the client may finish its side before the server has
    // verified the client certificate; the refusal then arrives as an alert.
    if let Ok(mut stream) = connector.connect(server_name, tcp).await {
        let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("the server answers or closes within 10 s");
        assert!(
            matches!(read, Err(_) | Ok(0)),
            "a refused client must not get an answer, got {read:?}"
        );
    }
    local
}

#[tokio::test]
async fn refuses_bad_certificates_and_old_protocols_with_a_reason() {
    let pki = TestPki::new();
    let other = TestPki::new();
    other.issue(PeerKind::Agent, "intruder");
    pki.issue_with(PeerKind::Agent, "expired", expired());
    pki.issue(PeerKind::Agent, "revoked");
    pki.issue(PeerKind::Agent, "valid");
    pki::revoke(&pki.dir(), PeerKind::Agent, "revoked").expect("revoke");
    let controller = pki.start_controller().await;

    let cases = [
        (Client::OtherCa, HandshakeRejection::UnknownIssuer),
        (
            Client::NoCertificate,
            HandshakeRejection::NoClientCertificate,
        ),
        (Client::Expired, HandshakeRejection::Expired),
        (Client::Revoked, HandshakeRejection::Revoked),
        (Client::Tls12Only, HandshakeRejection::Incompatible),
    ];
    for (client, reason) in cases {
        let before = controller.handshake_counters().rejected(reason);
        let local = must_be_refused(
            client_config(&pki, &other, &client),
            controller.local_addr(),
        )
        .await;
        wait_for(
            &format!("the {} counter to rise", reason.as_str()),
            Duration::from_secs(10),
            || controller.handshake_counters().rejected(reason) == before + 1,
        )
        .await;
        must_log(&[
            "TLS connection refused",
            &format!("peer={local}"),
            &format!("reason=\"{}\"", reason.as_str()),
        ])
        .await;
    }

    // The refusals cost nobody else anything.
    let tls = pki.client(PeerKind::Agent, "valid");
    let (mut session, _) = Session::must_open(&tls, controller.local_addr(), "valid", 1).await;
    session.must_ack(1).await;
}

#[tokio::test]
async fn an_agent_certificate_cannot_join_as_a_controller_peer() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let agent_tls = pki.client(PeerKind::Agent, "sneaky");
    let channel = agent_tls
        .channel(&controller.local_addr().to_string())
        .await
        .expect("channel");
    let batch = RaftBatch {
        from: 2,
        messages: vec![vec![0u8; 8]],
    };
    let status = PeerClient::new(channel)
        .raft(tokio_stream::iter(vec![batch]))
        .await
        .expect_err("an agent must not speak Raft");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("requires a controller certificate"),
        "{status:?}"
    );
    assert_eq!(controller.rejected(Rejection::WrongKind), 1);
    must_log(&[
        "peer stream refused",
        "spiffe://test.leitstand.invalid/agent/sneaky",
    ])
    .await;

    // And an operator certificate is no agent.
    let operator = pki.client(PeerKind::Operator, "alice");
    let status = Session::open(&operator, controller.local_addr(), "alice", 1)
        .await
        .err()
        .expect("an operator must not open an agent session");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(controller.rejected(Rejection::WrongKind), 2);
}

#[tokio::test]
async fn clients_refuse_a_server_without_a_controller_certificate() {
    // An agent certificate used as a server certificate must not pass for a
    // controller, even though it comes from our CA.
    let pki = TestPki::new();
    pki::issue(
        &pki.dir(),
        &pki::IssueRequest {
            kind: PeerKind::Operator,
            name: "fake-controller".into(),
            dns: vec![],
            ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            validity: pki::Validity::days_from_now(1),
            force: false,
        },
    )
    .expect("issue");
    let server_tls = Arc::new(
        leitstand_proto::tls::ServerTls::load(pki.files(PeerKind::Operator, "fake-controller"))
            .expect("server TLS"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let mut incoming = leitstand_proto::tls::incoming(listener, server_tls);
    tokio::spawn(async move {
        use tokio_stream::StreamExt;
        while incoming.next().await.is_some() {}
    });
    let client = pki.client(PeerKind::Agent, "careful");
    let error = client
        .connect(&address.to_string())
        .await
        .expect_err("not a controller");
    // Only controller certificates carry the serverAuth key usage, so webpki
    // refuses before the SPIFFE kind is even read.
    let chain = debug_chain(&error);
    assert!(
        chain.contains("TLS handshake") && chain.contains("InvalidPurpose"),
        "the refusal names the problem: {chain}"
    );
}

fn debug_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn serves_grpc_health() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let tls = pki.client(PeerKind::Operator, "nagios");
    let channel = tls
        .channel(&controller.local_addr().to_string())
        .await
        .expect("channel");
    let mut health = HealthClient::new(channel);
    for service in ["", "leitstand.v1.AgentGateway"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?} is serving"
        );
    }
}

#[tokio::test]
async fn a_plain_tcp_probe_is_counted_but_not_logged_as_a_refusal() {
    let pki = TestPki::new();
    let controller = pki.start_controller().await;
    let probe = tokio::net::TcpStream::connect(controller.local_addr())
        .await
        .expect("TCP connect");
    let local = probe.local_addr().expect("local address");
    drop(probe);
    wait_for(
        "the closed_before_handshake counter to rise",
        Duration::from_secs(10),
        || {
            controller
                .handshake_counters()
                .rejected(HandshakeRejection::ClosedEarly)
                == 1
        },
    )
    .await;
    let logs = crate::support::captured_logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.contains(&format!("peer={local}")) && l.contains("WARN")),
        "a health probe must not warn: {logs}"
    );
}
