//! The Leitstand agent: takes host metrics and reports them over one mTLS
//! gRPC stream to the controller leader.
//!
//! Architecture invariant: this crate links leitstand-proto and nothing of
//! the controller, raft or the dashboard, so the agent stays a few MiB.
#![forbid(unsafe_code)]

mod collect;
mod config;
mod reporter;

use std::sync::Arc;

use leitstand_proto::identity::PeerKind;
use leitstand_proto::tls::ClientTls;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{AgentConfig, MAX_BUFFERED_REPORTS};

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

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    tls: Arc<ClientTls>,
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
        create_private_dir(&config.state_dir)?;
        let collector = collect::HostCollector::new().map_err(Error::HostMetrics)?;
        let (stop, stop_rx) = watch::channel(false);
        tracing::info!(
            agent = %config.id,
            controllers = ?config.controllers,
            interval = ?config.interval,
            buffer_reports = config.buffer_reports,
            "agent starting"
        );
        let reporter = reporter::Reporter::new(config, tls.clone(), collector);
        let task = tokio::spawn(reporter.run(stop_rx));
        Ok(Agent { tls, stop, task })
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

fn create_private_dir(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| Error::StateDir {
            path: path.to_owned(),
            source,
        })
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
            _ = hangup.recv() => match agent.reload_tls() {
                Ok(()) => tracing::info!("TLS material reloaded"),
                Err(e) => tracing::error!(error = %error_chain(&e), "TLS reload failed; keeping the previous material"),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("agent stopping");
    agent.shutdown().await;
    Ok(())
}

/// An error with all its causes, for one log line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
