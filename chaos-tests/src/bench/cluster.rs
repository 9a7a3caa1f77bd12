//! The three members of a Raft system under test, as real processes:
//! `leitstand controller` with a fresh PKI and controller.toml each, or
//! etcd. Started from argv (no shell) with their output in log files;
//! killed with SIGKILL in the leader-loss trials and whenever the cluster
//! is stopped or dropped; asked one by one, never through a
//! leader-following client, so a redirect can never hide in a figure.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::operator_client::OperatorClient;
use leitstand_proto::v1::{ClusterStatusRequest, ProbeRequest};
use tokio::process::Child;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::etcd;
use crate::sandbox::process::Process;

pub(super) const MEMBERS: u64 = 3;
/// Every proposal carries this many bytes (our Probe payload, etcd's value).
pub(super) const PAYLOAD_BYTES: usize = 16;
/// Keys etcd's puts cycle through, so its key space stays small like ours.
const ETCD_KEYS: u64 = 1024;
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const REAP_TIMEOUT: Duration = Duration::from_secs(5);
const TRUST_DOMAIN: &str = "bench.leitstand.invalid";
/// The operator certificate the benchmarks act as (admin and operator).
pub(super) const OPERATOR: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum System {
    Leitstand,
    Etcd,
}

impl System {
    pub(super) fn name(self) -> &'static str {
        match self {
            System::Leitstand => "leitstand",
            System::Etcd => "etcd",
        }
    }

    pub(super) fn transport(self) -> &'static str {
        match self {
            System::Leitstand => {
                "gRPC over mTLS (TLS 1.3, client certificates); Operator.Probe, ClusterStatus"
            }
            System::Etcd => {
                "gRPC in plaintext (no TLS); KV.Put, Maintenance.Status, linearizable KV.Range"
            }
        }
    }
}

/// What one member says about the cluster.
#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    pub(super) answered_by: u64,
    /// 0 when the member knows no leader.
    pub(super) leader: u64,
    pub(super) term: u64,
    /// Ours: ClusterStatus's `confirmed_by_quorum`. etcd: a linearizable
    /// read on the member succeeded, asked only when it names a leader.
    pub(super) confirmed: bool,
}

#[derive(Debug)]
pub(super) enum Poll {
    Answer(View),
    /// Down, starting, or no answer in time: worth asking again.
    NoAnswer(String),
}

/// The client side of one member, cheap to clone into tasks.
#[derive(Debug, Clone)]
pub(super) struct NodeClient {
    system: System,
    channel: Channel,
}

impl NodeClient {
    /// Errors are the answers asking again cannot change.
    pub(super) async fn view(&self, within: Duration) -> anyhow::Result<Poll> {
        match self.system {
            System::Leitstand => {
                let mut client = OperatorClient::new(self.channel.clone());
                let reply = match tokio::time::timeout(
                    within,
                    client.cluster_status(ClusterStatusRequest {}),
                )
                .await
                {
                    Err(_) => return Ok(no_answer_in(within)),
                    Ok(Err(status)) => return transient(status),
                    Ok(Ok(reply)) => reply.into_inner(),
                };
                Ok(Poll::Answer(View {
                    answered_by: reply.answered_by,
                    leader: reply.leader_id,
                    term: reply.term,
                    confirmed: reply.confirmed_by_quorum,
                }))
            }
            System::Etcd => {
                let asked = Instant::now();
                let status = match tokio::time::timeout(
                    within,
                    etcd::unary::<_, etcd::StatusResponse>(
                        &self.channel,
                        etcd::STATUS,
                        etcd::StatusRequest {},
                    ),
                )
                .await
                {
                    Err(_) => return Ok(no_answer_in(within)),
                    Ok(Err(status)) => return transient(status),
                    Ok(Ok(reply)) => reply,
                };
                let confirmed = status.leader != 0
                    && matches!(
                        tokio::time::timeout_at(
                            asked + within,
                            etcd::unary::<_, etcd::RangeResponse>(
                                &self.channel,
                                etcd::RANGE,
                                etcd::RangeRequest {
                                    key: b"bench/0000".to_vec(),
                                    serializable: false,
                                    count_only: true,
                                },
                            ),
                        )
                        .await,
                        Ok(Ok(_))
                    );
                Ok(Poll::Answer(View {
                    answered_by: status.header.map(|h| h.member_id).unwrap_or(0),
                    leader: status.leader,
                    term: status.raft_term,
                    confirmed,
                }))
            }
        }
    }

