//! `RedbStorage` against the cases of raft-rs 0.7's `MemStorage` tests
//! (src/storage.rs, `mod test`), and what only a file can do: recover,
//! refuse damage, refuse another node's file.
//!
//! Setup differs from MemStorage's where its tests set fields a real log
//! cannot have: there `entries = [3, 4, 5]` sits on an empty snapshot, so
//! the log's truncated index (2) has no term. Here the same log is built
//! the only way a durable one can be: a snapshot at (2, 2), then entries
//! 3..=5 appended. So `term(2)` is 2 here (MemStorage: Compacted) and
//! `term(1)` is Compacted.

use std::path::Path;

use leitstand_proto::domain::NodeId;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage as _};

use crate::raft::codec;
use crate::raft::storage::{
    Durability, FILE_NAME, LogPosition, RedbStorage, StorageOptions, StoreError,
};
use crate::raft::storage::{ENTRIES, META, key};

fn node(id: u64) -> NodeId {
    NodeId::new(id).expect("test node ids are positive")
}

fn options() -> StorageOptions {
    StorageOptions::default()
}

fn open(dir: &Path) -> RedbStorage {
    RedbStorage::open(dir, node(1), options()).expect("opening a test Raft log")
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Default::default()
    }
}

fn entry_with_data(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        data: data.to_vec().into(),
        ..Default::default()
    }
}

fn snapshot(index: u64, term: u64, voters: Vec<u64>, data: &[u8]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = index;
    snapshot.mut_metadata().term = term;
    snapshot.mut_metadata().mut_conf_state().voters = voters;
    snapshot.data = data.to_vec().into();
    snapshot
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..Default::default()
    }
}

/// MemStorage's fixture: entries (3,3), (4,4), (5,5), truncated at (2,2).
fn storage_3_4_5(dir: &Path) -> RedbStorage {
    let storage = open(dir);
    storage
        .apply_snapshot(&snapshot(2, 2, vec![1, 2, 3], b"state at 2"))
        .expect("snapshot at 2");
    storage
        .append(&[entry(3, 3), entry(4, 4), entry(5, 5)], None)
        .expect("append 3..=5");
    storage
}

/// Makes everything through `index` committed and applied.
fn commit_and_apply(storage: &RedbStorage, index: u64) {
    storage.set_commit(index).expect("commit");
    storage.set_applied(index).expect("applied");
}

fn all_entries(storage: &RedbStorage) -> Vec<Entry> {
    let first = storage.first_index().expect("first index");
    let last = storage.last_index().expect("last index");
    storage
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .expect("all entries")
}

