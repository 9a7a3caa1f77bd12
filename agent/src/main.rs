//! `leitstand-agent`: the lean agent binary (the same code as `leitstand agent`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use leitstand_agent::{AgentConfig, LogFormat, error_chain, init_logging, run_until_signal};

/// Reports this host's health to the Leitstand controllers over mTLS.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The agent configuration (agent.toml).
    #[arg(long)]
    config: PathBuf,
    /// Log line format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    // One thread is plenty for one stream and a timer, and keeps the agent small.
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
        let config = AgentConfig::load(&args.config)?;
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
