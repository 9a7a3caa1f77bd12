//! A runbook as a Markdown document a person can print (being written).

use super::Runbook;

/// The procedures of `runbook` (version `version`, text hash `sha256`).
pub fn render(runbook: &Runbook, version: Option<u64>, sha256: &str) -> String {
    format!(
        "# Runbook{}\n\nSHA-256 {sha256}; {} services.\n",
        version.map(|v| format!(" version {v}")).unwrap_or_default(),
        runbook.services.len()
    )
}
