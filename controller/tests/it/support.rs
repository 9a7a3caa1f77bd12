//! Fixtures: a PKI in a temp dir, a controller started from a real
//! controller.toml, clients of every kind, a raw-bytes codec, log capture
//! and `wait_for`.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leitstand_controller::{Controller, ControllerConfig};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::{ClientTls, TlsFiles};
use leitstand_proto::v1::agent_gateway_client::AgentGatewayClient;
use leitstand_proto::v1::{self, agent_message, controller_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

pub const TRUST_DOMAIN: &str = "test.leitstand.invalid";

/// Polls `condition` until it holds; fails naming what it waited for.
pub async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything the tests' code logged so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().expect("log buffer")).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("info")
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buffer
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits for a log line containing every one of `needles`.
pub async fn must_log(needles: &[&str]) {
    wait_for(
        &format!("a log line with {needles:?}"),
        Duration::from_secs(10),
        || {
            captured_logs()
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
        },
    )
    .await;
}

/// A certificate authority in a temp dir, with a controller certificate
/// for 127.0.0.1.
pub struct TestPki {
    pub root: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> Self {
        log_buffer();
        let root = tempfile::tempdir().expect("temp dir");
        pki::init(&root.path().join("pki"), TRUST_DOMAIN, false).expect("pki init");
        let pki = TestPki { root };
        pki.issue(PeerKind::Controller, "1");
        pki
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("pki")
    }

    pub fn issue(&self, kind: PeerKind, name: &str) {
        self.issue_with(kind, name, Validity::days_from_now(1));
    }

    pub fn issue_with(&self, kind: PeerKind, name: &str, validity: Validity) {
        let loopback = kind == PeerKind::Controller;
        pki::issue(
            &self.dir(),
            &IssueRequest {
                kind,
                name: name.to_owned(),
                dns: if loopback {
                    vec!["localhost".into()]
                } else {
                    vec![]
                },
                ips: if loopback {
                    vec![std::net::Ipv4Addr::LOCALHOST.into()]
                } else {
                    vec![]
                },
                validity,
                force: true,
            },
        )
        .expect("pki issue");
    }

    pub fn files(&self, kind: PeerKind, name: &str) -> TlsFiles {
        pki::peer_files(&self.dir(), kind, name)
    }

    /// Client TLS for `<kind>/<name>`, issuing the certificate if needed.
    pub fn client(&self, kind: PeerKind, name: &str) -> Arc<ClientTls> {
        if !pki::cert_path(&self.dir(), kind, name).exists() {
            self.issue(kind, name);
        }
        Arc::new(ClientTls::load(self.files(kind, name)).expect("client TLS"))
    }

    /// Starts a controller from a real controller.toml on an ephemeral port.
    pub async fn start_controller(&self) -> Controller {
        let path = self.root.path().join("controller.toml");
        std::fs::write(
            &path,
            "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-1.pem\"\nkey = \"pki/controller-1.key\"\ncrl = \"pki/crl.pem\"\n\
             [cluster]\npeers = { 1 = \"127.0.0.1:0\" }\n",
        )
        .expect("write controller.toml");
        let config = ControllerConfig::load(&path).expect("valid controller.toml");
        let controller = Controller::start(config).await.expect("controller starts");
        // A one-member cluster still elects itself first (one election timeout).
        wait_for(
            "the controller to become Raft leader",
            Duration::from_secs(10),
            || controller.is_leader(),
        )
        .await;
        controller
    }
}

/// Validity that ended yesterday.
pub fn expired() -> Validity {
    let now = time::OffsetDateTime::now_utc();
    Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

pub fn hello(agent: &str, incarnation: u64) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Hello(v1::Hello {
            agent_id: agent.to_owned(),
            version: "test".into(),
            checks: vec![],
            actions: vec![],
            report_interval_ms: 1000,
            incarnation,
        })),
    }
}

pub fn report(seq: u64) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Report(v1::Report {
            seq,
            observed_at_unix_ms: unix_ms(),
            host: Some(v1::HostMetrics {
                cpu_utilization: 0.25,
                memory_total_bytes: 1 << 30,
                memory_used_bytes: 1 << 29,
                ..Default::default()
            }),
            checks: vec![],
        })),
    }
}

/// One agent session driven by the test.
pub struct Session {
    pub outbound: mpsc::Sender<v1::AgentMessage>,
    pub inbound: Streaming<v1::ControllerMessage>,
}

