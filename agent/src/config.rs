//! `agent.toml`: the keys of DESIGN.md §9, validated with the file, line
//! and column of every mistake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leitstand_proto::config::{ConfigSource, parse_duration};
use leitstand_proto::domain::AgentId;
use leitstand_proto::tls::TlsFiles;
use toml::Spanned;

use crate::Error;

/// Controllers an agent may list.
const MAX_CONTROLLERS: usize = 16;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How long reports are kept while no controller is reachable.
const DEFAULT_BUFFER: Duration = Duration::from_secs(600);
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
    pub state_dir: PathBuf,
    pub tls: TlsFiles,
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
    state_dir: PathBuf,
    tls: TlsFiles,
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
            if text
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
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
        let buffer_reports = usize::try_from(buffer.as_millis() / interval.as_millis().max(1))
            .unwrap_or(MAX_BUFFERED_REPORTS)
            .clamp(1, MAX_BUFFERED_REPORTS);
        Ok(AgentConfig {
            id,
            controllers,
            interval,
            buffer_reports,
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
