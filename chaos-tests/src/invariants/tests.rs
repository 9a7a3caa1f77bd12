//! The checker's own tests: a clean history passes, and a history with one
//! violation of each kind is named by the right invariant.

use super::*;
use crate::sandbox::{Liveness, Outage, RunbookShape, SecurityProbe};

const T0: i64 = 1_700_000_000_000;

fn proposed(
    id: &str,
    from: &str,
    to: &str,
    token: (u64, u64),
    at: i64,
    consecutive: u32,
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "service": "uplink", "from_path": from, "to_path": to,
        "kind": "failover", "stage": "proposed", "mode": "auto",
        "fencing_term": token.0, "fencing_index": token.1, "runbook_version": 1,
        "evidence": [
            {"agent": "site-1", "check": from, "path": from, "status": "critical", "observed_at_unix_ms": at - 10, "consecutive": consecutive},
            {"agent": "site-1", "check": to, "path": to, "status": "ok", "observed_at_unix_ms": at - 10, "consecutive": 5},
        ],
        "executor": "site-1", "action": format!("activate-{to}"),
        "proposed_at_unix_ms": at, "updated_at_unix_ms": at, "dispatched_at_unix_ms": null,
        "operator": "", "reason": "", "result": null,
    })
}

fn step(id: &str, stage: &str) -> serde_json::Value {
    serde_json::json!({"decision": id, "service": "uplink", "to_path": "lte", "stage": stage, "fencing_token": "2.20", "detail": {}})
}

fn chain(items: Vec<(&str, serde_json::Value)>) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    for (kind, body) in items {
        let n = out.len() as i64;
        let next = AuditEntry::following(
            out.last(),
            10 + n as u64,
            T0 + n,
            "controller/engine",
            kind,
            &body,
        );
        out.push(next);
    }
    out
}

fn record() -> Record {
    let mut r = Record::default();
    r.runbooks.insert(1, RunbookShape::default().text());
    r.outages.push(Outage {
        path: "fiber".into(),
        from_unix_ms: T0,
        to_unix_ms: None,
    });
    r.liveness.push(Liveness {
        to_path: "lte".into(),
        clock_from_unix_ms: T0,
        why: "fiber broken".into(),
    });
    r
}

fn run(d: &str, token: (u64, u64), at_ms: i64) -> Execution {
    Execution {
        unix_ns: at_ms * 1_000_000,
        agent: "site-1".into(),
        path: "lte".into(),
        decision: d.into(),
        service: "uplink".into(),
        token,
    }
}

fn allowlist() -> BTreeSet<(String, String)> {
    [("site-1", "fiber"), ("site-1", "lte")]
        .iter()
        .map(|(a, p)| (a.to_string(), p.to_string()))
        .collect()
}

fn failed(verdicts: &[Verdict]) -> Vec<&'static str> {
    verdicts.iter().filter(|v| !v.held).map(|v| v.id).collect()
}

fn clean_chain() -> Vec<AuditEntry> {
    chain(vec![
        (
            "decision.proposed",
            proposed("d-1", "fiber", "lte", (2, 20), T0 + 700, 3),
        ),
        ("decision.dispatched", step("d-1", "dispatched")),
        ("decision.result", step("d-1", "succeeded")),
        ("decision.verified", step("d-1", "verified")),
    ])
}

fn history<'a>(
    record: &'a Record,
    audit: Vec<AuditEntry>,
    executions: Vec<Execution>,
) -> History<'a> {
    History {
        audits: [(1, audit.clone()), (2, audit)].into_iter().collect(),
        executions,
        record: Some(record),
        converged: Some(Ok(40)),
        allowlist: allowlist(),
        ..History::default()
    }
}

#[test]
fn a_clean_history_holds_every_invariant() {
    let record = record();
    let verdicts = check(&history(
        &record,
        clean_chain(),
        vec![run("d-1", (2, 20), T0 + 900)],
    ));
    assert_eq!(failed(&verdicts), Vec::<&str>::new(), "{verdicts:#?}");
    assert_eq!(verdicts.len(), 10);
}

#[test]
fn a_lower_token_after_a_higher_one_is_i2_and_i1() {
    let record = record();
    let audit = chain(vec![
        (
            "decision.proposed",
            proposed("d-1", "fiber", "lte", (2, 20), T0 + 700, 3),
        ),
        ("decision.verified", step("d-1", "verified")),
        (
            "decision.proposed",
            proposed("d-2", "fiber", "lte", (1, 9), T0 + 800, 3),
        ),
        ("decision.verified", step("d-2", "verified")),
    ]);
    let verdicts = check(&history(
        &record,
        audit,
        vec![run("d-1", (2, 20), T0 + 900), run("d-2", (1, 9), T0 + 950)],
    ));
    let failed = failed(&verdicts);
    assert!(failed.contains(&"I2"), "{verdicts:#?}");
    assert!(failed.contains(&"I1"), "{verdicts:#?}");
    let i2 = verdicts.iter().find(|v| v.id == "I2").expect("I2");
    assert!(
        i2.violations[0].contains("d-2") && i2.violations[0].contains("1.9"),
        "{i2:?}"
    );
}

