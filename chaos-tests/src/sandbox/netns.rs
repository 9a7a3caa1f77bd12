//! The sandbox's optional root mode (`--network netns`): every controller
//! and every agent process runs in a network namespace of its own, joined by
//! a veth pair to a bridge of this run on a private /24; faults are iptables
//! rules and tc qdiscs inside those namespaces, so the kernel breaks the
//! links packet by packet instead of a proxy byte by byte.
//!
//! Shape: namespace `ls-<pid>-c<id>` (controllers) or `ls-<pid>-a<n>`
//! (agents), its end of the veth called `eth0`, the host end named like the
//! namespace and enslaved to the bridge `ls-<pid>-br`, which holds the
//! address `10.213.<n>.1` in the root namespace: that is where the harness
//! sits (it observes, calls and reads the audit chains through the bridge),
//! and where the path endpoints listen. Controllers listen on
//! `10.213.<n>.<10+id>:7400`, agents have `10.213.<n>.<100+n>`.
//!
//! A link is what a proxy is in proxy mode: the TCP connections one side
//! opens to a controller's port ([`Link`]). Its forward packets are those
//! leaving the dialling namespace for the controller's address and port
//! 7400; its backward packets leave the controller's namespace from port
//! 7400 for the dialler's address. Port 7400 lies below the ephemeral range,
//! so the port says which side of which connection a packet belongs to.
//! Rules match only addresses of node namespaces and live only inside them:
//! the harness's own traffic (from the bridge address) is never touched.
//!
//! Teardown: dropping [`Net`] deletes the namespaces (with them their
//! veths, iptables rules and qdiscs) and the bridge. A run killed before it
//! could do that leaves names with a dead pid in them; the next run removes
//! those first ([`remove_leftovers`]).
//!
//! Everything is run as argv (no shell); a failing command's standard error
//! becomes the error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::proxy::{Direction, Fault};

/// Where every controller listens inside its namespace. Below the
/// ephemeral range (32768–60999), so no dialling socket ever has it.
pub(crate) const PORT: u16 = 7400;
pub(crate) const METRICS_PORT: u16 = 9464;
/// The iptables chain (in each namespace's filter table, jumped to from
/// OUTPUT) that holds the faults.
const CHAIN: &str = "LEITSTAND";
/// The namespace's end of its veth pair.
const DEVICE: &str = "eth0";
const PREFIX: &str = "ls-";
const SUBNET_FIRST_OCTETS: [u8; 2] = [10, 213];
/// At most one netns sandbox per process: the names carry only the pid.
static ALIVE: AtomicBool = AtomicBool::new(false);

/// The programs the mode runs.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    pub(crate) ip: PathBuf,
    pub(crate) tc: PathBuf,
    pub(crate) iptables: PathBuf,
    pub(crate) iptables_restore: PathBuf,
}

use super::process::{SEARCH, find_program as find};

fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What `--network netns` needs before anything starts: root, and `ip`,
/// `tc`, `iptables-restore`. The error says what is missing, why it is
/// needed and how to get it.
pub(crate) fn preflight() -> anyhow::Result<Tools> {
    preflight_with(effective_uid(), find)
}

/// [`preflight`] with the uid and the program search given.
fn preflight_with(
    uid: Option<u32>,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> anyhow::Result<Tools> {
    if uid != Some(0) {
        bail!(
            "--network netns needs root (effective uid {}): it creates network namespaces, veth pairs, \
             a bridge, iptables rules and tc qdiscs. Run it as root, or use --network proxy (the default), \
             which needs no privileges",
            uid.map_or("unknown".into(), |u| u.to_string())
        );
    }
    let wanted = [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("iptables", "iptables"),
        ("iptables-restore", "iptables"),
    ];
    let found: Vec<Option<PathBuf>> = wanted.iter().map(|(program, _)| find(program)).collect();
    let missing: Vec<(&str, &str)> = wanted
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(w, _)| *w)
        .collect();
    if let [ip, tc, iptables, iptables_restore] = &found[..]
        && let (Some(ip), Some(tc), Some(iptables), Some(iptables_restore)) =
            (ip, tc, iptables, iptables_restore)
    {
        return Ok(Tools {
            ip: ip.clone(),
            tc: tc.clone(),
            iptables: iptables.clone(),
            iptables_restore: iptables_restore.clone(),
        });
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    bail!(
        "--network netns runs {} to build and break the network, and {} not found in PATH or {}; \
         install {} (Debian: apt-get install {}), or use --network proxy",
        wanted.map(|(p, _)| p).join(", "),
        missing
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(", ")
            + if missing.len() == 1 { " is" } else { " are" },
        SEARCH.join(":"),
        if missing.len() == 1 { "it" } else { "them" },
        packages.join(" ")
    )
}

/// One process's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Node {
    Controller(u64),
    /// The n-th agent (0-based).
    Agent(usize),
}