fn size_of(entry: &Entry) -> u64 {
    u64::from(entry.compute_size())
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn compacted<T>() -> raft::Result<T> {
    Err(raft::Error::Store(raft::StorageError::Compacted))
}

#[test]
fn term_matches_memstorage() {
    let cases: [(u64, raft::Result<u64>); 6] = [
        (1, compacted()),
        // MemStorage: Compacted, as its fixture has no term for index 2.
        (2, Ok(2)),
        (3, Ok(3)),
        (4, Ok(4)),
        (5, Ok(5)),
        (6, Err(raft::Error::Store(raft::StorageError::Unavailable))),
    ];
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    for (index, want) in cases {
        assert_eq!(storage.term(index), want, "term({index})");
    }
}

#[test]
fn entries_honour_max_size_like_memstorage() {
    let ents = [entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 6)];
    let (s1, s2, s3) = (size_of(&ents[1]), size_of(&ents[2]), size_of(&ents[3]));
    let cases: Vec<(u64, u64, u64, raft::Result<Vec<Entry>>)> = vec![
        (2, 6, u64::MAX, compacted()),
        (3, 4, u64::MAX, Ok(vec![entry(3, 3)])),
        (4, 5, u64::MAX, Ok(vec![entry(4, 4)])),
        (4, 6, u64::MAX, Ok(vec![entry(4, 4), entry(5, 5)])),
        (
            4,
            7,
            u64::MAX,
            Ok(vec![entry(4, 4), entry(5, 5), entry(6, 6)]),
        ),
        // Even with max_size 0 the first entry is returned.
        (4, 7, 0, Ok(vec![entry(4, 4)])),
        (4, 7, s1 + s2, Ok(vec![entry(4, 4), entry(5, 5)])),
        (4, 7, s1 + s2 + s3 / 2, Ok(vec![entry(4, 4), entry(5, 5)])),
        (4, 7, s1 + s2 + s3 - 1, Ok(vec![entry(4, 4), entry(5, 5)])),
        (
            4,
            7,
            s1 + s2 + s3,
            Ok(vec![entry(4, 4), entry(5, 5), entry(6, 6)]),
        ),
    ];
    // Once served from the in-memory tail, once from the file (no cache).
    for cache_bytes in [4 << 20, 0] {
        let dir = temp_dir();
        let storage = RedbStorage::open(
            dir.path(),
            node(1),
            StorageOptions {
                entry_cache_bytes: cache_bytes,
                ..options()
            },
        )
        .expect("open");
        storage
            .apply_snapshot(&snapshot(2, 2, vec![1], b""))
            .expect("snapshot at 2");
        storage.append(&ents, None).expect("append 3..=6");
        for (i, (low, high, max_size, want)) in cases.iter().enumerate() {
            let got = storage.entries(*low, *high, *max_size, GetEntriesContext::empty(false));
            assert_eq!(&got, want, "case #{i} with a {cache_bytes}-byte cache");
        }
    }
}

#[test]
fn entries_beyond_the_last_index_are_an_error_not_a_panic() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    let error = storage
        .entries(4, 7, None, GetEntriesContext::empty(false))
        .expect_err("entries past the end");
    assert!(
        leitstand_proto::error_chain(&error)
            .contains("entries [4, 7) asked for, but the log holds [3, 5]"),
        "{error}"
    );
}

#[test]
fn last_and_first_index_follow_append_and_compact() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    assert_eq!(storage.last_index(), Ok(5));
    storage.append(&[entry(6, 5)], None).expect("append 6");
    assert_eq!(storage.last_index(), Ok(6));

    assert_eq!(storage.first_index(), Ok(3));
    commit_and_apply(&storage, 5);
    storage
        .create_snapshot(5, voters(&[1, 2, 3]), b"state at 5")
        .expect("snapshot at 5");
    storage.compact(4).expect("compact to 4");
    assert_eq!(storage.first_index(), Ok(4));
    assert_eq!(storage.truncated(), LogPosition { index: 3, term: 3 });
    // The term just before the first entry survives compaction.
    assert_eq!(storage.term(3), Ok(3));
    assert_eq!(storage.term(2), compacted());
}

#[test]
fn compact_matches_memstorage() {
    // (compact index, first index, its term, entries left)
    let cases = [(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)];
    for (i, (compact_index, want_first, want_term, want_len)) in cases.into_iter().enumerate() {
        let dir = temp_dir();
        let storage = storage_3_4_5(dir.path());
        commit_and_apply(&storage, 5);
        storage
            .create_snapshot(5, voters(&[1, 2, 3]), b"state at 5")
            .expect("snapshot at 5");
        storage.compact(compact_index).expect("compact");
        let first = storage.first_index().expect("first index");
        assert_eq!(first, want_first, "case #{i}: first index");
        let term = storage
            .entries(first, first + 1, 1, GetEntriesContext::empty(false))
            .expect("first entry")[0]
            .term;
        assert_eq!(term, want_term, "case #{i}: term of the first entry");
        let len = storage
            .entries(first, 6, 100, GetEntriesContext::empty(false))
            .expect("entries")
            .len();
        assert_eq!(len, want_len, "case #{i}: entries left");
        // And so after a reopen.
        drop(storage);
        let storage = open(dir.path());
        assert_eq!(storage.first_index(), Ok(want_first), "case #{i} reopened");
        assert_eq!(storage.term(want_first - 1), Ok(want_first - 1));
    }
}

