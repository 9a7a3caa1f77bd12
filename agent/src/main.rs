//! `leitstand-agent`: the lean agent binary (the same code as `leitstand agent`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leitstand_agent::{
    AgentConfig, DATA_INVENTORY, LogFormat, check_config, init_logging, run_until_signal,
};
use leitstand_proto::error_chain;

/// Reports this host's health to the Leitstand controllers over mTLS.
#[derive(Parser, Debug)]
#[command(version, about, arg_required_else_help = true)]
struct Args {
    /// The agent configuration (agent.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print every field this agent sends, and why, then exit.
    #[arg(long)]
    print_inventory: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate an agent.toml and its certificate files, then exit.
    CheckConfig { file: PathBuf },
}

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_inventory {
        print!("{DATA_INVENTORY}");
        return ExitCode::SUCCESS;
    }
    init_logging(args.log_format);
    if let Some(Command::CheckConfig { file }) = args.command {
        return match check_config(&file) {
            Ok(summary) => {
                println!("{}: {summary}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{}", error_chain(&e));
                ExitCode::from(e.exit_code())
            }
        };
    }
    let Some(config_path) = args.config else {
        tracing::error!(
            "--config is required to run the agent (or use check-config FILE, --print-inventory)"
        );
        return ExitCode::from(2);
    };
    // One thread is plenty for one stream, the checks and a timer, and keeps the agent small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let config = AgentConfig::load(&config_path)?;
        run_until_signal(config).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
