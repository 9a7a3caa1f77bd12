//! `RedbStorage`: the durable Raft log of one controller node, one redb file
//! (`<data_dir>/raft.redb`), implementing `raft::Storage` with the semantics
//! of raft-rs's `MemStorageCore`, plus the writes the Ready loop needs.
//!
//! # What is stored
//!
//! Two tables. `raft_entries` maps a log index to its entry (raft-rs's
//! protobuf encoding). `raft_meta` holds one record each: the identity (node
//! id and format version), the `HardState`, the `ConfState`, the truncated
//! position (index and term of the entry just before the first one, so
//! `term(first_index() - 1)` keeps working after compaction), the latest
//! snapshot's metadata and data, and the applied index. `state_machine`
//! holds the applied state as records (key → value) that the state machine
//! defines; they change in the same transaction as the applied index
//! ([`RedbStorage::apply_state`]), so after a crash the file holds the state
//! of exactly the index it says, and raft-rs (which skips entries at or
//! below `Config.applied` on restart) never skips an effect. A snapshot's
//! data is these records ([`codec::encode_records`]). Every value carries a
//! CRC-32C ([`super::codec`]).
//!
//! # Invariants (checked at open, enforced by every write)
//!
//! - entry keys are contiguous, each equal to its entry's index, and the first
//!   one is `truncated.index + 1`; terms never decrease along the log;
//! - `truncated.index <= snapshot.index <= applied <= commit <= last_index`,
//!   and where the snapshot's index is also in the log, their terms agree.
//!
//! Compaction therefore never passes the applied index nor the latest
//! snapshot (a lagging follower is always served by one or the other). The
//! brief's "first index == snapshot index + 1" is the special case right
//! after a snapshot was received; a leader's own snapshots usually sit a
//! little ahead of its first index because it keeps some log for slow
//! followers.
//!
//! A file that breaks any of these is refused at open with
//! [`StoreError::Corrupt`] naming the file and the fault: never reset.
//!
//! # Durability
//!
//! Every write is one redb transaction. With [`Durability::Immediate`] it
//! is fsynced, in two phases, before the call returns (unless the caller
//! asks for [`Flush::WithNextSync`] where losing the write is harmless): redb's two-phase
//! commit means a commit slot that fails its checksum is corruption, which
//! redb reports, rather than a torn write it silently rolls back; with the
//! default one-phase commit a damaged newest commit would quietly lose an
//! acknowledged vote or entry. Measured here it costs ~0.2 ms per commit.
//! After a failed commit the storage refuses further writes (fail-stop):
//! what reached the disk is unknown, and a retried fsync can falsely succeed.
//!
//! # Failpoints (feature `failpoints` only)
//!
//! Built with the `failpoints` feature, the commits pass fail-rs points
//! (see [`failpoints`]); without it nothing of them exists. A point that
//! returns fails the commit as a failing disk would: the transaction is
//! aborted and the storage is failed, exactly the path of a real commit
//! error.
//!
//! # Memory
//!
//! Hot metadata lives in memory: first/last index, hard state, conf state,
//! snapshot metadata, applied index, and the term of every index as runs
//! (one pair per term change), so `term()` never reads the disk. raft-rs
//! treats most storage errors as fatal (it panics), so the calls it makes
//! most often must not depend on I/O. A tail of recent entries is cached
//! too (bounded by bytes): the leader reads each new entry back right away
//! to replicate it and, once committed, to apply it; both hit the tail. Older
//! entries (a lagging follower) are read from redb.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use leitstand_proto::domain::NodeId;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use redb::{ReadableDatabase, TableDefinition};

use super::codec::{self, Identity};

/// The file name inside the node's data directory.
pub(crate) const FILE_NAME: &str = "raft.redb";
/// A new file is built under this name and renamed into place once its
/// identity is durable, so `raft.redb` always has one.
const NEW_FILE_NAME: &str = "raft.redb.new";

pub(super) const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine");

/// The state machine's durable form: its records by key.
pub(crate) type StateRecords = std::collections::BTreeMap<String, Vec<u8>>;

/// Record changes a state machine makes while applying entries, written
/// together with the new applied index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StateWrites {
    /// `None` deletes the record.
    changes: std::collections::BTreeMap<String, Option<Vec<u8>>>,
}

impl StateWrites {
    pub(crate) fn put(&mut self, key: String, value: Vec<u8>) {
        self.changes.insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: String) {
        self.changes.insert(key, None);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn into_changes(self) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
        self.changes
    }
}

/// The records of `raft_meta`.
pub(super) mod key {
    pub(in crate::raft) const IDENTITY: &str = "identity";
    pub(in crate::raft) const HARD_STATE: &str = "hard_state";
    pub(in crate::raft) const CONF_STATE: &str = "conf_state";
    pub(in crate::raft) const TRUNCATED: &str = "truncated";
    pub(in crate::raft) const SNAPSHOT_META: &str = "snapshot_meta";
    pub(in crate::raft) const SNAPSHOT_DATA: &str = "snapshot_data";
    pub(in crate::raft) const APPLIED: &str = "applied";
}

/// What an operator does with a file that is refused.
const RECOVER: &str = "It is refused, not reset. To recover: stop this node, move the file \
    aside (keep it for analysis) and restart the node; it rejoins empty and catches up from \
    the others by snapshot. Do this only while a majority of the other nodes is healthy";

/// The fail-rs points of the storage.
/// Each is also evaluated as `<name>@<node id>` (e.g. `storage::fsync@2`),
/// which acts on that node only: for clusters of several nodes in one
/// process, where fail-rs's registry is shared. A controller process reads
/// `FAILPOINTS` at start, e.g. `FAILPOINTS="storage::fsync=sleep(200)"`.
pub(crate) mod failpoints {
    /// Just before every fsynced commit: entries and hard state (the
    /// Ready's persist step), the membership, a snapshot, the stop's sync.
    /// `sleep(ms)`: a slow disk; `return`: the commit fails with an I/O
    /// error "injected by failpoint storage::fsync" (a full or failing
    /// disk), and the storage refuses every later write.
    pub(crate) const FSYNC: &str = "storage::fsync";
    /// Just before the applied state's transaction (the state machine's
    /// records and the applied index) commits. `return` fails it as above.
    pub(crate) const APPLY: &str = "storage::apply";

    /// The failure `point` injects on node `node`, if it is configured to
    /// return.
    #[cfg(feature = "failpoints")]
    pub(super) fn injected(
        point: &'static str,
        node: leitstand_proto::domain::NodeId,
    ) -> Option<redb::Error> {
        fn eval(name: &str) -> Option<redb::Error> {
            fail::fail_point!(name, |_| Some(redb::Error::Io(std::io::Error::other(
                format!("injected by failpoint {name}")
            ))));
            None
        }
        eval(point).or_else(|| eval(&format!("{point}@{node}")))
    }

    #[cfg(not(feature = "failpoints"))]
    pub(super) fn injected(
        _point: &'static str,
        _node: leitstand_proto::domain::NodeId,
    ) -> Option<redb::Error> {
        None
    }
}

/// When a write returns relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Durability {
    /// fsync before a write returns (redb `Durability::Immediate`, two-phase
    /// commit). Raft's safety rests on it: a vote or an acknowledged entry
    /// that a crash forgets can elect two leaders in one term or lose a
    /// committed decision (DESIGN.md §4, I6).
    #[default]
    Immediate,
    /// No fsync (redb `Durability::None`): a crash loses the writes since
    /// the last durable one. Only for tests and benchmarks that measure
    /// everything but the disk; never in a running controller.
    #[cfg_attr(not(test), allow(dead_code))]
    None,
}

