//! `leitstand completions SHELL` and `leitstand man [--dir DIR]`: shell
//! completions and man pages generated from the clap definitions, so they
//! can never disagree with the command line they describe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Command;
pub(crate) use clap_complete::Shell;

/// Prints the completion script for `shell` to standard output.
pub(crate) fn completions(mut command: Command, shell: Shell) -> ExitCode {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    write_stdout(&script)
}

/// Writes `leitstand.1` and one page per subcommand (`leitstand-cluster.1`,
/// `leitstand-cluster-status.1`, …) into `dir`, or prints `leitstand.1` to
/// standard output when no directory is given.
pub(crate) fn man(command: Command, dir: Option<PathBuf>) -> ExitCode {
    // As clap_mangen::generate_to does: no page for `help`, and a built
    // command, so each subcommand knows its display name ("leitstand-cluster")
    // and the words one types ("leitstand cluster status").
    let mut command = command.disable_help_subcommand(true);
    command.build();
    match dir {
        None => {
            let mut page = Vec::new();
            if let Err(e) = page_of(command).render(&mut page) {
                tracing::error!("cannot render the man page: {e}");
                return ExitCode::FAILURE;
            }
            write_stdout(&page)
        }
        Some(dir) => {
            let mut written = Vec::new();
            let result = std::fs::create_dir_all(&dir)
                .and_then(|()| write_pages(&command, &dir, &mut written));
            let listed: String = written
                .iter()
                .map(|path| format!("{}\n", path.display()))
                .collect();
            let listed = write_stdout(listed.as_bytes());
            match result {
                Ok(()) => listed,
                Err(e) => {
                    tracing::error!("cannot write man pages into {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Renders the page of `command`, then of each visible subcommand, depth first.
fn write_pages(command: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    written.push(page_of(command.clone()).generate_to(dir)?);
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

/// One page, its title line naming Leitstand and its version on every page
/// (clap knows the version of the top command only, and propagating it
/// would clash with `runbook render --version`).
fn page_of(command: Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command)
        .source(concat!("leitstand ", env!("CARGO_PKG_VERSION")))
        .manual("Leitstand")
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`leitstand man | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}
