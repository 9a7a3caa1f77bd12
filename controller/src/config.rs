//! `controller.toml`: the keys of DESIGN.md §9, validated with the file,
//! line and column of every mistake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leitstand_proto::config::{ConfigSource, is_host_port, parse_duration};
use leitstand_proto::domain::{Identifier, NodeId};
use leitstand_proto::tls::TlsFiles;
use toml::Spanned;

use crate::Error;

use leitstand_proto::domain::bounds::{MAX_ADDRESS_BYTES, MAX_MEMBERS};

/// A validated controller configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsFiles,
    /// Node id → listen address of every member, this node included.
    pub peers: BTreeMap<NodeId, String>,
    /// `[cluster] peer_routes`: node id → the address this node dials to
    /// reach that peer when it differs from the advertised one (NAT, an SSH
    /// tunnel, a relay, the chaos sandbox's fault proxy). Local only: only
    /// the Raft transport uses it; it is never replicated, and clients are
    /// always told the advertised addresses.
    pub peer_routes: BTreeMap<NodeId, String>,
    pub raft: RaftSettings,
    pub rbac: Rbac,
    /// `[telemetry]`: the OTLP push (off unless `otlp_endpoint` is set).
    pub telemetry: crate::telemetry::TelemetrySettings,
}

/// `[cluster]` keys beyond `peers`: how this node joins and paces Raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// Start with an empty membership and wait to be added (`leitstand
    /// cluster add`) instead of bootstrapping from `peers`: for a node
    /// added to a running cluster, or rebuilt after its data was lost.
    pub join: bool,
    /// One Raft tick. Default 50 ms.
    pub tick: Duration,
    /// Heartbeat every this many ticks. Default 2 (100 ms).
    pub heartbeat_ticks: usize,
    /// A follower that hears nothing for [n, 2n) ticks starts an election.
    /// Default 10 ([0.5 s, 1 s) with the default tick): see
    /// `raft::NodeConfig` for why.
    pub election_ticks: usize,
    /// Applied entries past the latest snapshot before a new one is taken
    /// and the log compacted. Default 10 000.
    pub snapshot_after_entries: u64,
    /// Entries kept before the snapshot for followers a little behind.
    /// Default 1 000.
    pub keep_entries_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            join: false,
            tick: Duration::from_millis(50),
            heartbeat_ticks: 2,
            election_ticks: 10,
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
        }
    }
}

/// Operator names (or "*") per role; a name in several roles gets the highest.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rbac {
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub operator: Vec<String>,
    #[serde(default)]
    pub viewer: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: Spanned<u64>,
    listen: Spanned<String>,
    data_dir: PathBuf,
    #[serde(default)]
    metrics_listen: Option<Spanned<String>>,
    tls: TlsFiles,
    cluster: RawCluster,
    #[serde(default)]
    rbac: Option<Spanned<Rbac>>,
    #[serde(default)]
    telemetry: Option<crate::telemetry::RawTelemetry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    peers: Spanned<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    peer_routes: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    #[serde(default)]
    join: bool,
    #[serde(default)]
    tick: Option<Spanned<String>>,
    #[serde(default)]
    heartbeat_ticks: Option<Spanned<u64>>,
    #[serde(default)]
    election_ticks: Option<Spanned<u64>>,
    #[serde(default)]
    snapshot_after_entries: Option<Spanned<u64>>,
    #[serde(default)]
    keep_entries_after_snapshot: Option<Spanned<u64>>,
}

fn socket_addr(
    source: &ConfigSource,
    value: &Spanned<String>,
    key: &str,
) -> Result<SocketAddr, Error> {
    value.get_ref().parse().map_err(|_| {
        Error::Config(source.error_at(
            value.span(),
            format!(
                "{key} = {:?} is not an IP address with a port, e.g. \"127.0.0.1:7401\"",
                value.get_ref()
            ),
        ))
    })
}

