//! `leitstand`: the one front door. Parses the command line of DESIGN.md §9
//! and dispatches; commands whose work has not landed yet exit 2 and say so.
#![forbid(unsafe_code)]

mod audit;
mod cluster;
mod dashboard;
mod dev;
mod drill;
mod manual;
mod operator_cli;
mod pki;
mod runbook;
mod runbook_apply;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use leitstand_agent::{AgentConfig, LogFormat, init_logging};
use leitstand_controller::{Controller, ControllerConfig};
use leitstand_proto::error_chain;

/// glibc's malloc took a quarter of the controller leader's CPU at 2 000
/// reports a second (`perf`, docs/benchmarks.md "Ingest"): every report
/// allocates and frees many small buffers on two worker threads, and the
/// frees of HTTP/2 and TLS buffers trigger glibc's consolidation. mimalloc's
/// per-thread free lists cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps a city's critical IT running: health agents, a Raft controller
/// cluster, documented failover.
#[derive(Parser, Debug)]
#[command(name = "leitstand", version, about)]
struct Cli {
    /// Log line format (logs go to standard error).
    #[arg(long, value_enum, default_value_t, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sandbox: 3 controllers, an agent and a demo service with two paths; opens the dashboard.
    #[command(args_conflicts_with_subcommands = true)]
    Dev(dev::DevArgs),
    /// Certificate authority for controllers, agents and operators.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Run a controller.
    Controller(ConfigArg),
    /// Run an agent (the same code as `leitstand-agent`).
    Agent(ConfigArg),
    /// Open the operator dashboard.
    Dashboard(dashboard::DashboardArgs),
    /// Show services, paths, agents and decisions.
    Status(operator_cli::OperatorArgs),
    /// Approve a proposed decision.
    Approve {
        decision_id: String,
        #[command(flatten)]
        operator: operator_cli::OperatorArgs,
    },
    /// Reject a proposed decision.
    Reject {
        decision_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        operator: operator_cli::OperatorArgs,
    },
    /// Switch a service to a path by hand.
    Switch {
        service: String,
        path: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        operator: operator_cli::OperatorArgs,
    },
    /// Stop automatic decisions for a service.
    Freeze {
        service: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        operator: operator_cli::OperatorArgs,
    },
    /// Resume automatic decisions for a service.
    Unfreeze {
        service: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        operator: operator_cli::OperatorArgs,
    },
    /// Check, apply or render a runbook.
    #[command(subcommand)]
    Runbook(runbook::RunbookCommand),
    /// Export or verify the hash-chained audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Controller cluster membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Chaos drills against a sandbox cluster.
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// Run a benchmark and print its figures as JSON (see docs/benchmarks.md).
    Bench {
        /// Which benchmark: agent, raft, dashboard, failover, ingest.
        name: String,
        /// How long to measure (agent: default 120; raft: the throughput phase, default 20;
        /// ingest: the window, default 60).
        #[arg(long, value_parser = clap::value_parser!(u64).range(10..=3600))]
        seconds: Option<u64>,
        /// raft: how many times to SIGKILL the leader and time the election (default 10);
        /// failover: how many times to break the active path (default 20).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
        trials: Option<u64>,
        /// raft: sequential proposals for the commit latency.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=100_000))]
        proposals: u64,
        /// raft: also measure a 3-member etcd when `etcd` is on PATH (auto), or not (off).
        #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
        etcd: String,
        /// raft: the binary to run as `controller` (default: this one).
        #[arg(long)]
        controller_binary: Option<PathBuf>,
        /// failover: also measure keepalived's VRRP in two network namespaces when root
        /// and keepalived is installed (auto), or not (off).
        #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
        keepalived: String,
        /// ingest: simulated agents, each with its own certificate and mTLS session.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
        agents: u64,
    },
    /// Print a shell completion script to standard output.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: manual::Shell,
    },
    /// Write man pages (leitstand.1 and one per subcommand), or print leitstand.1.
    Man {
        /// Directory to write the pages into; without it leitstand.1 goes to standard output.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct ConfigArg {
    #[arg(long)]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Create the certificate authority (ca.pem, ca.key) and an empty crl.pem.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// SPIFFE trust domain, e.g. stadt.example.
        #[arg(long)]
        trust_domain: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate and key: <kind>-<name>.pem and .key.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        name: String,
        /// DNS name clients dial (controllers need --dns or --ip).
        #[arg(long)]
        dns: Vec<String>,
        /// IP address clients dial.
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Validity in days (1 to 3650).
        #[arg(long, default_value_t = leitstand_proto::pki::DEFAULT_VALIDITY_DAYS,
              value_parser = clap::value_parser!(i64).range(1..=leitstand_proto::pki::MAX_VALIDITY_DAYS))]
        days: i64,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a certificate: adds it to crl.pem (then send SIGHUP to controllers).
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        name: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Controller,
    Agent,
    Operator,
}

