//! The first live path, with the real binary: a controller and an agent as
//! processes over mTLS, a controller restart the agent rides out, and a
//! SIGHUP reload that changes new handshakes while open streams continue.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki;
use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::agent_gateway_client::AgentGatewayClient;
use leitstand_proto::v1::{self, agent_message, controller_message};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::{Process, field, free_port, must_succeed, site_pki};

struct Site {
    dir: tempfile::TempDir,
    address: String,
}

impl Site {
    /// A PKI made by the CLI, a controller certificate for 127.0.0.1 and a
    /// controller.toml on a free port.
    fn new(agents: &[&str]) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        site_pki(&dir.path().join("pki"), &["1"], agents);
        let address = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            dir.path().join("controller.toml"),
            format!(
                "node_id = 1\nlisten = \"{address}\"\ndata_dir = \"data\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-1.pem\"\nkey = \"pki/controller-1.key\"\ncrl = \"pki/crl.pem\"\n\
                 [cluster]\npeers = {{ 1 = \"{address}\" }}\n"
            ),
        )
        .expect("write controller.toml");
        Site { dir, address }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    fn pki(&self) -> String {
        self.path("pki")
    }

    fn start_controller(&self) -> Process {
        let controller = Process::start(
            "controller",
            &["controller", "--config", &self.path("controller.toml")],
        );
        controller.must_log(&["controller serving", &self.address]);
        // A one-member cluster elects itself first.
        controller.must_log(&["this controller now leads the cluster"]);
        controller
    }

    fn agent_tls(&self, name: &str) -> Arc<ClientTls> {
        let d = Path::new(&self.dir.path().join("pki")).to_owned();
        Arc::new(ClientTls::load(pki::peer_files(&d, PeerKind::Agent, name)).expect("agent TLS"))
    }
}

fn resending(line: &str) -> u64 {
    field(line, "resending").unwrap_or_else(|| panic!("no resending= in {line:?}"))
}

#[test]
fn an_agent_reports_over_mtls_and_rides_out_a_controller_restart() {
    let site = Site::new(&["ww-hengsteysee-1"]);
    std::fs::write(
        site.path("agent.toml"),
        format!(
            "id = \"ww-hengsteysee-1\"\ncontrollers = [\"{}\"]\ninterval = \"200ms\"\nstate_dir = \"agent-state\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-ww-hengsteysee-1.pem\"\nkey = \"pki/agent-ww-hengsteysee-1.key\"\ncrl = \"pki/crl.pem\"\n",
            site.address
        ),
    )
    .expect("write agent.toml");

    let mut controller = site.start_controller();
    let mut agent = Process::start("agent", &["agent", "--config", &site.path("agent.toml")]);
    agent.must_log(&["connected to controller", &site.address]);
    agent.must_log(&["reports acknowledged"]);
    controller.must_log(&["agent connected", "agent=ww-hengsteysee-1"]);

    // The controller goes away; the agent notices and keeps its reports.
    assert!(
        controller.stop().success(),
        "the controller stops cleanly on SIGTERM"
    );
    agent.must_log(&["controller unavailable", &site.address]);
    agent.must_log_n(2, &["controller unavailable"], Duration::from_secs(20));

    // It comes back on the same address; the agent reconnects by itself and
    // replays what the new controller has not acknowledged.
    let mut controller = site.start_controller();
    agent.must_log_n(2, &["connected to controller"], Duration::from_secs(40));
    agent.must_log_n(2, &["reports acknowledged"], Duration::from_secs(20));
    controller.must_log(&["agent connected", "agent=ww-hengsteysee-1"]);
    let reconnect = agent
        .lines()
        .into_iter()
        .filter(|l| l.contains("connected to controller"))
        .nth(1)
        .expect("a second connection");
    assert!(
        resending(&reconnect) > 0,
        "buffered reports are replayed: {reconnect}"
    );

    assert!(agent.stop().success(), "the agent stops cleanly on SIGTERM");
    assert!(controller.stop().success());
}

