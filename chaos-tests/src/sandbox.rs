//! The drill sandbox: N `leitstand controller` and M `leitstand agent`
//! processes with a fresh PKI in a temporary directory, a fault on every
//! link, local endpoints standing in for a service's redundant paths, and
//! executor actions that append to a journal.
//!
//! The links, in the default proxy mode (on loopback): controller i dials
//! peer j through its own proxy (`[cluster] peer_routes`), so every ordered
//! pair can be cut on its own; every agent reaches controller j through
//! controller j's agent proxy, which is also the address controller j
//! advertises, so a leader hint leads through it too. In the netns mode
//! (root; `netns.rs`) every process has a network namespace of its own and
//! the same links are broken by iptables and tc inside the namespaces; the
//! fault API (`set_peer_link`, `set_agent_link`, `partition`,
//! `heal_network`) is the same for both. The harness itself talks to each
//! controller directly: it observes, it is not part of the experiment.
//!
//! Everything is torn down when the sandbox is dropped (on an error, a panic
//! or Ctrl-C): the processes are killed (`kill_on_drop`), the proxies and
//! endpoints are tasks of this process, the namespaces and the bridge are
//! deleted, the directory is removed.

mod endpoint;
pub(crate) mod netns;
mod observer;
pub(crate) mod process;
pub(crate) mod sim_agent;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::{ClientTls, TlsFiles};
use leitstand_proto::v1::operator_client::OperatorClient;
use leitstand_proto::v1::{self, ClusterStatusRequest, StatusRequest};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::drill::Network;
use crate::proxy::{Fault, Proxy};
pub(crate) use endpoint::Endpoint;
use netns::{Link, Node, PacketFault};
pub(crate) use observer::{Observations, Sample};
use process::{Process, write_script};

pub(crate) const TRUST_DOMAIN: &str = "drill.leitstand.invalid";
pub(crate) const OPERATOR: &str = "drill";
pub(crate) const SERVICE: &str = "uplink";
pub(crate) const PRIMARY: &str = "fiber";
pub(crate) const BACKUP: &str = "lte";
/// Runs both paths' activation actions, and watches both paths.
pub(crate) const EXECUTOR: &str = "site-1";
/// A second vantage point on both paths.
pub(crate) const WITNESS: &str = "site-2";
pub(crate) const CHECK_INTERVAL_MS: u64 = 200;
pub(crate) const REPORT_INTERVAL_MS: u64 = 200;
pub(crate) const FAIL_AFTER: u32 = 3;
pub(crate) const RECOVER_AFTER: u32 = 2;
pub(crate) const STALE_AFTER_MS: u64 = 2000;
/// DESIGN.md §6 I7: fail_after × interval + 2 s.
pub(crate) const LIVENESS_BUDGET_MS: i64 = FAIL_AFTER as i64 * CHECK_INTERVAL_MS as i64 + 2000;

const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const START_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// The action every executor runs: its first command reads the clock.
const ACTION_SCRIPT: &str = "#!/bin/sh\n\
    t=$(/bin/date +%s%N)\n\
    echo \"$t $1 $2 ${LEITSTAND_DECISION_ID:--} ${LEITSTAND_SERVICE:--} ${LEITSTAND_FENCING_TOKEN:--}\" >> \"$JOURNAL\"\n\
    echo \"activated $2\"\n";

/// The shape of a sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) controllers: u64,
    /// `[cluster] snapshot_after_entries` and `keep_entries_after_snapshot`.
    pub(crate) snapshots: Option<(u64, u64)>,
    pub(crate) runbook: RunbookShape,
    /// Environment for the executor agent (the test-only fencing switch).
    pub(crate) executor_env: Vec<(String, String)>,
    /// A node whose data directory lives on a small tmpfs (root only).
    pub(crate) small_disk: Option<(u64, u64)>,
    /// How the links are made and broken.
    pub(crate) network: Network,
}

impl Spec {
    pub(crate) fn new(controllers: u64) -> Spec {
        Spec {
            controllers,
            snapshots: None,
            runbook: RunbookShape::default(),
            executor_env: Vec::new(),
            small_disk: None,
            network: Network::Proxy,
        }
    }
}

/// What the drill's runbook says about the service `uplink`.
#[derive(Debug, Clone)]
pub(crate) struct RunbookShape {
    pub(crate) failback_after: Option<&'static str>,
    pub(crate) min_interval: &'static str,
    pub(crate) max_per_hour: u32,
    /// Extra vantage points on the primary path: (agent, check).
    pub(crate) extra_primary_vantage: Vec<(String, String)>,
}

impl Default for RunbookShape {
    fn default() -> Self {
        RunbookShape {
            failback_after: None,
            min_interval: "0s",
            max_per_hour: 60,
            extra_primary_vantage: Vec::new(),
        }
    }
}

impl RunbookShape {
    pub(crate) fn text(&self) -> String {
        let failback = match self.failback_after {
            None => "\"manual\"".to_owned(),
            Some(after) => format!("{{ after = \"{after}\" }}"),
        };
        let mut out = format!(
            "[[service]]\nname = \"{SERVICE}\"\nmode = \"auto\"\nfailback = {failback}\n\
             flap_guard = {{ min_interval = \"{}\", max_per_hour = {} }}\n",
            self.min_interval, self.max_per_hour
        );
        for path in [PRIMARY, BACKUP] {
            let mut vantage = vec![
                format!("{{ agent = \"{EXECUTOR}\", check = \"{path}\" }}"),
                format!("{{ agent = \"{WITNESS}\", check = \"{path}\" }}"),
            ];
            if path == PRIMARY {
                vantage.extend(
                    self.extra_primary_vantage
                        .iter()
                        .map(|(a, c)| format!("{{ agent = \"{a}\", check = \"{c}\" }}")),
                );
            }
            out.push_str(&format!(
                "\n[[service.path]]\nname = \"{path}\"\nvantage = [{}]\nquorum = 1\n\
                 fail_after = {FAIL_AFTER}\nrecover_after = {RECOVER_AFTER}\nstale_after = \"{STALE_AFTER_MS}ms\"\n\
                 silence_means = \"unknown\"\nactivate = {{ agent = \"{EXECUTOR}\", action = \"activate-{path}\" }}\n\
                 verify = {{ agent = \"{EXECUTOR}\", check = \"{path}\" }}\n",
                vantage.join(", ")
            ));
        }
        out
    }
}

