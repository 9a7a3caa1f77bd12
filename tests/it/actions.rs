//! The agent's action path over a real mTLS Session. Until the failover
//! engine sends ExecuteAction, a stand-in controller in this test does: a
//! real AgentGateway server behind the real TLS accept loop, sending the
//! requests a test names and handing back the agent's ActionResults.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::ServerTls;
use leitstand_proto::v1::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use leitstand_proto::v1::{self, agent_message, controller_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Sends ExecuteAction requests from `requests` on the agent's session and
/// forwards its ActionResults to `results`; acknowledges reports.
struct StandInController {
    requests: Mutex<Option<mpsc::Receiver<v1::ExecuteAction>>>,
    results: mpsc::Sender<v1::ActionResult>,
    announced_actions: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl AgentGateway for StandInController {
    type SessionStream = ReceiverStream<Result<v1::ControllerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let mut requests = self
            .requests
            .lock()
            .expect("requests")
            .take()
            .ok_or_else(|| Status::unavailable("one session per test"))?;
        let results = self.results.clone();
        let announced = self.announced_actions.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let say = |kind| v1::ControllerMessage { kind: Some(kind) };
            // Like a real controller: nothing before Welcome.
            let mut welcomed = false;
            loop {
                tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(v1::AgentMessage { kind: Some(kind) })) => match kind {
                            agent_message::Kind::Hello(hello) => {
                                *announced.lock().expect("announced") = hello.actions;
                                let welcome = v1::Welcome { node_id: 1, ..Default::default() };
                                let _ = tx.send(Ok(say(controller_message::Kind::Welcome(welcome)))).await;
                                welcomed = true;
                            }
                            agent_message::Kind::Report(report) => {
                                let ack = v1::Ack { seq: report.seq };
                                let _ = tx.send(Ok(say(controller_message::Kind::Ack(ack)))).await;
                            }
                            agent_message::Kind::ActionResult(result) => {
                                let _ = results.send(result).await;
                            }
                            agent_message::Kind::Announce(_) => {}
                        },
                        _ => return,
                    },
                    Some(execute) = requests.recv(), if welcomed => {
                        let _ = tx.send(Ok(say(controller_message::Kind::ExecuteAction(execute)))).await;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends one request through the stand-in and waits for the agent's answer.
async fn answer(
    requests: &mpsc::Sender<v1::ExecuteAction>,
    results: &mut mpsc::Receiver<v1::ActionResult>,
    request: v1::ExecuteAction,
) -> v1::ActionResult {
    requests
        .send(request)
        .await
        .expect("the stand-in takes requests");
    tokio::time::timeout(Duration::from_secs(20), results.recv())
        .await
        .expect("the agent answers within 20 s")
        .expect("a result")
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn execute(decision: &str, action: &str, term: u64, index: u64) -> v1::ExecuteAction {
    v1::ExecuteAction {
        decision_id: decision.into(),
        service: "dispatch-uplink".into(),
        action: action.into(),
        fencing_token: Some(v1::FencingToken { term, index }),
        deadline_unix_ms: unix_ms() + 60_000,
    }
}

fn issue(dir: &Path, kind: PeerKind, name: &str) {
    let loopback = kind == PeerKind::Controller;
    pki::issue(
        dir,
        &IssueRequest {
            kind,
            name: name.into(),
            dns: vec![],
            ips: if loopback {
                vec![std::net::Ipv4Addr::LOCALHOST.into()]
            } else {
                vec![]
            },
            validity: Validity::days_from_now(1),
            force: false,
        },
    )
    .expect("issue");
}

#[test]
fn actions_requested_over_the_session_run_once_in_fencing_order_and_only_from_the_allowlist() {
    // The agent's log, shown when this test fails.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir, "stadt.example", false).expect("pki init");
    issue(&pki_dir, PeerKind::Controller, "1");
    issue(&pki_dir, PeerKind::Agent, "leitstelle-1");
    let journal = dir.path().join("journal");
    let script = dir.path().join("uplink.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"$1 $LEITSTAND_FENCING_TOKEN\" >> \"$JOURNAL\"\necho \"switched to $1\"\n")
        .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server_tls = Arc::new(
            ServerTls::load(pki::peer_files(&pki_dir, PeerKind::Controller, "1"))
            .expect("server TLS"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (request_tx, request_rx) = mpsc::channel(16);
        let (result_tx, mut results) = mpsc::channel(16);
        let announced = Arc::new(Mutex::new(Vec::new()));
        let stand_in = StandInController {
            requests: Mutex::new(Some(request_rx)),
            results: result_tx,
            announced_actions: announced.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentGatewayServer::new(stand_in))
                .serve_with_incoming(leitstand_proto::tls::incoming(listener, server_tls)),
        );

        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "id = \"leitstelle-1\"\ncontrollers = [\"{address}\"]\ninterval = \"1s\"\nstate_dir = \"state\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-leitstelle-1.pem\"\nkey = \"pki/agent-leitstelle-1.key\"\n\
                 [[action]]\nname = \"activate-lte\"\nargv = [\"{}\", \"lte\"]\nenv = {{ JOURNAL = \"{}\" }}\n",
                script.display(),
                journal.display()
            ),
        )
        .expect("agent.toml");
        let agent = leitstand_agent::Agent::start(
            leitstand_agent::AgentConfig::load(&dir.path().join("agent.toml")).expect("agent.toml"),
        )
        .expect("agent");

        let outcome = |r: &v1::ActionResult| v1::ActionOutcome::try_from(r.outcome).expect("outcome");

        let ran = answer(&request_tx, &mut results, execute("d-1", "activate-lte", 2, 10)).await;
        assert_eq!(outcome(&ran), v1::ActionOutcome::Succeeded, "{ran:?}");
        assert_eq!(ran.output.trim(), "switched to lte");
        assert_eq!(ran.decision_id, "d-1");

        let again = answer(&request_tx, &mut results, execute("d-1", "activate-lte", 2, 10)).await;
        assert!(again.replayed, "a re-sent decision gets its stored result: {again:?}");

        let stale = answer(&request_tx, &mut results, execute("d-2", "activate-lte", 2, 9)).await;
        assert_eq!(outcome(&stale), v1::ActionOutcome::Refused);
        assert!(stale.reason.contains("stale fencing token"), "{stale:?}");

        let foreign = answer(&request_tx, &mut results, execute("d-3", "format-disk", 3, 1)).await;
        assert_eq!(outcome(&foreign), v1::ActionOutcome::Refused);
        assert!(foreign.reason.contains("not in this agent's allowlist"), "{foreign:?}");

        assert_eq!(
            std::fs::read_to_string(&journal).expect("journal"),
            "lte 2.10\n",
            "the action ran exactly once"
        );
        assert_eq!(*announced.lock().expect("announced"), vec!["activate-lte"], "Hello names the allowlist");
        agent.shutdown().await;
    });
}