impl ControllerConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let source = ConfigSource::read(path).map_err(Error::Config)?;
        let raw: RawConfig = source.parse().map_err(Error::Config)?;
        let at =
            |span: std::ops::Range<usize>, msg: String| Error::Config(source.error_at(span, msg));

        let node_id = NodeId::new(*raw.node_id.get_ref())
            .ok_or_else(|| at(raw.node_id.span(), "node_id must be 1 or more".into()))?;
        let listen = socket_addr(&source, &raw.listen, "listen")?;
        let metrics_listen = raw
            .metrics_listen
            .as_ref()
            .map(|m| socket_addr(&source, m, "metrics_listen"))
            .transpose()?;

        let mut peers = BTreeMap::new();
        for (id, address) in raw.cluster.peers.get_ref() {
            let id = id.parse().ok().and_then(NodeId::new).ok_or_else(|| {
                at(
                    raw.cluster.peers.span(),
                    format!("peer id {id:?} is not a node id (1 or more)"),
                )
            })?;
            let text = address.get_ref();
            if !is_host_port(text) {
                return Err(at(
                    address.span(),
                    format!("peer {id} address {text:?} is not host:port"),
                ));
            }
            peers.insert(id, text.clone());
        }
        if !peers.contains_key(&node_id) {
            return Err(at(
                raw.cluster.peers.span(),
                format!(
                    "[cluster] peers must list this node (node_id = {node_id}) with its address"
                ),
            ));
        }
        if peers.len() > MAX_MEMBERS {
            return Err(at(
                raw.cluster.peers.span(),
                format!(
                    "at most {MAX_MEMBERS} controllers (Raft needs a majority of them for every commit)"
                ),
            ));
        }
        let peer_routes = peer_routes(&source, node_id, raw.cluster.peer_routes.as_ref())?;
        let raft = raft_settings(&source, &raw.cluster)?;
        let (rbac, rbac_span) = raw
            .rbac
            .map(|r| (r.get_ref().clone(), r.span()))
            .unwrap_or_default();
        for name in rbac.admin.iter().chain(&rbac.operator).chain(&rbac.viewer) {
            if name != "*" && Identifier::new(name).is_err() {
                return Err(at(
                    rbac_span.clone(),
                    format!(
                        "[rbac] name {name:?} is neither \"*\" nor an operator name (letters, digits, '.', '_', '-')"
                    ),
                ));
            }
        }

        Ok(ControllerConfig {
            node_id,
            listen,
            data_dir: source.resolve(&raw.data_dir),
            metrics_listen,
            tls: raw.tls.resolved(|p| source.resolve(p)),
            peers,
            peer_routes,
            raft,
            rbac,
            telemetry: crate::telemetry::TelemetrySettings::from_raw(&source, raw.telemetry)?,
        })
    }
}

/// `[cluster] peer_routes`: at most [`MAX_MEMBERS`] entries, each a node
/// id other than this node's and a host:port.
fn peer_routes(
    source: &ConfigSource,
    node_id: NodeId,
    raw: Option<&Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
) -> Result<BTreeMap<NodeId, String>, Error> {
    let at = |span: std::ops::Range<usize>, msg: String| Error::Config(source.error_at(span, msg));
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    if raw.get_ref().len() > MAX_MEMBERS {
        return Err(at(
            raw.span(),
            format!(
                "[cluster] peer_routes has {} entries; at most {MAX_MEMBERS} (one per other member)",
                raw.get_ref().len()
            ),
        ));
    }
    let mut routes = BTreeMap::new();
    for (id, address) in raw.get_ref() {
        let text = id.get_ref();
        let id = text.parse().ok().and_then(NodeId::new).ok_or_else(|| {
            at(
                id.span(),
                format!("[cluster] peer_routes: {text:?} is not a node id (1 or more)"),
            )
        })?;
        if id == node_id {
            return Err(at(
                address.span(),
                format!(
                    "[cluster] peer_routes names this node ({id}); a route says how to reach another member"
                ),
            ));
        }
        let text = address.get_ref();
        if text.len() > MAX_ADDRESS_BYTES || !is_host_port(text) {
            return Err(at(
                address.span(),
                format!(
                    "[cluster] peer_routes: route to node {id} {text:?} is not host:port (at most {MAX_ADDRESS_BYTES} bytes)"
                ),
            ));
        }
        routes.insert(id, text.clone());
    }
    Ok(routes)
}