/// Something that happened, on the drill's clock.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Event {
    pub(crate) at_ms: u64,
    pub(crate) unix_ms: i64,
    pub(crate) what: String,
}

/// What the scenario did that the invariant checker needs to know.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    pub(crate) timeline: Vec<Event>,
    /// The runbook texts applied, by version.
    pub(crate) runbooks: BTreeMap<u64, String>,
    /// Ground truth: when each path's endpoint was closed (unix ms, end
    /// None while it still is).
    pub(crate) outages: Vec<Outage>,
    /// Operator actions the cluster acknowledged: (audit index, what).
    pub(crate) acknowledged: Vec<(u64, String)>,
    /// I7 expectations: a failover to `to_path` executed by `by_unix_ms`.
    pub(crate) liveness: Vec<Liveness>,
    /// I8: attempts that must have been refused, and whether they were.
    pub(crate) security: Vec<SecurityProbe>,
    /// Failures of the harness's own expectations (not an invariant).
    pub(crate) expectations: Vec<(String, bool, String)>,
    /// Controller clusters this drill replaced with a new one.
    pub(crate) earlier: Vec<Epoch>,
}

/// What a replaced cluster left: its chain, leadership claims and samples
/// (its terms and indices are not comparable with the next one's).
#[derive(Debug, Clone, Default)]
pub(crate) struct Epoch {
    pub(crate) chain: Vec<leitstand_controller::audit::AuditEntry>,
    pub(crate) claims: Vec<(u64, u64, String)>,
    pub(crate) samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub(crate) struct Outage {
    pub(crate) path: String,
    pub(crate) from_unix_ms: i64,
    pub(crate) to_unix_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    pub(crate) to_path: String,
    pub(crate) clock_from_unix_ms: i64,
    pub(crate) why: String,
}

#[derive(Debug, Clone)]
pub(crate) struct SecurityProbe {
    pub(crate) what: String,
    pub(crate) refused: bool,
    pub(crate) detail: String,
}

#[derive(Debug)]
pub(crate) struct ControllerNode {
    pub(crate) id: u64,
    pub(crate) listen: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) process: Process,
    channel: Option<Channel>,
}

#[derive(Debug)]
pub(crate) struct AgentNode {
    pub(crate) process: Process,
    pub(crate) journal: PathBuf,
}

/// One line an action script wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Execution {
    pub(crate) unix_ns: i64,
    pub(crate) agent: String,
    pub(crate) path: String,
    pub(crate) decision: String,
    pub(crate) service: String,
    pub(crate) token: (u64, u64),
}

pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pki_dir: PathBuf,
    pub(crate) spec: Spec,
    pub(crate) controllers: Vec<ControllerNode>,
    pub(crate) agents: BTreeMap<String, AgentNode>,
    /// (from, to) → the proxy controller `from` dials controller `to` through.
    pub(crate) peer_links: BTreeMap<(u64, u64), Proxy>,
    /// controller → the proxy every agent reaches it through.
    pub(crate) agent_links: BTreeMap<u64, Proxy>,
    pub(crate) endpoints: BTreeMap<String, Endpoint>,
    tls: Arc<ClientTls>,
    pub(crate) started: Instant,
    pub(crate) record: Record,
    pub(crate) observations: Observations,
    observer: Option<tokio::task::JoinHandle<()>>,
    /// The namespaces of the netns mode. Last, so it is dropped after the
    /// processes in it were killed.
    net: Option<netns::Net>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(observer) = self.observer.take() {
            observer.abort();
        }
        // The children are killed by their handles' Drop (kill_on_drop);
        // a small tmpfs must be unmounted before the directory goes.
        if let Some((node, _)) = self.spec.small_disk
            && let Some(c) = self.controllers.iter().find(|c| c.id == node)
        {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&c.data_dir)
                .status();
        }
    }
}

pub(crate) fn unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn toml_string(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(serde_json::Value::from(text).to_string())
}

impl Sandbox {
    /// Creates the PKI, the proxies, the endpoints and every configuration,
    /// starts all processes, waits for a leader, applies the runbook and
    /// waits until both paths are healthy with the primary active.
    pub(crate) async fn start(binary: &Path, spec: Spec, seed: u64) -> anyhow::Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix("leitstand-drill-")
            .tempdir()
            .context("create the sandbox directory")?;
        let root = dir.path().to_owned();
        let pki_dir = root.join("pki");
        pki::init(&pki_dir, TRUST_DOMAIN, false).context("create the drill CA")?;
        // netns mode: the namespaces first, since the controllers'
        // certificates must name the addresses the others dial.
        let net = match spec.network {
            Network::Proxy => None,
            Network::Netns => {
                let tools = netns::preflight()?;
                let ids = (1..=spec.controllers).collect();
                Some(netns::Net::create(tools, ids, 2).await?)
            }
        };
        for id in 1..=spec.controllers {
            let own: Vec<std::net::IpAddr> = net
                .iter()
                .map(|n| n.topology.address(Node::Controller(id)).into())
                .collect();
            issue_with_ips(
                &pki_dir,
                PeerKind::Controller,
                &id.to_string(),
                Validity::days_from_now(1),
                &own,
            )?;
        }
        for agent in [EXECUTOR, WITNESS] {
            issue(&pki_dir, PeerKind::Agent, agent, Validity::days_from_now(1))?;
        }
        issue(
            &pki_dir,
            PeerKind::Operator,
            OPERATOR,
            Validity::days_from_now(1),
        )?;