/// Names and addresses of one run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Topology {
    /// `ls-<pid>`: the start of every name this run creates.
    pub(crate) run: String,
    /// The third octet of the run's subnet 10.213.<octet>.0/24.
    pub(crate) octet: u8,
    pub(crate) controllers: Vec<u64>,
    pub(crate) agents: usize,
}

impl Topology {
    pub(crate) fn namespace(&self, node: Node) -> String {
        match node {
            Node::Controller(id) => format!("{}-c{id}", self.run),
            Node::Agent(n) => format!("{}-a{}", self.run, n + 1),
        }
    }

    fn bridge(&self) -> String {
        format!("{}-br", self.run)
    }

    /// The bridge's address in the root namespace: the harness's side.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        let [a, b] = SUBNET_FIRST_OCTETS;
        Ipv4Addr::new(a, b, self.octet, 1)
    }

    pub(crate) fn address(&self, node: Node) -> Ipv4Addr {
        let [a, b] = SUBNET_FIRST_OCTETS;
        let host = match node {
            Node::Controller(id) => 10 + id as u8,
            Node::Agent(n) => 101 + n as u8,
        };
        Ipv4Addr::new(a, b, self.octet, host)
    }

    fn nodes(&self) -> Vec<Node> {
        self.controllers
            .iter()
            .map(|id| Node::Controller(*id))
            .chain((0..self.agents).map(Node::Agent))
            .collect()
    }
}

/// The connections one side opens to a controller: as a proxy carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Link {
    /// Controller `from` dialling controller `to` (Raft).
    Peer { from: u64, to: u64 },
    /// Every agent dialling this controller.
    Agents { controller: u64 },
}

/// A fault only packets can have: loss of single packets inside a TCP
/// stream, and delay with jitter per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PacketFault {
    /// Probability that one packet is lost, each direction.
    pub(crate) loss: f64,
    pub(crate) delay: Duration,
    pub(crate) jitter: Duration,
}

impl fmt::Display for PacketFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.0} % packet loss", self.loss * 100.0)?;
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            write!(f, ", delay {:?} ±{:?}", self.delay, self.jitter)?;
        }
        write!(f, " (each direction)")
    }
}

/// What happens to the packets of a flow.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// iptables DROP: silence, no RST.
    Drop,
    /// iptables REJECT --reject-with tcp-reset: the sender's socket resets.
    Reset,
    /// iptables statistic DROP: each packet lost with this probability.
    Lose(f64),
    /// iptables statistic REJECT tcp-reset: each packet cuts its connection
    /// with this probability.
    ResetSome(f64),
    /// tc: an htb class (a rate) with a netem leaf (delay, jitter).
    Shape {
        delay: Duration,
        jitter: Duration,
        rate_bits: Option<u64>,
    },
}

/// Packets leaving namespace `from` for `dst`, to or from port [`PORT`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Flow {
    pub(crate) from: Node,
    pub(crate) dst: Ipv4Addr,
    pub(crate) port: PortMatch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PortMatch {
    /// Towards the controller's listening port: the dialler's packets.
    Destination(u16),
    /// From the controller's listening port: the answers.
    Source(u16),
}

