//! `agent.toml`: the keys of DESIGN.md §9, validated with the file, line
//! and column of every mistake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leitstand_proto::config::{ConfigSource, is_host_port, parse_duration};
use leitstand_proto::domain::{AgentId, Identifier};
use leitstand_proto::tls::TlsFiles;
use toml::Spanned;

use crate::Error;
use crate::checks::{CheckSpec, DEFAULT_MAX_CONCURRENT_CHECKS, RawCheck, parse_checks};
use crate::executor::ActionSpec;

/// Controllers an agent may list.
const MAX_CONTROLLERS: usize = 16;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How long reports are kept while no controller is reachable.
const DEFAULT_BUFFER: Duration = Duration::from_secs(600);
/// One attempt to reach a controller; chosen on a LAN, where it is about a
/// hundred times what an attempt takes.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Reports kept at most, whatever `buffer` and `interval` say: about 1 KiB
/// each without checks, so the buffer stays below a few MiB.
pub use leitstand_proto::domain::bounds::MAX_BUFFERED_REPORTS;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub id: AgentId,
    pub controllers: Vec<String>,
    pub interval: Duration,
    /// Reports kept while disconnected: `buffer / interval`, at most
    /// [`MAX_BUFFERED_REPORTS`].
    pub buffer_reports: usize,
    /// How long one attempt to reach a controller may take (connect, TLS
    /// handshake, Session, its first answer) before the agent tries again
    /// or elsewhere.
    pub connect_timeout: Duration,
    pub state_dir: PathBuf,
    pub tls: TlsFiles,
    /// The allowlist: the only actions this agent ever runs.
    pub(crate) actions: Vec<ActionSpec>,
    pub(crate) checks: Vec<CheckSpec>,
    /// Checks running at the same moment, at most.
    pub(crate) max_concurrent_checks: usize,
    /// A loopback address for the agent's own Prometheus `/metrics`; off
    /// when absent (the controllers export every agent's metrics anyway).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The file it came from, for messages.
    pub source: PathBuf,
    id_span: std::ops::Range<usize>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    id: Spanned<String>,
    controllers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    buffer: Option<Spanned<String>>,
    #[serde(default)]
    connect_timeout: Option<Spanned<String>>,
    state_dir: PathBuf,
    tls: TlsFiles,
    #[serde(default)]
    max_concurrent_checks: Option<Spanned<u64>>,
    #[serde(default)]
    metrics_listen: Option<Spanned<String>>,
    #[serde(default, rename = "check")]
    checks: Vec<RawCheck>,
    #[serde(default, rename = "action")]
    actions: Vec<RawAction>,
}

/// `[[action]]`: a named program the controller may ask this agent to run.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: Spanned<String>,
    argv: Spanned<Vec<String>>,
    #[serde(default)]
    env: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    working_dir: Option<PathBuf>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    output_cap: Option<Spanned<u64>>,
}

const MAX_ACTIONS: usize = 256;
const MAX_ARGV: usize = 64;
const MAX_ARG_BYTES: usize = 4096;
const MAX_ENV: usize = 64;
const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(30);

