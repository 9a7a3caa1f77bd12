//! `leitstand dev`: a sandbox on this machine. For now one controller and
//! one agent, in this process, with a fresh certificate authority in a
//! temporary folder; they log what they do. Ctrl-C removes everything.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use leitstand_agent::{Agent, AgentConfig};
use leitstand_controller::{Controller, ControllerConfig};
use leitstand_proto::error_chain;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};

const TRUST_DOMAIN: &str = "dev.leitstand.invalid";
const AGENT_ID: &str = "dev-agent";

pub(crate) async fn run(headless: bool) -> ExitCode {
    if !headless {
        tracing::warn!("the dashboard is not available yet; running headless");
    }
    match sandbox().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("leitstand dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn issue(dir: &Path, kind: PeerKind, name: &str, loopback: bool) -> anyhow::Result<()> {
    let (dns, ips) = if loopback {
        (
            vec!["localhost".to_owned()],
            vec![std::net::Ipv4Addr::LOCALHOST.into()],
        )
    } else {
        (Vec::new(), Vec::new())
    };
    pki::issue(
        dir,
        &IssueRequest {
            kind,
            name: name.to_owned(),
            dns,
            ips,
            validity: Validity::days_from_now(1),
            force: false,
        },
    )?;
    Ok(())
}

async fn sandbox() -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("leitstand-dev-")
        .tempdir()?;
    let pki_dir = root.path().join("pki");
    pki::init(&pki_dir, TRUST_DOMAIN, false)?;
    issue(&pki_dir, PeerKind::Controller, "1", true)?;
    issue(&pki_dir, PeerKind::Agent, AGENT_ID, false)?;

    let controller_toml = root.path().join("controller.toml");
    std::fs::write(
        &controller_toml,
        "node_id = 1\n\
         listen = \"127.0.0.1:0\"\n\
         data_dir = \"controller-1\"\n\
         [tls]\n\
         ca = \"pki/ca.pem\"\n\
         cert = \"pki/controller-1.pem\"\n\
         key = \"pki/controller-1.key\"\n\
         crl = \"pki/crl.pem\"\n\
         [cluster]\n\
         peers = { 1 = \"127.0.0.1:0\" }\n",
    )?;
    let controller = Controller::start(ControllerConfig::load(&controller_toml)?).await?;
    let address = controller.local_addr();

    let agent_toml = root.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "id = \"{AGENT_ID}\"\n\
             controllers = [\"{address}\"]\n\
             interval = \"1s\"\n\
             state_dir = \"agent-state\"\n\
             [tls]\n\
             ca = \"pki/ca.pem\"\n\
             cert = \"pki/agent-{AGENT_ID}.pem\"\n\
             key = \"pki/agent-{AGENT_ID}.key\"\n\
             crl = \"pki/crl.pem\"\n\
             [[check]]\n\
             name = \"controller-port\"\n\
             kind = \"tcp\"\n\
             target = \"{address}\"\n\
             interval = \"1s\"\n"
        ),
    )?;
    let agent = Agent::start(AgentConfig::load(&agent_toml)?)?;

    #[allow(clippy::print_stdout)]
    {
        println!("Leitstand dev sandbox");
        println!(
            "  certificates and configuration: {}",
            root.path().display()
        );
        println!("  controller 1 listening on {address} (mTLS, TLS 1.3)");
        println!(
            "  agent {AGENT_ID} reporting this machine's health and one tcp check every second"
        );
        println!("  Ctrl-C stops both and removes the folder");
    }

    let agent_id = leitstand_proto::domain::AgentId::new(AGENT_ID)?;
    let mut status = tokio::time::interval(Duration::from_secs(10));
    status.tick().await;
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            result = &mut stop => { result?; break; }
            _ = status.tick() => print_status(&controller, &agent_id),
        }
    }
    tracing::info!("stopping the sandbox");
    agent.shutdown().await;
    if let Err(e) = controller.shutdown(Duration::from_secs(2)).await {
        tracing::warn!("controller shutdown: {}", error_chain(&e));
    }
    root.close()?;
    Ok(())
}

/// One plain line: what the controller knows of the agent right now.
#[allow(clippy::print_stdout)]
fn print_status(controller: &Controller, agent: &leitstand_proto::domain::AgentId) {
    let Some((seq, report)) = controller.latest_report(agent) else {
        println!("{agent}: no report yet");
        return;
    };
    let checks: Vec<String> = report
        .map(|r| {
            r.checks
                .iter()
                .map(|c| format!("{} {:?}", c.name, c.status))
                .collect()
        })
        .unwrap_or_default();
    let connected = if controller.is_connected(agent) {
        "connected"
    } else {
        "disconnected"
    };
    println!(
        "{agent}: {connected}, {} reports accepted (last #{seq}); checks: {}",
        controller.reports_accepted(),
        if checks.is_empty() {
            "none yet".to_owned()
        } else {
            checks.join(", ")
        }
    );
}

async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