/// What each [`Fault`] of the proxy becomes at packet level, per direction
/// of the link (forward: dialler → controller).
pub(crate) fn effects(fault: &Fault) -> Vec<(Direction, Effect)> {
    use Direction::{Backward, Forward};
    let both = |e: Effect| vec![(Forward, e.clone()), (Backward, e)];
    match fault {
        Fault::None => Vec::new(),
        Fault::Blackhole { direction } => match direction {
            Direction::Both => both(Effect::Drop),
            Direction::Forward => vec![(Forward, Effect::Drop)],
            Direction::Backward => vec![(Backward, Effect::Drop)],
        },
        // Both sides get their RST: each side's packets are rejected locally.
        Fault::Refuse => both(Effect::Reset),
        Fault::Delay { base, jitter } => both(Effect::Shape {
            delay: *base,
            jitter: *jitter,
            rate_bits: None,
        }),
        // The proxy cuts a connection per chunk with p; here per packet.
        Fault::DropConnections { probability } => both(Effect::ResetSome(*probability)),
        // htb cannot hold a rate of 0; a stopped flow is a silent one.
        Fault::Bandwidth {
            bytes_per_second: 0,
        } => both(Effect::Drop),
        Fault::Bandwidth { bytes_per_second } => both(Effect::Shape {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_bits: Some(bytes_per_second.saturating_mul(8)),
        }),
        // The controller's side is reset (it sees the connection end), the
        // dialler's packets vanish (its socket stays open and silent). On
        // healing, the dialler's next packet meets no socket and gets the
        // kernel's RST, as from the proxy.
        Fault::HalfOpen => vec![(Forward, Effect::Drop), (Backward, Effect::Reset)],
    }
}

fn packet_effects(fault: &PacketFault) -> Vec<(Direction, Effect)> {
    let mut out = Vec::new();
    for way in [Direction::Forward, Direction::Backward] {
        if fault.loss > 0.0 {
            out.push((way, Effect::Lose(fault.loss)));
        }
        if !fault.delay.is_zero() || !fault.jitter.is_zero() {
            out.push((
                way,
                Effect::Shape {
                    delay: fault.delay,
                    jitter: fault.jitter,
                    rate_bits: None,
                },
            ));
        }
    }
    out
}

/// The packets of `link` travelling `way` (Both counts as Forward: callers
/// split directions first).
pub(crate) fn flows(topology: &Topology, link: Link, way: Direction) -> Vec<Flow> {
    let controller = |id| topology.address(Node::Controller(id));
    let backward = way == Direction::Backward;
    match link {
        Link::Peer { from, to } if backward => vec![Flow {
            from: Node::Controller(to),
            dst: controller(from),
            port: PortMatch::Source(PORT),
        }],
        Link::Peer { from, to } => vec![Flow {
            from: Node::Controller(from),
            dst: controller(to),
            port: PortMatch::Destination(PORT),
        }],
        Link::Agents { controller: c } if backward => (0..topology.agents)
            .map(|n| Flow {
                from: Node::Controller(c),
                dst: topology.address(Node::Agent(n)),
                port: PortMatch::Source(PORT),
            })
            .collect(),
        Link::Agents { controller: c } => (0..topology.agents)
            .map(|n| Flow {
                from: Node::Agent(n),
                dst: controller(c),
                port: PortMatch::Destination(PORT),
            })
            .collect(),
    }
}

/// Every namespace's (flow, effect) list for the faults set: the links'
/// faults first, then the packet faults (a DROP wins over a loss).
pub(crate) fn plan(
    topology: &Topology,
    faults: &BTreeMap<Link, Fault>,
    packet: &BTreeMap<Link, PacketFault>,
) -> BTreeMap<Node, Vec<(Flow, Effect)>> {
    let mut out: BTreeMap<Node, Vec<(Flow, Effect)>> = BTreeMap::new();
    let all = faults
        .iter()
        .map(|(link, f)| (*link, effects(f)))
        .chain(packet.iter().map(|(link, f)| (*link, packet_effects(f))));
    for (link, effects) in all {
        for (way, effect) in effects {
            for flow in flows(topology, link, way) {
                out.entry(flow.from)
                    .or_default()
                    .push((flow, effect.clone()));
            }
        }
    }
    out
}

