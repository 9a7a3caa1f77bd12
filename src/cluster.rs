//! `leitstand cluster status|add|remove|transfer`: the command-line twin of
//! the dashboard's cluster view. Parsing and exit codes only; the client
//! and the views live in leitstand-tui.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use leitstand_proto::config::is_host_port;
use leitstand_proto::domain::NodeId;
use leitstand_proto::error_chain;
use leitstand_tui::{ClusterStatus, OperatorClient, OperatorConfig};

#[derive(Subcommand, Debug)]
pub(crate) enum ClusterCommand {
    /// Members, leader, term, commit and applied index, follower lag.
    Status(ClusterArgs),
    /// Add a controller (admin), then show the cluster.
    Add {
        /// The new controller's node id (its certificate name).
        #[arg(long, value_parser = node_id)]
        node_id: NodeId,
        /// Where the other controllers reach it.
        #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
        address: String,
        #[command(flatten)]
        args: ClusterArgs,
    },
    /// Remove a controller (admin; the leader too), then show the cluster.
    Remove {
        #[arg(long, value_parser = node_id)]
        node_id: NodeId,
        #[command(flatten)]
        args: ClusterArgs,
    },
    /// Hand leadership to another controller (admin), then show the cluster.
    Transfer {
        /// The node id of the controller that should lead.
        #[arg(long, value_name = "NODE_ID", value_parser = node_id)]
        to: NodeId,
        #[command(flatten)]
        args: ClusterArgs,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ClusterArgs {
    /// The operator configuration (operator.toml).
    #[arg(long)]
    config: PathBuf,
    /// Print the cluster as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn node_id(text: &str) -> Result<NodeId, String> {
    text.parse()
        .ok()
        .and_then(NodeId::new)
        .ok_or_else(|| format!("{text:?} is not a node id (1 or more)"))
}

fn host_port(text: &str) -> Result<String, String> {
    if is_host_port(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not host:port, e.g. 10.0.0.4:7401"))
    }
}

pub(crate) async fn run(command: ClusterCommand) -> ExitCode {
    let args = match &command {
        ClusterCommand::Status(args)
        | ClusterCommand::Add { args, .. }
        | ClusterCommand::Remove { args, .. }
        | ClusterCommand::Transfer { args, .. } => args,
    };
    let json = args.json;
    let client = match OperatorConfig::load(&args.config).and_then(|c| OperatorClient::new(&c)) {
        Ok(client) => client,
        Err(e) => return failed(&e),
    };
    let result = match &command {
        ClusterCommand::Status(_) => client.cluster_status().await.map(|s| (None, s)),
        ClusterCommand::Add {
            node_id, address, ..
        } => client
            .add_member(*node_id, address)
            .await
            .map(|s| (Some(format!("Added node {node_id} ({address}).")), s)),
        ClusterCommand::Remove { node_id, .. } => client
            .remove_member(*node_id)
            .await
            .map(|s| (Some(format!("Removed node {node_id}.")), s)),
        ClusterCommand::Transfer { to, .. } => client
            .transfer_leader(*to)
            .await
            .map(|s| (Some(transferred(*to, &s)), s)),
    };
    match result {
        Ok((done, status)) => {
            show(done, &status, json);
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

fn transferred(to: NodeId, status: &ClusterStatus) -> String {
    match status.leader_id {
        Some(leader) if leader == to => format!("Node {to} leads now."),
        Some(leader) => format!(
            "Asked node {to} to take over; node {leader} still leads. Check again with `leitstand cluster status`."
        ),
        None => format!(
            "Asked node {to} to take over; no leader is known yet. Check again with `leitstand cluster status`."
        ),
    }
}

/// The outcome on stdout: JSON alone with --json (for scripts), otherwise
/// a sentence about what was done and the table.
#[allow(clippy::print_stdout)]
fn show(done: Option<String>, status: &ClusterStatus, json: bool) {
    if json {
        println!("{}", status.to_json());
        return;
    }
    if let Some(done) = done {
        println!("{done}\n");
    }
    print!("{}", status.to_text());
}

fn failed(e: &leitstand_tui::Error) -> ExitCode {
    tracing::error!("{}", error_chain(e));
    ExitCode::from(e.exit_code())
}