        let (reserved, listen, metrics_addresses) = match &net {
            // Each controller has an address of its own: fixed ports.
            Some(net) => {
                let at = |id: u64, port: u16| {
                    SocketAddr::new(net.topology.address(Node::Controller(id)).into(), port)
                };
                let ids = 1..=spec.controllers;
                (
                    Vec::new(),
                    ids.clone().map(|id| at(id, netns::PORT)).collect(),
                    ids.map(|id| at(id, netns::METRICS_PORT)).collect(),
                )
            }
            // Real listening addresses, held until the controllers start,
            // so that neither these nor the proxies' and endpoints' ports
            // repeat.
            None => {
                let reserved = reserve_ports(2 * spec.controllers as usize)?;
                let addresses = reserved
                    .iter()
                    .map(|l| Ok(l.local_addr()?))
                    .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
                let (listen, metrics) = addresses.split_at(spec.controllers as usize);
                (reserved, listen.to_vec(), metrics.to_vec())
            }
        };

        let mut agent_links = BTreeMap::new();
        let mut peer_links = BTreeMap::new();
        // In netns mode the kernel breaks the links: no proxies.
        let proxied = if net.is_some() { &[][..] } else { &listen[..] };
        for (i, upstream) in proxied.iter().enumerate() {
            let id = i as u64 + 1;
            let proxy = Proxy::start(format!("agents→c{id}"), *upstream, seed ^ (id << 32))
                .await
                .with_context(|| format!("start the agent proxy of controller {id}"))?;
            agent_links.insert(id, proxy);
            for from in 1..=spec.controllers {
                if from == id {
                    continue;
                }
                let proxy = Proxy::start(
                    format!("c{from}→c{id}"),
                    *upstream,
                    seed ^ (from << 40) ^ (id << 48),
                )
                .await
                .with_context(|| format!("start the proxy from controller {from} to {id}"))?;
                peer_links.insert((from, id), proxy);
            }
        }
        let advertised = |id: u64| match &net {
            Some(_) => listen[(id - 1) as usize].to_string(),
            None => agent_links[&id].address().to_string(),
        };
        // argv of a process: in netns mode through `ip netns exec`.
        let command = |node: Node, args: Vec<std::ffi::OsString>| match &net {
            Some(net) => {
                let (program, mut prefix) = net.exec_prefix(node);
                prefix.push(binary.as_os_str().to_owned());
                prefix.extend(args);
                (program, prefix)
            }
            None => (binary.to_owned(), args),
        };
        let peers = (1..=spec.controllers)
            .map(|id| format!("{id} = \"{}\"", advertised(id)))
            .collect::<Vec<_>>()
            .join(", ");

        let mut controllers = Vec::new();
        for (i, address) in listen.iter().enumerate() {
            let id = i as u64 + 1;
            let data_dir = root.join(format!("controller-{id}"));
            if let Some((node, mib)) = spec.small_disk
                && node == id
            {
                mount_small_tmpfs(&data_dir, mib)?;
            }
            let routes = peer_links
                .iter()
                .filter(|((from, _), _)| *from == id)
                .map(|((_, to), proxy)| format!("{to} = \"{}\"", proxy.address()))
                .collect::<Vec<_>>()
                .join(", ");
            let snapshots = match spec.snapshots {
                None => String::new(),
                Some((after, keep)) => format!(
                    "snapshot_after_entries = {after}\nkeep_entries_after_snapshot = {keep}\n"
                ),
            };
            let metrics = metrics_addresses[i];
            let config = root.join(format!("controller-{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "node_id = {id}\nlisten = \"{address}\"\ndata_dir = {}\nmetrics_listen = \"{metrics}\"\n\
                     [tls]\nca = {}\ncert = {}\nkey = {}\ncrl = {}\n\
                     [cluster]\npeers = {{ {peers} }}\npeer_routes = {{ {routes} }}\n{snapshots}\
                     [rbac]\nadmin = [\"{OPERATOR}\"]\noperator = [\"{OPERATOR}\"]\n",
                    toml_string(&data_dir)?,
                    toml_string(&pki::ca_cert_path(&pki_dir))?,
                    toml_string(&pki::cert_path(&pki_dir, PeerKind::Controller, &id.to_string()))?,
                    toml_string(&pki::key_path(&pki_dir, PeerKind::Controller, &id.to_string()))?,
                    toml_string(&pki::crl_path(&pki_dir))?,
                ),
            )
            .with_context(|| format!("write {}", config.display()))?;
            let (program, args) = command(
                Node::Controller(id),
                vec![
                    "--log-format".into(),
                    "json".into(),
                    "controller".into(),
                    "--config".into(),
                    config.into(),
                ],
            );
            let process = Process::new(
                format!("controller-{id}"),
                &program,
                args,
                root.join(format!("controller-{id}.log")),
            );
            controllers.push(ControllerNode {
                id,
                listen: *address,
                metrics,
                data_dir,
                process,
                channel: None,
            });
        }