/// The iptables-restore input (`--noflush`) that replaces the chain's rules
/// with these: declaring the chain flushes it, the rest is one transaction.
pub(crate) fn ruleset(rules: &[(Flow, Effect)]) -> String {
    let mut out = format!("*filter\n:{CHAIN} - [0:0]\n");
    for (flow, effect) in rules {
        let port = match flow.port {
            PortMatch::Destination(p) => format!("--dport {p}"),
            PortMatch::Source(p) => format!("--sport {p}"),
        };
        let action = match effect {
            Effect::Drop => "-j DROP".to_owned(),
            Effect::Reset => "-j REJECT --reject-with tcp-reset".to_owned(),
            Effect::Lose(p) => {
                format!("-m statistic --mode random --probability {p:.4} -j DROP")
            }
            Effect::ResetSome(p) => format!(
                "-m statistic --mode random --probability {p:.4} -j REJECT --reject-with tcp-reset"
            ),
            Effect::Shape { .. } => continue,
        };
        out.push_str(&format!(
            "-A {CHAIN} -p tcp -d {}/32 {port} {action}\n",
            flow.dst
        ));
    }
    out.push_str("COMMIT\n");
    out
}

/// The tc commands (argv after `tc -n NAMESPACE`) that install the shaped
/// flows: an htb root whose default class is unlimited, one class per
/// shaped flow with its rate, a netem leaf for delay and jitter, a u32
/// filter by destination address and port. Nothing when nothing is shaped.
pub(crate) fn shaping(rules: &[(Flow, Effect)]) -> Vec<Vec<String>> {
    let shaped: Vec<(&Flow, Duration, Duration, Option<u64>)> = rules
        .iter()
        .filter_map(|(flow, effect)| match effect {
            Effect::Shape {
                delay,
                jitter,
                rate_bits,
            } => Some((flow, *delay, *jitter, *rate_bits)),
            _ => None,
        })
        .collect();
    if shaped.is_empty() {
        return Vec::new();
    }
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let mut out = vec![
        words(&format!(
            "qdisc add dev {DEVICE} root handle 1: htb default 1"
        )),
        words(&format!(
            "class add dev {DEVICE} parent 1: classid 1:1 htb rate 10gbit"
        )),
    ];
    for (k, (flow, delay, jitter, rate)) in shaped.into_iter().enumerate() {
        let minor = format!("{:x}", 0x10 + k);
        let rate = rate.map_or("10gbit".to_owned(), |bits| format!("{}bit", bits.max(8)));
        out.push(words(&format!(
            "class add dev {DEVICE} parent 1: classid 1:{minor} htb rate {rate}"
        )));
        if !delay.is_zero() || !jitter.is_zero() {
            let mut netem = format!(
                "qdisc add dev {DEVICE} parent 1:{minor} handle {minor}: netem delay {}us",
                delay.as_micros()
            );
            if !jitter.is_zero() {
                netem.push_str(&format!(" {}us", jitter.as_micros()));
            }
            out.push(words(&netem));
        }
        let port = match flow.port {
            PortMatch::Destination(p) => format!("match ip dport {p} 0xffff"),
            PortMatch::Source(p) => format!("match ip sport {p} 0xffff"),
        };
        out.push(words(&format!(
            "filter add dev {DEVICE} parent 1: protocol ip prio 1 u32 match ip dst {}/32 {port} flowid 1:{minor}",
            flow.dst
        )));
    }
    out
}

fn needs_netem(rules: &[(Flow, Effect)]) -> bool {
    rules.iter().any(|(_, e)| {
        matches!(e, Effect::Shape { delay, jitter, .. } if !delay.is_zero() || !jitter.is_zero())
    })
}