#[test]
fn compacting_the_whole_log_keeps_its_last_term() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    commit_and_apply(&storage, 5);
    storage
        .create_snapshot(5, voters(&[1, 2, 3]), b"state at 5")
        .expect("snapshot at 5");
    storage.compact(6).expect("compact everything");
    assert_eq!(
        (storage.first_index(), storage.last_index()),
        (Ok(6), Ok(5))
    );
    assert_eq!(storage.term(5), Ok(5));
    assert_eq!(
        storage.entries(6, 6, None, GetEntriesContext::empty(false)),
        Ok(vec![])
    );
    storage.append(&[entry(6, 7)], None).expect("append 6");
    assert_eq!((storage.term(5), storage.term(6)), (Ok(5), Ok(7)));
    drop(storage);
    let storage = open(dir.path());
    assert_eq!((storage.term(5), storage.term(6)), (Ok(5), Ok(7)));
    assert_eq!(all_entries(&storage), vec![entry(6, 7)]);
}

#[test]
fn compact_is_refused_past_applied_snapshot_or_log() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    storage.set_commit(5).expect("commit 5");
    storage.set_applied(3).expect("applied 3");
    storage
        .create_snapshot(3, voters(&[1, 2, 3]), b"state at 3")
        .expect("snapshot at 3");

    let error = storage
        .compact(5)
        .expect_err("compacting entry 4, unapplied");
    assert!(
        matches!(
            error,
            StoreError::CompactPastApplied {
                through: 4,
                applied: 3
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("only entries through 3 are applied"),
        "{error}"
    );

    storage.set_applied(5).expect("applied 5");
    let error = storage
        .compact(5)
        .expect_err("compacting past the snapshot");
    assert!(
        matches!(
            error,
            StoreError::CompactPastSnapshot {
                through: 4,
                snapshot_index: 3
            }
        ),
        "{error:?}"
    );

    let error = storage.compact(7).expect_err("compacting past the log");
    assert!(
        matches!(
            error,
            StoreError::CompactBeyondLog {
                through: 6,
                last_index: 5
            }
        ),
        "{error:?}"
    );
    // Nothing changed.
    assert_eq!(storage.first_index(), Ok(3));
    assert_eq!(all_entries(&storage).len(), 3);
}

#[test]
fn snapshot_matches_memstorage_where_it_can() {
    // (index of the created snapshot, request index, expected)
    let cs = voters(&[1, 2, 3]);
    let unavailable = Err(raft::Error::Store(
        raft::StorageError::SnapshotTemporarilyUnavailable,
    ));
    let cases: Vec<(u64, u64, raft::Result<Snapshot>)> = vec![
        (4, 0, Ok(snapshot(4, 4, vec![1, 2, 3], b"state at 4"))),
        (5, 5, Ok(snapshot(5, 5, vec![1, 2, 3], b"state at 5"))),
        // MemStorage returns its snapshot with the index raised to the
        // request, a test shortcut; with real data that would be a lie.
        (5, 6, unavailable),
    ];
    for (i, (index, request, want)) in cases.into_iter().enumerate() {
        let dir = temp_dir();
        let storage = storage_3_4_5(dir.path());
        commit_and_apply(&storage, index);
        storage
            .create_snapshot(index, cs.clone(), format!("state at {index}").as_bytes())
            .expect("create snapshot");
        assert_eq!(storage.snapshot(request, 2), want, "case #{i}");
    }
}

#[test]
fn no_snapshot_yet_is_temporarily_unavailable() {
    let dir = temp_dir();
    let storage = open(dir.path());
    assert_eq!(
        storage.snapshot(0, 2),
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable
        ))
    );
}

