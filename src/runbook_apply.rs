//! The runbook commands that talk to the cluster: `leitstand runbook apply
//! FILE --config operator.toml` checks the runbook here, then commits it as
//! a new version through the leader (admin role); names it does not find on
//! any agent yet are printed as warnings (an agent may not be installed
//! yet). `leitstand runbook render --config operator.toml [--version N]`
//! prints a committed version as the procedures document.

use std::path::Path;
use std::process::ExitCode;

use leitstand_controller::runbook::Runbook;
use leitstand_proto::operator::leader_hint;
use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::{ApplyRunbookRequest, RunbookRequest, operator_client::OperatorClient};
use leitstand_tui::OperatorConfig;

/// Leader hints followed before giving up.
const MAX_HOPS: usize = 4;

pub(crate) async fn apply(file: &Path, config: &Path) -> ExitCode {
    let (_, text) = match Runbook::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let config = match OperatorConfig::load(config) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            return ExitCode::from(error.exit_code());
        }
    };
    let tls = match ClientTls::load(config.tls.clone()) {
        Ok(tls) => std::sync::Arc::new(tls),
        Err(error) => {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let request = ApplyRunbookRequest {
        toml: text,
        source_name: file
            .file_name()
            .map(|name| name.to_string_lossy().chars().take(256).collect())
            .unwrap_or_default(),
    };
    let mut tried = Vec::new();
    let mut queue: Vec<String> = config.controllers.clone();
    let mut hops = 0;
    while let Some(address) = queue.first().cloned() {
        queue.remove(0);
        let answer = async {
            let channel = tls.channel(&address).await.map_err(|e| e.to_string())?;
            OperatorClient::new(channel)
                .apply_runbook(request.clone())
                .await
                .map_err(|status| match leader_hint(&status) {
                    Some(hint) if !hint.leader_hint.is_empty() => {
                        format!("leader at {}", hint.leader_hint)
                    }
                    _ => status.message().to_owned(),
                })
        };
        match tokio::time::timeout(config.timeout, answer).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
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
                return ExitCode::SUCCESS;
            }
            Ok(Err(why)) => {
                if let Some(leader) = why.strip_prefix("leader at ") {
                    if hops < MAX_HOPS {
                        hops += 1;
                        queue.insert(0, leader.to_owned());
                    }
                } else if why.contains("role")
                    || why.contains("runbook")
                    || why.contains("already the current")
                {
                    // Refused on its merits: asking elsewhere changes nothing.
                    tracing::error!("runbook apply refused by {address}: {why}");
                    return ExitCode::from(1);
                }
                tried.push(format!("{address} ({why})"));
            }
            Err(_) => tried.push(format!("{address} (no answer within {:?})", config.timeout)),
        }
    }
    tracing::error!(
        "runbook apply: no controller committed it: tried {}",
        tried.join(", ")
    );
    ExitCode::from(1)
}

/// Prints committed runbook `version` (0: the current one) as Markdown.
pub(crate) async fn render_applied(config: &Path, version: u64) -> ExitCode {
    let config = match OperatorConfig::load(config) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            return ExitCode::from(error.exit_code());
        }
    };
    let tls = match ClientTls::load(config.tls.clone()) {
        Ok(tls) => std::sync::Arc::new(tls),
        Err(error) => {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let mut tried = Vec::new();
    for address in &config.controllers {
        let answer = async {
            let channel = tls.channel(address).await.map_err(|e| e.to_string())?;
            OperatorClient::new(channel)
                .runbook(RunbookRequest { version })
                .await
                .map_err(|status| status.message().to_owned())
        };
        match tokio::time::timeout(config.timeout, answer).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                let runbook = match Runbook::parse(Path::new(&reply.source_name), &reply.toml) {
                    Ok(runbook) => runbook,
                    Err(error) => {
                        tracing::error!(
                            "runbook version {} does not parse here (a newer Leitstand wrote it?): {error}",
                            reply.version
                        );
                        return ExitCode::from(1);
                    }
                };
                #[allow(clippy::print_stdout)]
                {
                    print!(
                        "{}",
                        leitstand_controller::runbook::render(
                            &runbook,
                            Some(reply.version),
                            &reply.content_sha256
                        )
                    );
                }
                return ExitCode::SUCCESS;
            }
            Ok(Err(why)) => tried.push(format!("{address} ({why})")),
            Err(_) => tried.push(format!("{address} (no answer within {:?})", config.timeout)),
        }
    }
    tracing::error!(
        "runbook render: no controller answered: tried {}",
        tried.join(", ")
    );
    ExitCode::from(1)
}
