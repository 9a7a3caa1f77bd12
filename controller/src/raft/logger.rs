//! Forwards raft-rs's log records (it logs through `slog`) to `tracing`, so
//! Raft's own messages ("became leader at term 3") end up in the
//! controller's logs with everything else.
//!
//! Each record becomes a `tracing` event with target `raft`, its level
//! mapped (critical and error → ERROR, warning → WARN, info → INFO, debug →
//! DEBUG, trace → TRACE), its message as the message and its key-values
//! (the record's, then the logger's, e.g. `raft_id`) in one field `kv` as
//! `key=value, …`: tracing's field names are fixed where an event is
//! written, slog's are not.

use std::fmt::Write as _;

/// The `slog` drain. Build the logger for `RawNode::new` with [`logger`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TracingDrain;

/// A root `slog::Logger` writing to `tracing`, with `node_id` on every
/// record (raft-rs adds its own `raft_id` too; ours names the node that
/// logs even before raft-rs knows its id).
pub(crate) fn logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node_id" => node_id))
}

/// `key=value, …` from slog's key-values.
#[derive(Default)]
struct KeyValues(String);

impl slog::Serializer for KeyValues {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(self.0, "{key}={value}");
        Ok(())
    }
}

fn tracing_level(level: slog::Level) -> tracing::Level {
    match level {
        slog::Level::Critical | slog::Level::Error => tracing::Level::ERROR,
        slog::Level::Warning => tracing::Level::WARN,
        slog::Level::Info => tracing::Level::INFO,
        slog::Level::Debug => tracing::Level::DEBUG,
        slog::Level::Trace => tracing::Level::TRACE,
    }
}

/// Whether a subscriber wants events of `level` from target `raft`.
fn enabled(level: tracing::Level) -> bool {
    match level {
        tracing::Level::ERROR => tracing::enabled!(target: "raft", tracing::Level::ERROR),
        tracing::Level::WARN => tracing::enabled!(target: "raft", tracing::Level::WARN),
        tracing::Level::INFO => tracing::enabled!(target: "raft", tracing::Level::INFO),
        tracing::Level::DEBUG => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        tracing::Level::TRACE => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let level = tracing_level(record.level());
        if !enabled(level) {
            return Ok(());
        }
        let mut kv = KeyValues::default();
        // Our serializer never fails; a failing value only loses its field.
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let (message, kv, module) = (record.msg(), kv.0, record.module());
        match level {
            tracing::Level::ERROR => {
                tracing::error!(target: "raft", kv = %kv, module, "{message}")
            }
            tracing::Level::WARN => tracing::warn!(target: "raft", kv = %kv, module, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "raft", kv = %kv, module, "{message}"),
            tracing::Level::DEBUG => {
                tracing::debug!(target: "raft", kv = %kv, module, "{message}")
            }
            tracing::Level::TRACE => {
                tracing::trace!(target: "raft", kv = %kv, module, "{message}")
            }
        }
        Ok(())
    }

    fn is_enabled(&self, level: slog::Level) -> bool {
        enabled(tracing_level(level))
    }
}