#[test]
fn create_snapshot_refuses_unapplied_and_older_indexes() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    commit_and_apply(&storage, 4);
    let error = storage
        .create_snapshot(5, voters(&[1]), b"")
        .expect_err("snapshot beyond applied");
    assert!(
        error
            .to_string()
            .contains("only entries through 4 are applied"),
        "{error}"
    );
    storage
        .create_snapshot(4, voters(&[1]), b"")
        .expect("snapshot at 4");
    let error = storage
        .create_snapshot(3, voters(&[1]), b"")
        .expect_err("older snapshot");
    assert!(
        error
            .to_string()
            .contains("a newer snapshot at index 4 exists"),
        "{error}"
    );
    assert_eq!(storage.snapshot_metadata().index, 4);
}

#[test]
fn append_matches_memstorage() {
    let cases: Vec<(Vec<Entry>, Option<Vec<Entry>>)> = vec![
        (
            vec![entry(3, 3), entry(4, 4), entry(5, 5)],
            Some(vec![entry(3, 3), entry(4, 4), entry(5, 5)]),
        ),
        (
            vec![entry(3, 3), entry(4, 6), entry(5, 6)],
            Some(vec![entry(3, 3), entry(4, 6), entry(5, 6)]),
        ),
        (
            vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 5)],
            Some(vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 5)]),
        ),
        // Overwriting compacted entries is refused (MemStorage panics).
        (vec![entry(2, 3), entry(3, 3), entry(4, 5)], None),
        // Truncate the existing entries and append.
        (vec![entry(4, 5)], Some(vec![entry(3, 3), entry(4, 5)])),
        // Direct append.
        (
            vec![entry(6, 6)],
            Some(vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 6)]),
        ),
        // A gap is refused (MemStorage panics).
        (vec![entry(7, 6)], None),
        // So are non-contiguous batches and terms going down.
        (vec![entry(6, 6), entry(8, 6)], None),
        (vec![entry(6, 6), entry(7, 5)], None),
    ];
    for (i, (append, want)) in cases.into_iter().enumerate() {
        let dir = temp_dir();
        let storage = storage_3_4_5(dir.path());
        let result = storage.append(&append, None);
        let want_after = match want {
            Some(want) => {
                result.unwrap_or_else(|error| panic!("case #{i}: {error}"));
                want
            }
            None => {
                result.expect_err(&format!("case #{i} must be refused"));
                vec![entry(3, 3), entry(4, 4), entry(5, 5)]
            }
        };
        assert_eq!(all_entries(&storage), want_after, "case #{i}");
        // The file says the same.
        drop(storage);
        assert_eq!(
            all_entries(&open(dir.path())),
            want_after,
            "case #{i} reopened"
        );
    }
}

#[test]
fn append_errors_name_the_fault() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    let error = storage.append(&[entry(2, 3)], None).expect_err("compacted");
    assert_eq!(
        error.to_string(),
        "refusing to append entries from index 2: entries through 2 are compacted; \
         the Ready loop passed stale entries"
    );
    let error = storage.append(&[entry(7, 6)], None).expect_err("gap");
    assert_eq!(
        error.to_string(),
        "refusing to append entries from index 7: the log ends at 5, so that would leave a gap"
    );
    storage.set_commit(4).expect("commit 4");
    let error = storage.append(&[entry(4, 7)], None).expect_err("committed");
    assert_eq!(
        error.to_string(),
        "refusing to overwrite entry 4: entries through 4 are committed and never change"
    );
}