impl From<Kind> for leitstand_proto::identity::PeerKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Controller => Self::Controller,
            Kind::Agent => Self::Agent,
            Kind::Operator => Self::Operator,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sandbox keeps its logs off the dashboard's screen.
    if !matches!(cli.command, Command::Dev(_)) {
        init_logging(cli.log_format);
    }
    match cli.command {
        Command::Pki(command) => pki::run(command),
        Command::Controller(args) => block_on(run_controller(args.config)),
        Command::Agent(args) => block_on(run_agent(args.config)),
        Command::Dev(args) => block_on(dev::run(args, cli.log_format)),
        Command::Dashboard(args) => block_on(dashboard::run(args)),
        Command::Status(args) => block_on(operator_cli::run(operator_cli::Request::Status, args)),
        Command::Approve {
            decision_id,
            operator,
        } => block_on(operator_cli::run(
            operator_cli::Request::Approve { decision_id },
            operator,
        )),
        Command::Reject {
            decision_id,
            reason,
            operator,
        } => block_on(operator_cli::run(
            operator_cli::Request::Reject {
                decision_id,
                reason,
            },
            operator,
        )),
        Command::Switch {
            service,
            path,
            reason,
            operator,
        } => block_on(operator_cli::run(
            operator_cli::Request::Switch {
                service,
                path,
                reason,
            },
            operator,
        )),
        Command::Freeze {
            service,
            reason,
            operator,
        } => block_on(operator_cli::run(
            operator_cli::Request::Freeze { service, reason },
            operator,
        )),
        Command::Unfreeze {
            service,
            reason,
            operator,
        } => block_on(operator_cli::run(
            operator_cli::Request::Unfreeze { service, reason },
            operator,
        )),
        Command::Runbook(command) => runbook::run(command),
        Command::Audit(command) => block_on(audit::run(command)),
        Command::Cluster(command) => block_on(cluster::run(command)),
        Command::Drill(command) => block_on(drill::run(command)),
        Command::Completions { shell } => manual::completions(Cli::command(), shell),
        Command::Man { dir } => manual::man(Cli::command(), dir),
        Command::Bench {
            name,
            seconds,
            trials,
            proposals,
            etcd,
            controller_binary,
            keepalived,
            agents,
        } => {
            let trials = trials.unwrap_or(if name == "failover" { 20 } else { 10 });
            block_on(bench(
                name,
                leitstand_chaos::bench::Options {
                    seconds,
                    trials,
                    proposals,
                    etcd: etcd == "auto",
                    controller_binary,
                    keepalived: keepalived == "auto",
                    agents,
                },
            ))
        }
    }
}

fn block_on(work: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            ExitCode::FAILURE
        }
    }
}

fn controller_exit(e: &leitstand_controller::Error) -> ExitCode {
    tracing::error!("{}", error_chain(e));
    match e {
        // Missing or unusable certificate files are configuration mistakes.
        leitstand_controller::Error::Config(_) | leitstand_controller::Error::Tls(_) => {
            ExitCode::from(2)
        }
        _ => ExitCode::FAILURE,
    }
}

async fn run_controller(path: PathBuf) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let config = match ControllerConfig::load(&path) {
        Ok(config) => config,
        Err(e) => return controller_exit(&e),
    };
    let (mut hangup, mut terminate, mut interrupt) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let controller = match Controller::start(config).await {
        Ok(controller) => controller,
        Err(e) => return controller_exit(&e),
    };
    // A node that can no longer persist (disk full, I/O errors) has stopped
    // its Raft node: exit 1 so the service manager restarts it once the
    // cause is fixed, instead of refusing work for ever.
    let mut raft_failed = false;
    loop {
        tokio::select! {
            _ = hangup.recv() => match controller.reload_tls() {
                Ok(()) => tracing::info!("TLS material reloaded"),
                Err(e) => tracing::error!("TLS reload failed; keeping the previous material: {}", error_chain(&e)),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            () = controller.raft_stopped() => {
                tracing::error!("the Raft node stopped (see the error above); the controller exits so that it can be restarted");
                raft_failed = true;
                break;
            }
        }
    }
    tracing::info!("controller stopping");
    match controller.shutdown(Duration::from_secs(5)).await {
        Ok(()) if raft_failed => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => controller_exit(&e),
    }
}

async fn bench(name: String, options: leitstand_chaos::bench::Options) -> ExitCode {
    if !leitstand_chaos::bench::NAMES.contains(&name.as_str()) {
        let known = leitstand_chaos::bench::NAMES.join(", ");
        tracing::error!("leitstand bench {name}: unknown benchmark; known: {known}");
        return ExitCode::from(2);
    }
    match leitstand_chaos::bench::run(&name, &options).await {
        Ok(report) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{report:#}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("leitstand bench {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_agent(path: PathBuf) -> ExitCode {
    let result = async {
        let config = AgentConfig::load(&path)?;
        leitstand_agent::run_until_signal(config).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