fn report(seq: u64) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Report(v1::Report {
            seq,
            observed_at_unix_ms: 1_800_000_000_000,
            host: Some(v1::HostMetrics::default()),
            checks: vec![],
        })),
    }
}

async fn expect_ack(inbound: &mut tonic::Streaming<v1::ControllerMessage>, seq: u64) {
    let message = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an answer within 10 s")
        .expect("the stream is healthy")
        .expect("the stream is open");
    match message.kind {
        Some(controller_message::Kind::Ack(ack)) => assert_eq!(ack.seq, seq),
        other => panic!("expected Ack {seq}, got {other:?}"),
    }
}

fn serial_of(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .expect("parse")
        .1
        .raw_serial()
        .to_vec()
}

#[test]
fn sighup_reloads_certificate_and_crl_for_new_handshakes_while_open_streams_continue() {
    let site = Site::new(&["steady", "other"]);
    let mut controller = site.start_controller();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // An open stream, before the reload.
    let steady = site.agent_tls("steady");
    let (outbound, mut inbound) = runtime.block_on(async {
        let channel = steady.channel(&site.address).await.expect("channel");
        let (outbound, rx) = mpsc::channel(16);
        outbound
            .send(v1::AgentMessage {
                kind: Some(agent_message::Kind::Hello(v1::Hello {
                    agent_id: "steady".into(),
                    version: "test".into(),
                    report_interval_ms: 1000,
                    incarnation: 1,
                    ..Default::default()
                })),
            })
            .await
            .expect("queue hello");
        let mut inbound = AgentGatewayClient::new(channel)
            .session(ReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        let welcome = inbound.message().await.expect("healthy").expect("welcome");
        assert!(matches!(
            welcome.kind,
            Some(controller_message::Kind::Welcome(_))
        ));
        outbound.send(report(1)).await.expect("send");
        expect_ack(&mut inbound, 1).await;
        (outbound, inbound)
    });
    let probe = site.agent_tls("other");
    let old_serial = runtime.block_on(async {
        let (stream, _) = probe.connect(&site.address).await.expect("connect");
        serial_of(&stream.get_ref().1.peer_certificates().expect("certificate")[0])
    });

    // New controller certificate, "other" revoked, then SIGHUP.
    let d = site.pki();
    must_succeed(&[
        "pki",
        "issue",
        "--dir",
        &d,
        "--kind",
        "controller",
        "--name",
        "1",
        "--ip",
        "127.0.0.1",
        "--force",
    ]);
    must_succeed(&[
        "pki", "revoke", "--dir", &d, "--kind", "agent", "--name", "other",
    ]);
    controller.signal(Signal::SIGHUP);
    controller.must_log(&["TLS material reloaded"]);

    // New handshakes see the new certificate and the new CRL.
    let fresh = site.agent_tls("steady");
    let new_serial = runtime.block_on(async {
        let (stream, _) = fresh.connect(&site.address).await.expect("connect");
        serial_of(&stream.get_ref().1.peer_certificates().expect("certificate")[0])
    });
    assert_ne!(
        new_serial, old_serial,
        "the reloaded certificate is presented"
    );
    runtime.block_on(async {
        // TLS 1.3 lets the client finish first; the refusal may arrive as an alert.
        if let Ok((mut stream, _)) = probe.connect(&site.address).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Err(_)) | Ok(Ok(0))),
                "a revoked agent gets no answer: {read:?}"
            );
        }
    });
    controller.must_log(&["TLS connection refused", "reason=\"revoked\""]);

    // The stream opened before the reload is still served.
    runtime.block_on(async {
        outbound.send(report(2)).await.expect("send");
        expect_ack(&mut inbound, 2).await;
    });
    assert!(controller.stop().success());
}

/// Sequence numbers a controller process logged as accepted.
fn accepted_seqs(controller: &Process) -> Vec<u64> {
    controller.values("report accepted", "seq")
}

