//! `leitstand runbook check|apply|render FILE`: a runbook checked and
//! printed on this machine, no cluster needed. Parsing, validation and the
//! document live in `leitstand_controller::runbook`; this file only reads
//! the file, prints and chooses the exit code (0 fine, 2 a mistake in the
//! file or the command line).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use leitstand_controller::runbook::{Runbook, RunbookError, content_sha256, render};
use leitstand_proto::error_chain;

#[derive(Subcommand, Debug)]
pub(crate) enum RunbookCommand {
    /// Validate a runbook: every mistake with its file, line and column.
    Check(CheckArgs),
    /// Commit a new runbook version (admin).
    Apply {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the procedures as a Markdown document.
    ///
    /// Without FILE: the cluster's current version (or --version N), read
    /// with --config operator.toml.
    Render {
        file: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        version: Option<u64>,
    },
}

/// `runbook check`: a struct of its own, so the comparison with what the
/// agents announced (`--config operator.toml`) can join as one more field.
#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// The runbook (TOML).
    file: PathBuf,
}

pub(crate) fn run(command: RunbookCommand) -> ExitCode {
    match command {
        RunbookCommand::Check(args) => check(&args),
        RunbookCommand::Apply { file, config } => match config {
            Some(config) => crate::block_on(crate::runbook_apply::apply(&file, &config)),
            None => {
                tracing::error!(
                    "runbook apply needs --config operator.toml (the controllers and an admin's certificate)"
                );
                ExitCode::from(2)
            }
        },
        RunbookCommand::Render {
            file: Some(file), ..
        } => render_file(&file),
        RunbookCommand::Render {
            file: None,
            config: Some(config),
            version,
        } => crate::block_on(crate::runbook_apply::render_applied(
            &config,
            version.unwrap_or(0),
        )),
        RunbookCommand::Render {
            file: None,
            config: None,
            ..
        } => {
            tracing::error!(
                "runbook render needs a FILE, or --config operator.toml for the cluster's current runbook"
            );
            ExitCode::from(2)
        }
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    let (runbook, text) = match Runbook::load(&args.file) {
        Ok(loaded) => loaded,
        Err(e) => return refused(&e),
    };
    let paths: usize = runbook.services.iter().map(|s| s.paths.len()).sum();
    let references = runbook.references();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{}: ok: {} services, {paths} paths, {} checks and {} actions on agents; SHA-256 {}",
            args.file.display(),
            runbook.services.len(),
            references.checks.len(),
            references.actions.len(),
            content_sha256(&text)
        );
    }
    ExitCode::SUCCESS
}

fn render_file(file: &std::path::Path) -> ExitCode {
    match Runbook::load(file) {
        Ok((runbook, text)) => {
            #[allow(clippy::print_stdout)]
            {
                print!("{}", render(&runbook, None, &content_sha256(&text)));
            }
            ExitCode::SUCCESS
        }
        Err(e) => refused(&e),
    }
}

/// Every mistake on its own line, `file:line:column: message` as editors
/// read it; exit 2, a configuration error.
fn refused(error: &RunbookError) -> ExitCode {
    #[allow(clippy::print_stderr)]
    match error {
        RunbookError::Read(e) => eprintln!("{}", error_chain(e)),
        RunbookError::Invalid { .. } => {
            for mistake in error.mistakes() {
                eprintln!("{mistake}");
            }
        }
    }
    ExitCode::from(2)
}
