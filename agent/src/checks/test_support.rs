//! Test support for the checks: parsing check tables, asserting results,
//! waiting for conditions (never fixed sleeps), a tiny HTTP/1.1 server with
//! optional TLS, and a test PKI made by `leitstand_proto::pki`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use leitstand_proto::Error;
use leitstand_proto::config::ConfigSource;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki;
use leitstand_proto::v1::{self, CheckStatus};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::{CheckSpec, RawCheck, parse_checks};

/// Where test configurations pretend to live.
pub(super) const AGENT_TOML: &str = "/etc/leitstand/agent.toml";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    check: Vec<RawCheck>,
}

/// Parses `text` (`[[check]]` tables) as if it were agent.toml with
/// `interval = "1s"`.
pub(super) fn parse(text: &str) -> Result<Vec<CheckSpec>, Error> {
    parse_at(Path::new(AGENT_TOML), text)
}

fn parse_at(path: &Path, text: &str) -> Result<Vec<CheckSpec>, Error> {
    let source = ConfigSource::from_text(path, text.to_owned());
    let file: File = source.parse()?;
    parse_checks(&source, file.check, Duration::from_secs(1))
}

pub(super) fn must_parse_at(path: &Path, text: &str) -> Vec<CheckSpec> {
    parse_at(path, text).unwrap_or_else(|e| panic!("{text}\ndoes not parse: {e}"))
}

/// The one check of a `[[check]]` table with these keys.
pub(super) fn must_parse_one(keys: &str) -> CheckSpec {
    let text = format!("[[check]]\n{keys}");
    let mut specs = parse(&text).unwrap_or_else(|e| panic!("{text}\ndoes not parse: {e}"));
    assert_eq!(specs.len(), 1);
    specs.remove(0)
}

/// The result is within every bound the controller enforces.
pub(super) fn must_be_valid(result: &v1::CheckResult) {
    let report = v1::Report {
        seq: 1,
        observed_at_unix_ms: result.observed_at_unix_ms,
        host: None,
        checks: vec![result.clone()],
    };
    if let Err(e) = leitstand_proto::domain::Report::try_from(report) {
        panic!("the controller would reject {result:?}: {e}");
    }
}

pub(super) fn must_have_status(result: &v1::CheckResult, status: CheckStatus) {
    must_be_valid(result);
    assert_eq!(
        result.status,
        status as i32,
        "expected {status:?}, got {:?}: {}",
        CheckStatus::try_from(result.status),
        result.summary
    );
}

/// Polls `condition` until it holds; fails after 10 s naming `what`.
pub(super) async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after 10 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until process `pid` is gone (or a zombie: dead, only not yet
/// reaped by its new parent).
pub(super) async fn must_end(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    wait_for(
        &format!("process {pid} to end"),
        || match std::fs::read_to_string(&stat) {
            Err(_) => true,
            Ok(text) => text
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        },
    )
    .await;
}

/// A port on 127.0.0.1 where nothing listens.
pub(super) async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address").port()
}

/// How the test HTTP server answers every request.
#[derive(Clone, Debug)]
pub(super) enum Reply {
    Respond {
        status: u16,
        headers: Vec<String>,
        body: String,
    },
    /// Reads the request and never answers.
    Silent,
    /// Reads the request and closes the connection.
    Close,
}

impl Reply {
    pub(super) fn new(status: u16, body: &str) -> Self {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    pub(super) fn header(mut self, line: &str) -> Self {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push(line.to_owned());
        }
        self
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 that records request heads.
pub(super) struct HttpServer {
    pub(super) address: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    pub(super) async fn start(reply: Reply) -> Self {
        Self::serve(reply, None).await
    }

    pub(super) async fn start_tls(reply: Reply, tls: Arc<ServerConfig>) -> Self {
        Self::serve(reply, Some(TlsAcceptor::from(tls))).await
    }

    async fn serve(reply: Reply, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            // Connections end with the server (JoinSet aborts on drop).
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let reply = reply.clone();
                let recorded = recorded.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => answer(tcp, &reply, &recorded).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, &reply, &recorded).await;
                            }
                        }
                    }
                });
            }
        });
        HttpServer {
            address,
            requests,
            task,
        }
    }

    /// The heads of the requests received so far.
    pub(super) fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    reply: &Reply,
    recorded: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    recorded
        .lock()
        .expect("lock")
        .push(String::from_utf8_lossy(&head).into_owned());
    match reply {
        Reply::Respond {
            status,
            headers,
            body,
        } => {
            let mut response = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for line in headers {
                response.push_str(line);
                response.push_str("\r\n");
            }
            response.push_str("\r\n");
            response.push_str(body);
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Reply::Silent => {
            let mut rest = [0u8; 1024];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        }
        Reply::Close => {}
    }
}

/// A CA and a server certificate for 127.0.0.1, issued the way
/// `leitstand pki` does.
pub(super) struct TestPki {
    _dir: Option<tempfile::TempDir>,
    pub(super) ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestPki {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pki = Self::in_dir(dir.path());
        pki._dir = Some(dir);
        pki
    }

    pub(super) fn in_dir(dir: &Path) -> Self {
        pki::init(dir, "city.example", false).expect("pki init");
        let request = pki::IssueRequest {
            kind: PeerKind::Controller,
            name: "service".to_owned(),
            dns: Vec::new(),
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            validity: pki::Validity::days_from_now(1),
            force: false,
        };
        pki::issue(dir, &request).expect("pki issue");
        TestPki {
            _dir: None,
            ca: pki::ca_cert_path(dir),
            cert: pki::cert_path(dir, PeerKind::Controller, "service"),
            key: pki::key_path(dir, PeerKind::Controller, "service"),
        }
    }

    /// A server configuration with the certificate, offering `version`
    /// only, or TLS 1.2 and 1.3; ALPN http/1.1.
    pub(super) fn server_config(
        &self,
        version: Option<&'static SupportedProtocolVersion>,
    ) -> Arc<ServerConfig> {
        let versions = match version {
            Some(v) => vec![v],
            None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
        self.config(&versions, b"http/1.1")
    }

    /// The same for a gRPC server (ALPN h2).
    pub(super) fn grpc_server_config(&self) -> Arc<ServerConfig> {
        self.config(&[&rustls::version::TLS13], b"h2")
    }

    fn config(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[u8],
    ) -> Arc<ServerConfig> {
        let chain = leitstand_proto::tls::read_certificates(&self.cert).expect("certificate");
        let key = PrivateKeyDer::from_pem_file(&self.key).expect("key");
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("certificate and key");
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

/// TLS connections accepted on `listener`, for tonic's `serve_with_incoming`.
pub(super) fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(stream) = acceptor.accept(tcp).await
                && tx.send(Ok(TlsConn(stream))).await.is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A server-side TLS stream tonic can serve.
pub(super) struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
