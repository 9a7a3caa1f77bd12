//! The audit chain (DESIGN.md §6 I6, the failover-engine issue's item 6):
//! every membership change (and, later, decision step, operator action and
//! runbook version) is an entry in replicated state, chained by SHA-256.
//!
//! An entry's hash is `SHA-256(previous hash ‖ canonical encoding)`, the
//! previous hash as 32 raw bytes (zeros before the first entry) and the
//! canonical encoding the JSON of [`Canonical`]: its fields in declaration
//! order, no whitespace, the body as the compact JSON text it was stored
//! with. Anyone holding an export can recompute the chain without Leitstand.

/// One entry, as stored, exported and served (Operator.Audit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditEntry {
    /// Position in the chain, from 1.
    pub(crate) index: u64,
    /// The Raft log index that committed it.
    pub(crate) log_index: u64,
    /// The proposer's clock (ms since the epoch; 0 when not known).
    pub(crate) at_unix_ms: i64,
    /// "controller/<id>", "operator/<name>" or "agent/<id>".
    pub(crate) actor: String,
    pub(crate) kind: String,
    /// Compact JSON.
    pub(crate) body_json: String,
    /// Lower-case hex.
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// What the hash covers, in this field order.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    index: u64,
    log_index: u64,
    at_unix_ms: i64,
    actor: &'a str,
    kind: &'a str,
    body_json: &'a str,
}

impl AuditEntry {
    /// The hash this entry must have after `prev_hash`.
    fn expected_hash(&self, prev_hash: &[u8; 32]) -> [u8; 32] {
        let canonical = Canonical {
            index: self.index,
            log_index: self.log_index,
            at_unix_ms: self.at_unix_ms,
            actor: &self.actor,
            kind: &self.kind,
            body_json: &self.body_json,
        };
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(prev_hash);
        // A struct of strings and numbers always serialises.
        context.update(&serde_json::to_vec(&canonical).unwrap_or_default());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(context.finish().as_ref());
        hash
    }
}

/// The chain held in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    entries: Vec<AuditEntry>,
    head: [u8; 32],
}

impl Chain {
    /// Appends an entry and returns it (to be stored).
    pub(super) fn append(
        &mut self,
        log_index: u64,
        at_unix_ms: i64,
        actor: String,
        kind: &str,
        body: &serde_json::Value,
    ) -> AuditEntry {
        let mut entry = AuditEntry {
            index: self.entries.len() as u64 + 1,
            log_index,
            at_unix_ms,
            actor,
            kind: kind.to_owned(),
            body_json: body.to_string(),
            prev_hash: hex(&self.head),
            hash: String::new(),
        };
        let hash = entry.expected_hash(&self.head);
        entry.hash = hex(&hash);
        self.head = hash;
        self.entries.push(entry.clone());
        entry
    }

    /// Re-adds a stored entry, in order, checking that it chains.
    pub(super) fn restore(&mut self, entry: AuditEntry) -> Result<(), String> {
        let expected_index = self.entries.len() as u64 + 1;
        if entry.index != expected_index {
            return Err(format!(
                "audit entry {} found where entry {expected_index} belongs",
                entry.index
            ));
        }
        if entry.prev_hash != hex(&self.head) {
            return Err(format!(
                "audit entry {} does not follow the entry before it",
                entry.index
            ));
        }
        let hash = entry.expected_hash(&self.head);
        if entry.hash != hex(&hash) {
            return Err(format!(
                "audit entry {}'s hash does not match its content",
                entry.index
            ));
        }
        self.head = hash;
        self.entries.push(entry);
        Ok(())
    }

    pub(super) fn entries(&self, from: u64, limit: usize) -> Vec<AuditEntry> {
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        self.entries
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
