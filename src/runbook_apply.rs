//! The runbook commands that talk to the cluster, over the leader-following
//! operator client: `leitstand runbook apply FILE --config operator.toml`
//! checks the runbook here, then commits it as a new version (admin role);
//! names it does not find on any agent yet are printed as warnings (an
//! agent may not be installed yet). `leitstand runbook render --config
//! operator.toml [--version N]` prints a committed version as the
//! procedures document.

use std::path::Path;
use std::process::ExitCode;

use leitstand_controller::runbook::{Runbook, render};
use leitstand_tui::{OperatorClient, OperatorConfig};

fn client(config: &Path) -> Result<OperatorClient, ExitCode> {
    OperatorConfig::load(config)
        .and_then(|config| OperatorClient::new(&config))
        .map_err(|error| {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            ExitCode::from(error.exit_code())
        })
}

pub(crate) async fn apply(file: &Path, config: &Path) -> ExitCode {
    let (_, text) = match Runbook::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let client = match client(config) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let source_name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    match client.apply_runbook(&text, &source_name).await {
        Ok(reply) => {
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "applied runbook version {} (SHA-256 {}) at log index {}",
                    reply.version, reply.content_sha256, reply.committed_index
                );
                for warning in &reply.warnings {
                    println!("warning: {warning}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("runbook apply: {}", leitstand_proto::error_chain(&error));
            ExitCode::from(error.exit_code())
        }
    }
}

/// Prints committed runbook `version` (0: the current one) as Markdown.
pub(crate) async fn render_applied(config: &Path, version: u64) -> ExitCode {
    let client = match client(config) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let reply = match client.runbook(version).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::error!("runbook render: {}", leitstand_proto::error_chain(&error));
            return ExitCode::from(error.exit_code());
        }
    };
    match Runbook::parse(Path::new(&reply.source_name), &reply.toml) {
        Ok(runbook) => {
            #[allow(clippy::print_stdout)]
            {
                print!(
                    "{}",
                    render(&runbook, Some(reply.version), &reply.content_sha256)
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(
                "runbook version {} does not parse here (written by a newer Leitstand?): {error}",
                reply.version
            );
            ExitCode::from(1)
        }
    }
}