/// How soon one write must reach the disk (with [`Durability::Immediate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// fsynced before the call returns.
    Now,
    /// Committed without fsync; it becomes durable with the next `Now`
    /// write. redb orders commits, so a crash keeps a prefix of them: for
    /// records that may be lost as long as whatever was written after them
    /// is lost too (a commit index raft-rs did not ask to sync, the applied
    /// index).
    WithNextSync,
}

/// How a [`RedbStorage`] is opened.
#[derive(Debug, Clone)]
pub(crate) struct StorageOptions {
    pub(crate) durability: Durability,
    /// Bytes of recent entries kept in memory (see the module docs).
    pub(crate) entry_cache_bytes: usize,
    /// redb's own page cache. Its default (1 GiB) is far more than a
    /// compacted Raft log needs.
    pub(crate) redb_cache_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            durability: Durability::Immediate,
            entry_cache_bytes: 4 << 20,
            redb_cache_bytes: 32 << 20,
        }
    }
}

/// What goes wrong at the storage boundary: opening, reading or writing the
/// Raft log, or a write the Ready loop should never have asked for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("cannot {action} {}: check that the data directory exists and this user may write it", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the Raft log {} is already open (by another controller process, or another handle in this one); stop that one first", path.display())]
    InUse { path: PathBuf },
    #[error("the Raft log {} is damaged: redb's integrity check failed. {RECOVER}", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("the file {} is not a redb database (it is empty, or its header is overwritten). {RECOVER}", path.display())]
    NotADatabase {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("cannot open the Raft log {}: check the file's permissions and the disk", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("the Raft log {} is corrupt or inconsistent: {what}. {RECOVER}", path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("the Raft log {} belongs to node {file_node}, but this controller is node {expected}: check node_id and data_dir in controller.toml", path.display())]
    ForeignNode {
        path: PathBuf,
        file_node: u64,
        expected: NodeId,
    },
    #[error("the Raft log {} is written in format version {found}, but this build reads version {supported}: run the Leitstand release that wrote it", path.display())]
    UnknownFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{op} failed on the Raft log {}: the disk may be full or failing", path.display())]
    Redb {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("an earlier write to the Raft log {} failed, so what reached the disk is unknown; restart the node to recover from the file", path.display())]
    Failed { path: PathBuf },
    #[error("cannot encode the {what} for the Raft log")]
    Encode {
        what: &'static str,
        #[source]
        source: protobuf::ProtobufError,
    },

    // The Ready loop asked for something that would break the log. These are
    // bugs in the caller; MemStorageCore panics on several of them.
    #[error(
        "refusing to append entries from index {first_new}: entries through {compacted_through} are compacted; the Ready loop passed stale entries"
    )]
    OverwriteCompacted {
        first_new: u64,
        compacted_through: u64,
    },
    #[error(
        "refusing to append entries from index {first_new}: the log ends at {last_index}, so that would leave a gap"
    )]
    LogGap { last_index: u64, first_new: u64 },
    #[error(
        "refusing to overwrite entry {first_new}: entries through {commit} are committed and never change"
    )]
    OverwriteCommitted { first_new: u64, commit: u64 },
    #[error(
        "refusing to append: entry {found} follows entry {previous} in the batch; entries must be contiguous"
    )]
    NotContiguous { previous: u64, found: u64 },
    #[error(
        "refusing to append entry {index} of term {term} after term {previous_term}: terms never decrease along a Raft log"
    )]
    EntryTermRegression {
        index: u64,
        term: u64,
        previous_term: u64,
    },
    #[error("refusing to persist hard state ({new}) over ({current}): {what}")]
    InvalidHardState {
        current: HardStateSummary,
        new: HardStateSummary,
        what: String,
    },
    #[error("refusing to compact through index {through}: the log ends at {last_index}")]
    CompactBeyondLog { through: u64, last_index: u64 },
    #[error(
        "refusing to compact through index {through}: only entries through {applied} are applied, and a compacted entry can no longer be applied"
    )]
    CompactPastApplied { through: u64, applied: u64 },
    #[error(
        "refusing to compact through index {through}: the latest snapshot covers only through {snapshot_index}; create a snapshot first, or a lagging follower could never catch up"
    )]
    CompactPastSnapshot { through: u64, snapshot_index: u64 },
    #[error(
        "refusing the snapshot at index {index}: the log already holds state through {floor} (first index {first_index}, snapshot {snapshot_index}, commit {commit})"
    )]
    SnapshotOutOfDate {
        index: u64,
        floor: u64,
        first_index: u64,
        snapshot_index: u64,
        commit: u64,
    },
    #[error("refusing to create a snapshot at index {index}: {what}")]
    InvalidSnapshotIndex { index: u64, what: String },
    #[error("refusing to record applied index {index}: {what}")]
    InvalidApplied { index: u64, what: String },
    #[error("refusing the state machine record {key:?}: its key is longer than {max} bytes", max = codec::MAX_STATE_KEY_BYTES)]
    StateKeyTooLong { key: String },
    #[error(
        "refusing the snapshot at index {index}: its data is not a state machine's records: {what}"
    )]
    SnapshotData { index: u64, what: String },
    #[error("entries [{low}, {high}) asked for, but the log holds [{first_index}, {last_index}]")]
    EntriesOutOfRange {
        low: u64,
        high: u64,
        first_index: u64,
        last_index: u64,
    },
}

/// A `HardState` in an error message: its three numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HardStateSummary {
    pub(crate) term: u64,
    pub(crate) vote: u64,
    pub(crate) commit: u64,
}

impl From<&HardState> for HardStateSummary {
    fn from(hard_state: &HardState) -> Self {
        HardStateSummary {
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
        }
    }
}

impl std::fmt::Display for HardStateSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "term {}, vote {}, commit {}",
            self.term, self.vote, self.commit
        )
    }
}

/// raft-rs sees our errors as `StorageError::Other`, with the chain intact.
impl From<StoreError> for raft::Error {
    fn from(error: StoreError) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(error)))
    }
}

/// An index and the term of the entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LogPosition {
    pub(crate) index: u64,
    pub(crate) term: u64,
}

/// The term of every index in `[first, last]`, as (first index, term) runs.
/// Terms only grow along a log, so this holds one pair per term change.
#[derive(Debug, Default)]
struct TermRuns {
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    /// The term at `index`, if a run covers it (the caller bounds `index`
    /// by the last index).
    fn term(&self, index: u64) -> Option<u64> {
        let after = self.runs.partition_point(|&(start, _)| start <= index);
        after.checked_sub(1).map(|run| self.runs[run].1)
    }

    /// Appends `index` (the next index) with `term`.
    fn push(&mut self, index: u64, term: u64) {
        if self.runs.last().is_none_or(|&(_, last)| last != term) {
            self.runs.push((index, term));
        }
    }

    /// Forgets `index` and everything after it.
    fn truncate_from(&mut self, index: u64) {
        let keep = self.runs.partition_point(|&(start, _)| start < index);
        self.runs.truncate(keep);
    }

    /// Forgets everything before `first`, the new first index.
    fn compact_to(&mut self, first: u64) {
        let containing = self.runs.partition_point(|&(start, _)| start <= first);
        if containing == 0 {
            return;
        }
        self.runs.drain(..containing - 1);
        self.runs[0].0 = first;
    }

    fn clear(&mut self) {
        self.runs.clear();
    }
}

/// The most recent entries, a contiguous suffix of the log, within a byte
/// budget.
#[derive(Debug)]
struct TailCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    limit: u64,
}