        let mut endpoints = BTreeMap::new();
        // On the harness's side: loopback, or the bridge the agents'
        // namespaces reach (the path checks are not part of a link).
        let endpoint_host = net
            .as_ref()
            .map_or("127.0.0.1".to_owned(), |n| n.topology.gateway().to_string());
        for path in [PRIMARY, BACKUP] {
            endpoints.insert(
                path.to_owned(),
                Endpoint::open(path, &format!("{endpoint_host}:0")).await?,
            );
        }
        let script = root.join("action.sh");
        write_script(&script, ACTION_SCRIPT)?;
        let controller_list = (1..=spec.controllers)
            .map(|id| format!("\"{}\"", advertised(id)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut agents = BTreeMap::new();
        for (n, id) in [EXECUTOR, WITNESS].into_iter().enumerate() {
            let journal = root.join(format!("journal-{id}"));
            let state_dir = root.join(format!("agent-{id}"));
            let mut text = format!(
                "id = \"{id}\"\ncontrollers = [{controller_list}]\ninterval = \"{REPORT_INTERVAL_MS}ms\"\nstate_dir = {}\n\
                 [tls]\nca = {}\ncert = {}\nkey = {}\n",
                toml_string(&state_dir)?,
                toml_string(&pki::ca_cert_path(&pki_dir))?,
                toml_string(&pki::cert_path(&pki_dir, PeerKind::Agent, id))?,
                toml_string(&pki::key_path(&pki_dir, PeerKind::Agent, id))?,
            );
            for (path, endpoint) in &endpoints {
                text.push_str(&format!(
                    "[[check]]\nname = \"{path}\"\nkind = \"tcp\"\ntarget = \"{}\"\ninterval = \"{CHECK_INTERVAL_MS}ms\"\ntimeout = \"150ms\"\n",
                    endpoint.address()
                ));
            }
            if id == EXECUTOR {
                for path in [PRIMARY, BACKUP] {
                    text.push_str(&format!(
                        "[[action]]\nname = \"activate-{path}\"\nargv = [{}, \"{id}\", \"{path}\"]\nenv = {{ JOURNAL = {} }}\ntimeout = \"5s\"\n",
                        toml_string(&script)?,
                        toml_string(&journal)?,
                    ));
                }
            }
            let config = root.join(format!("agent-{id}.toml"));
            std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
            let (program, args) = command(
                Node::Agent(n),
                vec![
                    "--log-format".into(),
                    "json".into(),
                    "agent".into(),
                    "--config".into(),
                    config.into(),
                ],
            );
            let mut process = Process::new(
                format!("agent {id}"),
                &program,
                args,
                root.join(format!("agent-{id}.log")),
            );
            if id == EXECUTOR {
                for (k, v) in &spec.executor_env {
                    process.set_env(k, v);
                }
            }
            agents.insert(id.to_owned(), AgentNode { process, journal });
        }

        let tls = ClientTls::load(TlsFiles {
            ca: pki::ca_cert_path(&pki_dir),
            cert: pki::cert_path(&pki_dir, PeerKind::Operator, OPERATOR),
            key: pki::key_path(&pki_dir, PeerKind::Operator, OPERATOR),
            crl: None,
            trust_domain: None,
        })
        .context("load the drill operator's certificate")?;

        let observations = Observations::default();
        let mut sandbox = Sandbox {
            dir,
            pki_dir,
            spec,
            controllers,
            agents,
            peer_links,
            agent_links,
            endpoints,
            tls: Arc::new(tls),
            started: Instant::now(),
            record: Record::default(),
            observations,
            observer: None,
            net,
        };
        drop(reserved);
        for c in &mut sandbox.controllers {
            c.process.start()?;
        }
        for i in 0..sandbox.controllers.len() {
            sandbox.connect(i).await?;
        }
        sandbox.observer = Some(observer::spawn(
            sandbox
                .controllers
                .iter()
                .map(|c| (c.id, c.channel.clone()))
                .collect(),
            sandbox.tls.clone(),
            sandbox
                .controllers
                .iter()
                .map(|c| (c.id, c.listen))
                .collect(),
            sandbox.observations.clone(),
        ));
        if let Some(net) = &sandbox.net {
            let what = format!(
                "network: namespaces {}-c*/-a* on 10.213.{}.0/24, bridge address {} (the harness); \
                 faults by iptables{}",
                net.topology.run,
                net.topology.octet,
                net.topology.gateway(),
                if net.netem {
                    " and tc (htb, netem)"
                } else {
                    " and tc htb (this kernel has no sch_netem: no delay or jitter)"
                }
            );
            sandbox.note(what);
        }
        let leader = sandbox.must_have_leader(START_TIMEOUT).await?;
        sandbox.note(format!(
            "{} controllers started; controller {leader} leads",
            sandbox.controllers.len()
        ));
        for agent in sandbox.agents.values_mut() {
            agent.process.start()?;
        }
        let runbook = sandbox.spec.runbook.text();
        sandbox.apply_runbook(&runbook).await?;
        sandbox
            .wait_for("both paths healthy, fiber active", START_TIMEOUT, |view| {
                service(view).is_some_and(|s| {
                    s.active_path == PRIMARY
                        && s.paths
                            .iter()
                            .all(|p| p.state == v1::PathState::Healthy as i32)
                })
            })
            .await?;
        sandbox.note("both paths healthy; fiber active");
        Ok(sandbox)
    }

    /// Adds an event to the timeline.
    pub(crate) fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(target: "drill", "{what}");
        self.record.timeline.push(Event {
            at_ms: self.started.elapsed().as_millis() as u64,
            unix_ms: unix_ms(),
            what,
        });
    }

