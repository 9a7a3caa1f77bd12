//! The `[telemetry]` keys of controller.toml: where OTLP metrics are
//! pushed, with which headers and how often. (`metrics_listen`, the
//! Prometheus endpoint, is a top-level key of DESIGN.md §9.)

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use leitstand_proto::config::{ConfigSource, parse_duration};
use toml::Spanned;

use crate::Error;

/// Most headers an OTLP push may carry, and the size of each.
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE_BYTES: usize = 4096;

/// Validated `[telemetry]` settings. `Debug` never shows header values:
/// they often hold tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// OTLP over gRPC (plain `http://`), e.g. a local OpenTelemetry
    /// Collector on port 4317. `None`: no push (the default).
    pub otlp_endpoint: Option<String>,
    /// gRPC metadata sent with every push (e.g. an authorization token).
    pub otlp_headers: BTreeMap<String, String>,
    /// Time between two pushes. Default 10 s.
    pub otlp_interval: Duration,
}

impl fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field(
                "otlp_headers",
                &self
                    .otlp_headers
                    .keys()
                    .map(|k| (k, "<redacted>"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("otlp_interval", &self.otlp_interval)
            .finish()
    }
}

pub(crate) const DEFAULT_OTLP_INTERVAL: Duration = Duration::from_secs(10);

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            otlp_headers: BTreeMap::new(),
            otlp_interval: DEFAULT_OTLP_INTERVAL,
        }
    }
}

/// `[telemetry]` as written.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    #[serde(default)]
    otlp_endpoint: Option<Spanned<String>>,
    #[serde(default)]
    otlp_headers: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    otlp_interval: Option<Spanned<String>>,
}

impl TelemetrySettings {
    pub(crate) fn from_raw(
        source: &ConfigSource,
        raw: Option<RawTelemetry>,
    ) -> Result<TelemetrySettings, Error> {
        let raw = raw.unwrap_or_default();
        let at =
            |span: std::ops::Range<usize>, msg: String| Error::Config(source.error_at(span, msg));
        let otlp_endpoint = match &raw.otlp_endpoint {
            None => None,
            Some(endpoint) => {
                let text = endpoint.get_ref();
                let valid = text
                    .strip_prefix("http://")
                    .is_some_and(|rest| !rest.is_empty())
                    && text.parse::<tonic::transport::Uri>().is_ok();
                if !valid {
                    return Err(at(
                        endpoint.span(),
                        format!(
                            "[telemetry] otlp_endpoint = {text:?} is not an http:// URI such as \"http://127.0.0.1:4317\" (OTLP over TLS: push to a local OpenTelemetry Collector and let it forward)"
                        ),
                    ));
                }
                Some(text.clone())
            }
        };
        let mut otlp_headers = BTreeMap::new();
        if let Some(headers) = &raw.otlp_headers {
            if headers.get_ref().len() > MAX_HEADERS {
                return Err(at(
                    headers.span(),
                    format!("[telemetry] otlp_headers: at most {MAX_HEADERS} headers"),
                ));
            }
            for (name, value) in headers.get_ref() {
                let lower = name.to_ascii_lowercase();
                if name.is_empty()
                    || lower.ends_with("-bin")
                    || lower
                        .parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>()
                        .is_err()
                {
                    return Err(at(
                        headers.span(),
                        format!("[telemetry] otlp_headers: {name:?} is not a gRPC header name"),
                    ));
                }
                // The value is never echoed: it may be a secret.
                if value.len() > MAX_HEADER_VALUE_BYTES
                    || value
                        .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                        .is_err()
                {
                    return Err(at(
                        headers.span(),
                        format!(
                            "[telemetry] otlp_headers: the value of {name:?} must be visible ASCII, at most {MAX_HEADER_VALUE_BYTES} bytes"
                        ),
                    ));
                }
                otlp_headers.insert(lower, value.clone());
            }
        }
        let otlp_interval = raw
            .otlp_interval
            .as_ref()
            .map(|interval| {
                parse_duration(
                    source,
                    interval,
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                )
                .map_err(Error::Config)
            })
            .transpose()?
            .unwrap_or(DEFAULT_OTLP_INTERVAL);
        if otlp_endpoint.is_none() && (raw.otlp_headers.is_some() || raw.otlp_interval.is_some()) {
            let span = raw
                .otlp_headers
                .as_ref()
                .map(Spanned::span)
                .or(raw.otlp_interval.as_ref().map(Spanned::span))
                .unwrap_or_default();
            return Err(at(
                span,
                "[telemetry] otlp_headers and otlp_interval need otlp_endpoint".into(),
            ));
        }
        Ok(TelemetrySettings {
            otlp_endpoint,
            otlp_headers,
            otlp_interval,
        })
    }
}
