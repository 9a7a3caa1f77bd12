//! Views on the wire for tests and `leitstand bench dashboard`: a small
//! city (a water works, an emergency dispatch uplink waiting for an
//! approval, an e-government portal; three agents; decisions in several
//! stages; audit entries) and a large synthetic one.

use leitstand_proto::v1;

/// The fixture's "now": 2026-11-23 14:02:11 UTC.
pub const NOW: i64 = 1_795_442_531_000;
const S: i64 = 1000;
const MIN: i64 = 60 * S;
const GIB: u64 = 1 << 30;

fn vantage(
    agent: &str,
    check: &str,
    status: v1::CheckStatus,
    ago: i64,
    stale: bool,
) -> v1::VantageView {
    v1::VantageView {
        agent_id: agent.to_owned(),
        check: check.to_owned(),
        last_status: status as i32,
        last_seen_unix_ms: NOW - ago,
        stale,
    }
}

fn path(
    name: &str,
    state: v1::PathState,
    since: i64,
    vantage: Vec<v1::VantageView>,
) -> v1::PathView {
    v1::PathView {
        name: name.to_owned(),
        state: state as i32,
        since_unix_ms: NOW - since,
        vantage,
    }
}

fn check(name: &str, status: v1::CheckStatus, summary: &str) -> v1::CheckSummary {
    v1::CheckSummary {
        name: name.to_owned(),
        status: status as i32,
        summary: summary.to_owned(),
        observed_at_unix_ms: NOW - 2 * S,
    }
}

fn evidence(agent: &str, check: &str, path: &str, ago: i64, consecutive: u32) -> v1::Evidence {
    v1::Evidence {
        agent_id: agent.to_owned(),
        check: check.to_owned(),
        path: path.to_owned(),
        status: v1::CheckStatus::Critical as i32,
        observed_at_unix_ms: NOW - ago,
        consecutive,
    }
}

#[allow(clippy::too_many_arguments)]
fn decision(
    id: &str,
    service: &str,
    from: &str,
    to: &str,
    stage: v1::DecisionStage,
    mode: v1::ServiceMode,
    ago: i64,
    operator: &str,
    reason: &str,
    evidence: Vec<v1::Evidence>,
) -> v1::DecisionView {
    v1::DecisionView {
        decision_id: id.to_owned(),
        service: service.to_owned(),
        from_path: from.to_owned(),
        to_path: to.to_owned(),
        stage: stage as i32,
        mode: mode as i32,
        fencing_token: Some(v1::FencingToken {
            term: 4,
            index: 1000 + u64::try_from(ago / S).unwrap_or(0) % 997,
        }),
        runbook_version: 3,
        evidence,
        proposed_at_unix_ms: NOW - ago,
        updated_at_unix_ms: NOW - ago + 4 * S,
        operator: operator.to_owned(),
        reason: reason.to_owned(),
    }
}

fn agent(
    id: &str,
    connected: bool,
    seen: i64,
    cpu: f64,
    used_gib: f64,
    checks: Vec<v1::CheckSummary>,
) -> v1::AgentView {
    v1::AgentView {
        agent_id: id.to_owned(),
        version: "0.1.0".to_owned(),
        connected,
        last_seen_unix_ms: NOW - seen,
        host: Some(v1::HostMetricsSummary {
            cpu_utilization: cpu,
            memory_used_bytes: (used_gib * GIB as f64) as u64,
            memory_total_bytes: 8 * GIB,
            load_average_1m: cpu * 4.0,
            uptime_seconds: 86_400 * 12 + 3_600 * 5,
        }),
        checks,
        last_seq: 5_000,
    }
}

/// The cluster: three controllers, node 1 leads in term 4.
pub fn cluster() -> v1::ClusterStatusReply {
    let member = |id: u64, lag: u64, contact: i64| v1::Member {
        node_id: id,
        address: format!("10.20.0.{id}:7401"),
        voter: true,
        match_index: 1234 - lag,
        lag,
        last_contact_ms_ago: contact,
        outgoing_voter: false,
        catching_up: false,
    };
    v1::ClusterStatusReply {
        members: vec![member(1, 0, -1), member(2, 0, 40), member(3, 2, 180)],
        leader_id: 1,
        term: 4,
        commit_index: 1234,
        applied_index: 1234,
        answered_by: 1,
        confirmed_by_quorum: true,
        joint_configuration: false,
        snapshot_index: 1000,
        first_index: 1001,
        state_digest: String::new(),
        digest_applied_index: 0,
        last_index: 1234,
    }
}