#[test]
fn a_decision_run_twice_or_left_in_flight_is_i3() {
    let record = record();
    let twice = check(&history(
        &record,
        clean_chain(),
        vec![run("d-1", (2, 20), T0 + 900), run("d-1", (2, 20), T0 + 990)],
    ));
    assert_eq!(failed(&twice), vec!["I3"], "{twice:#?}");
    let open = chain(vec![
        (
            "decision.proposed",
            proposed("d-1", "fiber", "lte", (2, 20), T0 + 700, 3),
        ),
        ("decision.dispatched", step("d-1", "dispatched")),
    ]);
    let verdicts = check(&history(&record, open, vec![run("d-1", (2, 20), T0 + 900)]));
    assert!(failed(&verdicts).contains(&"I3"), "{verdicts:#?}");
}

#[test]
fn evidence_below_the_threshold_is_i4() {
    let record = record();
    let audit = chain(vec![
        (
            "decision.proposed",
            proposed("d-1", "fiber", "lte", (2, 20), T0 + 700, 2),
        ),
        ("decision.verified", step("d-1", "verified")),
    ]);
    let verdicts = check(&history(
        &record,
        audit,
        vec![run("d-1", (2, 20), T0 + 900)],
    ));
    assert_eq!(failed(&verdicts), vec!["I4"], "{verdicts:#?}");
}

#[test]
fn a_failover_from_a_path_never_broken_is_i5() {
    let mut record = record();
    record.outages.clear();
    record.liveness.clear();
    let verdicts = check(&history(
        &record,
        clean_chain(),
        vec![run("d-1", (2, 20), T0 + 900)],
    ));
    assert_eq!(failed(&verdicts), vec!["I5"], "{verdicts:#?}");
}

#[test]
fn an_edited_chain_or_a_lost_acknowledgement_is_i6() {
    let mut record = record();
    let mut edited = clean_chain();
    edited[1].body_json = edited[1].body_json.replace("dispatched", "succeeded");
    let verdicts = check(&history(
        &record,
        edited,
        vec![run("d-1", (2, 20), T0 + 900)],
    ));
    assert!(failed(&verdicts).contains(&"I6"), "{verdicts:#?}");
    record
        .acknowledged
        .push((9, "operator.switch to fiber".into()));
    let verdicts = check(&history(
        &record,
        clean_chain(),
        vec![run("d-1", (2, 20), T0 + 900)],
    ));
    assert_eq!(failed(&verdicts), vec!["I6"], "{verdicts:#?}");
}

#[test]
fn a_failover_too_late_or_never_is_i7() {
    let record = record();
    let late = check(&history(
        &record,
        clean_chain(),
        vec![run("d-1", (2, 20), T0 + 9_000)],
    ));
    assert_eq!(failed(&late), vec!["I7"], "{late:#?}");
    let never = check(&history(&record, chain(vec![]), vec![]));
    assert_eq!(failed(&never), vec!["I7"], "{never:#?}");
}

#[test]
fn an_accepted_intruder_or_an_action_off_the_allowlist_is_i8() {
    let mut record = record();
    record.security.push(SecurityProbe {
        what: "a revoked agent's report".into(),
        refused: false,
        detail: "accepted at seq 9".into(),
    });
    let verdicts = check(&history(
        &record,
        clean_chain(),
        vec![run("d-1", (2, 20), T0 + 900)],
    ));
    assert_eq!(failed(&verdicts), vec!["I8"], "{verdicts:#?}");
}

#[test]
fn two_leaders_in_one_term_and_diverging_digests_are_named() {
    let record = record();
    let mut h = history(&record, clean_chain(), vec![run("d-1", (2, 20), T0 + 900)]);
    h.claims = vec![(1, 4, "t".into()), (2, 4, "t".into()), (3, 5, "t".into())];
    let sample = |node, digest: &str| Sample {
        unix_ms: T0,
        node,
        term: 5,
        leader: 3,
        confirmed: true,
        applied: 30,
        digest_index: 30,
        digest: digest.into(),
    };
    h.samples = vec![sample(1, "aa"), sample(2, "aa"), sample(3, "bb")];
    let verdicts = check(&h);
    assert_eq!(
        failed(&verdicts),
        vec!["election", "convergence"],
        "{verdicts:#?}"
    );
}
