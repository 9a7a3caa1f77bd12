//! `leitstand drill list|run`: the chaos drills of leitstand-chaos, with a
//! plain summary on standard output and the report in Markdown and JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(crate) enum DrillCommand {
    /// List the drill scenarios (the short set CI runs is marked).
    List,
    /// Run a scenario, the short set (`short`) or every scenario (`all`).
    Run {
        /// A scenario's name, names separated by commas, `short` or `all`.
        scenario: String,
        /// Seed of the fault schedule; the same seed gives the same schedule.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Runs of each scenario, with seeds seed, seed+1, …
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// Write the report as Markdown here and as JSON next to it (.json).
        #[arg(long)]
        report: Option<PathBuf>,
        /// The binary to run as controller and agent (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// How links are made and broken: `proxy` (a fault-injecting TCP
        /// proxy on every link, no privileges) or `netns` (root: a network
        /// namespace per process, faults by iptables and tc netem).
        #[arg(long, value_enum, default_value_t = NetworkArg::Proxy)]
        network: NetworkArg,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum NetworkArg {
    Proxy,
    Netns,
}

impl From<NetworkArg> for leitstand_chaos::drill::Network {
    fn from(arg: NetworkArg) -> Self {
        match arg {
            NetworkArg::Proxy => leitstand_chaos::drill::Network::Proxy,
            NetworkArg::Netns => leitstand_chaos::drill::Network::Netns,
        }
    }
}

pub(crate) async fn run(command: DrillCommand) -> ExitCode {
    use std::io::Write;
    match command {
        DrillCommand::List => {
            let mut out = std::io::stdout().lock();
            for s in leitstand_chaos::drill::list() {
                let marks = match (s.short, s.needs_root, s.needs_netns) {
                    (true, _, _) => " [short]",
                    (false, true, _) => " [root]",
                    (false, false, true) => " [netns]",
                    (false, false, false) => "",
                };
                let _ = writeln!(out, "{}{marks}\n    {}", s.name, s.summary);
            }
            ExitCode::SUCCESS
        }
        DrillCommand::Run {
            scenario,
            seed,
            runs,
            report,
            binary,
            network,
        } => {
            let network = leitstand_chaos::drill::Network::from(network);
            let names = match leitstand_chaos::drill::select(&scenario, network) {
                Ok(names) => names,
                Err(e) => {
                    tracing::error!("{e:#}");
                    return ExitCode::from(2);
                }
            };
            // Before anything starts: root and the tools, or exit 2.
            if let Err(e) = leitstand_chaos::drill::check_network(network) {
                tracing::error!("{e:#}");
                return ExitCode::from(2);
            }
            let options = leitstand_chaos::drill::Options {
                binary,
                seed,
                runs,
                executor_env: executor_env(),
                network,
            };
            let result = match leitstand_chaos::drill::run(&names, &options).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!("{e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let mut out = std::io::stdout().lock();
            for r in &result.runs {
                let _ = writeln!(
                    out,
                    "{:<32} seed {:<6} {:<8} {:>6.1} s",
                    r.scenario,
                    r.seed,
                    r.outcome,
                    r.duration_ms as f64 / 1000.0
                );
            }
            if let Some(path) = report {
                match leitstand_chaos::drill::write(&result, &path) {
                    Ok(json) => {
                        let _ = writeln!(out, "report: {} and {}", path.display(), json.display());
                    }
                    Err(e) => {
                        tracing::error!("{e:#}");
                        return ExitCode::FAILURE;
                    }
                }
            } else if !result.passed() {
                let _ = write!(out, "{}", result.markdown());
            }
            if result.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The fencing switch reaches the executor only from a build whose agent
/// has the test-only `chaos-break-fencing` feature; elsewhere it does nothing.
fn executor_env() -> Vec<(String, String)> {
    std::env::var("LEITSTAND_CHAOS_BREAK_FENCING")
        .ok()
        .map(|v| vec![("LEITSTAND_CHAOS_BREAK_FENCING".to_owned(), v)])
        .unwrap_or_default()
}
