//! `leitstand audit export|verify`: the hash-chained audit log as JSON
//! lines (for archives and `verify`) or Markdown (for people), and the
//! check that an exported chain is whole and unaltered.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use leitstand_controller::audit::{AuditEntry, verify};
use leitstand_tui::{OperatorClient, OperatorConfig};

/// Largest export `verify` reads.
const MAX_EXPORT_BYTES: u64 = 1 << 30;

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Export the audit log (to standard output).
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: AuditFormat,
        /// operator.toml: the controllers and your operator certificate.
        #[arg(long)]
        config: PathBuf,
        /// First audit index to export.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// Verify an exported audit log's hash chain (JSON lines); names the
    /// first edited, removed or reordered entry.
    Verify { file: PathBuf },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum AuditFormat {
    Jsonl,
    Md,
}

pub(crate) async fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Export {
            format,
            config,
            from,
        } => export(&config, format, from).await,
        AuditCommand::Verify { file } => verify_file(&file),
    }
}

async fn export(config: &Path, format: AuditFormat, from: u64) -> ExitCode {
    let config = match OperatorConfig::load(config) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{}", leitstand_proto::error_chain(&error));
            return ExitCode::from(error.exit_code());
        }
    };
    let entries = match OperatorClient::new(&config) {
        Ok(client) => client.audit(from.max(1), 0).await,
        Err(error) => Err(error),
    };
    let entries = match entries {
        Ok(entries) => entries,
        Err(error) => {
            tracing::error!("audit export: {}", leitstand_proto::error_chain(&error));
            return ExitCode::from(error.exit_code());
        }
    };
    let mut out = String::new();
    match format {
        AuditFormat::Jsonl => {
            for entry in &entries {
                // A struct of strings and numbers always serialises.
                out.push_str(&serde_json::to_string(entry).unwrap_or_default());
                out.push('\n');
            }
        }
        AuditFormat::Md => {
            out.push_str("# Leitstand audit log\n\n");
            out.push_str(&format!(
                "{} entries. Verify the chain with `leitstand audit export --format jsonl > audit.jsonl && leitstand audit verify audit.jsonl`.\n\n",
                entries.len()
            ));
            out.push_str(
                "| # | time (UTC) | actor | what | details | hash |\n|---|---|---|---|---|---|\n",
            );
            for entry in &entries {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | `{}` | `{}…` |\n",
                    entry.index,
                    utc(entry.at_unix_ms),
                    entry.actor,
                    entry.kind,
                    entry.body_json.replace('|', "\\|"),
                    entry.hash.get(..12).unwrap_or(&entry.hash)
                ));
            }
        }
    }
    print(&out);
    ExitCode::SUCCESS
}

fn utc(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "unknown".into();
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.unsigned_abs());
    humantime::format_rfc3339_seconds(time).to_string()
}

#[allow(clippy::print_stdout)]
fn print(text: &str) {
    print!("{text}");
}

fn verify_file(path: &Path) -> ExitCode {
    let text = match std::fs::metadata(path).and_then(|meta| {
        if meta.len() > MAX_EXPORT_BYTES {
            Err(std::io::Error::other(format!(
                "it is {} bytes; at most {MAX_EXPORT_BYTES} are read",
                meta.len()
            )))
        } else {
            std::fs::read_to_string(path)
        }
    }) {
        Ok(text) => text,
        Err(error) => {
            tracing::error!("cannot read {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AuditEntry>(line) {
            Ok(entry) => entries.push(entry),
            Err(error) => {
                tracing::error!(
                    "{}:{}: not an audit entry ({error}); export with `leitstand audit export --format jsonl`",
                    path.display(),
                    n + 1
                );
                return ExitCode::from(2);
            }
        }
    }
    match verify(&entries) {
        Ok(()) => {
            let head = entries.last().map_or("none", |e| e.hash.as_str());
            print(&format!(
                "{}: the chain of {} entries verifies; head {head}\n",
                path.display(),
                entries.len()
            ));
            ExitCode::SUCCESS
        }
        Err(broken) => {
            tracing::error!("{}: the chain is broken at {broken}", path.display());
            ExitCode::from(1)
        }
    }
}