/// The small city, as the controller would send it to `role`.
pub fn city(role: v1::Role) -> v1::View {
    use v1::CheckStatus::{Critical, Ok, Unknown, Warning};
    use v1::DecisionStage as D;
    use v1::PathState::{Failed, Healthy};
    use v1::ServiceMode::{Approve, Auto};
    let services = vec![
        v1::ServiceView {
            name: "wasserwerk-hengstey".to_owned(),
            mode: Auto as i32,
            active_path: "fiber".to_owned(),
            paths: vec![
                path(
                    "fiber",
                    Healthy,
                    26 * 60 * MIN,
                    vec![
                        vantage("ww-hengstey-1", "uplink-fiber", Ok, S, false),
                        vantage("rz-nord-1", "ww-via-fiber", Ok, 3 * MIN, true),
                    ],
                ),
                path(
                    "lte",
                    Healthy,
                    3 * 24 * 60 * MIN,
                    vec![vantage("ww-hengstey-1", "uplink-lte", Ok, S, false)],
                ),
            ],
            frozen: false,
            frozen_reason: String::new(),
            no_healthy_path: false,
        },
        v1::ServiceView {
            name: "leitstelle-uplink".to_owned(),
            mode: Approve as i32,
            active_path: "fiber".to_owned(),
            paths: vec![
                path(
                    "fiber",
                    Failed,
                    2 * MIN + 14 * S,
                    vec![
                        vantage("leitstelle-1", "uplink-fiber", Critical, S, false),
                        vantage("ww-hengstey-1", "leitstelle-via-fiber", Critical, S, false),
                    ],
                ),
                path(
                    "lte",
                    Healthy,
                    5 * 60 * MIN,
                    vec![vantage("leitstelle-1", "uplink-lte", Ok, S, false)],
                ),
            ],
            frozen: false,
            frozen_reason: String::new(),
            no_healthy_path: false,
        },
        v1::ServiceView {
            name: "buergerportal".to_owned(),
            mode: Auto as i32,
            active_path: "rz-sued".to_owned(),
            paths: vec![
                path(
                    "rz-nord",
                    Failed,
                    47 * MIN,
                    vec![vantage(
                        "rz-nord-1",
                        "portal-https",
                        Critical,
                        3 * MIN,
                        true,
                    )],
                ),
                path(
                    "rz-sued",
                    Healthy,
                    9 * 60 * MIN,
                    vec![vantage("ww-hengstey-1", "portal-sued-https", Ok, S, false)],
                ),
            ],
            frozen: true,
            frozen_reason: "flap guard: 3 switches within an hour (controller/1)".to_owned(),
            no_healthy_path: false,
        },
    ];
    let agents = vec![
        agent(
            "ww-hengstey-1",
            true,
            S,
            0.12,
            1.5,
            vec![
                check(
                    "modbus-plc",
                    Ok,
                    "TCP OK - 0.004 second response time on 10.20.1.5 port 502",
                ),
                check("uplink-fiber", Ok, "PING OK - rta 1.2 ms"),
                check("uplink-lte", Ok, "PING OK - rta 38 ms"),
                check(
                    "disk-root",
                    Warning,
                    "DISK WARNING - free space: / 1843 MB (18%)",
                ),
            ],
        ),
        agent(
            "leitstelle-1",
            true,
            S,
            0.34,
            3.2,
            vec![
                check(
                    "uplink-fiber",
                    Critical,
                    "PING CRITICAL - Packet loss = 100%",
                ),
                check("uplink-lte", Ok, "PING OK - rta 41 ms"),
                check("sip-trunk", Ok, "SIP OK - 200 OK"),
            ],
        ),
        agent(
            "rz-nord-1",
            false,
            3 * MIN + 5 * S,
            0.91,
            7.1,
            vec![
                check(
                    "portal-https",
                    Critical,
                    "HTTP CRITICAL - connection refused",
                ),
                check("db-replica", Unknown, "no result within the timeout"),
            ],
        ),
    ];
    let decisions = vec![
        decision(
            "d-0037",
            "buergerportal",
            "rz-sued",
            "rz-nord",
            D::Abandoned,
            Auto,
            2 * 24 * 60 * MIN,
            "",
            "the executor did not answer within 30 s",
            vec![evidence(
                "ww-hengstey-1",
                "portal-sued-https",
                "rz-sued",
                2 * 24 * 60 * MIN,
                3,
            )],
        ),
        decision(
            "d-0039",
            "wasserwerk-hengstey",
            "lte",
            "fiber",
            D::Verified,
            Auto,
            26 * 60 * MIN,
            "",
            "failback after 10 min healthy",
            vec![],
        ),
        decision(
            "d-0040",
            "leitstelle-uplink",
            "fiber",
            "lte",
            D::Rejected,
            Approve,
            5 * 60 * MIN,
            "bob",
            "planned fiber maintenance; the carrier confirmed",
            vec![evidence(
                "leitstelle-1",
                "uplink-fiber",
                "fiber",
                5 * 60 * MIN,
                3,
            )],
        ),
        decision(
            "d-0041",
            "buergerportal",
            "rz-nord",
            "rz-sued",
            D::Verified,
            Auto,
            47 * MIN,
            "",
            "",
            vec![evidence(
                "rz-nord-1",
                "portal-https",
                "rz-nord",
                47 * MIN,
                3,
            )],
        ),
        decision(
            "d-0042",
            "leitstelle-uplink",
            "fiber",
            "lte",
            D::Proposed,
            Approve,
            2 * MIN,
            "",
            "",
            vec![
                evidence("leitstelle-1", "uplink-fiber", "fiber", 2 * MIN + S, 3),
                evidence(
                    "ww-hengstey-1",
                    "leitstelle-via-fiber",
                    "fiber",
                    2 * MIN + 2 * S,
                    4,
                ),
            ],
        ),
        decision(
            "d-0043",
            "wasserwerk-hengstey",
            "fiber",
            "lte",
            D::Dispatched,
            Auto,
            10 * S,
            "",
            "",
            vec![evidence(
                "ww-hengstey-1",
                "uplink-fiber",
                "fiber",
                11 * S,
                3,
            )],
        ),
    ];
    v1::View {
        applied_index: 1234,
        generated_at_unix_ms: NOW - S,
        caller_role: role as i32,
        services,
        agents,
        decisions,
        cluster: Some(cluster()),
        runbook_version: 3,
    }
}

