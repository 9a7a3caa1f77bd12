//! Metrics: one OpenTelemetry SDK meter provider with two exits, a
//! Prometheus `/metrics` endpoint on `metrics_listen` and an OTLP/gRPC push
//! (`[telemetry] otlp_endpoint`), both off unless configured.
//!
//! Nothing here sits on the request path. Host metrics, check states,
//! counters, Raft and peer-link figures are observable instruments: their
//! callbacks read the registry of latest reports, the plain atomic counters
//! and the Raft node's published status when a collection happens (a scrape
//! or a push), never per report. The failover engine records through
//! [`Recorder`] (path states, active path, decisions, latency histograms).
//!
//! The metric names and their Prometheus translations are listed in
//! deploy/README.md ("Monitoring"); `names` holds them.

mod http;
mod instruments;
pub(crate) mod names;
mod settings;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leitstand_proto::domain::NodeId;
use leitstand_proto::tls::ServerTls;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use settings::RawTelemetry;
pub use settings::TelemetrySettings;

use crate::counters::Counters;
use crate::raft::{GrpcTransport, NodeHandle};
use crate::registry::Registry;
use crate::{ControllerConfig, Error};

/// How long an OTLP push may take before it is abandoned.
const OTLP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last push.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the instruments read: the controller's own state, shared.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub(crate) node_id: NodeId,
    pub(crate) raft: NodeHandle,
    pub(crate) registry: Arc<Registry>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) tls: Arc<ServerTls>,
    pub(crate) transport: Arc<GrpcTransport>,
}

/// The running metrics pipeline of one controller.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: SdkMeterProvider,
    recorder: Recorder,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Telemetry {
    /// Builds the meter provider with the configured exits, binds
    /// `metrics_listen` and starts the Raft watcher. A bind failure stops
    /// the controller (a configuration mistake); an OTLP exporter that
    /// cannot be built is logged and left out: metrics never stop the
    /// control plane.
    pub(crate) async fn start(
        config: &ControllerConfig,
        sources: Sources,
    ) -> Result<Telemetry, Error> {
        let (stop, stop_rx) = watch::channel(false);
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name("leitstand-controller")
            .with_attributes([
                KeyValue::new("service.instance.id", sources.node_id.to_string()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        let mut tasks = Vec::new();

        let mut prometheus = None;
        if let Some(address) = config.metrics_listen {
            let registry = prometheus::Registry::new();
            match opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .scope_info_enabled(false)
                .build()
            {
                Ok(exporter) => {
                    builder = builder.with_reader(exporter);
                    prometheus = Some((address, registry));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot build the Prometheus exporter; /metrics is off")
                }
            }
        }
        let mut otlp = false;
        if let Some(endpoint) = &config.telemetry.otlp_endpoint {
            match otlp_exporter(endpoint, &config.telemetry.otlp_headers) {
                Ok(exporter) => {
                    builder = builder.with_reader(
                        PeriodicReader::builder(exporter)
                            .with_interval(config.telemetry.otlp_interval)
                            .build(),
                    );
                    otlp = true;
                    // Header values are secrets: only their names are logged.
                    tracing::info!(
                        endpoint = %endpoint,
                        headers = ?config.telemetry.otlp_headers.keys().collect::<Vec<_>>(),
                        interval = ?config.telemetry.otlp_interval,
                        "pushing metrics over OTLP"
                    );
                }
                Err(error) => {
                    tracing::error!(%error, endpoint = %endpoint, "cannot build the OTLP exporter; no OTLP push")
                }
            }
        }
        let exporting = prometheus.is_some() || otlp;
        let provider = builder.build();
        let meter = provider.meter("leitstand-controller");

        // Without an exit nothing is ever collected: no watcher, no callbacks.
        if exporting {
            let raft = Arc::new(instruments::RaftWatch::default());
            tasks.push(tokio::spawn(instruments::watch_raft(
                sources.raft.clone(),
                raft.clone(),
                stop_rx.clone(),
            )));
            instruments::register(&meter, &sources, raft);
        }
        let recorder = Recorder::new(&meter);

        if let Some((address, registry)) = prometheus {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| Error::Bind { address, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| Error::Bind { address, source })?;
            tracing::info!(listen = %local, "serving Prometheus metrics at /metrics");
            tasks.push(tokio::spawn(http::serve(listener, registry, stop_rx)));
        }
        Ok(Telemetry {
            provider,
            recorder,
            stop,
            tasks,
        })
    }

    /// A handle for the failover engine (cheap to clone).
    pub(crate) fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// Stops `/metrics` and the Raft watcher, and pushes a last time over
    /// OTLP (bounded by a few seconds).
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
        let provider = self.provider;
        let last_push = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, last_push).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::debug!(%error, "metrics shutdown"),
            Ok(Err(error)) => tracing::warn!(%error, "metrics shutdown task failed"),
            Err(_) => tracing::warn!(
                timeout = ?SHUTDOWN_TIMEOUT,
                "the last OTLP push did not finish in time"
            ),
        }
    }
}

