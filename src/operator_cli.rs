//! `leitstand status|approve|reject|switch|freeze|unfreeze`: the
//! dashboard's command-line twins, for scripts and screen readers. They
//! print the same facts as the dashboard, as text or with `--json` as
//! JSON of our own, stable shape. Parsing and exit codes only; the client
//! and the views live in leitstand-tui.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use leitstand_proto::error_chain;
use leitstand_tui::{ActionOutcome, ActionReply, OperatorClient, OperatorConfig};

#[derive(Args, Debug)]
pub(crate) struct OperatorArgs {
    /// The operator configuration (operator.toml).
    #[arg(long)]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What was asked, with its arguments.
#[derive(Debug)]
pub(crate) enum Request {
    Status,
    Approve {
        decision_id: String,
    },
    Reject {
        decision_id: String,
        reason: String,
    },
    Switch {
        service: String,
        path: String,
        reason: String,
    },
    Freeze {
        service: String,
        reason: Option<String>,
    },
    Unfreeze {
        service: String,
        reason: Option<String>,
    },
}

pub(crate) async fn run(request: Request, args: OperatorArgs) -> ExitCode {
    let client = match OperatorConfig::load(&args.config).and_then(|c| OperatorClient::new(&c)) {
        Ok(client) => client,
        Err(e) => return failed(&e),
    };
    if let Request::Status = request {
        return match client.status().await {
            Ok(view) => {
                let now = leitstand_tui::dashboard::now_unix_ms();
                print(if args.json {
                    view.to_json() + "\n"
                } else {
                    view.to_text(now)
                });
                ExitCode::SUCCESS
            }
            Err(e) => failed(&e),
        };
    }
    let reason = |r: &Option<String>| r.clone().unwrap_or_default();
    let result = match &request {
        Request::Status => return ExitCode::SUCCESS,
        Request::Approve { decision_id } => client.approve(decision_id).await,
        Request::Reject {
            decision_id,
            reason,
        } => client.reject(decision_id, reason).await,
        Request::Switch {
            service,
            path,
            reason,
        } => client.switch(service, path, reason).await,
        Request::Freeze { service, reason: r } => client.freeze(service, &reason(r)).await,
        Request::Unfreeze { service, reason: r } => client.unfreeze(service, &reason(r)).await,
    };
    match result {
        Ok(reply) => {
            let outcome = outcome(&request, &reply);
            print(
                if args.json {
                    outcome.to_json()
                } else {
                    outcome.to_text()
                } + "\n",
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

fn outcome(request: &Request, reply: &ActionReply) -> ActionOutcome {
    let (action, service, path, decision) = match request {
        Request::Status => ("status", None, None, None),
        Request::Approve { decision_id } => ("approve", None, None, Some(decision_id.as_str())),
        Request::Reject { decision_id, .. } => ("reject", None, None, Some(decision_id.as_str())),
        Request::Switch { service, path, .. } => {
            ("switch", Some(service.as_str()), Some(path.as_str()), None)
        }
        Request::Freeze { service, .. } => ("freeze", Some(service.as_str()), None, None),
        Request::Unfreeze { service, .. } => ("unfreeze", Some(service.as_str()), None, None),
    };
    ActionOutcome::new(action, service, path, decision, reply)
}

#[allow(clippy::print_stdout)]
fn print(text: String) {
    print!("{text}");
}

fn failed(e: &leitstand_tui::Error) -> ExitCode {
    tracing::error!("{}", error_chain(e));
    ExitCode::from(e.exit_code())
}
