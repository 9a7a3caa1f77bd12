//! Runbook TOML → [`Runbook`], with file, line and column on every mistake.
//! (Being written: the runbook helper replaces this stub.)

use std::path::Path as FsPath;

use leitstand_proto::config::ConfigSource;

use super::Runbook;

/// Why a runbook is refused.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    /// A mistake in the text: file, line, column and what to do.
    #[error(transparent)]
    Invalid(leitstand_proto::Error),
}

impl Runbook {
    /// Parses and validates `text`; `source` names it in errors.
    pub fn parse(source: &FsPath, text: &str) -> Result<Runbook, RunbookError> {
        let source = ConfigSource::from_text(source, text.to_owned());
        Err(RunbookError::Invalid(
            source.error_at(0..0, "runbooks are not available yet"),
        ))
    }

    /// Reads and parses a runbook file; the runbook and its text.
    pub fn load(path: &FsPath) -> Result<(Runbook, String), RunbookError> {
        let source = ConfigSource::read(path).map_err(RunbookError::Invalid)?;
        let _ = source;
        Err(RunbookError::Invalid(
            ConfigSource::from_text(path, String::new())
                .error_at(0..0, "runbooks are not available yet"),
        ))
    }
}