/// Changes of CPU and memory, one delta per step, for sparklines.
pub fn metric_deltas(steps: usize) -> Vec<v1::ViewDelta> {
    let base = city(v1::Role::Operator);
    (0..steps)
        .map(|step| {
            let agents = base
                .agents
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut a = a.clone();
                    let wave = ((step * 7 + i * 13) % 20) as f64 / 20.0;
                    if let Some(h) = &mut a.host {
                        h.cpu_utilization = (h.cpu_utilization * 0.5 + wave * 0.5).min(1.0);
                        h.memory_used_bytes =
                            h.memory_used_bytes / 2 + (wave * 4.0 * GIB as f64) as u64;
                    }
                    a.last_seq += step as u64 + 1;
                    a
                })
                .collect();
            v1::ViewDelta {
                applied_index: 1234,
                generated_at_unix_ms: NOW - S,
                agents,
                ..Default::default()
            }
        })
        .collect()
}

/// Audit entries as Operator.Audit sends them.
pub fn audit() -> Vec<v1::AuditEntry> {
    let entries = [
        (
            "operator/alice",
            "runbook.applied",
            r#"{"version":3,"sha256":"5f1c…"}"#,
            3 * 24 * 60 * MIN,
        ),
        (
            "controller/1",
            "decision.proposed",
            r#"{"decision":"d-0040","service":"leitstelle-uplink","from":"fiber","to":"lte"}"#,
            5 * 60 * MIN,
        ),
        (
            "operator/bob",
            "operator.reject",
            r#"{"decision":"d-0040","reason":"planned fiber maintenance; the carrier confirmed"}"#,
            5 * 60 * MIN - 3 * MIN,
        ),
        (
            "controller/1",
            "decision.verified",
            r#"{"decision":"d-0041","service":"buergerportal","path":"rz-sued"}"#,
            47 * MIN - 20 * S,
        ),
        (
            "controller/1",
            "service.frozen",
            r#"{"service":"buergerportal","reason":"flap guard"}"#,
            40 * MIN,
        ),
        (
            "controller/1",
            "decision.proposed",
            r#"{"decision":"d-0042","service":"leitstelle-uplink","from":"fiber","to":"lte"}"#,
            2 * MIN,
        ),
    ];
    let mut previous = "0".repeat(64);
    entries
        .iter()
        .enumerate()
        .map(|(i, (actor, kind, body, ago))| {
            let hash = format!(
                "{:064x}",
                (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
            );
            let entry = v1::AuditEntry {
                index: i as u64 + 1,
                log_index: 1100 + i as u64 * 20,
                at_unix_ms: NOW - ago,
                actor: (*actor).to_owned(),
                kind: (*kind).to_owned(),
                body_json: (*body).to_owned(),
                prev_hash: previous.clone(),
                hash: hash.clone(),
            };
            previous = hash;
            entry
        })
        .collect()
}

/// A large city for the frame-time benchmark: `agents` agents with 8
/// checks each, `services` services with 3 paths of 4 vantage points, a
/// decision per service.
pub fn large(agents: usize, services: usize) -> v1::View {
    use v1::CheckStatus::{Critical, Ok, Warning};
    let agent_id = |i: usize| format!("agent-{i:05}");
    let agents_v: Vec<v1::AgentView> = (0..agents)
        .map(|i| {
            let checks = (0..8)
                .map(|c| {
                    let status = match (i + c) % 29 {
                        0 => Critical,
                        1 => Warning,
                        _ => Ok,
                    };
                    check(
                        &format!("check-{c}"),
                        status,
                        "OK - 0.004 second response time",
                    )
                })
                .collect();
            agent(
                &agent_id(i),
                i % 97 != 0,
                S * (i as i64 % 5 + 1),
                (i % 100) as f64 / 100.0,
                2.0 + (i % 5) as f64,
                checks,
            )
        })
        .collect();
    let services_v = (0..services)
        .map(|s| {
            let paths = ["primary", "secondary", "lte"]
                .iter()
                .enumerate()
                .map(|(p, name)| {
                    let state = if (s + p) % 11 == 0 {
                        v1::PathState::Failed
                    } else {
                        v1::PathState::Healthy
                    };
                    let vantage = (0..4)
                        .map(|v| {
                            vantage(
                                &agent_id((s * 4 + v) % agents.max(1)),
                                &format!("check-{p}"),
                                Ok,
                                S,
                                false,
                            )
                        })
                        .collect();
                    path(name, state, (s as i64 + 1) * MIN, vantage)
                })
                .collect();
            v1::ServiceView {
                name: format!("service-{s:04}"),
                mode: if s % 3 == 0 {
                    v1::ServiceMode::Approve
                } else {
                    v1::ServiceMode::Auto
                } as i32,
                active_path: "primary".to_owned(),
                paths,
                frozen: s % 50 == 0,
                frozen_reason: if s % 50 == 0 {
                    "flap guard".to_owned()
                } else {
                    String::new()
                },
                no_healthy_path: false,
            }
        })
        .collect();
    let decisions = (0..services.min(1000))
        .map(|s| {
            let stage = if s % 7 == 0 {
                v1::DecisionStage::Proposed
            } else {
                v1::DecisionStage::Verified
            };
            decision(
                &format!("d-{s:05}"),
                &format!("service-{s:04}"),
                "primary",
                "secondary",
                stage,
                v1::ServiceMode::Auto,
                (s as i64 + 1) * MIN,
                "",
                "",
                vec![evidence(
                    &agent_id(s % agents.max(1)),
                    "check-0",
                    "primary",
                    (s as i64 + 1) * MIN,
                    3,
                )],
            )
        })
        .collect();
    v1::View {
        applied_index: 100_000,
        generated_at_unix_ms: NOW,
        caller_role: v1::Role::Operator as i32,
        services: services_v,
        agents: agents_v,
        decisions,
        cluster: Some(cluster()),
        runbook_version: 7,
    }
}

/// A delta of the large city: `changed` agents with new metrics.
pub fn large_delta(step: usize, agents: usize, changed: usize) -> v1::ViewDelta {
    let agents_v = (0..changed.min(agents))
        .map(|k| {
            let i = (step * changed + k) % agents.max(1);
            let checks = (0..8)
                .map(|c| check(&format!("check-{c}"), v1::CheckStatus::Ok, "OK"))
                .collect();
            let mut a = agent(
                &format!("agent-{i:05}"),
                true,
                S,
                ((step + i) % 100) as f64 / 100.0,
                2.0 + ((step + i) % 5) as f64,
                checks,
            );
            a.last_seq = 5_000 + step as u64;
            a
        })
        .collect();
    v1::ViewDelta {
        applied_index: 100_000 + step as u64,
        generated_at_unix_ms: NOW + step as i64 * S,
        agents: agents_v,
        ..Default::default()
    }
}