/// The packets counted by random-loss rules in `iptables -L -n -v -x`
/// output (first column: packets; the header lines do not parse).
fn count_lost(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.contains("statistic") && l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// How long one ip, tc or iptables command may take (iptables waits for
/// the xtables lock that parallel runs share).
const COMMAND_WITHIN: Duration = Duration::from_secs(20);
/// Standard output and error kept of one command.
const OUTPUT_CAP: u64 = 1 << 20;

/// Runs `program args`, feeding `stdin`; its standard output, or an error
/// that carries its standard error.
async fn output(program: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shown = || format!("{} {}", program.display(), args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start `{}`", shown()))?;
    let input = child.stdin.take();
    let mut out = child.stdout.take().context("stdout is piped")?;
    let mut err = child.stderr.take().context("stderr is piped")?;
    let finish = async {
        if let (Some(text), Some(mut pipe)) = (stdin, input) {
            pipe.write_all(text.as_bytes()).await?;
            // Closing stdin ends the input.
            drop(pipe);
        }
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut out = (&mut out).take(OUTPUT_CAP);
        let mut err = (&mut err).take(OUTPUT_CAP);
        let (read_out, read_err) =
            tokio::join!(out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
        read_out?;
        read_err?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, stdout, stderr))
    };
    let (status, stdout, stderr) = tokio::time::timeout(COMMAND_WITHIN, finish)
        .await
        .map_err(|_| anyhow::anyhow!("`{}` did not finish within {COMMAND_WITHIN:?}", shown()))?
        .with_context(|| format!("run `{}`", shown()))?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}): {}",
            shown(),
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

async fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    output(program, args, stdin).await.map(|_| ())
}

/// For Drop, where nothing can be awaited: waits for the command, says
/// only whether it worked.
fn run_blocking(program: &Path, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut child| child.wait())
        .is_ok_and(|status| status.success())
}

/// The pid in a name this mode made (`ls-<pid>-…`).
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether a run with this pid may still own its names: it lives and is
/// not this process (this process has at most one sandbox, created now).
fn owner_alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces, bridges and veths of earlier runs whose process
/// is gone. Returns what it removed.
pub(crate) async fn remove_leftovers(tools: &Tools) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for line in output(&tools.ip, &["netns", "list"], None).await?.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner(name).is_some_and(|pid| !owner_alive(pid)) {
            run(&tools.ip, &["netns", "del", name], None).await?;
            removed.push(format!("namespace {name}"));
        }
    }
    // `N: name@peer: <…>` or `N: name: <…>`.
    for line in output(&tools.ip, &["-o", "link", "show"], None)
        .await?
        .lines()
    {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if owner(name).is_some_and(|pid| !owner_alive(pid)) {
            // A veth may have gone with its namespace a moment ago.
            if run(&tools.ip, &["link", "del", name], None).await.is_ok() {
                removed.push(format!("interface {name}"));
            }
        }
    }
    Ok(removed)
}

/// Where concurrent netns runs serialise their choice of subnet.
const SUBNET_LOCK: &str = "/run/leitstand-drill-netns.lock";
const SUBNET_LOCK_WITHIN: Duration = Duration::from_secs(20);

/// An exclusive lock on [`SUBNET_LOCK`], held while the file is open.
async fn subnet_lock() -> anyhow::Result<std::fs::File> {
    let take = tokio::task::spawn_blocking(|| {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SUBNET_LOCK)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    });
    tokio::time::timeout(SUBNET_LOCK_WITHIN, take)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "another drill held {SUBNET_LOCK} for {SUBNET_LOCK_WITHIN:?} (a run choosing its subnet takes milliseconds)"
            )
        })?
        .context("the lock task")?
        .with_context(|| format!("lock {SUBNET_LOCK}"))
}

/// The first 10.213.<n>.0/24 (n in 1..=254) no interface of the root
/// namespace has an address in.
async fn free_octet(tools: &Tools) -> anyhow::Result<u8> {
    let addresses = output(&tools.ip, &["-o", "-4", "addr", "show"], None).await?;
    let [a, b] = SUBNET_FIRST_OCTETS;
    (1..=254u8)
        .find(|n| !addresses.contains(&format!(" {a}.{b}.{n}.")))
        .with_context(|| format!("every subnet {a}.{b}.1-254.0/24 is in use here"))
}

/// The network of one netns sandbox; dropping it removes everything.
#[derive(Debug)]
pub(crate) struct Net {
    tools: Tools,
    pub(crate) topology: Topology,
    faults: BTreeMap<Link, Fault>,
    packet: BTreeMap<Link, PacketFault>,
    applied: BTreeMap<Node, Vec<(Flow, Effect)>>,
    /// Whether this kernel has sch_netem (delay and jitter).
    pub(crate) netem: bool,
    namespaces: Vec<String>,
    bridge: Option<String>,
}

