//! The Leitstand agent: takes host metrics and reports them over one mTLS
//! gRPC stream to the controller leader.
//!
//! Architecture invariant: this crate links leitstand-proto and nothing of
//! the controller, raft or the dashboard, so the agent stays a few MiB.
#![forbid(unsafe_code)]

mod checks;
mod collect;
mod config;
mod executor;
mod metrics;
mod reporter;

use std::sync::Arc;

use leitstand_proto::identity::PeerKind;
use leitstand_proto::tls::ClientTls;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{AgentConfig, MAX_BUFFERED_REPORTS};
pub use executor::StateError;

/// What stops an agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in agent.toml (binaries exit 2).
    #[error(transparent)]
    Config(leitstand_proto::Error),
    #[error("TLS material")]
    Tls(#[source] leitstand_proto::Error),
    #[error("cannot create the state directory {}", path.display())]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read host metrics")]
    HostMetrics(#[source] sysinfo::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("the action executor's state")]
    State(#[source] StateError),
    #[error("cannot serve /metrics on {address}")]
    Metrics {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit status for this error (DESIGN.md §9): missing or
    /// unusable certificate files are configuration mistakes too.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Tls(_) => 2,
            _ => 1,
        }
    }
}

/// Every field an agent sends, and why (docs/data-inventory.md).
pub const DATA_INVENTORY: &str = include_str!("../../docs/data-inventory.md");

/// Validates an agent.toml and its certificate files without starting
/// anything; returns a one-line summary.
pub fn check_config(path: &std::path::Path) -> Result<String, Error> {
    let config = AgentConfig::load(path)?;
    let tls = ClientTls::load(config.tls.clone()).map_err(Error::Tls)?;
    let identity = tls.identity();
    if identity.kind() != PeerKind::Agent || identity.name().as_str() != config.id.as_str() {
        return Err(config.id_error(format!(
            "id = {:?} but the certificate {} is {identity}",
            config.id.as_str(),
            config.tls.cert.display()
        )));
    }
    Ok(format!(
        "valid: agent {} ({identity}), {} controller(s), {} check(s), {} action(s)",
        config.id,
        config.controllers.len(),
        config.checks.len(),
        config.actions.len()
    ))
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    config: std::sync::Mutex<AgentConfig>,
    tls: Arc<ClientTls>,
    /// Replaced as a whole on reload; dropping it stops the old checks.
    checks: std::sync::Mutex<checks::CheckRunner>,
    check_results: mpsc::Sender<leitstand_proto::v1::CheckResult>,
    control: mpsc::Sender<reporter::Control>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Agent {
    /// Checks that the certificate matches the configuration and starts
    /// reporting.
    pub fn start(config: AgentConfig) -> Result<Agent, Error> {
        let tls = Arc::new(ClientTls::load(config.tls.clone()).map_err(Error::Tls)?);
        let identity = tls.identity();
        if identity.kind() != PeerKind::Agent || identity.name().as_str() != config.id.as_str() {
            return Err(config.id_error(format!(
                "id = {:?} but the certificate {} is {identity}; use the agent certificate issued for this id",
                config.id.as_str(),
                config.tls.cert.display()
            )));
        }
        leitstand_proto::files::create_private_dir(&config.state_dir).map_err(|source| {
            Error::StateDir {
                path: config.state_dir.clone(),
                source,
            }
        })?;
        let executor = Arc::new(
            executor::Executor::new(&config.state_dir, config.actions.clone())
                .map_err(Error::State)?,
        );
        let collector = collect::HostCollector::new().map_err(Error::HostMetrics)?;
        let (stop, stop_rx) = watch::channel(false);
        let (control, control_rx) = mpsc::channel(4);
        let (check_results_tx, check_results) = mpsc::channel(256);
        tracing::info!(
            agent = %config.id,
            controllers = ?config.controllers,
            interval = ?config.interval,
            buffer_reports = config.buffer_reports,
            actions = ?executor.action_names(),
            checks = config.checks.len(),
            "agent starting"
        );
        let check_names = config.checks.iter().map(|c| c.name.to_string()).collect();
        let runner = checks::CheckRunner::spawn(
            config.checks.clone(),
            config.max_concurrent_checks,
            check_results_tx.clone(),
        );
        let (publish, published) = watch::channel(None);
        if let Some(address) = config.metrics_listen {
            let listener = std::net::TcpListener::bind(address)
                .and_then(|listener| {
                    listener.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(listener)
                })
                .map_err(|source| Error::Metrics { address, source })?;
            tracing::info!(%address, "serving this agent's /metrics");
            tokio::spawn(metrics::serve(
                listener,
                config.id.to_string(),
                published,
                stop_rx.clone(),
            ));
        }
        let inputs = reporter::Inputs {
            check_results,
            control: control_rx,
            stop: stop_rx,
            publish,
        };
        let reporter = reporter::Reporter::new(
            config.clone(),
            tls.clone(),
            collector,
            executor,
            check_names,
            inputs,
        );
        let task = tokio::spawn(reporter.run());
        Ok(Agent {
            config: std::sync::Mutex::new(config),
            tls,
            checks: std::sync::Mutex::new(runner),
            check_results: check_results_tx,
            control,
            stop,
            task,
        })
    }

    /// Re-reads agent.toml and the TLS material (on SIGHUP): new checks and
    /// actions take effect at once and are announced on the open stream.
    /// On any error nothing changes.
    pub async fn reload(&self) -> Result<(), Error> {
        let path = self.current_config().source.clone();
        let fresh = AgentConfig::load(&path)?;
        let executor = Arc::new(
            executor::Executor::new(&fresh.state_dir, fresh.actions.clone())
                .map_err(Error::State)?,
        );
        self.tls.reload().map_err(Error::Tls)?;
        {
            let current = self.current_config();
            if fresh.id != current.id
                || fresh.controllers != current.controllers
                || fresh.interval != current.interval
                || fresh.state_dir != current.state_dir
                || fresh.buffer_reports != current.buffer_reports
            {
                tracing::warn!(
                    "id, controllers, interval, buffer and state_dir take effect after a restart"
                );
            }
        }
        let runner = checks::CheckRunner::spawn(
            fresh.checks.clone(),
            fresh.max_concurrent_checks,
            self.check_results.clone(),
        );
        // The old runner is dropped here: its checks stop, their children die.
        *self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = runner;
        let control = reporter::Control::Reload {
            executor,
            checks: fresh.checks.iter().map(|c| c.name.to_string()).collect(),
        };
        if self.control.send(control).await.is_err() {
            tracing::warn!("the reporter has stopped; reload not applied");
        }
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn current_config(&self) -> AgentConfig {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads certificate, key, CA bundle and CRL for new connections.
    pub fn reload_tls(&self) -> Result<(), Error> {
        self.tls.reload().map_err(Error::Tls)
    }

    /// Stops reporting and closes the session.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the reporter task ended abnormally");
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT; SIGHUP reloads TLS material.
/// Shared by `leitstand agent` and the lean `leitstand-agent`.
pub async fn run_until_signal(config: AgentConfig) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).map_err(Error::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let agent = Agent::start(config)?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match agent.reload().await {
                Ok(()) => tracing::info!("configuration and TLS material reloaded"),
                Err(e) => tracing::error!("reload failed; keeping the previous configuration: {}", leitstand_proto::error_chain(&e)),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("agent stopping");
    agent.shutdown().await;
    Ok(())
}

/// Log line format, chosen with `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to standard error; the level comes from `LEITSTAND_LOG` (default
/// `info`, e.g. `LEITSTAND_LOG=leitstand_controller=debug`). Shared by every
/// Leitstand binary.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEITSTAND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for a person at a terminal, and never under NO_COLOR.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