#[test]
fn hard_state_is_persisted_with_the_entries_and_checked() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    let hs = HardState {
        term: 6,
        vote: 2,
        commit: 6,
        ..Default::default()
    };
    storage
        .append(&[entry(6, 6)], Some(&hs))
        .expect("entries and hard state together");
    assert_eq!(storage.hard_state(), hs);

    let mut other_vote = hs.clone();
    other_vote.vote = 3;
    let error = storage
        .set_hard_state(&other_vote)
        .expect_err("a second vote in term 6");
    assert!(
        error
            .to_string()
            .contains("the vote would change within a term"),
        "{error}"
    );
    let mut beyond = hs.clone();
    beyond.commit = 7;
    let error = storage.set_hard_state(&beyond).expect_err("commit beyond");
    assert!(
        error
            .to_string()
            .contains("the commit index is beyond the last entry 6"),
        "{error}"
    );
    let mut back = hs.clone();
    back.term = 5;
    storage.set_hard_state(&back).expect_err("term going back");
    // A refused write changes nothing.
    assert_eq!(storage.hard_state(), hs);
    assert_eq!(storage.last_index(), Ok(6));
    drop(storage);
    let storage = open(dir.path());
    assert_eq!(storage.hard_state(), hs);
    assert_eq!(storage.last_index(), Ok(6));
}

#[test]
fn apply_snapshot_matches_memstorage() {
    let dir = temp_dir();
    let storage = open(dir.path());
    storage
        .apply_snapshot(&snapshot(4, 4, vec![1, 2, 3], b"state at 4"))
        .expect("snapshot at 4");
    let error = storage
        .apply_snapshot(&snapshot(3, 3, vec![1, 2, 3], b"state at 3"))
        .expect_err("an older snapshot");
    assert!(
        matches!(error, StoreError::SnapshotOutOfDate { index: 3, .. }),
        "{error:?}"
    );
    assert_eq!(storage.snapshot_metadata().index, 4);
}

#[test]
fn apply_snapshot_replaces_log_and_state() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    storage.set_commit(4).expect("commit 4");
    let incoming = snapshot(10, 7, vec![1, 2, 3, 4], b"state at 10");
    storage.apply_snapshot(&incoming).expect("snapshot at 10");
    let check = |storage: &RedbStorage| {
        assert_eq!(storage.first_index(), Ok(11));
        assert_eq!(storage.last_index(), Ok(10));
        assert_eq!(storage.term(10), Ok(7));
        assert_eq!(storage.term(9), compacted());
        let hs = storage.hard_state();
        assert_eq!((hs.term, hs.commit), (7, 10));
        assert_eq!(storage.conf_state(), voters(&[1, 2, 3, 4]));
        assert_eq!(storage.applied(), 10);
        assert_eq!(storage.snapshot(0, 2), Ok(incoming.clone()));
    };
    check(&storage);
    drop(storage);
    let storage = open(dir.path());
    check(&storage);
    // The log continues after the snapshot.
    storage.append(&[entry(11, 7)], None).expect("append 11");
    assert_eq!(storage.last_index(), Ok(11));
    assert_eq!(storage.term(11), Ok(7));
}

#[test]
fn reopen_recovers_the_same_state() {
    let dir = temp_dir();
    let storage = open(dir.path());
    assert!(
        storage
            .initialize_with_conf_state(voters(&[1, 2, 3]))
            .expect("initialize")
    );
    let entries: Vec<Entry> = (1..=40)
        .map(|i| entry_with_data(i, 1 + i / 10, format!("command {i}").as_bytes()))
        .collect();
    let hs = HardState {
        term: 5,
        vote: 1,
        commit: 30,
        ..Default::default()
    };
    storage.append(&entries, Some(&hs)).expect("append");
    storage.set_applied(25).expect("applied");
    storage
        .create_snapshot(20, voters(&[1, 2, 3]), b"state at 20")
        .expect("snapshot");
    storage.compact(15).expect("compact");
    storage
        .set_conf_state(&voters(&[1, 2, 3, 4]))
        .expect("conf");

    let before = (
        storage.initial_state().expect("state"),
        storage.first_index(),
        storage.last_index(),
        all_entries(&storage),
        storage.applied(),
        storage.snapshot(0, 2),
        storage.term(14),
    );
    drop(storage);
    let storage = open(dir.path());
    assert_eq!(storage.node_id(), node(1));
    let after = (
        storage.initial_state().expect("state"),
        storage.first_index(),
        storage.last_index(),
        all_entries(&storage),
        storage.applied(),
        storage.snapshot(0, 2),
        storage.term(14),
    );
    assert_eq!(before.0.hard_state, after.0.hard_state);
    assert_eq!(before.0.conf_state, after.0.conf_state);
    assert_eq!(before.1, after.1);
    assert_eq!(before.2, after.2);
    assert_eq!(before.3, after.3);
    assert_eq!(before.4, after.4);
    assert_eq!(before.5, after.5);
    assert_eq!(before.6, after.6);
    assert_eq!(after.1, Ok(15));
    assert_eq!(after.3.len(), 26);
    assert_eq!(after.6, Ok(2));
    // A later bootstrap leaves the stored membership alone.
    assert!(
        !storage
            .initialize_with_conf_state(voters(&[9]))
            .expect("initialize again")
    );
    assert_eq!(storage.conf_state(), voters(&[1, 2, 3, 4]));
}

