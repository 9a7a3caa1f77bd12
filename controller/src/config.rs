//! `controller.toml`: the keys of DESIGN.md §9, validated with the file,
//! line and column of every mistake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use leitstand_proto::config::{ConfigSource, is_host_port};
use leitstand_proto::domain::{Identifier, NodeId};
use leitstand_proto::tls::TlsFiles;
use toml::Spanned;

use crate::Error;

/// Members a cluster may have.
const MAX_MEMBERS: usize = 9;

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
    pub rbac: Rbac,
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
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    peers: Spanned<BTreeMap<String, Spanned<String>>>,
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
            rbac,
        })
    }
}
