//! The audit chain (DESIGN.md §6 I6, the failover-engine issue's item 6):
//! every membership change (and, later, decision step, operator action and
//! runbook version) is an entry in replicated state, chained by SHA-256.
//!
//! An entry's hash is `SHA-256(previous hash ‖ canonical encoding)`, the
//! previous hash as 32 raw bytes (zeros before the first entry) and the
//! canonical encoding the JSON of [`Canonical`]: its fields in declaration
//! order, no whitespace, the body as the compact JSON text it was stored
//! with. Anyone holding an export can recompute the chain without Leitstand.

/// One entry, as stored, exported (one JSON object per line) and served
/// (Operator.Audit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub index: u64,
    /// The Raft log index that committed it.
    pub log_index: u64,
    /// The proposer's clock (ms since the epoch; 0 when not known).
    pub at_unix_ms: i64,
    /// "controller/<id>", "operator/<name>" or "agent/<id>".
    pub actor: String,
    pub kind: String,
    /// Compact JSON.
    pub body_json: String,
    /// Lower-case hex.
    pub prev_hash: String,
    pub hash: String,
}

/// Where an exported chain breaks: the first entry that is not what the
/// chain says, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {position} (audit index {index}): {what}")]
pub struct ChainBreak {
    /// 1-based position in the file (its line in a JSONL export).
    pub position: usize,
    pub index: u64,
    pub what: String,
}

/// Checks an exported chain from its first entry: every hash recomputed,
/// every link and index in order. Names the first edited, removed or
/// reordered entry. An export may start after entry 1 (`--from`): then its
/// first entry's previous hash is taken on trust.
pub fn verify(entries: &[AuditEntry]) -> Result<(), ChainBreak> {
    let mut previous: Option<(u64, [u8; 32])> = None;
    for (n, entry) in entries.iter().enumerate() {
        let position = n + 1;
        let broken = |what: String| ChainBreak {
            position,
            index: entry.index,
            what,
        };
        let prev_hash = match previous {
            Some((index, hash)) => {
                if entry.index <= index {
                    return Err(broken(format!(
                        "it follows entry {index}: entries were reordered"
                    )));
                }
                if entry.index != index + 1 {
                    return Err(broken(format!(
                        "entries {} to {} are missing: removed",
                        index + 1,
                        entry.index - 1
                    )));
                }
                if entry.prev_hash != hex(&hash) {
                    return Err(broken(
                        "its previous hash is not the hash of the entry before it: the chain was altered".into(),
                    ));
                }
                hash
            }
            None if entry.index == 1 => {
                if entry.prev_hash != hex(&[0; 32]) {
                    return Err(broken("the first entry must follow the zero hash".into()));
                }
                [0; 32]
            }
            None => unhex(&entry.prev_hash)
                .ok_or_else(|| broken("its previous hash is not 64 hex digits".into()))?,
        };
        let expected = entry.expected_hash(&prev_hash);
        if entry.hash != hex(&expected) {
            return Err(broken(
                "its hash does not match its content: it was edited".into(),
            ));
        }
        previous = Some((entry.index, expected));
    }
    Ok(())
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
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
    /// The entry that follows `previous` (or starts a chain), hashed the
    /// way the replicated chain does it: for tools that build or extend
    /// chains outside a controller (the chaos checker's tests).
    pub fn following(
        previous: Option<&AuditEntry>,
        log_index: u64,
        at_unix_ms: i64,
        actor: &str,
        kind: &str,
        body: &serde_json::Value,
    ) -> AuditEntry {
        let head = previous.and_then(|p| unhex(&p.hash)).unwrap_or([0u8; 32]);
        let mut entry = AuditEntry {
            index: previous.map_or(1, |p| p.index + 1),
            log_index,
            at_unix_ms,
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            body_json: body.to_string(),
            prev_hash: hex(&head),
            hash: String::new(),
        };
        entry.hash = hex(&entry.expected_hash(&head));
        entry
    }

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

    pub(super) fn len(&self) -> u64 {
        self.entries.len() as u64
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