impl Net {
    /// Removes dead runs' leftovers, then builds the bridge and one
    /// namespace per node.
    pub(crate) async fn create(
        tools: Tools,
        controllers: Vec<u64>,
        agents: usize,
    ) -> anyhow::Result<Net> {
        // Host parts: controllers .11–.99, agents .101–.199.
        if controllers.iter().any(|id| !(1..=89).contains(id)) || agents > 99 {
            bail!("the netns sandbox numbers controllers 1–89 and at most 99 agents");
        }
        if ALIVE.swap(true, Ordering::SeqCst) {
            bail!("a netns sandbox already exists in this process (names carry only the pid)");
        }
        let mut net = Net {
            topology: Topology {
                run: format!("{PREFIX}{}", std::process::id()),
                octet: 0,
                controllers,
                agents,
            },
            tools,
            faults: BTreeMap::new(),
            packet: BTreeMap::new(),
            applied: BTreeMap::new(),
            netem: false,
            namespaces: Vec::new(),
            bridge: None,
        };
        let removed = remove_leftovers(&net.tools)
            .await
            .context("remove earlier runs' leftovers")?;
        if !removed.is_empty() {
            tracing::info!(target: "drill", "removed leftovers of dead runs: {}", removed.join(", "));
        }
        // Choosing a free subnet and taking it (the bridge's address) is
        // one step for concurrent runs: under a lock shared by all of them.
        let lock = subnet_lock().await?;
        net.topology.octet = free_octet(&net.tools).await?;
        net.build_bridge()
            .await
            .context("build the drill's bridge")?;
        drop(lock);
        net.build_nodes()
            .await
            .context("build the drill's namespaces and veths")?;
        Ok(net)
    }

