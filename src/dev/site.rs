//! The sandbox's site: its folder with certificates and configuration, the
//! two endpoints standing in for the demo service's paths, and the three
//! controllers and the agent, all running in this process.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use leitstand_agent::{Agent, AgentConfig};
use leitstand_controller::{Controller, ControllerConfig};
use leitstand_proto::domain::{AgentId, Report};
use leitstand_proto::error_chain;
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_tui::PathState;
use leitstand_tui::{OperatorClient, OperatorConfig};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use super::{PathName, Request};

/// The demo service of the runbook.
pub(super) const SERVICE: &str = "leitstelle-uplink";
const AGENT_ID: &str = "dev-agent";
const OPERATOR: &str = "admin";
const TRUST_DOMAIN: &str = "dev.leitstand.invalid";
/// From the first line to a sandbox that can fail over, at most.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Each path: (role, name in the runbook, the agent's check, the action).
const PATHS: [(PathName, &str, &str, &str); 2] = [
    (PathName::Primary, "fiber", "uplink-fiber", "activate-fiber"),
    (PathName::Backup, "lte", "uplink-lte", "activate-lte"),
];

/// The demo runbook, commented for whoever opens it in the folder.
const RUNBOOK: &str = r#"# The sandbox's runbook (docs/runbook-reference.md explains every key).
# Change it and apply it again:
#   leitstand runbook apply runbook.toml --config operator.toml

[[service]]
name = "leitstelle-uplink"
mode = "auto"                          # "approve": a person approves each switch (dashboard tab 4, key a)
failback = { after = "10s" }           # back to fiber once it has been healthy for 10 s
flap_guard = { min_interval = "1s", max_per_hour = 60 }  # generous: the sandbox is for breaking things

[[service.path]]                       # the first path is the preferred one
name = "fiber"
vantage = [{ agent = "dev-agent", check = "uplink-fiber" }]
quorum = 1
fail_after = 3                         # three failed checks at 200 ms: 600 ms to detect
recover_after = 3
stale_after = "3s"
silence_means = "unknown"
activate = { agent = "dev-agent", action = "activate-fiber" }
verify = { agent = "dev-agent", check = "uplink-fiber" }

[[service.path]]
name = "lte"
vantage = [{ agent = "dev-agent", check = "uplink-lte" }]
quorum = 1
fail_after = 3
recover_after = 3
stale_after = "3s"
silence_means = "unknown"
activate = { agent = "dev-agent", action = "activate-lte" }
verify = { agent = "dev-agent", check = "uplink-lte" }
"#;

/// The executor's action: one line in the journal the sandbox prints.
const ACTION_SCRIPT: &str = "#!/bin/sh\n\
# Run by the agent for an action of the sandbox's runbook: a real site would\n\
# switch a route here. Leitstand passes the decision and its fencing token.\n\
echo \"$1 $LEITSTAND_DECISION_ID $LEITSTAND_FENCING_TOKEN\" >> \"$JOURNAL\"\n\
echo \"$1 done\"\n";

/// A fresh folder only this user can read.
pub(super) fn make_root() -> anyhow::Result<TempDir> {
    let root = tempfile::Builder::new()
        .prefix("leitstand-dev-")
        .tempdir()
        .context("creating the sandbox's folder")?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(root)
}

/// A local endpoint a tcp check reaches until it is broken.
#[derive(Debug)]
struct Endpoint {
    role: PathName,
    name: &'static str,
    address: SocketAddr,
    /// Accepts while `Some`; the listening socket closes with the task.
    task: Option<JoinHandle<()>>,
}

impl Endpoint {
    fn open(role: PathName, name: &'static str) -> anyhow::Result<Endpoint> {
        let (address, task) = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .with_context(|| format!("opening the endpoint of path {name}"))?;
        Ok(Endpoint {
            role,
            name,
            address,
            task: Some(task),
        })
    }