    pub(crate) fn expect(
        &mut self,
        what: impl Into<String>,
        held: bool,
        detail: impl Into<String>,
    ) {
        let (what, detail) = (what.into(), detail.into());
        self.note(format!(
            "expectation {}: {what}{}",
            if held { "held" } else { "FAILED" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ));
        self.record.expectations.push((what, held, detail));
    }

    async fn connect(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = self.controllers[i].listen.to_string();
        loop {
            match self.tls.channel(&address).await {
                Ok(channel) => {
                    self.controllers[i].channel = Some(channel);
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "no connection to controller {} at {address} within {START_TIMEOUT:?}; its log ends:\n{}",
                        self.controllers[i].id,
                        self.controllers[i].process.tail(12)
                    )));
                }
                Err(_) => {
                    if !self.controllers[i].process.is_running() {
                        bail!(
                            "controller {} exited; its log ends:\n{}",
                            self.controllers[i].id,
                            self.controllers[i].process.tail(20)
                        );
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    fn controller(&self, id: u64) -> anyhow::Result<&ControllerNode> {
        self.controllers
            .iter()
            .find(|c| c.id == id)
            .with_context(|| format!("no controller {id} in this sandbox"))
    }

    fn controller_mut(&mut self, id: u64) -> anyhow::Result<&mut ControllerNode> {
        self.controllers
            .iter_mut()
            .find(|c| c.id == id)
            .with_context(|| format!("no controller {id} in this sandbox"))
    }

    pub(crate) fn client(&self, id: u64) -> anyhow::Result<OperatorClient<Channel>> {
        let channel = self
            .controller(id)?
            .channel
            .clone()
            .with_context(|| format!("no channel to controller {id}"))?;
        Ok(OperatorClient::new(channel))
    }

    pub(crate) fn ids(&self) -> Vec<u64> {
        self.controllers.iter().map(|c| c.id).collect()
    }

    /// ClusterStatus of one controller, asked directly.
    pub(crate) async fn cluster_status(&self, id: u64) -> anyhow::Result<v1::ClusterStatusReply> {
        let mut client = self.client(id)?;
        let reply =
            tokio::time::timeout(CALL_TIMEOUT, client.cluster_status(ClusterStatusRequest {}))
                .await
                .map_err(|_| {
                    anyhow!("controller {id}: no ClusterStatus answer within {CALL_TIMEOUT:?}")
                })?
                .map_err(|s| anyhow!("controller {id}: {:?}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner())
    }

    /// The leader that a live, unfrozen controller confirmed with a quorum.
    pub(crate) async fn leader(&mut self) -> Option<u64> {
        let ids: Vec<u64> = self
            .controllers
            .iter_mut()
            .filter_map(|c| (c.process.is_running() && !c.process.is_stopped()).then_some(c.id))
            .collect();
        for id in ids {
            if let Ok(status) = self.cluster_status(id).await
                && status.confirmed_by_quorum
                && status.leader_id != 0
                && status.leader_id == status.answered_by
            {
                return Some(status.leader_id);
            }
        }
        None
    }

    pub(crate) async fn must_have_leader(&mut self, within: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no controller confirmed leadership within {within:?}; last samples: {}",
                    self.observations.describe_latest()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader's view.
    pub(crate) async fn view(&mut self) -> anyhow::Result<v1::View> {
        let leader = self
            .leader()
            .await
            .context("no leader to ask for the view")?;
        let mut client = self.client(leader)?;
        let reply = tokio::time::timeout(CALL_TIMEOUT, client.status(StatusRequest {}))
            .await
            .map_err(|_| anyhow!("controller {leader}: no Status answer within {CALL_TIMEOUT:?}"))?
            .map_err(|s| anyhow!("controller {leader}: {:?}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner())
    }

    /// Polls the leader's view until `done` holds.
    pub(crate) async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&v1::View) -> bool,
    ) -> anyhow::Result<v1::View> {
        let deadline = Instant::now() + within;
        let mut last;
        loop {
            match self.view().await {
                Ok(view) if done(&view) => return Ok(view),
                Ok(view) => last = describe(&view),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("waited {within:?} for {what}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Like `wait_for`, but a timeout is an expectation that failed, not an
    /// error of the drill.
    pub(crate) async fn expect_within(
        &mut self,
        what: &str,
        within: Duration,
        done: impl FnMut(&v1::View) -> bool,
    ) -> bool {
        match self.wait_for(what, within, done).await {
            Ok(_) => {
                self.expect(what, true, "");
                true
            }
            Err(e) => {
                self.expect(what, false, format!("{e:#}"));
                false
            }
        }
    }

    pub(crate) async fn apply_runbook(&mut self, text: &str) -> anyhow::Result<u64> {
        let leader = self.must_have_leader(START_TIMEOUT).await?;
        let mut client = self.client(leader)?;
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            client.apply_runbook(v1::ApplyRunbookRequest {
                toml: text.to_owned(),
                source_name: "drill.toml".into(),
            }),
        )
        .await
        .map_err(|_| anyhow!("ApplyRunbook: no answer within {CALL_TIMEOUT:?}"))?
        .map_err(|s| anyhow!("ApplyRunbook: {:?}: {}", s.code(), s.message()))?
        .into_inner();
        self.record.runbooks.insert(reply.version, text.to_owned());
        self.note(format!(
            "runbook version {} applied (sha256 {}…)",
            reply.version,
            &reply.content_sha256[..reply.content_sha256.len().min(12)]
        ));
        Ok(reply.version)
    }

    /// An operator's switch, through the leader; recorded for I6.
    pub(crate) async fn switch(&mut self, path: &str, reason: &str) -> anyhow::Result<()> {
        let leader = self.must_have_leader(Duration::from_secs(20)).await?;
        let mut client = self.client(leader)?;
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            client.switch(v1::SwitchRequest {
                service: SERVICE.into(),
                path: path.into(),
                reason: reason.into(),
            }),
        )
        .await
        .map_err(|_| anyhow!("Switch: no answer within {CALL_TIMEOUT:?}"))?
        .map_err(|s| anyhow!("Switch: {:?}: {}", s.code(), s.message()))?
        .into_inner();
        self.record
            .acknowledged
            .push((reply.audit_index, format!("operator.switch to {path}")));
        self.note(format!(
            "operator switch to {path} acknowledged (audit entry {}, decision {})",
            reply.audit_index, reply.decision_id
        ));
        Ok(())
    }

    pub(crate) async fn unfreeze(&mut self) -> anyhow::Result<()> {
        let leader = self.must_have_leader(Duration::from_secs(20)).await?;
        let mut client = self.client(leader)?;
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            client.unfreeze(v1::UnfreezeRequest {
                service: SERVICE.into(),
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| anyhow!("Unfreeze: no answer within {CALL_TIMEOUT:?}"))?
        .map_err(|s| anyhow!("Unfreeze: {:?}: {}", s.code(), s.message()))?
        .into_inner();
        self.record
            .acknowledged
            .push((reply.audit_index, "operator.unfreeze".into()));
        self.note(format!(
            "operator unfreeze acknowledged (audit entry {})",
            reply.audit_index
        ));
        Ok(())
    }

    /// Write probes through the leader: log entries to make a follower fall
    /// behind. A probe the leader could not commit (it lost leadership, its
    /// disk filled) is sent again to whoever leads then.
    pub(crate) async fn probes(&mut self, n: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0;
        let mut retries = 0;
        while i < n {
            let leader = self.must_have_leader(Duration::from_secs(20)).await?;
            let mut client = self.client(leader)?;
            let answer = tokio::time::timeout(
                CALL_TIMEOUT,
                client.probe(v1::ProbeRequest {
                    payload: i.to_be_bytes().to_vec(),
                }),
            )
            .await;
            match answer {
                Ok(Ok(_)) => i += 1,
                failed if Instant::now() < deadline => {
                    retries += 1;
                    tracing::debug!(probe = i, leader, "probe not committed ({failed:?}); again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(s)) => bail!("Probe {i}: {:?}: {}", s.code(), s.message()),
                Err(_) => bail!("Probe {i}: no answer within {CALL_TIMEOUT:?}"),
            }
        }
        self.note(format!("{n} write probes committed ({retries} sent again)"));
        Ok(())
    }

    /// The audit chain as controller `id` serves it.
    pub(crate) async fn audit(
        &self,
        id: u64,
    ) -> anyhow::Result<Vec<leitstand_controller::audit::AuditEntry>> {
        let mut client = self.client(id)?;
        let mut stream = tokio::time::timeout(
            CALL_TIMEOUT,
            client.audit(v1::AuditRequest {
                from_index: 1,
                limit: 0,
            }),
        )
        .await
        .map_err(|_| anyhow!("controller {id}: no Audit answer within {CALL_TIMEOUT:?}"))?
        .map_err(|s| anyhow!("controller {id}: Audit: {:?}: {}", s.code(), s.message()))?
        .into_inner();
        let mut entries = Vec::new();
        loop {
            let next = tokio::time::timeout(CALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| anyhow!("controller {id}: the Audit stream stalled"))?
                .map_err(|s| anyhow!("controller {id}: Audit: {:?}: {}", s.code(), s.message()))?;
            let Some(e) = next else { break };
            entries.push(leitstand_controller::audit::AuditEntry {
                index: e.index,
                log_index: e.log_index,
                at_unix_ms: e.at_unix_ms,
                actor: e.actor,
                kind: e.kind,
                body_json: e.body_json,
                prev_hash: e.prev_hash,
                hash: e.hash,
            });
        }
        Ok(entries)
    }

    /// Controller `id`'s Prometheus exposition (plain HTTP on loopback).
    pub(crate) async fn metrics_text(&self, id: u64) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.controller(id)?.metrics;
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut body = Vec::new();
            stream.take(16 << 20).read_to_end(&mut body).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&body).into_owned())
        };
        tokio::time::timeout(CALL_TIMEOUT, fetch)
            .await
            .map_err(|_| {
                anyhow!("controller {id}: /metrics did not answer within {CALL_TIMEOUT:?}")
            })?
            .with_context(|| format!("controller {id}: GET http://{address}/metrics"))
    }

    // ----- faults: processes -----

    pub(crate) async fn kill_controller(&mut self, id: u64) -> anyhow::Result<()> {
        self.controller_mut(id)?.process.kill().await?;
        self.note(format!("SIGKILL controller {id}"));
        Ok(())
    }

    pub(crate) async fn restart_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let c = self.controller_mut(id)?;
        if c.process.is_running() {
            c.process.terminate().await?;
        }
        c.process.start()?;
        self.note(format!("controller {id} started again"));
        Ok(())
    }

    pub(crate) async fn terminate_controller(&mut self, id: u64) -> anyhow::Result<()> {
        self.controller_mut(id)?.process.terminate().await?;
        self.note(format!("SIGTERM controller {id}; it exited"));
        Ok(())
    }

    pub(crate) fn freeze_controller(&mut self, id: u64) -> anyhow::Result<()> {
        self.controller_mut(id)?.process.freeze()?;
        self.note(format!("SIGSTOP controller {id}"));
        Ok(())
    }

    pub(crate) fn thaw_controller(&mut self, id: u64) -> anyhow::Result<()> {
        self.controller_mut(id)?.process.thaw()?;
        self.note(format!("SIGCONT controller {id}"));
        Ok(())
    }

    pub(crate) fn hangup_controllers(&mut self) -> anyhow::Result<()> {
        for c in &mut self.controllers {
            if c.process.is_running() {
                c.process.hangup()?;
            }
        }
        self.note("SIGHUP to every controller (reload certificates and CRL)");
        Ok(())
    }

    fn agent_mut(&mut self, id: &str) -> anyhow::Result<&mut AgentNode> {
        self.agents
            .get_mut(id)
            .with_context(|| format!("no agent {id} in this sandbox"))
    }

    pub(crate) async fn kill_agent(&mut self, id: &str) -> anyhow::Result<()> {
        self.agent_mut(id)?.process.kill().await?;
        self.note(format!("SIGKILL agent {id}"));
        Ok(())
    }

    pub(crate) fn start_agent(&mut self, id: &str) -> anyhow::Result<()> {
        self.agent_mut(id)?.process.start()?;
        self.note(format!("agent {id} started again"));
        Ok(())
    }

    pub(crate) fn freeze_agent(&mut self, id: &str) -> anyhow::Result<()> {
        self.agent_mut(id)?.process.freeze()?;
        self.note(format!("SIGSTOP agent {id}"));
        Ok(())
    }

    pub(crate) fn thaw_agent(&mut self, id: &str) -> anyhow::Result<()> {
        self.agent_mut(id)?.process.thaw()?;
        self.note(format!("SIGCONT agent {id}"));
        Ok(())
    }

    /// Wipes controller `id`'s data and starts it as a member of a new
    /// cluster: for the "restored from an old backup" drill, all of them.
    pub(crate) async fn wipe_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let c = self.controller_mut(id)?;
        c.process.kill().await?;
        if c.data_dir.exists() {
            std::fs::remove_dir_all(&c.data_dir)
                .with_context(|| format!("remove {}", c.data_dir.display()))?;
        }
        self.note(format!(
            "controller {id} killed and its data directory wiped"
        ));
        Ok(())
    }

    // ----- faults: network -----

    /// Whether delay and jitter can be given to packets here (netns mode
    /// on a kernel with sch_netem).
    pub(crate) fn has_netem(&self) -> bool {
        self.net.as_ref().is_some_and(|n| n.netem)
    }

    async fn set_link(&mut self, link: Link, fault: Fault) -> anyhow::Result<()> {
        match (&mut self.net, link) {
            (Some(net), _) => net.set(link, fault).await,
            (None, Link::Peer { from, to }) => {
                self.peer_links
                    .get(&(from, to))
                    .with_context(|| format!("no link from controller {from} to {to}"))?
                    .set(fault);
                Ok(())
            }
            (None, Link::Agents { controller }) => {
                self.agent_links
                    .get(&controller)
                    .with_context(|| format!("no agent link to controller {controller}"))?
                    .set(fault);
                Ok(())
            }
        }
    }

    fn check_controller(&self, id: u64) -> anyhow::Result<()> {
        self.controller(id).map(|_| ())
    }

    pub(crate) async fn set_peer_link(
        &mut self,
        from: u64,
        to: u64,
        fault: Fault,
    ) -> anyhow::Result<()> {
        self.check_controller(from)?;
        self.check_controller(to)?;
        if from == to {
            bail!("no link from controller {from} to itself");
        }
        self.set_link(Link::Peer { from, to }, fault.clone())
            .await?;
        self.note(format!("link c{from}→c{to}: {fault}"));
        Ok(())
    }

    pub(crate) async fn set_agent_link(
        &mut self,
        controller: u64,
        fault: Fault,
    ) -> anyhow::Result<()> {
        self.check_controller(controller)?;
        self.set_link(Link::Agents { controller }, fault.clone())
            .await?;
        self.note(format!("agents→c{controller}: {fault}"));
        Ok(())
    }

    /// Cuts every link between the two groups, both ways.
    pub(crate) async fn partition(&mut self, side_a: &[u64], side_b: &[u64]) -> anyhow::Result<()> {
        for &a in side_a {
            for &b in side_b {
                for (from, to) in [(a, b), (b, a)] {
                    if from != to {
                        self.set_link(
                            Link::Peer { from, to },
                            Fault::Blackhole {
                                direction: crate::proxy::Direction::Both,
                            },
                        )
                        .await?;
                    }
                }
            }
        }
        self.note(format!(
            "partition {side_a:?} | {side_b:?} (blackhole both ways)"
        ));
        Ok(())
    }

    /// A packet fault on every controller↔controller link and on every
    /// agent link (netns mode only: the proxy relays a byte stream and has
    /// no packets to lose).
    pub(crate) async fn degrade_every_link(&mut self, fault: PacketFault) -> anyhow::Result<()> {
        let ids = self.ids();
        let net = self.net.as_mut().with_context(|| {
            format!("packet faults ({fault}) need --network netns; this sandbox runs proxies")
        })?;
        let mut links = Vec::new();
        for &from in &ids {
            for &to in &ids {
                if from != to {
                    links.push(Link::Peer { from, to });
                }
            }
            links.push(Link::Agents { controller: from });
        }
        net.set_packet(&links, fault).await?;
        self.note(format!(
            "every controller link and every agent link: {fault}"
        ));
        Ok(())
    }

    /// Packets lost to packet faults so far (netns mode; None otherwise).
    pub(crate) async fn lost_packets(&self) -> Option<anyhow::Result<u64>> {
        match &self.net {
            Some(net) => Some(net.lost_packets().await),
            None => None,
        }
    }

    /// Every link back to normal.
    pub(crate) async fn heal_network(&mut self) -> anyhow::Result<()> {
        if let Some(net) = &mut self.net {
            net.heal()
                .await
                .context("heal the network (remove every iptables rule and qdisc)")?;
        }
        for proxy in self.peer_links.values().chain(self.agent_links.values()) {
            proxy.set(Fault::None);
        }
        self.note("network healed: every link forwards again");
        Ok(())
    }

    // ----- faults: the service's paths -----

    pub(crate) async fn break_path(&mut self, path: &str) -> anyhow::Result<i64> {
        let endpoint = self
            .endpoints
            .get_mut(path)
            .with_context(|| format!("no endpoint for path {path}"))?;
        let at = endpoint.close().await? / 1_000_000;
        self.record.outages.push(Outage {
            path: path.to_owned(),
            from_unix_ms: at,
            to_unix_ms: None,
        });
        self.note(format!("path {path} broken (its endpoint closed)"));
        Ok(at)
    }

    pub(crate) async fn repair_path(&mut self, path: &str) -> anyhow::Result<()> {
        let endpoint = self
            .endpoints
            .get_mut(path)
            .with_context(|| format!("no endpoint for path {path}"))?;
        endpoint.reopen().await?;
        let now = unix_ms();
        if let Some(outage) = self
            .record
            .outages
            .iter_mut()
            .rev()
            .find(|o| o.path == path && o.to_unix_ms.is_none())
        {
            outage.to_unix_ms = Some(now);
        }
        self.note(format!("path {path} repaired"));
        Ok(())
    }

    /// I7: a failover to `to_path` must be executed within the budget from `clock_from`.
    pub(crate) fn expect_failover(&mut self, to_path: &str, clock_from_unix_ms: i64, why: &str) {
        self.record.liveness.push(Liveness {
            to_path: to_path.to_owned(),
            clock_from_unix_ms,
            why: why.to_owned(),
        });
    }

    pub(crate) fn security_probe(&mut self, what: &str, refused: bool, detail: String) {
        self.note(format!(
            "security probe: {what}: {}",
            if refused { "refused" } else { "NOT refused" }
        ));
        self.record.security.push(SecurityProbe {
            what: what.to_owned(),
            refused,
            detail,
        });
    }

    // ----- what the checker reads -----

    /// Every journal line so far, of every agent, in the order written.
    pub(crate) fn executions(&self) -> anyhow::Result<Vec<Execution>> {
        let mut all = Vec::new();
        for agent in self.agents.values() {
            all.extend(read_journal(&agent.journal)?);
        }
        all.sort_by_key(|e| e.unix_ns);
        Ok(all)
    }

    /// Waits until every decision is terminal, then returns the leader's view.
    pub(crate) async fn settle(&mut self, within: Duration) -> anyhow::Result<v1::View> {
        self.wait_for("every decision to reach a terminal stage", within, |view| {
            view.decisions.iter().all(|d| is_terminal(d.stage))
        })
        .await
    }

    /// The controllers' log lines that say a node became leader: (node, term).
    pub(crate) fn leadership_claims(&self) -> Vec<(u64, u64, String)> {
        let mut claims = Vec::new();
        for c in &self.controllers {
            let text = std::fs::read_to_string(&c.process.log).unwrap_or_default();
            for line in text.lines() {
                if !line.contains("this controller now leads the cluster") {
                    continue;
                }
                let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                // Flattened JSON events (--log-format json) carry the
                // fields at the top level.
                let fields = if json["fields"].is_object() {
                    &json["fields"]
                } else {
                    &json
                };
                let term = fields["term"]
                    .as_u64()
                    .or_else(|| fields["term"].as_str().and_then(|t| t.parse().ok()));
                if let Some(term) = term {
                    let at = json["timestamp"].as_str().unwrap_or_default().to_owned();
                    claims.push((c.id, term, at));
                }
            }
        }
        claims
    }

    /// Issues a certificate into the drill's PKI (for the security drills).
    pub(crate) fn issue(
        &self,
        kind: PeerKind,
        name: &str,
        validity: Validity,
    ) -> anyhow::Result<()> {
        issue(&self.pki_dir, kind, name, validity)
    }

    pub(crate) fn advertised(&self, id: u64) -> Option<SocketAddr> {
        match &self.net {
            Some(_) => self.controller(id).ok().map(|c| c.listen),
            None => self.agent_links.get(&id).map(Proxy::address),
        }
    }

    /// Closes the current cluster incarnation (every controller wiped):
    /// its evidence is kept apart, its logs rotated.
    pub(crate) fn new_incarnation(
        &mut self,
        chain: Vec<leitstand_controller::audit::AuditEntry>,
    ) -> anyhow::Result<()> {
        let claims = self.leadership_claims();
        let samples = self.observations.take();
        let n = self.record.earlier.len() + 1;
        for c in &self.controllers {
            let rotated = c.process.log.with_extension(format!("incarnation-{n}.log"));
            std::fs::rename(&c.process.log, &rotated)
                .with_context(|| format!("rotate {}", c.process.log.display()))?;
        }
        self.record.earlier.push(Epoch {
            chain,
            claims,
            samples,
        });
        self.note(format!(
            "cluster incarnation {n} closed; its evidence kept apart"
        ));
        Ok(())
    }

    /// Stops the observer; the samples stay.
    pub(crate) fn stop_observing(&mut self) {
        if let Some(observer) = self.observer.take() {
            observer.abort();
        }
    }
}

pub(crate) fn service(view: &v1::View) -> Option<&v1::ServiceView> {
    view.services.iter().find(|s| s.name == SERVICE)
}

/// Verified, Abandoned or Rejected: nothing further happens to it.
pub(crate) fn is_terminal(stage: i32) -> bool {
    use v1::DecisionStage as S;
    [S::Verified, S::Abandoned, S::Rejected]
        .iter()
        .any(|s| *s as i32 == stage)
}

pub(crate) fn describe(view: &v1::View) -> String {
    let Some(s) = service(view) else {
        return format!(
            "no service {SERVICE} (runbook version {})",
            view.runbook_version
        );
    };
    let paths = s
        .paths
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p.name,
                v1::PathState::try_from(p.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let decisions = view
        .decisions
        .iter()
        .map(|d| {
            format!(
                "{}:{}→{}:{}",
                d.decision_id,
                d.from_path,
                d.to_path,
                v1::DecisionStage::try_from(d.stage)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "active {} | {paths} | frozen {} | no healthy path {} | decisions [{decisions}]",
        s.active_path, s.frozen, s.no_healthy_path
    )
}

fn read_journal(path: &Path) -> anyhow::Result<Vec<Execution>> {
    process::complete_lines(path)?
        .iter()
        .map(|line| parse_journal_line(line).with_context(|| format!("journal line {line:?}")))
        .collect()
}

fn parse_journal_line(line: &str) -> anyhow::Result<Execution> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [t, agent, path, decision, service, token] = words[..] else {
        bail!("expected 6 words");
    };
    let (term, index) = token.split_once('.').context("a token is TERM.INDEX")?;
    Ok(Execution {
        unix_ns: t.parse().context("time in ns")?,
        agent: agent.to_owned(),
        path: path.to_owned(),
        decision: decision.to_owned(),
        service: service.to_owned(),
        token: (
            term.parse().context("token term")?,
            index.parse().context("token index")?,
        ),
    })
}

fn issue(dir: &Path, kind: PeerKind, name: &str, validity: Validity) -> anyhow::Result<()> {
    issue_with_ips(dir, kind, name, validity, &[])
}

/// A controller's certificate names loopback and `own` (its netns address):
/// clients verify the address they dial against it.
fn issue_with_ips(
    dir: &Path,
    kind: PeerKind,
    name: &str,
    validity: Validity,
    own: &[std::net::IpAddr],
) -> anyhow::Result<()> {
    let loopback = std::net::Ipv4Addr::LOCALHOST.into();
    let (dns, ips) = match kind {
        PeerKind::Controller => (
            vec!["localhost".to_owned()],
            std::iter::once(loopback)
                .chain(own.iter().copied())
                .collect(),
        ),
        _ => (vec![], vec![]),
    };
    pki::issue(
        dir,
        &IssueRequest {
            kind,
            name: name.into(),
            dns,
            ips,
            validity,
            force: true,
        },
    )
    .with_context(|| format!("issue the drill's {kind:?} certificate {name}"))?;
    Ok(())
}

/// Distinct free loopback ports, held open until the caller drops them.
fn reserve_ports(n: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("find free loopback ports")
}

fn mount_small_tmpfs(dir: &Path, mib: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .context("run mount")?;
    if !status.success() {
        bail!(
            "mount -t tmpfs on {} failed ({status}): the disk-full drill needs root",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_line_names_agent_path_decision_service_and_token() {
        let e = parse_journal_line("1700000000000000000 site-1 lte d-7 uplink 3.41")
            .expect("a valid line");
        assert_eq!(
            (
                e.agent.as_str(),
                e.path.as_str(),
                e.decision.as_str(),
                e.token
            ),
            ("site-1", "lte", "d-7", (3, 41))
        );
        assert!(parse_journal_line("17 site-1 lte").is_err());
        assert!(parse_journal_line("17 site-1 lte d-7 uplink 341").is_err());
    }

    #[test]
    fn the_runbook_parses() {
        let text = RunbookShape {
            failback_after: Some("1s"),
            extra_primary_vantage: vec![("skewed".into(), "fiber".into())],
            ..RunbookShape::default()
        }
        .text();
        leitstand_controller::runbook::Runbook::parse(Path::new("drill.toml"), &text)
            .expect("the drill's runbook is valid");
    }
}