/// Every sequence number either controller accepted, sorted, once each.
fn accepted_by_either(first: &[u64], second: &[u64]) -> Vec<u64> {
    let mut all: Vec<u64> = first.iter().chain(second).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

fn start_debug_controller(site: &Site) -> Process {
    let controller = Process::start_with_log(
        "controller",
        &["controller", "--config", &site.path("controller.toml")],
        "info,leitstand_controller::gateway=debug",
    );
    controller.must_log(&["controller serving", &site.address]);
    controller.must_log(&["this controller now leads the cluster"]);
    controller
}

fn write_agent_toml(site: &Site, name: &str, interval: &str, buffer: &str) {
    std::fs::write(
        site.path("agent.toml"),
        format!(
            "id = \"{name}\"\ncontrollers = [\"{}\"]\ninterval = \"{interval}\"\nbuffer = \"{buffer}\"\nstate_dir = \"agent-state\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-{name}.pem\"\nkey = \"pki/agent-{name}.key\"\n",
            site.address
        ),
    )
    .expect("write agent.toml");
}

/// Runs controller A, then an outage of `outage_reports` report intervals,
/// then controller B; returns (seqs at A, seqs at B, agent).
fn outage(site: &Site, outage_reports: usize) -> (Vec<u64>, Vec<u64>, Process) {
    let mut first = start_debug_controller(site);
    let agent = Process::start("agent", &["agent", "--config", &site.path("agent.toml")]);
    agent.must_log(&["reports acknowledged"]);
    first.must_log_n(5, &["report accepted"], Duration::from_secs(20));
    assert!(first.stop().success());
    let at_first = accepted_seqs(&first);

    // The outage lasts until the agent has taken `outage_reports` reports offline.
    crate::support::wait_until(
        &format!("the agent to take {outage_reports} reports while no controller is up"),
        Duration::from_secs(30),
        || taken_offline(&agent) >= outage_reports,
    );

    let mut second = start_debug_controller(site);
    agent.must_log_n(2, &["connected to controller"], Duration::from_secs(40));
    second.must_log_n(
        outage_reports,
        &["report accepted"],
        Duration::from_secs(20),
    );
    assert!(second.stop().success());
    (at_first, accepted_seqs(&second), agent)
}

/// Reports the agent took without a controller, as far as its log tells:
/// the most it held unacknowledged, plus those it dropped.
fn taken_offline(agent: &Process) -> usize {
    let buffered = agent
        .values("controller unavailable", "buffered")
        .into_iter()
        .max();
    usize::try_from(buffered.unwrap_or(0)).unwrap_or(usize::MAX)
        + agent.count(&["dropped the oldest"])
}

#[test]
fn a_controller_restart_loses_no_report_within_the_buffer_bound() {
    let site = Site::new(&["ww-1"]);
    write_agent_toml(&site, "ww-1", "100ms", "60s");
    let (first, second, mut agent) = outage(&site, 10);

    let all = accepted_by_either(&first, &second);
    let last = *all.last().expect("reports arrived");
    assert_eq!(
        all,
        (1..=last).collect::<Vec<_>>(),
        "sequence numbers are contiguous across the restart"
    );
    let last_at_first = first.iter().max().copied().unwrap_or(0);
    assert!(
        second.iter().any(|&s| s <= last_at_first + 1),
        "the replay starts right after A's last"
    );
    assert_eq!(
        agent.count(&["dropped the oldest"]),
        0,
        "nothing was dropped within the bound"
    );
    assert!(agent.stop().success());
}

#[test]
fn beyond_the_buffer_bound_the_oldest_reports_are_dropped_and_counted() {
    let site = Site::new(&["ww-2"]);
    write_agent_toml(&site, "ww-2", "100ms", "500ms");
    let (first, second, mut agent) = outage(&site, 15);

    let all = accepted_by_either(&first, &second);
    let last = *all.last().expect("reports arrived");
    let missing = (1..=last).filter(|s| all.binary_search(s).is_err()).count() as u64;
    let dropped = agent
        .values("dropped the oldest", "dropped_total")
        .into_iter()
        .max()
        .expect("the agent logged its drops");
    assert!(dropped > 0);
    assert_eq!(
        missing, dropped,
        "exactly the dropped reports are missing at the controllers"
    );
    assert!(agent.stop().success());
}

#[test]
fn a_check_state_change_is_reported_at_once_not_at_the_next_interval() {
    let site = Site::new(&["ww-3"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the checked service");
    let target_address = target.local_addr().expect("address");
    std::fs::write(
        site.path("agent.toml"),
        format!(
            "id = \"ww-3\"\ncontrollers = [\"{}\"]\ninterval = \"30s\"\nstate_dir = \"agent-state\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-ww-3.pem\"\nkey = \"pki/agent-ww-3.key\"\n\
             [[check]]\nname = \"uplink\"\nkind = \"tcp\"\ntarget = \"{target_address}\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\n",
            site.address
        ),
    )
    .expect("write agent.toml");
    let config_path = site.path("controller.toml");
    runtime.block_on(async {
        let controller = leitstand_controller::Controller::start(
            leitstand_controller::ControllerConfig::load(Path::new(&config_path)).expect("controller.toml"),
        )
        .await
        .expect("controller");
        let agent = leitstand_agent::Agent::start(
            leitstand_agent::AgentConfig::load(Path::new(&site.path("agent.toml"))).expect("agent.toml"),
        )
        .expect("agent");
        let id = leitstand_proto::domain::AgentId::new("ww-3").expect("id");
        let status_of_uplink = || {
            controller
                .latest_report(&id)
                .and_then(|(_, report)| report)
                .and_then(|r| r.checks.into_iter().find(|c| c.name.as_str() == "uplink"))
                .map(|c| c.status)
        };
        let wait = |want: leitstand_proto::domain::CheckStatus, within: Duration| {
            let deadline = tokio::time::Instant::now() + within;
            async move {
                while status_of_uplink() != Some(want) {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the controller did not see uplink {want:?} within {within:?} (reports every 30 s)"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        wait(leitstand_proto::domain::CheckStatus::Ok, Duration::from_secs(10)).await;
        drop(target);
        // The periodic report is 30 s away: only the immediate one can arrive this soon.
        wait(leitstand_proto::domain::CheckStatus::Critical, Duration::from_secs(5)).await;
        agent.shutdown().await;
        controller.shutdown(Duration::from_secs(2)).await.expect("shutdown");
    });
}

#[test]
fn sighup_reloads_checks_and_actions_without_dropping_the_stream() {
    let site = Site::new(&["ww-4"]);
    let base = format!(
        "id = \"ww-4\"\ncontrollers = [\"{}\"]\ninterval = \"500ms\"\nstate_dir = \"agent-state\"\n\
         [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-ww-4.pem\"\nkey = \"pki/agent-ww-4.key\"\n\
         [[check]]\nname = \"one\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:9\"\n",
        site.address
    );
    std::fs::write(site.path("agent.toml"), &base).expect("write agent.toml");
    let mut controller = site.start_controller();
    let mut agent = Process::start("agent", &["agent", "--config", &site.path("agent.toml")]);
    agent.must_log(&["reports acknowledged"]);

    // A broken file is refused and changes nothing.
    std::fs::write(site.path("agent.toml"), format!("{base}bogus = 1\n")).expect("write");
    agent.signal(Signal::SIGHUP);
    agent.must_log(&[
        "reload failed; keeping the previous configuration",
        "agent.toml:",
    ]);

    std::fs::write(
        site.path("agent.toml"),
        format!(
            "{base}[[check]]\nname = \"two\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:9\"\n\
             [[action]]\nname = \"activate-lte\"\nargv = [\"/bin/true\"]\n"
        ),
    )
    .expect("write");
    agent.signal(Signal::SIGHUP);
    agent.must_log(&["configuration and TLS material reloaded"]);
    controller.must_log(&[
        "agent announced a reloaded configuration",
        "checks=2",
        "actions=1",
    ]);
    assert_eq!(
        agent.count(&["connected to controller"]),
        1,
        "the stream was not dropped"
    );
    assert!(agent.stop().success());
    assert!(controller.stop().success());
}