impl TailCache {
    fn new(limit: usize) -> Self {
        TailCache {
            entries: VecDeque::new(),
            bytes: 0,
            limit: limit as u64,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.index)
    }

    /// Appends `entry`, which follows the cached ones, and evicts the
    /// oldest over budget.
    fn push(&mut self, entry: Entry) {
        if self
            .entries
            .back()
            .is_some_and(|last| last.index + 1 != entry.index)
        {
            // Cannot happen: the callers append in order. Staying correct
            // is cheap: start over.
            self.clear();
        }
        self.bytes += codec::entry_size(&entry);
        self.entries.push_back(entry);
        while self.bytes > self.limit {
            let Some(evicted) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= codec::entry_size(&evicted);
        }
    }

    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|last| last.index >= index) {
            if let Some(evicted) = self.entries.pop_back() {
                self.bytes -= codec::entry_size(&evicted);
            }
        }
    }

    fn compact_to(&mut self, first: u64) {
        while self
            .entries
            .front()
            .is_some_and(|oldest| oldest.index < first)
        {
            if let Some(evicted) = self.entries.pop_front() {
                self.bytes -= codec::entry_size(&evicted);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// `[low, high)` within `max_size` bytes, if the cache holds `low`.
    fn get(&self, low: u64, high: u64, max_size: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if low < first {
            return None;
        }
        let skip = usize::try_from(low - first).ok()?;
        let mut limit = SizeLimit::new(max_size);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|entry| entry.index < high && limit.admit(entry))
                .cloned()
                .collect(),
        )
    }
}

/// raft-rs's rule for a batch limited by bytes (`raft::util::limit_size`):
/// the first entry always, then more while the total stays within the limit.
struct SizeLimit {
    max: u64,
    total: u64,
    any: bool,
}

impl SizeLimit {
    fn new(max: u64) -> Self {
        SizeLimit {
            max,
            total: 0,
            any: false,
        }
    }

    fn admit(&mut self, entry: &Entry) -> bool {
        self.total = self.total.saturating_add(codec::entry_size(entry));
        let first = !self.any;
        self.any = true;
        first || self.total <= self.max
    }
}

/// What is cached in memory; the file is the truth and this is rebuilt from
/// it at open.
#[derive(Debug)]
struct State {
    hard_state: HardState,
    conf_state: ConfState,
    truncated: LogPosition,
    last_index: u64,
    /// Index 0: no snapshot yet.
    snapshot: SnapshotMetadata,
    applied: u64,
    terms: TermRuns,
    tail: TailCache,
    /// Set when a commit failed: see the module docs.
    failed: bool,
}

impl State {
    fn first_index(&self) -> u64 {
        self.truncated.index + 1
    }

    /// The term at `index` in `[truncated.index, last_index]`.
    fn term(&self, index: u64) -> Option<u64> {
        if index == self.truncated.index {
            Some(self.truncated.term)
        } else if index < self.truncated.index || index > self.last_index {
            None
        } else {
            self.terms.term(index)
        }
    }

    /// The term at `index`, which the caller has checked lies in
    /// `[truncated.index, last_index]`, where every index has one.
    fn known_term(&self, index: u64) -> u64 {
        self.term(index).unwrap_or_else(|| {
            panic!(
                "no term for index {index} although it lies in the log: truncated {:?}, \
                 last index {}, term runs {:?}",
                self.truncated, self.last_index, self.terms.runs
            )
        })
    }