/// An OTLP/gRPC metric exporter. Must be built inside the tokio runtime:
/// its channel's worker runs there, while the periodic reader's own thread
/// drives the exports.
fn otlp_exporter(
    endpoint: &str,
    headers: &BTreeMap<String, String>,
) -> Result<opentelemetry_otlp::MetricExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (name, value) in headers {
        // Both were checked when the configuration was loaded; a failure
        // here names the header, never its value.
        let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not valid gRPC metadata"))?;
        let value = value
            .parse()
            .map_err(|_| format!("the value of header {name:?} is not valid gRPC metadata"))?;
        metadata.insert(key, value);
    }
    opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(OTLP_TIMEOUT)
        .with_metadata(metadata)
        .build()
        .map_err(|e| leitstand_proto::error_chain(&e))
}

/// Decision outcomes recorded as zero at start, so dashboards and alerts
/// see every series before the first decision: the terminal steps of the
/// decision lifecycle (DESIGN.md §5) and an operator's rejection.
pub(crate) const DECISION_OUTCOMES: [&str; 6] = [
    "succeeded",
    "failed",
    "timed_out",
    "verified",
    "abandoned",
    "rejected",
];

/// Buckets of the detection and failover latency histograms, in seconds:
/// fine around the 1 s budget of DESIGN.md §10.
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

/// What the failover engine records. Path states and the active path are
/// kept here and observed at collection, so a series exists exactly while
/// the engine says so; decisions and latencies are plain instruments.
///
/// The engine calls, on every controller (from the replicated state):
/// - `record_path_state(service, path, state)` ("healthy", "failed",
///   "unknown"): `leitstand_path_state{service,path,state} 1`;
/// - `record_active_path(service, path)`:
///   `leitstand_service_active_path{service,path} 1`;
/// - `forget_service(service)` when a runbook no longer names it;
///
/// and on the leader:
/// - `record_decision(outcome)` when a decision reaches a terminal step:
///   `leitstand_decisions_total{outcome}`;
/// - `observe_detection_latency(s)`: from the first failing report to the
///   decision, `leitstand_failover_detection_duration_seconds`;
/// - `observe_failover_latency(s)`: from the decision to the executor's
///   result, `leitstand_failover_duration_seconds`.
#[derive(Clone)]
pub(crate) struct Recorder {
    inner: Arc<RecorderInner>,
}

struct RecorderInner {
    decisions: Counter<u64>,
    detection: Histogram<f64>,
    failover: Histogram<f64>,
    paths: Arc<Mutex<EngineState>>,
}

#[derive(Default)]
pub(super) struct EngineState {
    /// (service, path) → state.
    pub(super) path_states: BTreeMap<(String, String), &'static str>,
    /// service → active path.
    pub(super) active: BTreeMap<String, String>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    fn new(meter: &opentelemetry::metrics::Meter) -> Recorder {
        let decisions = meter
            .u64_counter(names::DECISIONS)
            .with_unit("{decision}")
            .with_description("Failover decisions that reached a terminal step, by outcome")
            .build();
        for outcome in DECISION_OUTCOMES {
            decisions.add(0, &[KeyValue::new(names::OUTCOME, outcome)]);
        }
        let detection = meter
            .f64_histogram(names::DETECTION_DURATION)
            .with_unit("s")
            .with_description("From the first failing report of the active path to the decision")
            .with_boundaries(LATENCY_BUCKETS.to_vec())
            .build();
        let failover = meter
            .f64_histogram(names::FAILOVER_DURATION)
            .with_unit("s")
            .with_description("From the decision to the executor agent's result")
            .with_boundaries(LATENCY_BUCKETS.to_vec())
            .build();
        let paths = Arc::new(Mutex::new(EngineState::default()));
        instruments::register_engine(meter, paths.clone());
        Recorder {
            inner: Arc::new(RecorderInner {
                decisions,
                detection,
                failover,
                paths,
            }),
        }
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, EngineState> {
        // Each update leaves the maps consistent: a poisoned lock is usable.
        self.inner
            .paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn record_path_state(&self, service: &str, path: &str, state: &'static str) {
        self.engine()
            .path_states
            .insert((service.to_owned(), path.to_owned()), state);
    }

    pub(crate) fn record_active_path(&self, service: &str, path: &str) {
        self.engine()
            .active
            .insert(service.to_owned(), path.to_owned());
    }

    pub(crate) fn forget_service(&self, service: &str) {
        let mut engine = self.engine();
        engine.path_states.retain(|(s, _), _| s != service);
        engine.active.remove(service);
    }

    pub(crate) fn record_decision(&self, outcome: &'static str) {
        self.inner
            .decisions
            .add(1, &[KeyValue::new(names::OUTCOME, outcome)]);
    }

    pub(crate) fn observe_detection_latency(&self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.inner.detection.record(seconds, &[]);
        }
    }

    pub(crate) fn observe_failover_latency(&self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.inner.failover.record(seconds, &[]);
        }
    }
}

#[cfg(test)]
mod tests;