    async fn version(&self) -> Option<String> {
        match self.system {
            System::Leitstand => Some(leitstand_proto::VERSION.to_owned()),
            System::Etcd => etcd::unary::<_, etcd::StatusResponse>(
                &self.channel,
                etcd::STATUS,
                etcd::StatusRequest {},
            )
            .await
            .ok()
            .map(|s| s.version),
        }
    }
}

fn no_answer_in(within: Duration) -> Poll {
    Poll::NoAnswer(format!("no answer within {within:?}"))
}

fn transient(status: tonic::Status) -> anyhow::Result<Poll> {
    match status.code() {
        tonic::Code::Unimplemented => bail!(
            "the member answered UNIMPLEMENTED ({}): this controller binary does not serve Operator.ClusterStatus and Operator.Probe yet",
            status.message()
        ),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => bail!(
            "the member refused the bench operator: {:?}: {}",
            status.code(),
            status.message()
        ),
        code => Ok(Poll::NoAnswer(format!("{code:?}: {}", status.message()))),
    }
}

/// Sends proposals to one member over one connection; clones share it.
#[derive(Debug, Clone)]
pub(super) enum Proposer {
    Leitstand(OperatorClient<Channel>),
    Etcd(Channel),
}

impl Proposer {
    pub(super) async fn propose(&mut self, n: u64) -> anyhow::Result<()> {
        let mut payload = n.to_be_bytes().to_vec();
        payload.resize(PAYLOAD_BYTES, b'.');
        let call = async {
            match self {
                Proposer::Leitstand(client) => {
                    client.probe(ProbeRequest { payload }).await.map(|_| ())
                }
                Proposer::Etcd(channel) => etcd::unary::<_, etcd::PutResponse>(
                    channel,
                    etcd::PUT,
                    etcd::PutRequest {
                        key: format!("bench/{:04}", n % ETCD_KEYS).into_bytes(),
                        value: payload,
                    },
                )
                .await
                .map(|_| ()),
            }
        };
        match tokio::time::timeout(PROPOSAL_TIMEOUT, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(anyhow!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(anyhow!("no answer within {PROPOSAL_TIMEOUT:?}")),
        }
    }
}

/// One member: its process (started, killed, restarted as the sandbox's
/// are) and a client of its API.
#[derive(Debug)]
struct Node {
    /// Our node id; etcd's member id, learned from its first answer.
    id: u64,
    /// host:port of its client API.
    address: String,
    process: Process,
    client: Option<NodeClient>,
}

impl Node {
    /// The last lines this member wrote, for error messages.
    fn tail(&self) -> String {
        self.process.tail(12)
    }