#[test]
fn clones_share_state() {
    let dir = temp_dir();
    let storage = storage_3_4_5(dir.path());
    let raft_copy = storage.clone();
    storage.append(&[entry(6, 6)], None).expect("append");
    assert_eq!(raft_copy.last_index(), Ok(6));
    assert_eq!(raft_copy.term(6), Ok(6));
}

#[test]
fn another_nodes_file_is_refused() {
    let dir = temp_dir();
    drop(storage_3_4_5(dir.path()));
    let error =
        RedbStorage::open(dir.path(), node(2), options()).expect_err("node 2 opens node 1's log");
    assert!(
        matches!(error, StoreError::ForeignNode { file_node: 1, .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&dir.path().join(FILE_NAME).display().to_string()),
        "{text}"
    );
    assert!(
        text.contains("belongs to node 1, but this controller is node 2"),
        "{text}"
    );
}

#[test]
fn a_second_handle_on_the_same_file_is_refused() {
    let dir = temp_dir();
    let _first = open(dir.path());
    let error = RedbStorage::open(dir.path(), node(1), options()).expect_err("second handle");
    assert!(matches!(error, StoreError::InUse { .. }), "{error:?}");
}

/// Writes a log whose entries carry `marker`, closes it, and returns the
/// file's path.
fn log_with_marker(dir: &Path, marker: &[u8]) -> std::path::PathBuf {
    let storage = open(dir);
    let mut data = marker.to_vec();
    data.resize(600, b'.');
    let entries: Vec<Entry> = (1..=200).map(|i| entry_with_data(i, 1, &data)).collect();
    storage.append(&entries, None).expect("append");
    // More transactions after it, so its pages are shared by both of redb's
    // commit slots rather than only by the newest.
    for i in 201..=205 {
        storage
            .append(&[entry_with_data(i, 1, b"later")], None)
            .expect("append later");
    }
    let path = storage.path().to_owned();
    drop(storage);
    path
}

#[test]
fn a_truncated_file_is_refused_with_a_clear_error() {
    let dir = temp_dir();
    let path = log_with_marker(dir.path(), b"MARKER");
    let len = std::fs::metadata(&path).expect("metadata").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open for truncation");
    file.set_len(len / 2).expect("truncate");
    drop(file);

    let error = RedbStorage::open(dir.path(), node(1), options()).expect_err("a truncated file");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error:?}");
    let text = leitstand_proto::error_chain(&error);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("It is refused, not reset"), "{text}");
    assert!(text.contains("truncated"), "{text}");
    // Still refused the second time: nothing was "repaired" away.
    RedbStorage::open(dir.path(), node(1), options()).expect_err("still refused");

    // Truncated to nothing: refused, not initialized afresh.
    std::fs::File::create(&path).expect("truncate to zero");
    let error = RedbStorage::open(dir.path(), node(1), options()).expect_err("an empty file");
    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    assert_eq!(
        std::fs::metadata(&path).expect("metadata").len(),
        0,
        "left as found"
    );
}