    /// The invariants of the module docs, or the first one broken.
    fn check(&self) -> Result<(), String> {
        let (truncated, snapshot) = (self.truncated, &self.snapshot);
        let commit = self.hard_state.commit;
        if self.last_index < truncated.index {
            return Err(format!(
                "the log ends at {} before its truncated index {}",
                self.last_index, truncated.index
            ));
        }
        if truncated.index > snapshot.index {
            return Err(format!(
                "entries through {} are compacted, but the latest snapshot covers only through {}",
                truncated.index, snapshot.index
            ));
        }
        if snapshot.index > self.applied {
            return Err(format!(
                "the snapshot is at index {}, beyond the applied index {}",
                snapshot.index, self.applied
            ));
        }
        if self.applied > commit {
            return Err(format!(
                "the applied index {} is beyond the commit index {commit}",
                self.applied
            ));
        }
        if commit > self.last_index {
            return Err(format!(
                "the commit index {commit} is beyond the last entry {}",
                self.last_index
            ));
        }
        if snapshot.index > 0 {
            match self.term(snapshot.index) {
                Some(term) if term != snapshot.term => {
                    return Err(format!(
                        "the snapshot at index {} has term {}, but the log has term {term} there",
                        snapshot.index, snapshot.term
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

struct Inner {
    path: PathBuf,
    node_id: NodeId,
    durability: Durability,
    db: redb::Database,
    state: RwLock<State>,
    /// Set when a follower needed a snapshot and the stored one would not
    /// do (see `raft::Storage::snapshot`); the driver takes a fresh one.
    snapshot_wanted: std::sync::atomic::AtomicBool,
}

/// The durable Raft log of one node. Clones share the same file and state:
/// `RawNode` holds one, the driver another.
#[derive(Clone)]
pub(crate) struct RedbStorage {
    inner: Arc<Inner>,
}

/// A [`RedbStorage`] that does not keep the file open: for readers that
/// may outlive the node (an operator's stream), so a stopped node's file
/// can be opened again at once.
#[derive(Debug, Clone)]
pub(crate) struct WeakStorage(std::sync::Weak<Inner>);

impl WeakStorage {
    /// The storage, while the node (or anyone else) still has it open.
    pub(crate) fn upgrade(&self) -> Option<RedbStorage> {
        self.0.upgrade().map(|inner| RedbStorage { inner })
    }
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.inner.path)
            .field("node_id", &self.inner.node_id)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

/// Maps a redb error of operation `op` on `path`.
fn redb_error<E: Into<redb::Error>>(path: &Path, op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |source| StoreError::Redb {
        path: path.to_owned(),
        op,
        source: Box::new(source.into()),
    }
}

fn encode_error(what: &'static str) -> impl FnOnce(protobuf::ProtobufError) -> StoreError {
    move |source| StoreError::Encode { what, source }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// The stored form of the snapshot data: the snapshot's index, then the
/// data, so data and metadata cannot silently disagree.
fn snapshot_data_payload(index: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + data.len());
    payload.extend_from_slice(&index.to_le_bytes());
    payload.extend_from_slice(data);
    payload
}

impl RedbStorage {
    /// Opens `<data_dir>/raft.redb` for node `node_id`, creating it if it
    /// does not exist, and recovers its state. A file of another node, of an
    /// unknown format, or that is damaged or inconsistent is refused.
    pub(crate) fn open(
        data_dir: &Path,
        node_id: NodeId,
        options: StorageOptions,
    ) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE_NAME);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                create_file(data_dir, &path, node_id, &options)?;
            }
            Err(error) => return Err(io_error(&path, "inspect")(error)),
        }
        let mut builder = redb::Builder::new();
        // Without it redb trusts a cleanly closed file and may panic on one
        // damaged since; with it every page checksum is verified and damage
        // is a `Corrupted` error. It reads the whole (compacted) file once.
        builder
            .set_check_integrity_on_open(true)
            .set_cache_size(options.redb_cache_bytes);
        let db = builder.open(&path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
            | redb::DatabaseError::RepairAborted => StoreError::Damaged {
                path: path.clone(),
                source: Box::new(error),
            },
            // redb's "not a database": a wrong magic number, or an empty file
            // (which `create` would silently initialize).
            redb::DatabaseError::Storage(redb::StorageError::Io(ref io))
                if io.kind() == std::io::ErrorKind::InvalidData =>
            {
                StoreError::NotADatabase {
                    path: path.clone(),
                    source: Box::new(error),
                }
            }
            error => StoreError::Open {
                path: path.clone(),
                source: Box::new(error),
            },
        })?;
        let state = recover(&db, &path, node_id, &options)?;
        tracing::info!(
            path = %path.display(),
            node_id = %node_id,
            first_index = state.first_index(),
            last_index = state.last_index,
            commit = state.hard_state.commit,
            term = state.hard_state.term,
            applied = state.applied,
            snapshot_index = state.snapshot.index,
            "Raft log opened"
        );
        Ok(RedbStorage {
            inner: Arc::new(Inner {
                path,
                node_id,
                durability: options.durability,
                db,
                state: RwLock::new(state),
                snapshot_wanted: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// A handle that does not keep the file open.
    pub(crate) fn downgrade(&self) -> WeakStorage {
        WeakStorage(Arc::downgrade(&self.inner))
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    #[cfg(test)]
    pub(crate) fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    pub(crate) fn hard_state(&self) -> HardState {
        self.read().hard_state.clone()
    }

    pub(crate) fn conf_state(&self) -> ConfState {
        self.read().conf_state.clone()
    }

    /// The latest snapshot's metadata (index 0: none yet).
    pub(crate) fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.read().snapshot.clone()
    }

    /// The index of the last entry applied to the state machine, as
    /// recorded; `Config.applied` on restart.
    pub(crate) fn applied(&self) -> u64 {
        self.read().applied
    }

    /// The index and term just before the first entry.
    pub(crate) fn truncated(&self) -> LogPosition {
        self.read().truncated
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .expect("Raft storage state lock poisoned: a thread panicked while updating it")
    }

    /// The state for a write, unless an earlier write failed.
    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>, StoreError> {
        let state = self
            .inner
            .state
            .write()
            .expect("Raft storage state lock poisoned: a thread panicked while updating it");
        if state.failed {
            return Err(StoreError::Failed {
                path: self.inner.path.clone(),
            });
        }
        Ok(state)
    }

    /// Runs `body` in one write transaction and commits it with the
    /// configured durability. The caller holds the state's write lock, so
    /// validation, transaction and cache update are one step. A commit
    /// that is to be fsynced passes the [`failpoints::FSYNC`] point first.
    fn transact(
        &self,
        state: &mut State,
        op: &'static str,
        flush: Flush,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let point = (flush == Flush::Now).then_some(failpoints::FSYNC);
        self.transact_at(state, op, flush, point, body)
    }

    /// [`RedbStorage::transact`], passing the failpoint `point` (if any)
    /// just before the commit.
    fn transact_at(
        &self,
        state: &mut State,
        op: &'static str,
        flush: Flush,
        point: Option<&'static str>,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let path = &self.inner.path;
        let mut txn = self.inner.db.begin_write().map_err(redb_error(path, op))?;
        match (self.inner.durability, flush) {
            (Durability::Immediate, Flush::Now) => txn.set_two_phase_commit(true),
            (Durability::None, _) | (_, Flush::WithNextSync) => txn
                .set_durability(redb::Durability::None)
                .map_err(redb_error(path, op))?,
        }
        if let Err(error) = body(&txn) {
            if let Err(abort) = txn.abort() {
                tracing::warn!(path = %path.display(), op, error = %abort, "aborting a Raft log transaction failed");
            }
            return Err(error);
        }
        let injected = point.and_then(|point| failpoints::injected(point, self.inner.node_id));
        let committed = match injected {
            // As if the commit had failed: nothing of it reaches the file.
            Some(failure) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!(path = %path.display(), op, error = %abort, "aborting a Raft log transaction failed");
                }
                Err(failure)
            }
            None => txn.commit().map_err(redb::Error::from),
        };
        committed.map_err(|source| {
            state.failed = true;
            tracing::error!(path = %path.display(), op, error = %source, "a Raft log commit failed; the storage refuses further writes");
            redb_error(path, op)(source)
        })
    }

    /// Starts the log of a new cluster member, if it is pristine: a
    /// snapshot at index 1 (term 1) holding `conf_state` and an empty
    /// state, as raft-rs's examples bootstrap. Every bootstrapping member
    /// writes the same, so their logs agree from index 2 on. The membership
    /// is thus never an entry of the log: a node added later, starting
    /// empty, first receives a snapshot and learns from it the membership
    /// it joins (replaying the conf changes alone would start from none).
    /// Returns whether it wrote.
    pub(crate) fn bootstrap(&self, conf_state: ConfState) -> Result<bool, StoreError> {
        {
            let state = self.write_state()?;
            let pristine = state.last_index == 0
                && state.snapshot.index == 0
                && state.hard_state == HardState::default()
                && state.conf_state == ConfState::default();
            if !pristine {
                return Ok(false);
            }
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.set_conf_state(conf_state);
        snapshot.data = codec::encode_records(&StateRecords::new()).into();
        self.install_snapshot_with(&snapshot, &StateRecords::new())?;
        Ok(true)
    }

    /// Whether a follower asked for a snapshot the stored one cannot serve
    /// (clears the request).
    pub(crate) fn take_snapshot_request(&self) -> bool {
        self.inner
            .snapshot_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the initial membership of a new cluster, if this log is
    /// pristine (no entries, snapshot, hard state or membership); every
    /// node of the cluster must be given the same. Returns whether it
    /// wrote: once anything is stored, the stored membership wins (it may
    /// have changed through conf changes since).
    #[cfg(test)]
    pub(crate) fn initialize_with_conf_state(
        &self,
        conf_state: ConfState,
    ) -> Result<bool, StoreError> {
        let mut state = self.write_state()?;
        let pristine = state.last_index == 0
            && state.snapshot.index == 0
            && state.hard_state == HardState::default()
            && state.conf_state == ConfState::default();
        if !pristine {
            return Ok(false);
        }
        let payload = codec::encode(&conf_state).map_err(encode_error("conf state"))?;
        self.transact(
            &mut state,
            "initializing the membership",
            Flush::Now,
            |txn| put_meta(txn, &self.inner.path, key::CONF_STATE, &payload),
        )?;
        state.conf_state = conf_state;
        Ok(true)
    }

    #[cfg(test)]
    /// Appends `entries`, replacing any conflicting suffix of the log, and
    /// persists `hard_state` if given, in one durable transaction: the
    /// Ready loop's "persist" step. Like `MemStorageCore::append`, with its
    /// panics turned into errors; it also refuses to rewrite committed
    /// entries and hard states that move backwards.
    pub(crate) fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        self.append_with(entries, hard_state, Flush::Now)
    }

    /// [`RedbStorage::append`] with a choice of flush: the Ready loop passes
    /// `Flush::Now` whenever `Ready::must_sync()` (new entries, a new term or
    /// vote, a snapshot) and may pass `WithNextSync` for a commit-only change.
    pub(crate) fn append_with(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        flush: Flush,
    ) -> Result<(), StoreError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut state = self.write_state()?;
        let old_last = state.last_index;
        let new_last = match entries.first() {
            None => old_last,
            Some(first) => {
                let first_index = state.first_index();
                if first.index < first_index {
                    return Err(StoreError::OverwriteCompacted {
                        first_new: first.index,
                        compacted_through: first_index - 1,
                    });
                }
                if first.index > old_last + 1 {
                    return Err(StoreError::LogGap {
                        last_index: old_last,
                        first_new: first.index,
                    });
                }
                if first.index <= state.hard_state.commit {
                    return Err(StoreError::OverwriteCommitted {
                        first_new: first.index,
                        commit: state.hard_state.commit,
                    });
                }
                let mut previous = LogPosition {
                    index: first.index - 1,
                    term: state.known_term(first.index - 1),
                };
                for entry in entries {
                    if entry.index != previous.index + 1 {
                        return Err(StoreError::NotContiguous {
                            previous: previous.index,
                            found: entry.index,
                        });
                    }
                    if entry.term < previous.term {
                        return Err(StoreError::EntryTermRegression {
                            index: entry.index,
                            term: entry.term,
                            previous_term: previous.term,
                        });
                    }
                    previous = LogPosition {
                        index: entry.index,
                        term: entry.term,
                    };
                }
                previous.index
            }
        };
        if let Some(new) = hard_state {
            check_hard_state(&state.hard_state, new, new_last)?;
        }

        let encoded = entries
            .iter()
            .map(|entry| {
                let payload = codec::encode(entry).map_err(encode_error("log entry"))?;
                Ok((
                    entry.index,
                    codec::seal(&codec::entry_key(entry.index), &payload),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let hard_state_payload = hard_state
            .map(|hs| codec::encode(hs).map_err(encode_error("hard state")))
            .transpose()?;
        let path = &self.inner.path;
        self.transact(&mut state, "appending entries", flush, |txn| {
            if let Some(&(first, _)) = encoded.first() {
                let mut table = txn
                    .open_table(ENTRIES)
                    .map_err(redb_error(path, "opening the entries table"))?;
                if first <= old_last {
                    table
                        .retain_in(first..=old_last, |_, _| false)
                        .map_err(redb_error(path, "removing a conflicting suffix"))?;
                }
                for (index, value) in &encoded {
                    table
                        .insert(*index, value.as_slice())
                        .map_err(redb_error(path, "writing an entry"))?;
                }
            }
            if let Some(payload) = &hard_state_payload {
                put_meta(txn, path, key::HARD_STATE, payload)?;
            }
            Ok(())
        })?;

        if let Some(first) = entries.first() {
            state.terms.truncate_from(first.index);
            state.tail.truncate_from(first.index);
            for entry in entries {
                state.terms.push(entry.index, entry.term);
                state.tail.push(entry.clone());
            }
            state.last_index = new_last;
        }
        if let Some(hs) = hard_state {
            state.hard_state = hs.clone();
        }
        Ok(())
    }

    #[cfg(test)]
    /// Persists a new hard state on its own.
    pub(crate) fn set_hard_state(&self, hard_state: &HardState) -> Result<(), StoreError> {
        self.append(&[], Some(hard_state))
    }

    #[cfg(test)]
    /// Persists a new commit index (a light ready's), keeping term and vote.
    pub(crate) fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        self.set_commit_with(commit, Flush::Now)
    }

    pub(crate) fn set_commit_with(&self, commit: u64, flush: Flush) -> Result<(), StoreError> {
        let mut hard_state = self.hard_state();
        if hard_state.commit == commit {
            return Ok(());
        }
        hard_state.commit = commit;
        self.append_with(&[], Some(&hard_state), flush)
    }

    /// Persists the membership (after `apply_conf_change`).
    pub(crate) fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        let mut state = self.write_state()?;
        let payload = codec::encode(conf_state).map_err(encode_error("conf state"))?;
        self.transact(&mut state, "writing the membership", Flush::Now, |txn| {
            put_meta(txn, &self.inner.path, key::CONF_STATE, &payload)
        })?;
        state.conf_state = conf_state.clone();
        Ok(())
    }

    #[cfg(test)]
    /// Records that the state machine has applied everything through
    /// `index`. Record it no later than the effects are durable in the
    /// state machine, and never ahead of them: on restart raft-rs does not
    /// hand out entries at or below it again (`Config.applied`).
    pub(crate) fn set_applied(&self, index: u64) -> Result<(), StoreError> {
        self.set_applied_with(index, Flush::Now)
    }

    #[cfg(test)]
    /// [`RedbStorage::set_applied`] with a choice of flush. `WithNextSync`
    /// suits a state machine that is rebuilt by replaying from the recorded
    /// index: losing the record re-applies entries, it never skips one.
    pub(crate) fn set_applied_with(&self, index: u64, flush: Flush) -> Result<(), StoreError> {
        self.apply_state(index, &StateWrites::default(), flush)
    }

    /// Writes the state machine's record changes for the entries through
    /// `index` and records `index` as applied, in one transaction (see the
    /// module docs). `WithNextSync` is enough: the entries are durable in
    /// the log, and a crash that loses this write loses the applied index
    /// with it, so the entries are applied again.
    pub(crate) fn apply_state(
        &self,
        index: u64,
        writes: &StateWrites,
        flush: Flush,
    ) -> Result<(), StoreError> {
        let mut state = self.write_state()?;
        if index == state.applied && writes.is_empty() {
            return Ok(());
        }
        if index <= state.applied {
            return Err(StoreError::InvalidApplied {
                index,
                what: format!("entries through {} are already applied", state.applied),
            });
        }
        if index > state.hard_state.commit {
            return Err(StoreError::InvalidApplied {
                index,
                what: format!(
                    "only entries through {} are committed",
                    state.hard_state.commit
                ),
            });
        }
        if let Some(key) = writes
            .changes
            .keys()
            .find(|key| key.len() > codec::MAX_STATE_KEY_BYTES)
        {
            return Err(StoreError::StateKeyTooLong { key: key.clone() });
        }
        let payload = codec::encode_u64s([index]);
        let path = &self.inner.path;
        let point = Some(failpoints::APPLY);
        self.transact_at(&mut state, "applying entries", flush, point, |txn| {
            if !writes.is_empty() {
                let mut table = txn
                    .open_table(STATE)
                    .map_err(redb_error(path, "opening the state machine table"))?;
                for (key, value) in &writes.changes {
                    match value {
                        Some(value) => table
                            .insert(key.as_str(), codec::seal(key.as_bytes(), value).as_slice())
                            .map(drop),
                        None => table.remove(key.as_str()).map(drop),
                    }
                    .map_err(redb_error(path, "writing a state machine record"))?;
                }
            }
            put_meta(txn, path, key::APPLIED, &payload)
        })?;
        state.applied = index;
        Ok(())
    }

    /// The state machine's records as of the applied index.
    pub(crate) fn state_records(&self) -> Result<StateRecords, StoreError> {
        let path = &self.inner.path;
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(redb_error(path, "reading the state machine"))?;
        read_state_records(&txn, path)
    }

    /// The applied index and a SHA-256 over the applied state (the index,
    /// then every record in key order), read in one transaction: equal on
    /// every replica at the same applied index.
    pub(crate) fn state_digest(&self) -> Result<(u64, [u8; 32]), StoreError> {
        let path = &self.inner.path;
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(redb_error(path, "reading the state machine"))?;
        let meta = txn
            .open_table(META)
            .map_err(redb_error(path, "opening the metadata table"))?;
        let value = meta
            .get(key::APPLIED)
            .map_err(redb_error(path, "reading the applied index"))?
            .ok_or_else(|| StoreError::Corrupt {
                path: path.clone(),
                what: "the applied record is missing".into(),
            })?;
        let [applied] = codec::unseal(key::APPLIED.as_bytes(), value.value())
            .and_then(codec::decode_u64s::<1>)
            .map_err(|what| StoreError::Corrupt {
                path: path.clone(),
                what: format!("the applied record is damaged: {what}"),
            })?;
        let records = read_state_records(&txn, path)?;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(&applied.to_le_bytes());
        context.update(&codec::encode_records(&records));
        let mut digest = [0u8; 32];
        digest.copy_from_slice(context.finish().as_ref());
        Ok((applied, digest))
    }

    /// Makes every earlier [`Flush::WithNextSync`] write durable (on a
    /// graceful stop: redb would do it when the file closes, but a drop
    /// cannot report an error).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let mut state = self.write_state()?;
        // A real change, so the commit is a real one.
        let payload = codec::encode_u64s([state.applied]);
        self.transact(&mut state, "syncing", Flush::Now, |txn| {
            put_meta(txn, &self.inner.path, key::APPLIED, &payload)
        })
    }

    /// Replaces log and state with a snapshot received from the leader (the
    /// Ready loop's "apply snapshot" step), as `MemStorageCore::apply_snapshot`:
    /// the log becomes empty after the snapshot's index, commit and applied
    /// move to it, the term to at least its term, and the membership to its.
    /// A snapshot older than what the log already holds is refused.
    /// Tests only: a snapshot whose data is not a state machine's.
    #[cfg(test)]
    pub(crate) fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.install_snapshot_with(snapshot, &StateRecords::new())
    }

    /// [`RedbStorage::apply_snapshot`] for a snapshot whose data is the
    /// state machine's records: they replace the state in the same
    /// transaction. Returns the records for the state machine to load.
    pub(crate) fn install_snapshot(&self, snapshot: &Snapshot) -> Result<StateRecords, StoreError> {
        let index = snapshot.get_metadata().index;
        let records = codec::decode_records(snapshot.get_data())
            .map_err(|what| StoreError::SnapshotData { index, what })?;
        self.install_snapshot_with(snapshot, &records)?;
        Ok(records)
    }

    fn install_snapshot_with(
        &self,
        snapshot: &Snapshot,
        records: &StateRecords,
    ) -> Result<(), StoreError> {
        let mut state = self.write_state()?;
        let meta = snapshot.get_metadata();
        let index = meta.index;
        let floor = state
            .first_index()
            .max(state.snapshot.index)
            .max(state.hard_state.commit);
        if index < floor {
            return Err(StoreError::SnapshotOutOfDate {
                index,
                floor,
                first_index: state.first_index(),
                snapshot_index: state.snapshot.index,
                commit: state.hard_state.commit,
            });
        }
        let truncated = LogPosition {
            index,
            term: meta.term,
        };
        let mut hard_state = state.hard_state.clone();
        hard_state.term = hard_state.term.max(meta.term);
        hard_state.commit = index;
        let conf_state = meta.get_conf_state().clone();

        let hard_state_payload = codec::encode(&hard_state).map_err(encode_error("hard state"))?;
        let conf_state_payload = codec::encode(&conf_state).map_err(encode_error("conf state"))?;
        let meta_payload = codec::encode(meta).map_err(encode_error("snapshot metadata"))?;
        let path = &self.inner.path;
        self.transact(&mut state, "applying a snapshot", Flush::Now, |txn| {
            txn.open_table(ENTRIES)
                .map_err(redb_error(path, "opening the entries table"))?
                .retain(|_, _| false)
                .map_err(redb_error(path, "clearing the log"))?;
            put_meta(
                txn,
                path,
                key::TRUNCATED,
                &codec::encode_u64s([truncated.index, truncated.term]),
            )?;
            put_meta(txn, path, key::HARD_STATE, &hard_state_payload)?;
            put_meta(txn, path, key::CONF_STATE, &conf_state_payload)?;
            put_meta(txn, path, key::SNAPSHOT_META, &meta_payload)?;
            put_meta(
                txn,
                path,
                key::SNAPSHOT_DATA,
                &snapshot_data_payload(index, snapshot.get_data()),
            )?;
            let mut table = txn
                .open_table(STATE)
                .map_err(redb_error(path, "opening the state machine table"))?;
            table
                .retain(|_, _| false)
                .map_err(redb_error(path, "clearing the state machine"))?;
            for (key, value) in records {
                table
                    .insert(key.as_str(), codec::seal(key.as_bytes(), value).as_slice())
                    .map_err(redb_error(path, "writing a state machine record"))?;
            }
            drop(table);
            put_meta(txn, path, key::APPLIED, &codec::encode_u64s([index]))
        })?;

        state.truncated = truncated;
        state.last_index = index;
        state.hard_state = hard_state;
        state.conf_state = conf_state;
        state.snapshot = meta.clone();
        state.applied = index;
        state.terms.clear();
        state.tail.clear();
        Ok(())
    }

    /// Stores a snapshot of the state machine at `index` (applied), with
    /// the membership at that index, for log compaction and for followers
    /// that fell behind the first index. Does not compact: call
    /// [`RedbStorage::compact`] afterwards, typically keeping some entries.
    pub(crate) fn create_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
        data: &[u8],
    ) -> Result<SnapshotMetadata, StoreError> {
        let mut state = self.write_state()?;
        if index == 0 {
            return Err(StoreError::InvalidSnapshotIndex {
                index,
                what: "a snapshot at index 0 holds nothing".into(),
            });
        }
        if index > state.applied {
            return Err(StoreError::InvalidSnapshotIndex {
                index,
                what: format!("only entries through {} are applied", state.applied),
            });
        }
        if index < state.snapshot.index {
            return Err(StoreError::InvalidSnapshotIndex {
                index,
                what: format!("a newer snapshot at index {} exists", state.snapshot.index),
            });
        }
        let term = state.known_term(index);
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        meta.set_conf_state(conf_state);
        let meta_payload = codec::encode(&meta).map_err(encode_error("snapshot metadata"))?;
        let path = &self.inner.path;
        self.transact(&mut state, "storing a snapshot", Flush::Now, |txn| {
            put_meta(txn, path, key::SNAPSHOT_META, &meta_payload)?;
            put_meta(
                txn,
                path,
                key::SNAPSHOT_DATA,
                &snapshot_data_payload(index, data),
            )
        })?;
        state.snapshot = meta.clone();
        Ok(meta)
    }

    /// Stores a snapshot of the state machine's records at the applied
    /// index (the records are read under the same lock as the index, so
    /// they are the state of exactly that index).
    pub(crate) fn snapshot_state(
        &self,
        conf_state: ConfState,
    ) -> Result<SnapshotMetadata, StoreError> {
        let index = self.applied();
        let data = codec::encode_records(&self.state_records()?);
        self.create_snapshot(index, conf_state, &data)
    }

    /// Discards the entries before `compact_index`, as
    /// `MemStorageCore::compact`; never past the applied index nor the
    /// latest snapshot (errors), and a no-op at or below the first index.
    pub(crate) fn compact(&self, compact_index: u64) -> Result<(), StoreError> {
        let mut state = self.write_state()?;
        if compact_index <= state.first_index() {
            return Ok(());
        }
        let through = compact_index - 1;
        if through > state.last_index {
            return Err(StoreError::CompactBeyondLog {
                through,
                last_index: state.last_index,
            });
        }
        if through > state.applied {
            return Err(StoreError::CompactPastApplied {
                through,
                applied: state.applied,
            });
        }
        if through > state.snapshot.index {
            return Err(StoreError::CompactPastSnapshot {
                through,
                snapshot_index: state.snapshot.index,
            });
        }
        let truncated = LogPosition {
            index: through,
            term: state.known_term(through),
        };
        let path = &self.inner.path;
        self.transact(&mut state, "compacting the log", Flush::Now, |txn| {
            txn.open_table(ENTRIES)
                .map_err(redb_error(path, "opening the entries table"))?
                .retain_in(..compact_index, |_, _| false)
                .map_err(redb_error(path, "removing compacted entries"))?;
            put_meta(
                txn,
                path,
                key::TRUNCATED,
                &codec::encode_u64s([truncated.index, truncated.term]),
            )
        })?;
        state.truncated = truncated;
        if compact_index > state.last_index {
            // Nothing left: no run may start beyond the log.
            state.terms.clear();
        } else {
            state.terms.compact_to(compact_index);
        }
        state.tail.compact_to(compact_index);
        Ok(())
    }

    /// Reads `[low, high)` from the file, within `max_size` bytes.
    fn read_entries(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>, StoreError> {
        let path = &self.inner.path;
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(redb_error(path, "reading entries"))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(redb_error(path, "opening the entries table"))?;
        let mut limit = SizeLimit::new(max_size);
        let mut entries = Vec::new();
        let mut expected = low;
        for item in table
            .range(low..high)
            .map_err(redb_error(path, "reading entries"))?
        {
            let (key, value) = item.map_err(redb_error(path, "reading an entry"))?;
            let entry =
                decode_entry(key.value(), value.value()).map_err(|what| StoreError::Corrupt {
                    path: path.clone(),
                    what,
                })?;
            if entry.index != expected {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    what: format!("entry {expected} is missing"),
                });
            }
            if !limit.admit(&entry) {
                return Ok(entries);
            }
            entries.push(entry);
            expected += 1;
        }
        if expected != high {
            return Err(StoreError::Corrupt {
                path: path.clone(),
                what: format!("entry {expected} is missing"),
            });
        }
        Ok(entries)
    }

    /// Reads the latest snapshot's data.
    fn read_snapshot_data(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        let path = &self.inner.path;
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(redb_error(path, "reading the snapshot"))?;
        let table = txn
            .open_table(META)
            .map_err(redb_error(path, "opening the metadata table"))?;
        let value = table
            .get(key::SNAPSHOT_DATA)
            .map_err(redb_error(path, "reading the snapshot"))?
            .ok_or_else(|| StoreError::Corrupt {
                path: path.clone(),
                what: "the snapshot data record is missing".into(),
            })?;
        snapshot_data(value.value(), index).map_err(|what| StoreError::Corrupt {
            path: path.clone(),
            what,
        })
    }
}

/// Checks a new hard state against the stored one, given the last index
/// the log will have.
fn check_hard_state(
    current: &HardState,
    new: &HardState,
    last_index: u64,
) -> Result<(), StoreError> {
    let what = if new.term < current.term {
        Some("the term would go back".to_string())
    } else if new.term == current.term && current.vote != 0 && new.vote != current.vote {
        Some("the vote would change within a term".to_string())
    } else if new.commit < current.commit {
        Some("the commit index would go back".to_string())
    } else if new.commit > last_index {
        Some(format!(
            "the commit index is beyond the last entry {last_index}"
        ))
    } else {
        None
    };
    match what {
        Some(what) => Err(StoreError::InvalidHardState {
            current: current.into(),
            new: new.into(),
            what,
        }),
        None => Ok(()),
    }
}

fn put_meta(
    txn: &redb::WriteTransaction,
    path: &Path,
    key: &str,
    payload: &[u8],
) -> Result<(), StoreError> {
    txn.open_table(META)
        .map_err(redb_error(path, "opening the metadata table"))?
        .insert(key, codec::seal(key.as_bytes(), payload).as_slice())
        .map_err(redb_error(path, "writing a metadata record"))?;
    Ok(())
}

/// Every state machine record, checked.
fn read_state_records(
    txn: &redb::ReadTransaction,
    path: &Path,
) -> Result<StateRecords, StoreError> {
    let table = match txn.open_table(STATE) {
        Ok(table) => table,
        // Created with the first applied record.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(StateRecords::new()),
        Err(error) => return Err(redb_error(path, "opening the state machine table")(error)),
    };
    let mut records = StateRecords::new();
    for item in table
        .range::<&str>(..)
        .map_err(redb_error(path, "reading the state machine"))?
    {
        let (key, value) = item.map_err(redb_error(path, "reading a state machine record"))?;
        let key = key.value().to_owned();
        let payload =
            codec::unseal(key.as_bytes(), value.value()).map_err(|what| StoreError::Corrupt {
                path: path.to_owned(),
                what: format!("the state machine record {key:?} is damaged: {what}"),
            })?;
        records.insert(key, payload.to_vec());
    }
    Ok(records)
}

/// An entry stored under `index`, checked.
fn decode_entry(index: u64, value: &[u8]) -> Result<Entry, String> {
    let payload = codec::unseal(&codec::entry_key(index), value)
        .map_err(|what| format!("the entry under key {index} is damaged: {what}"))?;
    let entry: Entry = codec::decode(payload)
        .map_err(|what| format!("the entry under key {index} is damaged: {what}"))?;
    if entry.index != index {
        return Err(format!(
            "the entry under key {index} says it is entry {}",
            entry.index
        ));
    }
    Ok(entry)
}

/// The snapshot data within its stored record, checked against the index
/// of the snapshot metadata.
fn snapshot_data(value: &[u8], index: u64) -> Result<Vec<u8>, String> {
    let payload = codec::unseal(key::SNAPSHOT_DATA.as_bytes(), value)
        .map_err(|what| format!("the snapshot data record is damaged: {what}"))?;
    let Some((stored, data)) = payload.split_first_chunk::<8>() else {
        return Err("the snapshot data record is too short".into());
    };
    let stored = u64::from_le_bytes(*stored);
    if stored != index {
        return Err(format!(
            "the snapshot data is of index {stored}, its metadata of index {index}"
        ));
    }
    Ok(data.to_vec())
}

/// Builds a new file under a temporary name and moves it into place once
/// its identity and initial records are durable, so a crash during creation
/// leaves either no `raft.redb` or a complete one.
fn create_file(
    data_dir: &Path,
    path: &Path,
    node_id: NodeId,
    options: &StorageOptions,
) -> Result<(), StoreError> {
    let new_path = data_dir.join(NEW_FILE_NAME);
    match std::fs::remove_file(&new_path) {
        Ok(()) => {
            tracing::warn!(path = %new_path.display(), "removed a Raft log left half created by an earlier start")
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&new_path, "remove the half-created file")(error)),
    }
    let db = redb::Builder::new()
        .set_cache_size(options.redb_cache_bytes)
        .create(&new_path)
        .map_err(|source| StoreError::Open {
            path: new_path.clone(),
            source: Box::new(source),
        })?;
    let identity = Identity {
        format_version: codec::FORMAT_VERSION,
        node_id: node_id.get(),
    };
    let hard_state = codec::encode(&HardState::default()).map_err(encode_error("hard state"))?;
    let conf_state = codec::encode(&ConfState::default()).map_err(encode_error("conf state"))?;
    let snapshot_meta =
        codec::encode(&SnapshotMetadata::default()).map_err(encode_error("snapshot metadata"))?;
    let op = "creating the Raft log";
    let mut txn = db.begin_write().map_err(redb_error(&new_path, op))?;
    // Always durable, whatever the options: the rename below must not move
    // a file whose identity could still vanish.
    txn.set_two_phase_commit(true);
    txn.open_table(ENTRIES)
        .map_err(redb_error(&new_path, "creating the entries table"))?;
    put_meta(&txn, &new_path, key::IDENTITY, &identity.encode())?;
    put_meta(&txn, &new_path, key::HARD_STATE, &hard_state)?;
    put_meta(&txn, &new_path, key::CONF_STATE, &conf_state)?;
    put_meta(&txn, &new_path, key::TRUNCATED, &codec::encode_u64s([0, 0]))?;
    put_meta(&txn, &new_path, key::SNAPSHOT_META, &snapshot_meta)?;
    put_meta(
        &txn,
        &new_path,
        key::SNAPSHOT_DATA,
        &snapshot_data_payload(0, &[]),
    )?;
    put_meta(&txn, &new_path, key::APPLIED, &codec::encode_u64s([0]))?;
    txn.commit().map_err(redb_error(&new_path, op))?;
    db.close().map_err(|source| StoreError::Open {
        path: new_path.clone(),
        source: Box::new(source),
    })?;
    std::fs::rename(&new_path, path)
        .map_err(io_error(path, "move the new Raft log into place as"))?;
    // The rename is durable only once the directory is.
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(data_dir, "sync the data directory"))?;
    tracing::info!(path = %path.display(), node_id = %node_id, "created a new Raft log");
    Ok(())
}

/// Reads everything back from an opened file and checks it.
fn recover(
    db: &redb::Database,
    path: &Path,
    node_id: NodeId,
    options: &StorageOptions,
) -> Result<State, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_owned(),
        what,
    };
    let txn = db.begin_read().map_err(redb_error(path, "recovering"))?;
    let meta = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(corrupt(
                "it has no raft_meta table: it is not a Leitstand Raft log".into(),
            ));
        }
        Err(error) => return Err(redb_error(path, "opening the metadata table")(error)),
    };
    // Each record's checked payload, or what is wrong.
    let record = |name: &str| -> Result<Vec<u8>, StoreError> {
        let value = meta
            .get(name)
            .map_err(redb_error(path, "reading a metadata record"))?
            .ok_or_else(|| corrupt(format!("the {name} record is missing")))?;
        codec::unseal(name.as_bytes(), value.value())
            .map(<[u8]>::to_vec)
            .map_err(|what| corrupt(format!("the {name} record is damaged: {what}")))
    };

    let identity = Identity::decode(&record(key::IDENTITY)?).map_err(corrupt)?;
    if identity.format_version != codec::FORMAT_VERSION {
        return Err(StoreError::UnknownFormat {
            path: path.to_owned(),
            found: identity.format_version,
            supported: codec::FORMAT_VERSION,
        });
    }
    if identity.node_id != node_id.get() {
        return Err(StoreError::ForeignNode {
            path: path.to_owned(),
            file_node: identity.node_id,
            expected: node_id,
        });
    }
    let hard_state: HardState = codec::decode(&record(key::HARD_STATE)?)
        .map_err(|what| corrupt(format!("the hard_state record is damaged: {what}")))?;
    let conf_state: ConfState = codec::decode(&record(key::CONF_STATE)?)
        .map_err(|what| corrupt(format!("the conf_state record is damaged: {what}")))?;
    let snapshot: SnapshotMetadata = codec::decode(&record(key::SNAPSHOT_META)?)
        .map_err(|what| corrupt(format!("the snapshot_meta record is damaged: {what}")))?;
    let [truncated_index, truncated_term] = codec::decode_u64s::<2>(&record(key::TRUNCATED)?)
        .map_err(|what| corrupt(format!("the truncated record is damaged: {what}")))?;
    let [applied] = codec::decode_u64s::<1>(&record(key::APPLIED)?)
        .map_err(|what| corrupt(format!("the applied record is damaged: {what}")))?;
    {
        // The data must be there and intact; it is read again when sent.
        let value = meta
            .get(key::SNAPSHOT_DATA)
            .map_err(redb_error(path, "reading the snapshot"))?
            .ok_or_else(|| corrupt("the snapshot_data record is missing".into()))?;
        snapshot_data(value.value(), snapshot.index).map_err(corrupt)?;
    }

    let truncated = LogPosition {
        index: truncated_index,
        term: truncated_term,
    };
    let mut terms = TermRuns::default();
    let mut tail = TailCache::new(options.entry_cache_bytes);
    let mut previous = truncated;
    let entries = txn
        .open_table(ENTRIES)
        .map_err(redb_error(path, "opening the entries table"))?;
    for item in entries
        .range::<u64>(..)
        .map_err(redb_error(path, "reading entries"))?
    {
        let (key, value) = item.map_err(redb_error(path, "reading an entry"))?;
        let index = key.value();
        if index != previous.index + 1 {
            return Err(corrupt(if previous.index == truncated.index {
                format!(
                    "the first entry is {index}, but entries through {} are compacted, so it should be {}",
                    truncated.index,
                    truncated.index + 1
                )
            } else {
                format!(
                    "entry {index} follows entry {}: entries {} to {} are missing",
                    previous.index,
                    previous.index + 1,
                    index.saturating_sub(1)
                )
            }));
        }
        let entry = decode_entry(index, value.value()).map_err(corrupt)?;
        if entry.term < previous.term {
            return Err(corrupt(format!(
                "entry {index} has term {}, lower than the term {} before it",
                entry.term, previous.term
            )));
        }
        previous = LogPosition {
            index,
            term: entry.term,
        };
        terms.push(index, entry.term);
        tail.push(entry);
    }

    let state = State {
        hard_state,
        conf_state,
        truncated,
        last_index: previous.index,
        snapshot,
        applied,
        terms,
        tail,
        failed: false,
    };
    state.check().map_err(corrupt)?;
    Ok(state)
}