    async fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run(&self.tools.ip, args, None).await
    }

    async fn build_bridge(&mut self) -> anyhow::Result<()> {
        let t = self.topology.clone();
        let bridge = t.bridge();
        self.ip(&["link", "add", &bridge, "type", "bridge"]).await?;
        self.bridge = Some(bridge.clone());
        self.ip(&[
            "addr",
            "add",
            &format!("{}/24", t.gateway()),
            "dev",
            &bridge,
        ])
        .await?;
        self.ip(&["link", "set", &bridge, "up"]).await
    }

    async fn build_nodes(&mut self) -> anyhow::Result<()> {
        let t = self.topology.clone();
        let bridge = t.bridge();
        for node in t.nodes() {
            let ns = t.namespace(node);
            self.ip(&["netns", "add", &ns]).await?;
            self.namespaces.push(ns.clone());
            // Host end named like the namespace; created with its peer
            // already inside, so no interface is ever left half-moved.
            self.ip(&[
                "link", "add", &ns, "type", "veth", "peer", "name", DEVICE, "netns", &ns,
            ])
            .await?;
            self.ip(&["link", "set", &ns, "master", &bridge]).await?;
            self.ip(&["link", "set", &ns, "up"]).await?;
            self.ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", t.address(node)),
                "dev",
                DEVICE,
            ])
            .await?;
            self.ip(&["-n", &ns, "link", "set", DEVICE, "up"]).await?;
            self.ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
            self.iptables(
                &ns,
                false,
                &format!(
                    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     :{CHAIN} - [0:0]\n-A OUTPUT -j {CHAIN}\nCOMMIT\n"
                ),
            )
            .await?;
        }
        // sch_netem is a module many kernels have and some (small VM
        // kernels) lack: find out once, so a delay fault can say so.
        if let Some(first) = self.namespaces.first().cloned() {
            let tc = self.tools.tc.clone();
            self.netem = run(
                &tc,
                &[
                    "-n", &first, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                ],
                None,
            )
            .await
            .is_ok();
            if self.netem {
                run(
                    &tc,
                    &["-n", &first, "qdisc", "del", "dev", "lo", "root"],
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn iptables(&self, ns: &str, noflush: bool, rules: &str) -> anyhow::Result<()> {
        let restore = self.tools.iptables_restore.to_string_lossy().into_owned();
        let mut args = vec!["netns", "exec", ns, restore.as_str(), "-w"];
        if noflush {
            args.push("--noflush");
        }
        run(&self.tools.ip, &args, Some(rules)).await
    }

    /// argv that runs a program in `node`'s namespace (ip netns exec execs
    /// it, so the pid is the program's own: signals reach it directly).
    pub(crate) fn exec_prefix(&self, node: Node) -> (PathBuf, Vec<OsString>) {
        (
            self.tools.ip.clone(),
            vec![
                "netns".into(),
                "exec".into(),
                self.topology.namespace(node).into(),
            ],
        )
    }

    pub(crate) async fn set(&mut self, link: Link, fault: Fault) -> anyhow::Result<()> {
        if fault == Fault::None {
            self.faults.remove(&link);
        } else {
            self.faults.insert(link, fault);
        }
        self.apply().await
    }

    pub(crate) async fn set_packet(
        &mut self,
        links: &[Link],
        fault: PacketFault,
    ) -> anyhow::Result<()> {
        for link in links {
            self.packet.insert(*link, fault);
        }
        self.apply().await
    }

    /// Packets the random-loss rules dropped so far, over every namespace:
    /// the evidence that a packet fault really took packets.
    pub(crate) async fn lost_packets(&self) -> anyhow::Result<u64> {
        let iptables = self.tools.iptables.to_string_lossy().into_owned();
        let mut lost = 0;
        for ns in &self.namespaces {
            let listing = output(
                &self.tools.ip,
                &[
                    "netns", "exec", ns, &iptables, "-w", "-L", CHAIN, "-n", "-v", "-x",
                ],
                None,
            )
            .await?;
            lost += count_lost(&listing);
        }
        Ok(lost)
    }

    pub(crate) async fn heal(&mut self) -> anyhow::Result<()> {
        self.faults.clear();
        self.packet.clear();
        self.apply().await
    }

    /// Brings every namespace whose rules changed to the planned state.
    async fn apply(&mut self) -> anyhow::Result<()> {
        let planned = plan(&self.topology, &self.faults, &self.packet);
        if !self.netem
            && let Some((node, _)) = planned.iter().find(|(_, rules)| needs_netem(rules))
        {
            bail!(
                "delay and jitter at packet level need tc netem, which this kernel lacks (no sch_netem; \
                 `tc qdisc add … netem` says \"Specified qdisc kind is unknown\"); asked for {}. \
                 Use --network proxy for delay faults, or a kernel with CONFIG_NET_SCH_NETEM",
                self.topology.namespace(*node)
            );
        }
        let empty = Vec::new();
        for node in self.topology.nodes() {
            let new = planned.get(&node).unwrap_or(&empty);
            let old = self.applied.get(&node).unwrap_or(&empty);
            if new == old {
                continue;
            }
            let ns = self.topology.namespace(node);
            if ruleset(new) != ruleset(old) {
                self.iptables(&ns, true, &ruleset(new))
                    .await
                    .with_context(|| format!("set the iptables faults of {ns}"))?;
            }
            let (old_tc, new_tc) = (shaping(old), shaping(new));
            if old_tc != new_tc {
                let tc = self.tools.tc.clone();
                if !old_tc.is_empty() {
                    run(
                        &tc,
                        &["-n", &ns, "qdisc", "del", "dev", DEVICE, "root"],
                        None,
                    )
                    .await?;
                }
                for command in &new_tc {
                    let mut args = vec!["-n", ns.as_str()];
                    args.extend(command.iter().map(String::as_str));
                    run(&tc, &args, None)
                        .await
                        .with_context(|| format!("shape the traffic of {ns}"))?;
                }
            }
            self.applied.insert(node, new.clone());
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The processes in the namespaces were killed before (the sandbox
        // drops them first); deleting the host end of a veth deletes the
        // pair, deleting a namespace drops its iptables rules and qdiscs.
        for ns in &self.namespaces {
            let _ = run_blocking(&self.tools.ip, &["link", "del", ns]);
            if !run_blocking(&self.tools.ip, &["netns", "del", ns]) {
                tracing::warn!(
                    "could not remove the drill's namespace {ns}; the next netns run removes it"
                );
            }
        }
        if let Some(bridge) = &self.bridge
            && !run_blocking(&self.tools.ip, &["link", "del", bridge])
        {
            tracing::warn!(
                "could not remove the drill's bridge {bridge}; the next netns run removes it"
            );
        }
        ALIVE.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