#[test]
fn a_file_overwritten_in_the_middle_is_refused_with_a_clear_error() {
    let dir = temp_dir();
    let marker = b"ENTRY-PAYLOAD-MARKER";
    let path = log_with_marker(dir.path(), marker);
    let mut bytes = std::fs::read(&path).expect("read the file");
    let mut hits = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(marker.len())
        .position(|window| window == marker)
    {
        let start = at + found;
        bytes[start..start + marker.len()].copy_from_slice(b"overwritten-by-test!");
        hits += 1;
        at = start + marker.len();
    }
    assert!(
        hits >= 200,
        "the marker is in the file ({hits} copies found)"
    );
    std::fs::write(&path, &bytes).expect("write the damaged file");

    let error = RedbStorage::open(dir.path(), node(1), options()).expect_err("a damaged file");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error:?}");
    let text = leitstand_proto::error_chain(&error);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("is damaged: redb's integrity check failed"),
        "{text}"
    );
    assert!(text.contains("move the file aside"), "{text}");
}

#[test]
fn a_file_of_another_program_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join(FILE_NAME);
    {
        let db = redb::Database::create(&path).expect("a foreign redb file");
        let txn = db.begin_write().expect("write");
        {
            let definition: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("other");
            let mut table = txn.open_table(definition).expect("table");
            table.insert("key", 1).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let error = RedbStorage::open(dir.path(), node(1), options()).expect_err("a foreign file");
    assert!(
        error
            .to_string()
            .contains("it has no raft_meta table: it is not a Leitstand Raft log"),
        "{error}"
    );

    std::fs::write(&path, b"not a database at all").expect("write junk");
    let error = RedbStorage::open(dir.path(), node(1), options()).expect_err("junk");
    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    let text = leitstand_proto::error_chain(&error);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("is not a redb database"), "{text}");
}

#[test]
fn non_durable_mode_still_round_trips() {
    let dir = temp_dir();
    let storage = RedbStorage::open(
        dir.path(),
        node(1),
        StorageOptions {
            durability: Durability::None,
            ..options()
        },
    )
    .expect("open");
    storage
        .append(&[entry(1, 1), entry(2, 1)], None)
        .expect("append");
    assert_eq!(all_entries(&storage), vec![entry(1, 1), entry(2, 1)]);
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    // The check value of CRC-32C for "123456789" (RFC 3720, B.4).
    assert_eq!(crate::raft::codec::crc32c(b"", b"123456789"), 0xE306_9283);
}

/// Changes a closed log's file behind the storage's back, through redb (so
/// redb's own page checksums stay valid and only our checks can tell).
fn tamper(path: &Path, change: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(path).expect("open for tampering");
    let txn = db.begin_write().expect("write");
    change(&txn);
    txn.commit().expect("commit tampering");
}

fn put_record(txn: &redb::WriteTransaction, name: &str, payload: &[u8]) {
    txn.open_table(META)
        .expect("meta table")
        .insert(name, codec::seal(name.as_bytes(), payload).as_slice())
        .expect("insert");
}