    /// Fails if the process has exited: waiting longer would only time out.
    fn must_run(&mut self, system: System) -> anyhow::Result<()> {
        if let Some(status) = self.process.exited()? {
            bail!(
                "{} member at {} exited with {status}; its log ({}) ends:\n{}",
                system.name(),
                self.address,
                self.process.log.display(),
                self.tail()
            );
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(super) struct Cluster {
    pub(super) system: System,
    nodes: Vec<Node>,
    /// Our operator certificate; None for etcd.
    tls: Option<Arc<ClientTls>>,
    pub(super) version: Option<String>,
}

impl Cluster {
    /// A fresh PKI and three controller.toml in `dir`; nothing runs yet.
    pub(super) fn leitstand(dir: &Path, binary: &Path) -> anyhow::Result<Cluster> {
        let pki_dir = dir.join("pki");
        pki::init(&pki_dir, TRUST_DOMAIN, false).context("create the bench CA")?;
        let loopback = std::net::Ipv4Addr::LOCALHOST.into();
        for id in 1..=MEMBERS {
            issue(
                &pki_dir,
                PeerKind::Controller,
                &id.to_string(),
                vec![loopback],
            )?;
        }
        issue(&pki_dir, PeerKind::Operator, OPERATOR, vec![])?;
        let ports = free_ports(MEMBERS as usize)?;
        let peers = ports
            .iter()
            .zip(1..)
            .map(|(port, id)| format!("{id} = \"127.0.0.1:{port}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (port, id) in ports.iter().zip(1..=MEMBERS) {
            let config = dir.join(format!("controller-{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "node_id = {id}\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"node-{id}\"\n\
                     [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-{id}.pem\"\nkey = \"pki/controller-{id}.key\"\n\
                     [cluster]\npeers = {{ {peers} }}\n\
                     [rbac]\nadmin = [\"{OPERATOR}\"]\noperator = [\"{OPERATOR}\"]\n"
                ),
            )
            .with_context(|| format!("write {}", config.display()))?;
            nodes.push(Node {
                id,
                address: format!("127.0.0.1:{port}"),
                process: Process::new(
                    format!("controller-{id}"),
                    binary,
                    vec!["controller".into(), "--config".into(), config.into()],
                    dir.join(format!("controller-{id}.log")),
                ),
                client: None,
            });
        }
        let tls = ClientTls::load(pki::peer_files(&pki_dir, PeerKind::Operator, OPERATOR))
            .context("load the bench operator's certificate")?;
        Ok(Cluster {
            system: System::Leitstand,
            nodes,
            tls: Some(Arc::new(tls)),
            version: None,
        })
    }

    /// Three etcd members on loopback with their data in `dir`, fsync and
    /// timing at etcd's defaults; nothing runs yet.
    pub(super) fn etcd(dir: &Path, binary: &Path) -> anyhow::Result<Cluster> {
        leitstand_proto::files::create_private_dir(dir)
            .with_context(|| format!("create {}", dir.display()))?;
        let ports = free_ports(2 * MEMBERS as usize)?;
        let (client_ports, peer_ports) = ports.split_at(MEMBERS as usize);
        let initial_cluster = peer_ports
            .iter()
            .zip(1..)
            .map(|(port, i)| format!("m{i}=http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for ((client, peer), i) in client_ports.iter().zip(peer_ports).zip(1..=MEMBERS) {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data = dir.join(format!("m{i}.etcd"));
            let args: Vec<OsString> = vec![
                "--name".into(),
                format!("m{i}").into(),
                "--data-dir".into(),
                data.into(),
                "--listen-client-urls".into(),
                client_url.clone().into(),
                "--advertise-client-urls".into(),
                client_url.into(),
                "--listen-peer-urls".into(),
                peer_url.clone().into(),
                "--initial-advertise-peer-urls".into(),
                peer_url.into(),
                "--initial-cluster".into(),
                initial_cluster.clone().into(),
                "--initial-cluster-token".into(),
                "leitstand-bench".into(),
                // A restart finds its data directory and ignores this.
                "--initial-cluster-state".into(),
                "new".into(),
                "--logger".into(),
                "zap".into(),
                "--log-outputs".into(),
                "stderr".into(),
            ];
            nodes.push(Node {
                id: 0,
                address: format!("127.0.0.1:{client}"),
                process: Process::new(
                    format!("etcd m{i}"),
                    binary,
                    args,
                    dir.join(format!("m{i}.log")),
                ),
                client: None,
            });
        }
        Ok(Cluster {
            system: System::Etcd,
            nodes,
            tls: None,
            version: None,
        })
    }

    /// Starts every member and waits until each answers a status request.
    pub(super) async fn start(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.process.start()?;
        }
        for i in 0..self.nodes.len() {
            self.connect(i).await?;
            let answered_by = self.first_answer(i).await?;
            let node = &mut self.nodes[i];
            match self.system {
                System::Leitstand if answered_by != node.id => bail!(
                    "the controller at {} answered as node {answered_by}, configured as node {}",
                    node.address,
                    node.id
                ),
                System::Leitstand => {}
                System::Etcd => node.id = answered_by,
            }
        }
        if let Some(client) = self.nodes.first().and_then(|n| n.client.clone()) {
            self.version = client.version().await;
        }
        Ok(())
    }

    async fn connect(&mut self, i: usize) -> anyhow::Result<()> {
        let system = self.system;
        let deadline = Instant::now() + START_TIMEOUT;
        let node = &mut self.nodes[i];
        let channel = match &self.tls {
            // Our channel connects at once; the process may still be binding.
            Some(tls) => loop {
                match tls.channel(&node.address).await {
                    Ok(channel) => break channel,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(anyhow::Error::new(e).context(format!(
                            "no connection to the controller at {} within {START_TIMEOUT:?}; its log ends:\n{}",
                            node.address,
                            node.tail()
                        )));
                    }
                    Err(_) => {
                        node.must_run(system)?;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
            None => Endpoint::from_shared(format!("http://{}", node.address))?
                .connect_timeout(STATUS_TIMEOUT)
                .connect_lazy(),
        };
        node.client = Some(NodeClient { system, channel });
        Ok(())
    }

    /// Who member `i` says it is, once it answers.
    async fn first_answer(&mut self, i: usize) -> anyhow::Result<u64> {
        let system = self.system;
        let deadline = Instant::now() + START_TIMEOUT;
        let node = &mut self.nodes[i];
        let client = node
            .client
            .clone()
            .with_context(|| format!("member at {} not connected", node.address))?;
        loop {
            match client.view(STATUS_TIMEOUT).await? {
                Poll::Answer(view) => return Ok(view.answered_by),
                Poll::NoAnswer(why) if Instant::now() >= deadline => bail!(
                    "the {} member at {} gave no status within {START_TIMEOUT:?} (last: {why}); its log ends:\n{}",
                    system.name(),
                    node.address,
                    node.tail()
                ),
                Poll::NoAnswer(_) => {
                    node.must_run(system)?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Waits until every running member names the same leader and the
    /// leader confirms it with a quorum; returns the leader's position.
    pub(super) async fn await_leader(
        &mut self,
        when: &str,
        timeout: Duration,
    ) -> anyhow::Result<(usize, View)> {
        let system = self.system;
        let deadline = Instant::now() + timeout;
        loop {
            let mut views = Vec::new();
            let mut last = String::new();
            for node in &mut self.nodes {
                if !node.process.is_started() {
                    continue;
                }
                node.must_run(system)?;
                let Some(client) = &node.client else { continue };
                match client.view(STATUS_TIMEOUT).await? {
                    Poll::Answer(view) => views.push(view),
                    Poll::NoAnswer(why) => last = format!("{}: {why}", node.address),
                }
            }
            let running = self.nodes.iter().filter(|n| n.process.is_started()).count();
            if let Some(found) = self.agreed(&views, running) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} {when}: within {timeout:?} the members did not agree on a leader confirmed by a quorum; they said {views:?} {last}\n{}",
                    system.name(),
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn agreed(&self, views: &[View], running: usize) -> Option<(usize, View)> {
        let first = views.first()?;
        if views.len() < running
            || first.leader == 0
            || views.iter().any(|v| v.leader != first.leader)
        {
            return None;
        }
        let leader = views
            .iter()
            .find(|v| v.answered_by == first.leader && v.confirmed)?;
        let position = self
            .nodes
            .iter()
            .position(|n| n.id == leader.answered_by && n.process.is_started())?;
        Some((position, *leader))
    }

    /// A new connection to member `i` for proposals.
    pub(super) async fn proposer(&self, i: usize) -> anyhow::Result<Proposer> {
        let node = &self.nodes[i];
        Ok(match &self.tls {
            Some(tls) => Proposer::Leitstand(OperatorClient::new(
                tls.channel(&node.address)
                    .await
                    .with_context(|| format!("connect to the leader at {}", node.address))?,
            )),
            None => Proposer::Etcd(
                Endpoint::from_shared(format!("http://{}", node.address))?
                    .connect()
                    .await
                    .with_context(|| format!("connect to the leader at {}", node.address))?,
            ),
        })
    }

    /// Clients of every running member but `i`.
    pub(super) fn clients_except(&self, i: usize) -> Vec<NodeClient> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, node)| *j != i && node.process.is_started())
            .filter_map(|(_, node)| node.client.clone())
            .collect()
    }

    /// Sends SIGKILL to member `i` and hands its process over to be reaped.
    pub(super) fn kill(&mut self, i: usize) -> anyhow::Result<Child> {
        self.nodes[i].process.start_kill()
    }

    /// host:port of every member's client API, in node order.
    pub(super) fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.clone()).collect()
    }

    /// The bench operator's TLS client configuration: ours only.
    pub(super) fn operator_tls(&self) -> Option<Arc<ClientTls>> {
        self.tls.clone()
    }

    /// Process id of member `i` while it runs, for /proc samples.
    pub(super) fn pid(&self, i: usize) -> Option<u32> {
        self.nodes.get(i)?.process.pid()
    }

    pub(super) fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].process.start()
    }

    pub(super) fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} ({}):\n{}",
                    n.address,
                    n.process.log.display(),
                    n.tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills every member and reaps it; nothing of the cluster runs after.
    pub(super) async fn stop(&mut self) {
        for node in &mut self.nodes {
            let Ok(mut child) = node.process.start_kill() else {
                continue;
            };
            if tokio::time::timeout(REAP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "the {} member at {} did not exit within {REAP_TIMEOUT:?} of SIGKILL",
                    self.system.name(),
                    node.address
                );
            }
        }
    }
}

fn issue(dir: &Path, kind: PeerKind, name: &str, ips: Vec<std::net::IpAddr>) -> anyhow::Result<()> {
    let dns = if ips.is_empty() {
        vec![]
    } else {
        vec!["localhost".to_owned()]
    };
    pki::issue(
        dir,
        &IssueRequest {
            kind,
            name: name.into(),
            dns,
            ips,
            validity: Validity::days_from_now(1),
            force: false,
        },
    )
    .with_context(|| format!("issue the bench {kind:?} certificate {name}"))?;
    Ok(())
}

/// Distinct free loopback ports: all are held at once, so none repeats.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}
