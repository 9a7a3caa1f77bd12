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
            term: 1,
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
            term: 1,
            data: b"\x01{not json",
        },
        &mut writes,
    );
    assert!(refused.is_err_and(|reason| reason.contains("does not decode")));
    let refused = machine.apply(
        Committed {
            index: 1,
            term: 1,
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

mod failover_rules {
    use super::*;
    use crate::state::failover::{ActionRecord, DecisionKind, PathState, Stage};

    const RUNBOOK: &str = r#"
[[service]]
name = "dispatch-uplink"
mode = "MODE"
failback = "manual"
flap_guard = { min_interval = "60s", max_per_hour = 3 }

[[service.path]]
name = "fiber"
vantage = [{ agent = "leitstelle-1", check = "uplink-fiber" }]
quorum = 1
fail_after = 3
recover_after = 5
stale_after = "3s"
silence_means = "unknown"
activate = { agent = "leitstelle-1", action = "activate-fiber" }

[[service.path]]
name = "lte"
vantage = [{ agent = "leitstelle-1", check = "uplink-lte" }]
quorum = 1
fail_after = 3
recover_after = 5
stale_after = "3s"
silence_means = "unknown"
activate = { agent = "leitstelle-1", action = "activate-lte" }
"#;

    /// Applies commands from index 1 (term 2), returning each outcome.
    fn run(commands: Vec<Command>) -> (ClusterState, Vec<Result<(), String>>) {
        let mut machine = ClusterState::load(0, &StateRecords::new()).expect("empty state");
        let outcomes = commands
            .into_iter()
            .enumerate()
            .map(|(n, command)| {
                let data = command.encode();
                machine.apply(
                    Committed {
                        index: n as u64 + 1,
                        term: 2,
                        data: &data,
                    },
                    &mut StateWrites::default(),
                )
            })
            .collect();
        (machine, outcomes)
    }

    fn apply_runbook(mode: &str) -> Command {
        Command::ApplyRunbook {
            text: RUNBOOK.replace("MODE", mode),
            source_name: "dispatch.toml".into(),
            actor: "operator/alice".into(),
            at_unix_ms: 1,
        }
    }

    fn fiber_failed() -> Command {
        Command::PathStates {
            service: "dispatch-uplink".into(),
            transitions: vec![
                ("fiber".into(), PathState::Failed),
                ("lte".into(), PathState::Healthy),
            ],
            evidence: vec![],
            at_unix_ms: 2,
        }
    }

    fn failover(from: &str) -> Command {
        Command::Decide {
            service: "dispatch-uplink".into(),
            from_path: from.into(),
            to_path: "lte".into(),
            kind: DecisionKind::Failover,
            evidence: vec![],
            operator: String::new(),
            reason: "fiber failed".into(),
            at_unix_ms: 3,
        }
    }

    fn decision(machine: &ClusterState) -> crate::state::failover::Decision {
        machine.with_failover(|f| f.decisions.values().next().cloned().expect("a decision"))
    }

    fn active(machine: &ClusterState) -> String {
        machine.with_failover(|f| f.services["dispatch-uplink"].active_path.clone())
    }

    #[test]
    fn auto_decides_at_once_approve_waits_for_a_person_dry_run_only_records() {
        let (machine, outcomes) = run(vec![
            apply_runbook("auto"),
            fiber_failed(),
            failover("fiber"),
        ]);
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let d = decision(&machine);
        assert_eq!((d.stage, d.id.as_str()), (Stage::Approved, "d-2-3"));
        assert_eq!(
            (d.fencing_term, d.fencing_index),
            (2, 3),
            "the token is the entry's (term, index)"
        );
        assert_eq!(
            active(&machine),
            "fiber",
            "nothing switched before the action ran"
        );

        let (machine, _) = run(vec![
            apply_runbook("approve"),
            fiber_failed(),
            failover("fiber"),
        ]);
        assert_eq!(
            decision(&machine).stage,
            Stage::Proposed,
            "waits for a person"
        );

        let (machine, _) = run(vec![
            apply_runbook("dry-run"),
            fiber_failed(),
            failover("fiber"),
        ]);
        let d = decision(&machine);
        assert_eq!(d.stage, Stage::Abandoned);
        assert!(d.reason.contains("dry-run"), "{}", d.reason);
        assert_eq!(active(&machine), "fiber");
    }

    #[test]
    fn the_lifecycle_goes_in_order_and_only_success_moves_the_active_path() {
        let succeeded = ActionRecord {
            outcome: "succeeded".into(),
            exit_code: Some(0),
            output: String::new(),
            reason: String::new(),
            duration_ms: 5,
            replayed: false,
        };
        let id = "d-2-3".to_owned();
        let result = |record: ActionRecord| Command::ActionResult {
            decision: id.clone(),
            result: record,
            at_unix_ms: 5,
        };
        let (machine, outcomes) = run(vec![
            apply_runbook("auto"),
            fiber_failed(),
            failover("fiber"),
            // A result before dispatch is refused.
            result(succeeded.clone()),
            Command::Dispatched {
                decision: id.clone(),
                at_unix_ms: 4,
            },
            // A second decision while one is in flight is refused.
            failover("fiber"),
            result(succeeded.clone()),
            // A repeated result is refused.
            result(succeeded),
            Command::Conclude {
                decision: id.clone(),
                verified: true,
                detail: String::new(),
                at_unix_ms: 6,
            },
            // A stale proposal from the old active path is refused.
            failover("fiber"),
        ]);
        let refused: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_err())
            .map(|(n, _)| n + 1)
            .collect();
        assert_eq!(refused, [4, 6, 8, 10], "{outcomes:?}");
        assert_eq!(decision(&machine).stage, Stage::Verified);
        assert_eq!(active(&machine), "lte");
        let kinds: Vec<String> = machine
            .audit_entries(1, 100)
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "runbook.applied",
                "path.state_changed",
                "decision.proposed",
                "decision.dispatched",
                "decision.result",
                "decision.verified",
            ]
        );
    }

    #[test]
    fn a_frozen_service_takes_no_automatic_decision_but_an_operator_switch() {
        let (machine, outcomes) = run(vec![
            apply_runbook("auto"),
            fiber_failed(),
            Command::Freeze {
                service: "dispatch-uplink".into(),
                by: "operator/bob".into(),
                reason: "maintenance".into(),
                at_unix_ms: 3,
            },
            failover("fiber"),
            Command::Decide {
                service: "dispatch-uplink".into(),
                from_path: "fiber".into(),
                to_path: "lte".into(),
                kind: DecisionKind::Manual,
                evidence: vec![],
                operator: "bob".into(),
                reason: "by hand".into(),
                at_unix_ms: 4,
            },
        ]);
        assert!(
            outcomes[3].as_ref().is_err_and(|e| e.contains("frozen")),
            "{outcomes:?}"
        );
        assert!(outcomes[4].is_ok(), "{outcomes:?}");
        let d = decision(&machine);
        assert_eq!(
            (d.kind, d.stage, d.operator.as_str()),
            (DecisionKind::Manual, Stage::Approved, "bob")
        );
    }
}