    /// Closes the listening socket: the check gets "connection refused".
    async fn close(&mut self) -> bool {
        let Some(task) = self.task.take() else {
            return false;
        };
        task.abort();
        // Only once the task is gone is the socket closed (and the port free).
        let _ = task.await;
        true
    }

    /// Listens on the same address again.
    fn reopen(&mut self) -> anyhow::Result<bool> {
        if self.task.is_some() {
            return Ok(false);
        }
        let (_, task) =
            listen(self.address).with_context(|| format!("listening on {} again", self.address))?;
        self.task = Some(task);
        Ok(true)
    }
}

/// Listens on `address` (address reuse: the port may have connections in
/// TIME_WAIT from before a break) and accepts and closes connections.
fn listen(address: SocketAddr) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    let listener = socket.listen(64)?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((connection, _)) => drop(connection),
                // Out of descriptors, say: the check fails, the loop goes on.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    Ok((address, task))
}

struct Running {
    controllers: [Controller; 3],
    agent: Agent,
}

pub(super) struct Site {
    folder: PathBuf,
    /// Removed with everything in it when taken and closed (or dropped).
    root: std::sync::Mutex<Option<TempDir>>,
    running: tokio::sync::Mutex<Option<Running>>,
    endpoints: tokio::sync::Mutex<Vec<Endpoint>>,
    client: Arc<OperatorClient>,
    controllers: Vec<String>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("folder", &self.folder)
            .field("controllers", &self.controllers)
            .finish_non_exhaustive()
    }
}

/// A free port on loopback: bound, then released for a controller (the
/// race with another program is harmless on a developer's machine).
fn free_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.to_string())
}

fn issue(dir: &Path, kind: PeerKind, name: &str) -> anyhow::Result<()> {
    let loopback = kind == PeerKind::Controller;
    pki::issue(
        dir,
        &IssueRequest {
            kind,
            name: name.to_owned(),
            dns: if loopback {
                vec!["localhost".to_owned()]
            } else {
                Vec::new()
            },
            ips: if loopback {
                vec![Ipv4Addr::LOCALHOST.into()]
            } else {
                Vec::new()
            },
            validity: Validity::days_from_now(1),
            force: false,
        },
    )
    .with_context(|| format!("issuing the certificate of {name}"))?;
    Ok(())
}