#[test]
fn an_inconsistent_file_is_refused_naming_the_fault() {
    type Change = Box<dyn FnOnce(&redb::WriteTransaction)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "an entry missing in the middle",
            Box::new(|txn| {
                txn.open_table(ENTRIES)
                    .expect("entries")
                    .remove(7)
                    .expect("remove");
            }),
            "entry 8 follows entry 6: entries 7 to 7 are missing",
        ),
        (
            "the first entries missing",
            Box::new(|txn| {
                txn.open_table(ENTRIES)
                    .expect("entries")
                    .remove(3)
                    .expect("remove");
            }),
            "the first entry is 4, but entries through 2 are compacted, so it should be 3",
        ),
        (
            "an entry stored under another index",
            Box::new(|txn| {
                let payload = codec::encode(&entry(9, 4)).expect("encode");
                txn.open_table(ENTRIES)
                    .expect("entries")
                    .insert(8, codec::seal(&codec::entry_key(8), &payload).as_slice())
                    .expect("insert");
            }),
            "the entry under key 8 says it is entry 9",
        ),
        (
            "an entry with a bad checksum",
            Box::new(|txn| {
                let mut value = codec::seal(&codec::entry_key(5), b"payload");
                value[0] ^= 0xFF;
                txn.open_table(ENTRIES)
                    .expect("entries")
                    .insert(5, value.as_slice())
                    .expect("insert");
            }),
            "the entry under key 5 is damaged: its checksum does not match",
        ),
        (
            "an entry that does not decode",
            Box::new(|txn| {
                txn.open_table(ENTRIES)
                    .expect("entries")
                    .insert(5, codec::seal(&codec::entry_key(5), &[0xFF; 7]).as_slice())
                    .expect("insert");
            }),
            "the entry under key 5 is damaged: it does not decode",
        ),
        (
            "terms going down",
            Box::new(|txn| {
                let payload = codec::encode(&entry(9, 1)).expect("encode");
                txn.open_table(ENTRIES)
                    .expect("entries")
                    .insert(9, codec::seal(&codec::entry_key(9), &payload).as_slice())
                    .expect("insert");
            }),
            "entry 9 has term 1, lower than the term 5 before it",
        ),
        (
            "applied beyond commit",
            Box::new(|txn| put_record(txn, key::APPLIED, &codec::encode_u64s([9]))),
            "the applied index 9 is beyond the commit index 8",
        ),
        (
            "commit beyond the log",
            Box::new(|txn| {
                let hs = HardState {
                    term: 5,
                    commit: 11,
                    ..Default::default()
                };
                put_record(txn, key::HARD_STATE, &codec::encode(&hs).expect("encode"));
            }),
            "the commit index 11 is beyond the last entry 10",
        ),
        (
            "compacted past the snapshot",
            Box::new(|txn| put_record(txn, key::TRUNCATED, &codec::encode_u64s([3, 3]))),
            "the first entry is 3, but entries through 3 are compacted, so it should be 4",
        ),
        (
            "a record missing",
            Box::new(|txn| {
                txn.open_table(META)
                    .expect("meta")
                    .remove(key::CONF_STATE)
                    .expect("remove");
            }),
            "the conf_state record is missing",
        ),
        (
            "a record cut short",
            Box::new(|txn| put_record(txn, key::APPLIED, &[1, 2, 3])),
            "the applied record is damaged: it is 3 bytes long where 8 were written",
        ),
        (
            "snapshot data of another snapshot",
            Box::new(|txn| {
                let mut payload = 7u64.to_le_bytes().to_vec();
                payload.extend_from_slice(b"state");
                put_record(txn, key::SNAPSHOT_DATA, &payload);
            }),
            "the snapshot data is of index 7, its metadata of index 2",
        ),
        (
            "an unknown format version",
            Box::new(|txn| {
                let identity = codec::Identity {
                    format_version: 99,
                    node_id: 1,
                };
                put_record(txn, key::IDENTITY, &identity.encode());
            }),
            "is written in format version 99, but this build reads version 1",
        ),
    ];
    for (name, change, want) in cases {
        let dir = temp_dir();
        let storage = storage_3_4_5(dir.path());
        let more: Vec<Entry> = (6..=10).map(|i| entry(i, 5)).collect();
        storage.append(&more, None).expect("append 6..=10");
        commit_and_apply(&storage, 8);
        let path = storage.path().to_owned();
        drop(storage);
        tamper(&path, change);
        let error = RedbStorage::open(dir.path(), node(1), options())
            .expect_err(&format!("{name}: must be refused"));
        let text = leitstand_proto::error_chain(&error);
        assert!(text.contains(want), "{name}: {text}");
        assert!(text.contains(&path.display().to_string()), "{name}: {text}");
    }
}