fn raft_settings(source: &ConfigSource, raw: &RawCluster) -> Result<RaftSettings, Error> {
    let defaults = RaftSettings::default();
    let at = |span: std::ops::Range<usize>, msg: String| Error::Config(source.error_at(span, msg));
    let ranged = |value: &Option<Spanned<u64>>, key: &str, min: u64, max: u64, default: u64| {
        let Some(value) = value else {
            return Ok(default);
        };
        let number = *value.get_ref();
        if (min..=max).contains(&number) {
            Ok(number)
        } else {
            Err(at(
                value.span(),
                format!("[cluster] {key} = {number} is out of range; allowed is {min} to {max}"),
            ))
        }
    };
    let tick = raw
        .tick
        .as_ref()
        .map(|tick| {
            parse_duration(
                source,
                tick,
                Duration::from_millis(10),
                Duration::from_secs(1),
            )
            .map_err(Error::Config)
        })
        .transpose()?
        .unwrap_or(defaults.tick);
    let heartbeat_ticks = ranged(&raw.heartbeat_ticks, "heartbeat_ticks", 1, 100, 2)?;
    let election_ticks = ranged(&raw.election_ticks, "election_ticks", 3, 1000, 10)?;
    if election_ticks <= heartbeat_ticks {
        let span = raw
            .election_ticks
            .as_ref()
            .or(raw.heartbeat_ticks.as_ref())
            .map(Spanned::span)
            .unwrap_or_default();
        return Err(at(
            span,
            format!(
                "[cluster] election_ticks ({election_ticks}) must be more than heartbeat_ticks ({heartbeat_ticks}), or followers start elections while the leader is healthy"
            ),
        ));
    }
    Ok(RaftSettings {
        join: raw.join,
        tick,
        heartbeat_ticks: heartbeat_ticks as usize,
        election_ticks: election_ticks as usize,
        snapshot_after_entries: ranged(
            &raw.snapshot_after_entries,
            "snapshot_after_entries",
            10,
            10_000_000,
            defaults.snapshot_after_entries,
        )?,
        keep_entries_after_snapshot: ranged(
            &raw.keep_entries_after_snapshot,
            "keep_entries_after_snapshot",
            0,
            10_000_000,
            defaults.keep_entries_after_snapshot,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// controller.toml up to `[cluster]` and its `peers` line: line 10 is
    /// the first line a case adds.
    const BASE: &str = "node_id = 1\nlisten = \"127.0.0.1:7401\"\ndata_dir = \"data\"\n\
        [tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n\
        [cluster]\npeers = { 1 = \"127.0.0.1:7401\", 2 = \"127.0.0.1:7402\", 3 = \"127.0.0.1:7403\" }\n";

    fn load(cluster: &str) -> Result<ControllerConfig, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, format!("{BASE}{cluster}")).expect("write controller.toml");
        ControllerConfig::load(&path).map_err(|error| {
            // Without the temp dir, so expectations can name the location.
            error
                .to_string()
                .replace(&path.display().to_string(), "controller.toml")
        })
    }

    #[test]
    fn peer_routes_are_local_dial_addresses_of_other_members() {
        let config = load("peer_routes = { 2 = \"127.0.0.1:17402\", 3 = \"relay.example:7\" }\n")
            .expect("valid routes");
        let routes: Vec<(u64, &str)> = config
            .peer_routes
            .iter()
            .map(|(id, address)| (id.get(), address.as_str()))
            .collect();
        assert_eq!(routes, [(2, "127.0.0.1:17402"), (3, "relay.example:7")]);
        // The advertised addresses stay what peers says.
        assert_eq!(config.peers[&NodeId::new(2).expect("id")], "127.0.0.1:7402");
        assert!(load("").expect("no routes").peer_routes.is_empty());
    }

    #[test]
    fn peer_routes_mistakes_are_located() {
        let nine = (2..=11)
            .map(|id| format!("{id} = \"127.0.0.1:{}\"", 17400 + id))
            .collect::<Vec<_>>()
            .join(", ");
        let too_many = format!("peer_routes = {{ {nine} }}\n");
        for (cluster, expected) in [
            (
                "peer_routes = { 1 = \"127.0.0.1:17401\" }\n",
                "controller.toml:10:21: [cluster] peer_routes names this node (1)",
            ),
            (
                "peer_routes = { 2 = \"127.0.0.1\" }\n",
                "controller.toml:10:21: [cluster] peer_routes: route to node 2 \"127.0.0.1\" is not host:port",
            ),
            (
                "peer_routes = { 2 = \"127.0.0.1:17402\", 3 = \":7\" }\n",
                "controller.toml:10:44: [cluster] peer_routes: route to node 3 \":7\" is not host:port",
            ),
            (
                "peer_routes = { 0 = \"127.0.0.1:17402\" }\n",
                "controller.toml:10:17: [cluster] peer_routes: \"0\" is not a node id",
            ),
            (
                "peer_routes = { x = \"127.0.0.1:17402\" }\n",
                "controller.toml:10:17: [cluster] peer_routes: \"x\" is not a node id",
            ),
            (
                too_many.as_str(),
                "controller.toml:10:15: [cluster] peer_routes has 10 entries; at most 9",
            ),
            (
                "peer_routes = [\"127.0.0.1:17402\"]\n",
                "controller.toml:10:15:",
            ),
        ] {
            let error = load(cluster).expect_err(cluster);
            assert!(error.starts_with(expected), "{cluster}: {error}");
        }
    }
}