fn parse_actions(source: &ConfigSource, raw: Vec<RawAction>) -> Result<Vec<ActionSpec>, Error> {
    let at = |span: std::ops::Range<usize>, msg: String| Error::Config(source.error_at(span, msg));
    if raw.len() > MAX_ACTIONS {
        return Err(at(
            0..0,
            format!("at most {MAX_ACTIONS} [[action]] entries"),
        ));
    }
    let mut actions: Vec<ActionSpec> = Vec::with_capacity(raw.len());
    for action in raw {
        let name = Identifier::new(action.name.get_ref())
            .map_err(|e| at(action.name.span(), format!("action name: {}", e.reason)))?;
        if actions.iter().any(|a| a.name == name) {
            return Err(at(
                action.name.span(),
                format!("action {name} is defined twice"),
            ));
        }
        let argv = action.argv.get_ref();
        if argv.is_empty()
            || argv.len() > MAX_ARGV
            || argv
                .iter()
                .any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
        {
            return Err(at(
                action.argv.span(),
                format!(
                    "argv must have 1 to {MAX_ARGV} entries of at most {MAX_ARG_BYTES} bytes, without NUL"
                ),
            ));
        }
        if !Path::new(&argv[0]).is_absolute() {
            return Err(at(
                action.argv.span(),
                format!(
                    "argv[0] = {:?} must be an absolute path: actions never search PATH and never use a shell",
                    argv[0]
                ),
            ));
        }
        let env = match &action.env {
            None => BTreeMap::new(),
            Some(env) => {
                let valid_key = |k: &str| {
                    !k.is_empty()
                        && !k.starts_with(|c: char| c.is_ascii_digit())
                        && k.chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                        && !k.starts_with("LEITSTAND_")
                };
                if env.get_ref().len() > MAX_ENV {
                    return Err(at(
                        env.span(),
                        format!("env has more than {MAX_ENV} variables"),
                    ));
                }
                if let Some(bad) = env.get_ref().keys().find(|k| !valid_key(k)) {
                    return Err(at(
                        env.span(),
                        format!(
                            "env variable {bad:?} must be A-Z, 0-9 and _ (and not LEITSTAND_*, which the agent sets)"
                        ),
                    ));
                }
                env.get_ref().clone()
            }
        };
        let timeout = match &action.timeout {
            Some(t) => parse_duration(
                source,
                t,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )
            .map_err(Error::Config)?,
            None => DEFAULT_ACTION_TIMEOUT,
        };
        let output_cap = match &action.output_cap {
            Some(cap) => {
                let max = leitstand_proto::domain::bounds::MAX_ACTION_OUTPUT_BYTES;
                usize::try_from(*cap.get_ref())
                    .ok()
                    .filter(|c| (1..=max).contains(c))
                    .ok_or_else(|| at(cap.span(), format!("output_cap must be 1 to {max} bytes")))?
            }
            None => leitstand_proto::domain::bounds::MAX_ACTION_OUTPUT_BYTES,
        };
        actions.push(ActionSpec {
            name,
            argv: argv.clone(),
            env,
            working_dir: action
                .working_dir
                .as_deref()
                .map_or_else(|| PathBuf::from("/"), |d| source.resolve(d)),
            timeout,
            output_cap,
        });
    }
    Ok(actions)
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let source = ConfigSource::read(path).map_err(Error::Config)?;
        let raw: RawConfig = source.parse().map_err(Error::Config)?;
        let at =
            |span: std::ops::Range<usize>, msg: String| Error::Config(source.error_at(span, msg));

        let id = AgentId::new(raw.id.get_ref())
            .map_err(|e| at(raw.id.span(), format!("id: {}", e.reason)))?;
        let listed = raw.controllers.get_ref();
        if listed.is_empty() || listed.len() > MAX_CONTROLLERS {
            return Err(at(
                raw.controllers.span(),
                format!("controllers must list 1 to {MAX_CONTROLLERS} addresses"),
            ));
        }
        let mut controllers = Vec::with_capacity(listed.len());
        for address in listed {
            let text = address.get_ref();
            if !is_host_port(text) {
                return Err(at(
                    address.span(),
                    format!("controller address {text:?} is not host:port, e.g. \"10.0.0.1:7401\""),
                ));
            }
            controllers.push(text.clone());
        }
        let interval = match &raw.interval {
            Some(v) => parse_duration(
                &source,
                v,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )
            .map_err(Error::Config)?,
            None => DEFAULT_INTERVAL,
        };
        let buffer = match &raw.buffer {
            Some(v) => parse_duration(&source, v, Duration::ZERO, Duration::from_secs(24 * 3600))
                .map_err(Error::Config)?,
            None => DEFAULT_BUFFER,
        };
        let connect_timeout = match &raw.connect_timeout {
            Some(v) => parse_duration(
                &source,
                v,
                Duration::from_millis(500),
                Duration::from_secs(60),
            )
            .map_err(Error::Config)?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let buffer_reports = usize::try_from(buffer.as_millis() / interval.as_millis().max(1))
            .unwrap_or(MAX_BUFFERED_REPORTS)
            .clamp(1, MAX_BUFFERED_REPORTS);
        let actions = parse_actions(&source, raw.actions)?;
        let checks = parse_checks(&source, raw.checks, interval).map_err(Error::Config)?;
        let max_concurrent_checks = match &raw.max_concurrent_checks {
            Some(n) => usize::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| at(n.span(), "max_concurrent_checks must be 1 to 64".into()))?,
            None => DEFAULT_MAX_CONCURRENT_CHECKS,
        };
        let metrics_listen = match &raw.metrics_listen {
            None => None,
            Some(value) => {
                let address: std::net::SocketAddr = value.get_ref().parse().map_err(|_| {
                    at(
                        value.span(),
                        format!(
                            "metrics_listen = {:?} is not an IP address with a port, e.g. \"127.0.0.1:9465\"",
                            value.get_ref()
                        ),
                    )
                })?;
                if !address.ip().is_loopback() {
                    return Err(at(
                        value.span(),
                        "metrics_listen must be a loopback address (127.0.0.1 or ::1): the agent's own /metrics is for a scraper on this host; remote monitoring scrapes the controllers".into(),
                    ));
                }
                Some(address)
            }
        };
        Ok(AgentConfig {
            id,
            actions,
            checks,
            max_concurrent_checks,
            metrics_listen,
            controllers,
            interval,
            buffer_reports,
            connect_timeout,
            state_dir: source.resolve(&raw.state_dir),
            tls: raw.tls.resolved(|p| source.resolve(p)),
            source: path.to_owned(),
            id_span: raw.id.span(),
        })
    }

    /// A configuration mistake located at the `id` key.
    pub(crate) fn id_error(&self, message: String) -> Error {
        let text = std::fs::read_to_string(&self.source).unwrap_or_default();
        Error::Config(
            ConfigSource::from_text(&self.source, text).error_at(self.id_span.clone(), message),
        )
    }
}