fn quoted(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl Site {
    /// Writes the folder's files and starts the endpoints, the three
    /// controllers and the agent. Dropping `root` on an error removes it.
    pub(super) async fn start(root: TempDir) -> anyhow::Result<Site> {
        let dir = root.path().to_owned();
        let pki_dir = dir.join("pki");
        pki::init(&pki_dir, TRUST_DOMAIN, false).context("creating the certificate authority")?;
        for id in ["1", "2", "3"] {
            issue(&pki_dir, PeerKind::Controller, id)?;
        }
        issue(&pki_dir, PeerKind::Agent, AGENT_ID)?;
        issue(&pki_dir, PeerKind::Operator, OPERATOR)?;

        let addresses = (0..3)
            .map(|_| free_address())
            .collect::<anyhow::Result<Vec<String>>>()?;
        let peers: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{} = \"{a}\"", i + 1))
            .collect();
        for (i, address) in addresses.iter().enumerate() {
            let id = i + 1;
            write(
                &dir.join(format!("controller-{id}.toml")),
                &format!(
                    "node_id = {id}\nlisten = \"{address}\"\ndata_dir = \"data-{id}\"\n\
                     [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-{id}.pem\"\nkey = \"pki/controller-{id}.key\"\ncrl = \"pki/crl.pem\"\n\
                     [cluster]\npeers = {{ {} }}\n[rbac]\nadmin = [\"{OPERATOR}\"]\n",
                    peers.join(", ")
                ),
            )?;
        }
        let operator_toml = dir.join("operator.toml");
        write(
            &operator_toml,
            &format!(
                "controllers = {}\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-{OPERATOR}.pem\"\nkey = \"pki/operator-{OPERATOR}.key\"\n",
                quoted(&addresses)
            ),
        )?;
        write(&dir.join("runbook.toml"), RUNBOOK)?;
        let script = dir.join("activate.sh");
        write(&script, ACTION_SCRIPT)?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;

        let endpoints = PATHS
            .iter()
            .map(|(role, name, _, _)| Endpoint::open(*role, name))
            .collect::<anyhow::Result<Vec<Endpoint>>>()?;
        let mut agent_toml = format!(
            "# The sandbox's agent: this machine's health, and a tcp check on each\n\
             # path's endpoint every 200 ms.\n\
             id = \"{AGENT_ID}\"\ncontrollers = {}\ninterval = \"200ms\"\nstate_dir = \"agent-state\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-{AGENT_ID}.pem\"\nkey = \"pki/agent-{AGENT_ID}.key\"\ncrl = \"pki/crl.pem\"\n",
            quoted(&addresses)
        );
        for ((_, _, check, action), endpoint) in PATHS.iter().zip(&endpoints) {
            agent_toml.push_str(&format!(
                "[[check]]\nname = \"{check}\"\nkind = \"tcp\"\ntarget = \"{}\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\n\
                 [[action]]\nname = \"{action}\"\nargv = [\"{}\", \"{action}\"]\nenv = {{ JOURNAL = \"{}\" }}\ntimeout = \"5s\"\n",
                endpoint.address,
                script.display(),
                dir.join("journal").display()
            ));
        }
        let agent_path = dir.join("agent.toml");
        write(&agent_path, &agent_toml)?;

        let load = |id: usize| ControllerConfig::load(&dir.join(format!("controller-{id}.toml")));
        let (one, two, three) = (load(1)?, load(2)?, load(3)?);
        let (one, two, three) = tokio::try_join!(
            Controller::start(one),
            Controller::start(two),
            Controller::start(three)
        )
        .context("starting the controllers")?;
        let agent = Agent::start(AgentConfig::load(&agent_path)?).context("starting the agent")?;
        let config = OperatorConfig::load(&operator_toml)?;
        let client = Arc::new(OperatorClient::new(&config)?.with_deadline(Duration::from_secs(3)));
        Ok(Site {
            folder: dir,
            root: std::sync::Mutex::new(Some(root)),
            running: tokio::sync::Mutex::new(Some(Running {
                controllers: [one, two, three],
                agent,
            })),
            endpoints: tokio::sync::Mutex::new(endpoints),
            client,
            controllers: addresses,
        })
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.folder.join(name)
    }

    pub(super) fn operator_toml(&self) -> PathBuf {
        self.path("operator.toml")
    }

    pub(super) fn client(&self) -> Arc<OperatorClient> {
        Arc::clone(&self.client)
    }

    pub(super) fn controllers(&self) -> Vec<String> {
        self.controllers.clone()
    }

    /// Waits for a leader and the agent, applies the runbook, and waits
    /// until both paths are healthy and the service runs on fiber.
    #[allow(clippy::print_stdout)]
    pub(super) async fn until_ready(&self, started: tokio::time::Instant) -> anyhow::Result<()> {
        let deadline = started + READY_WITHIN;
        let seconds = || started.elapsed().as_secs_f64();
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader = false;
        let mut applied = false;
        let mut last_error = String::new();
        loop {
            poll.tick().await;
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the sandbox was not ready within {READY_WITHIN:?} (last: {last_error}); the logs say why"
                );
            }
            let view = match self.client.status().await {
                Ok(view) => view,
                Err(e) => {
                    last_error = error_chain(&e);
                    continue;
                }
            };
            if !leader && let Some(id) = view.cluster.as_ref().and_then(|c| c.leader_id) {
                leader = true;
                println!(
                    "  {:>4.1} s  the controllers elected node {id} to lead",
                    seconds()
                );
            }
            if !applied {
                if !self.agent_announced().await {
                    last_error = format!("agent {AGENT_ID} has not reported its checks yet");
                    continue;
                }
                println!(
                    "  {:>4.1} s  agent {AGENT_ID} reports this machine and both paths",
                    seconds()
                );
                let file = self.path("runbook.toml");
                if crate::runbook_apply::apply(&file, &self.operator_toml()).await
                    != ExitCode::SUCCESS
                {
                    last_error = "applying the runbook failed".to_owned();
                    continue;
                }
                applied = true;
            }
            let service = view.services.iter().find(|s| s.name == SERVICE);
            let healthy = service.is_some_and(|s| {
                s.active_path == "fiber"
                    && s.paths.len() == PATHS.len()
                    && s.paths.iter().all(|p| p.state == PathState::Healthy)
            });
            if healthy {
                return Ok(());
            }
            last_error = "waiting for both paths to be healthy".to_owned();
        }
    }

    /// Whether the agent is connected to a controller (the one that leads:
    /// it reports only there) and its latest report names both checks.
    /// Asked in this process: an operator's view of agents is the view of
    /// whichever controller answered.
    async fn agent_announced(&self) -> bool {
        let Ok(agent) = AgentId::new(AGENT_ID) else {
            return false;
        };
        let running = self.running.lock().await;
        running.as_ref().is_some_and(|running| {
            running.controllers.iter().any(|c| {
                c.is_connected(&agent)
                    && c.latest_report(&agent)
                        .and_then(|(_, report)| report)
                        .is_some_and(|r| names_both_checks(&r))
            })
        })
    }

    /// Breaks or repairs a path; the sentence says what happened.
    pub(super) async fn apply(&self, request: Request) -> Result<String, String> {
        let mut endpoints = self.endpoints.lock().await;
        let Some(endpoint) = endpoints.iter_mut().find(|e| e.role == request.path) else {
            return Err(format!("the sandbox has no {} path", request.path.as_str()));
        };
        let what = format!(
            "the {} path ({}, {})",
            endpoint.role.as_str(),
            endpoint.name,
            endpoint.address
        );
        if request.repair {
            match endpoint.reopen() {
                Ok(true) => Ok(format!("repaired {what}: it accepts connections again")),
                Ok(false) => Ok(format!("{what} was not broken")),
                Err(e) => Err(format!("could not repair {what}: {e:#}")),
            }
        } else if endpoint.close().await {
            Ok(format!("broke {what}: connections are refused now"))
        } else {
            Ok(format!("{what} was already broken"))
        }
    }

    /// Stops the agent, the controllers and the endpoints and removes the
    /// folder; returns its path.
    pub(super) async fn shutdown(&self) -> anyhow::Result<PathBuf> {
        if let Some(running) = self.running.lock().await.take() {
            running.agent.shutdown().await;
            let [one, two, three] = running.controllers;
            let grace = Duration::from_secs(1);
            let stopped = tokio::join!(
                one.shutdown(grace),
                two.shutdown(grace),
                three.shutdown(grace)
            );
            for result in [stopped.0, stopped.1, stopped.2] {
                if let Err(e) = result {
                    tracing::warn!("controller shutdown: {}", error_chain(&e));
                }
            }
        }
        for endpoint in self.endpoints.lock().await.iter_mut() {
            endpoint.close().await;
        }
        let root = self
            .root
            .lock()
            .map_err(|_| anyhow::anyhow!("the folder's lock was poisoned"))?
            .take();
        if let Some(root) = root {
            root.close()
                .with_context(|| format!("removing {}", self.folder.display()))?;
        }
        Ok(self.folder.clone())
    }
}

/// The agent's report names both paths' checks.
fn names_both_checks(report: &Report) -> bool {
    PATHS
        .iter()
        .all(|(_, _, check, _)| report.checks.iter().any(|c| c.name.as_str() == *check))
}