impl Session {
    /// Opens a session over `tls` and sends Hello for `agent`; returns the
    /// session and the controller's first answer.
    pub async fn open(
        tls: &Arc<ClientTls>,
        address: SocketAddr,
        agent: &str,
        incarnation: u64,
    ) -> Result<(Session, v1::ControllerMessage), tonic::Status> {
        let channel = tls
            .channel(&address.to_string())
            .await
            .expect("channel to controller");
        Self::open_on(channel, agent, incarnation).await
    }

    pub async fn open_on(
        channel: Channel,
        agent: &str,
        incarnation: u64,
    ) -> Result<(Session, v1::ControllerMessage), tonic::Status> {
        let (outbound, rx) = mpsc::channel(4096);
        outbound
            .send(hello(agent, incarnation))
            .await
            .expect("queue hello");
        let mut inbound = AgentGatewayClient::new(channel)
            .max_encoding_message_size(8 << 20)
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = next(&mut inbound).await?;
        Ok((Session { outbound, inbound }, first))
    }

    /// Opens a session that must be welcomed.
    pub async fn must_open(
        tls: &Arc<ClientTls>,
        address: SocketAddr,
        agent: &str,
        incarnation: u64,
    ) -> (Session, v1::Welcome) {
        let (session, first) = Session::open(tls, address, agent, incarnation)
            .await
            .unwrap_or_else(|status| panic!("session of {agent} refused: {status:?}"));
        let welcome = is_welcome(&first)
            .unwrap_or_else(|| panic!("expected Welcome for {agent}, got {first:?}"))
            .clone();
        (session, welcome)
    }

    pub async fn send(&self, message: v1::AgentMessage) {
        // The controller may have closed the stream; its answer tells.
        let _ = self.outbound.send(message).await;
    }

    pub async fn next(&mut self) -> Result<v1::ControllerMessage, tonic::Status> {
        next(&mut self.inbound).await
    }

    /// Sends report `seq` and expects `Ack{expected}`.
    pub async fn must_ack_as(&mut self, seq: u64, expected: u64) {
        self.send(report(seq)).await;
        match self.next().await {
            Ok(v1::ControllerMessage {
                kind: Some(controller_message::Kind::Ack(ack)),
            }) => assert_eq!(ack.seq, expected, "ack for report {seq}"),
            other => panic!("expected Ack {{ seq: {expected} }} for report {seq}, got {other:?}"),
        }
    }

    /// Sends report `seq` and expects it acknowledged.
    pub async fn must_ack(&mut self, seq: u64) {
        self.must_ack_as(seq, seq).await;
    }

    /// Reads until the stream ends; it must end with `code`.
    pub async fn must_end_with(&mut self, code: tonic::Code) -> tonic::Status {
        loop {
            match self.next().await {
                Ok(_) => continue,
                Err(status) => {
                    assert_eq!(status.code(), code, "stream ended with {status:?}");
                    return status;
                }
            }
        }
    }
}

async fn next(
    inbound: &mut Streaming<v1::ControllerMessage>,
) -> Result<v1::ControllerMessage, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Err(_) => panic!("no message from the controller within 10 s"),
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(tonic::Status::cancelled("stream ended without status")),
        Ok(Err(status)) => Err(status),
    }
}

pub fn is_welcome(message: &v1::ControllerMessage) -> Option<&v1::Welcome> {
    match &message.kind {
        Some(controller_message::Kind::Welcome(w)) => Some(w),
        _ => None,
    }
}

/// Sends arbitrary bytes as gRPC messages on AgentGateway.Session.
pub mod raw {
    use bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    pub struct RawCodec;
    pub struct RawEncoder;
    pub struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let bytes = src.chunk().to_vec();
            src.advance(bytes.len());
            Ok(Some(bytes))
        }
    }

    /// Opens Session, sends `messages` as they are, and returns the status
    /// the stream ended with.
    pub async fn session(
        channel: tonic::transport::Channel,
        messages: Vec<Vec<u8>>,
    ) -> tonic::Status {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/leitstand.v1.AgentGateway/Session",
        );
        let stream = tokio_stream::iter(messages);
        let mut inbound = match grpc
            .streaming(tonic::Request::new(stream), path, RawCodec)
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return status,
        };
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), inbound.message()).await
            {
                Err(_) => panic!("the controller neither answered nor closed within 10 s"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return tonic::Status::ok("stream ended"),
                Ok(Err(status)) => return status,
            }
        }
    }
}
