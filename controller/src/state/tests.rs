use raft::eraftpb::{ConfChangeType, ConfState};

use super::*;

/// Applies `commands` from index 1 and returns the state machine and every
/// record it wrote (what the storage would hold).
fn apply_all(commands: &[Command]) -> (ClusterState, StateRecords) {
    let mut machine = ClusterState::load(0, &StateRecords::new()).expect("empty state");
    let mut records = StateRecords::new();
    for (n, command) in commands.iter().enumerate() {
        let mut writes = StateWrites::default();
        let data = command.encode();
        let entry = Committed {
            index: n as u64 + 1,
            data: &data,
        };
        // Refusals are part of the sequence too.
        let _ = machine.apply(entry, &mut writes);
        writes.apply_to(&mut records);
    }
    (machine, records)
}

fn bootstrap() -> Command {
    Command::RecordMembers {
        members: vec![
            MemberAddress {
                node_id: 1,
                address: "127.0.0.1:7401".into(),
            },
            MemberAddress {
                node_id: 2,
                address: "127.0.0.1:7402".into(),
            },
        ],
        actor: "controller/1".into(),
        at_unix_ms: 1_700_000_000_000,
    }
}

#[test]
fn applying_is_deterministic_and_loading_the_records_gives_the_same_state() {
    let commands = vec![
        Command::Probe { at_unix_ms: 1 },
        bootstrap(),
        Command::Probe { at_unix_ms: 2 },
    ];
    let (first, first_records) = apply_all(&commands);
    let (second, second_records) = apply_all(&commands);
    assert_eq!(first_records, second_records);
    assert_eq!(*first.read(), *second.read());
    assert_eq!(first.probes(), 2);
    assert_eq!(first.read().applied, 3);

    let loaded = ClusterState::load(3, &first_records).expect("records load");
    assert_eq!(*loaded.read(), *first.read());
}

#[test]
fn a_command_that_does_not_decode_is_refused_without_effect() {
    let mut machine = ClusterState::load(0, &StateRecords::new()).expect("empty state");
    let mut writes = StateWrites::default();
    let refused = machine.apply(
        Committed {
            index: 1,
            data: b"\x01{not json",
        },
        &mut writes,
    );
    assert!(refused.is_err_and(|reason| reason.contains("does not decode")));
    let refused = machine.apply(
        Committed {
            index: 1,
            data: b"\x07{}",
        },
        &mut writes,
    );
    assert!(refused.is_err_and(|reason| reason.contains("format 7")));
    assert!(writes.is_empty());
}

#[test]
fn members_are_recorded_once_and_changes_are_audited_in_a_chain() {
    let (mut machine, mut records) = apply_all(&[bootstrap(), bootstrap()]);
    assert_eq!(machine.addresses().len(), 2);
    let mut addresses = machine.watch_addresses();

    let mut writes = StateWrites::default();
    let context = MembershipContext {
        actor: "operator/alice".into(),
        at_unix_ms: 5,
        address: Some("127.0.0.1:7403".into()),
    };
    machine.apply_membership(
        &MembershipChange {
            index: 3,
            changes: vec![(ConfChangeType::AddLearnerNode, 3)],
            context: context.encode(),
            conf_state: ConfState {
                voters: vec![1, 2],
                learners: vec![3],
                ..ConfState::default()
            },
        },
        &mut writes,
    );
    writes.apply_to(&mut records);
    assert!(addresses.has_changed().unwrap_or(false));
    assert_eq!(
        addresses
            .borrow_and_update()
            .get(&NodeId::new(3).expect("id")),
        Some(&"127.0.0.1:7403".to_string())
    );

    let entries = machine.audit_entries(1, 10);
    let kinds: Vec<_> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["membership.bootstrap", "membership.learner_added"]);
    assert_eq!(entries[1].actor, "operator/alice");
    assert_eq!(entries[1].prev_hash, entries[0].hash);

    // The stored chain loads; an edited entry does not.
    assert!(ClusterState::load(3, &records).is_ok());
    let key = key::audit(1);
    let mut edited: AuditEntry =
        serde_json::from_slice(&records[&key]).expect("a stored audit entry");
    edited.actor = "operator/mallory".into();
    records.insert(key, json(&edited));
    let error = ClusterState::load(3, &records).expect_err("an edited entry");
    assert!(error.to_string().contains("hash does not match"), "{error}");
}

impl StateWrites {
    /// What storage does with the writes, for these tests.
    fn apply_to(self, records: &mut StateRecords) {
        for (key, value) in self.into_changes() {
            match value {
                Some(value) => records.insert(key, value),
                None => records.remove(&key),
            };
        }
    }
}