impl raft::Storage for RedbStorage {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        let state = self.read();
        Ok(raft::RaftState::new(
            state.hard_state.clone(),
            state.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        // Held throughout, so no write changes the log under the read.
        let state = self.read();
        if low < state.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > state.last_index + 1 || low > high {
            return Err(StoreError::EntriesOutOfRange {
                low,
                high,
                first_index: state.first_index(),
                last_index: state.last_index,
            }
            .into());
        }
        if low == high {
            return Ok(Vec::new());
        }
        if let Some(entries) = state.tail.get(low, high, max_size) {
            return Ok(entries);
        }
        Ok(self.read_entries(low, high, max_size)?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let state = self.read();
        if idx < state.truncated.index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > state.last_index {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(state.known_term(idx))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index)
    }

    /// The latest stored snapshot, if it is at least at `request_index`;
    /// otherwise `SnapshotTemporarilyUnavailable`, and raft-rs asks again
    /// later (after the state machine has created a fresher one).
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let state = self.read();
        let meta = state.snapshot.clone();
        let members = meta.get_conf_state();
        let includes_follower = [
            &members.voters,
            &members.learners,
            &members.voters_outgoing,
            &members.learners_next,
        ]
        .iter()
        .any(|ids| ids.contains(&to));
        if meta.index > 0 && !includes_follower {
            // A follower refuses a snapshot whose membership lacks it (it
            // was added since): ask the driver for a fresh one.
            tracing::debug!(
                to,
                snapshot_index = meta.index,
                "the stored snapshot predates the follower's membership; taking a new one"
            );
            self.inner
                .snapshot_wanted
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        if meta.index == 0 || meta.index < request_index {
            tracing::debug!(
                to,
                request_index,
                snapshot_index = meta.index,
                "no snapshot fresh enough for a follower yet"
            );
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = self.read_snapshot_data(meta.index)?;
        drop(state);
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.data = data.into();
        Ok(snapshot)
    }
}
