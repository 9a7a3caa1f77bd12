//! DESIGN.md §5, rule by rule: each case is a path's thresholds, a series
//! of results per vantage point (with when each agent last reported), and
//! the path state expected from a given state.

use std::time::Duration;

use leitstand_proto::domain::{AgentId, CheckResult, CheckStatus, Identifier, Report};
use tokio::time::Instant;

use super::*;
use crate::runbook::{Activate, Failback, FlapGuard, Mode, Path, Service, Silence, Vantage};

fn id(name: &str) -> Identifier {
    Identifier::new(name).expect("an identifier")
}

fn agent(name: &str) -> AgentId {
    AgentId::new(name).expect("an agent id")
}

fn path(vantage: &[&str], quorum: u32, silence: Silence) -> Path {
    Path {
        name: id("fiber"),
        vantage: vantage
            .iter()
            .map(|a| Vantage {
                agent: agent(a),
                check: id("uplink"),
            })
            .collect(),
        quorum,
        fail_after: 3,
        recover_after: 2,
        stale_after: Duration::from_secs(3),
        silence_means: silence,
        activate: Activate {
            agent: agent("a"),
            action: id("activate-fiber"),
        },
        verify: None,
    }
}

/// One agent's history: results in order (ms apart), and how long before
/// `now` it last reported.
struct Agent<'a> {
    name: &'a str,
    results: &'a [CheckStatus],
    quiet_for: Duration,
}

const OK: CheckStatus = CheckStatus::Ok;
const WARN: CheckStatus = CheckStatus::Warning;
const CRIT: CheckStatus = CheckStatus::Critical;
const UNKN: CheckStatus = CheckStatus::Unknown;

fn fresh<'a>(name: &'a str, results: &'a [CheckStatus]) -> Agent<'a> {
    Agent {
        name,
        results,
        quiet_for: Duration::from_millis(100),
    }
}

fn windows(agents: &[Agent<'_>], now: Instant) -> Windows {
    let mut windows = Windows::default();
    for a in agents {
        for (n, status) in a.results.iter().enumerate() {
            let report = Report {
                seq: n as u64 + 1,
                observed_at_unix_ms: 1_000 + n as i64,
                host: None,
                checks: vec![CheckResult {
                    name: id("uplink"),
                    status: *status,
                    summary: String::new(),
                    observed_at_unix_ms: 1_000 + n as i64,
                    duration: Duration::ZERO,
                    perf: vec![],
                }],
            };
            windows.record(&agent(a.name), &report, now - a.quiet_for);
        }
    }
    windows
}

/// The state `path` moves to from `from`, with every agent as given, for a
/// leader that has led for `led_for`.
#[track_caller]
fn check(
    path: &Path,
    agents: &[Agent<'_>],
    led_for: Duration,
    from: PathState,
    expected: Option<PathState>,
) {
    let now = Instant::now() + Duration::from_secs(3600);
    let windows = windows(agents, now);
    let verdict = super::path(path, &windows, now - led_for, now);
    assert_eq!(
        verdict.next_state(from),
        expected,
        "from {from:?}: failing {}, passing {}, quorum {}",
        verdict.failing,
        verdict.passing,
        verdict.quorum
    );
}

const LONG: Duration = Duration::from_secs(600);

#[test]
fn fail_after_consecutive_critical_results() {
    let p = path(&["a"], 1, Silence::Unknown);
    check(
        &p,
        &[fresh("a", &[CRIT, CRIT])],
        LONG,
        PathState::Healthy,
        None,
    );
    check(
        &p,
        &[fresh("a", &[CRIT, CRIT, CRIT])],
        LONG,
        PathState::Healthy,
        Some(PathState::Failed),
    );
    // An ok in between restarts the count.
    check(
        &p,
        &[fresh("a", &[CRIT, CRIT, OK, CRIT, CRIT])],
        LONG,
        PathState::Healthy,
        None,
    );
}

#[test]
fn recover_after_consecutive_ok_results_warning_counting_as_ok() {
    let p = path(&["a"], 1, Silence::Unknown);
    check(
        &p,
        &[fresh("a", &[CRIT, OK])],
        LONG,
        PathState::Failed,
        None,
    );
    check(
        &p,
        &[fresh("a", &[CRIT, OK, WARN])],
        LONG,
        PathState::Failed,
        Some(PathState::Healthy),
    );
    check(
        &p,
        &[fresh("a", &[OK, OK])],
        LONG,
        PathState::Unknown,
        Some(PathState::Healthy),
    );
}

#[test]
fn undetermined_never_moves_a_path() {
    let p = path(&["a"], 1, Silence::Unknown);
    for from in [PathState::Unknown, PathState::Healthy, PathState::Failed] {
        check(
            &p,
            &[fresh("a", &[UNKN, UNKN, UNKN, UNKN])],
            LONG,
            from,
            None,
        );
        check(&p, &[fresh("a", &[CRIT, CRIT, UNKN])], LONG, from, None);
        check(&p, &[], LONG, from, None);
    }
}

#[test]
fn a_quorum_of_vantage_points_is_needed() {
    let p = path(&["a", "b", "c"], 2, Silence::Unknown);
    let failing = [CRIT, CRIT, CRIT];
    check(
        &p,
        &[fresh("a", &failing), fresh("b", &[OK])],
        LONG,
        PathState::Healthy,
        None,
    );
    check(
        &p,
        &[
            fresh("a", &failing),
            fresh("b", &failing),
            fresh("c", &[OK, OK]),
        ],
        LONG,
        PathState::Healthy,
        Some(PathState::Failed),
    );
}

#[test]
fn a_quorum_reporting_healthy_is_never_failed_away_from() {
    // I5: two pass, two fail, quorum 2: the path stays (or becomes) Healthy.
    let p = path(&["a", "b", "c", "d"], 2, Silence::Unknown);
    let agents = [
        fresh("a", &[CRIT, CRIT, CRIT]),
        fresh("b", &[CRIT, CRIT, CRIT]),
        fresh("c", &[OK, OK]),
        fresh("d", &[OK, OK]),
    ];
    check(&p, &agents, LONG, PathState::Healthy, None);
    check(
        &p,
        &agents,
        LONG,
        PathState::Failed,
        Some(PathState::Healthy),
    );
}

#[test]
fn stale_vantage_points_count_for_nothing_unless_silence_means_failed() {
    let quiet = |results| Agent {
        name: "a",
        results,
        quiet_for: Duration::from_secs(10),
    };
    let unknown = path(&["a"], 1, Silence::Unknown);
    // Its last results were healthy, but it went quiet: no vote either way.
    check(
        &unknown,
        &[quiet(&[OK, OK])],
        LONG,
        PathState::Healthy,
        None,
    );
    check(
        &unknown,
        &[quiet(&[CRIT, CRIT, CRIT])],
        LONG,
        PathState::Healthy,
        None,
    );
    let failed = path(&["a"], 1, Silence::Failed);
    check(
        &failed,
        &[quiet(&[OK, OK])],
        LONG,
        PathState::Healthy,
        Some(PathState::Failed),
    );
    // Never heard from: stale only once the leader has led for stale_after.
    check(
        &failed,
        &[],
        Duration::from_secs(1),
        PathState::Healthy,
        None,
    );
    check(
        &failed,
        &[],
        Duration::from_secs(4),
        PathState::Healthy,
        Some(PathState::Failed),
    );
}

/// A report with one result of the check `uplink`, observed at `observed`.
fn uplink_report(observed: i64, status: CheckStatus) -> Report {
    Report {
        seq: 1,
        observed_at_unix_ms: observed,
        host: None,
        checks: vec![CheckResult {
            name: id("uplink"),
            status,
            summary: String::new(),
            observed_at_unix_ms: observed,
            duration: Duration::ZERO,
            perf: vec![],
        }],
    }
}

#[test]
fn an_agent_clock_stepping_back_does_not_freeze_its_vantage_point() {
    let p = path(&["a"], 1, Silence::Unknown);
    let now = Instant::now();
    let mut windows = Windows::default();
    // Passing with the clock an hour ahead, then the clock steps back two
    // hours and the check fails three times.
    for observed in [3_600_010, 3_600_020] {
        windows.record(&agent("a"), &uplink_report(observed, OK), now);
    }
    for observed in [-3_599_990, -3_599_980, -3_599_970] {
        windows.record(&agent("a"), &uplink_report(observed, CRIT), now);
    }
    let verdict = super::path(&p, &windows, now - LONG, now);
    assert_eq!(
        verdict.next_state(PathState::Healthy),
        Some(PathState::Failed),
        "three critical results after the clock stepped back: {verdict:?}"
    );
}

#[test]
fn a_repeated_result_counts_once() {
    let p = path(&["a"], 1, Silence::Unknown);
    let now = Instant::now();
    let mut windows = Windows::default();
    // Three reports carrying two distinct critical results.
    for observed in [10, 10, 20] {
        windows.record(&agent("a"), &uplink_report(observed, CRIT), now);
    }
    let verdict = super::path(&p, &windows, now - LONG, now);
    assert_eq!(
        verdict.next_state(PathState::Healthy),
        None,
        "two results, fail_after 3"
    );
    windows.record(&agent("a"), &uplink_report(30, CRIT), now);
    let verdict = super::path(&p, &windows, now - LONG, now);
    assert_eq!(
        verdict.next_state(PathState::Healthy),
        Some(PathState::Failed)
    );
    // The evidence is recomputable: it names the results that crossed.
    assert_eq!(verdict.evidence.len(), 1);
    let evidence = &verdict.evidence[0];
    assert_eq!(
        (evidence.status.as_str(), evidence.consecutive),
        ("critical", 3)
    );
    assert!(evidence.consecutive >= p.fail_after);
}

#[test]
fn the_grace_period_after_a_leader_change_waits_for_fresh_reports_or_stale_after() {
    let service = Service {
        name: id("uplink"),
        mode: Mode::Auto,
        failback: Failback::Manual,
        flap_guard: FlapGuard {
            min_interval: Duration::from_secs(60),
            max_per_hour: 3,
        },
        paths: vec![
            path(&["a", "b"], 1, Silence::Unknown),
            path(&["b"], 1, Silence::Unknown),
        ],
    };
    let now = Instant::now() + Duration::from_secs(3600);
    let leader_since = now - Duration::from_secs(1);
    let mut windows = Windows::default();
    assert!(
        !grace_over(&service, &windows, leader_since, now),
        "nobody reported yet"
    );
    let report = Report {
        seq: 1,
        observed_at_unix_ms: 1,
        host: None,
        checks: vec![],
    };
    windows.record(&agent("a"), &report, now - Duration::from_secs(2));
    windows.record(&agent("b"), &report, now);
    assert!(
        !grace_over(&service, &windows, leader_since, now),
        "a reported only before this leader led"
    );
    windows.record(&agent("a"), &report, now);
    assert!(grace_over(&service, &windows, leader_since, now));
    assert!(
        grace_over(
            &service,
            &Windows::default(),
            now - Duration::from_secs(4),
            now
        ),
        "stale_after (3 s) has passed since the leader change"
    );
}

mod choose {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::state::failover::{DecisionKind, PathRecord, ServiceRecord};

    const NOW: i64 = 10_000_000;
    const MIN: i64 = 60_000;

    fn service(failback: Failback, max_per_hour: u32) -> Service {
        let named = |name: &str| Path {
            name: id(name),
            ..path(&["a"], 1, Silence::Unknown)
        };
        Service {
            name: id("uplink"),
            mode: Mode::Auto,
            failback,
            flap_guard: FlapGuard {
                min_interval: Duration::from_secs(60),
                max_per_hour,
            },
            paths: vec![named("fiber"), named("lte"), named("radio")],
        }
    }

    /// A service on `active` with path states (state, since ms ago).
    fn record(
        active: &str,
        states: &[(&str, PathState, i64)],
        switches_ago: &[i64],
    ) -> ServiceRecord {
        ServiceRecord {
            active_path: active.into(),
            paths: states
                .iter()
                .map(|(name, state, ago)| {
                    (
                        (*name).to_owned(),
                        PathRecord {
                            state: *state,
                            since_unix_ms: NOW - ago,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            frozen: None,
            recent_switches_unix_ms: switches_ago.iter().map(|ago| NOW - ago).collect(),
            switched_at_unix_ms: switches_ago.iter().map(|ago| NOW - ago).max(),
        }
    }

    use PathState::{Failed, Healthy, Unknown};

    #[track_caller]
    fn check(
        service: &Service,
        record: &ServiceRecord,
        abandoned: &[&str],
        expected: Action,
        alarm: bool,
    ) {
        let abandoned: HashSet<String> = abandoned.iter().map(|s| (*s).to_owned()).collect();
        let choice = super::super::choose(service, record, &abandoned, NOW);
        assert_eq!(choice.action, expected);
        assert_eq!(choice.no_healthy_path, alarm, "the no-healthy-path alarm");
    }

    fn decide(target: &str, kind: DecisionKind) -> Action {
        Action::Decide {
            target: target.into(),
            kind,
        }
    }

    #[test]
    fn a_failed_active_path_fails_over_to_the_healthy_path_of_highest_priority() {
        let s = service(Failback::Manual, 3);
        let r = record(
            "fiber",
            &[
                ("fiber", Failed, 0),
                ("lte", Healthy, MIN),
                ("radio", Healthy, MIN),
            ],
            &[],
        );
        check(&s, &r, &[], decide("lte", DecisionKind::Failover), false);
        // Not to a path whose activation was just abandoned.
        check(
            &s,
            &r,
            &["lte"],
            decide("radio", DecisionKind::Failover),
            false,
        );
        // A healthy active path: nothing.
        let r = record(
            "fiber",
            &[("fiber", Healthy, 0), ("lte", Healthy, MIN)],
            &[],
        );
        check(&s, &r, &[], Action::None, false);
        // Unknown is not Failed: nothing moves.
        let r = record(
            "fiber",
            &[("fiber", Unknown, 0), ("lte", Healthy, MIN)],
            &[],
        );
        check(&s, &r, &[], Action::None, false);
    }

    #[test]
    fn no_healthy_path_raises_the_alarm_and_switches_nothing() {
        let s = service(Failback::Manual, 3);
        let r = record(
            "fiber",
            &[
                ("fiber", Failed, 0),
                ("lte", Failed, 0),
                ("radio", Unknown, 0),
            ],
            &[],
        );
        check(&s, &r, &[], Action::None, true);
    }

    #[test]
    fn failback_after_the_hold_time_only_when_configured() {
        let after = service(Failback::After(Duration::from_secs(600)), 3);
        let held = record(
            "lte",
            &[("fiber", Healthy, 11 * MIN), ("lte", Healthy, 0)],
            &[30 * MIN],
        );
        check(
            &after,
            &held,
            &[],
            decide("fiber", DecisionKind::Failback),
            false,
        );
        let short = record(
            "lte",
            &[("fiber", Healthy, 5 * MIN), ("lte", Healthy, 0)],
            &[30 * MIN],
        );
        check(&after, &short, &[], Action::None, false);
        let manual = service(Failback::Manual, 3);
        check(&manual, &held, &[], Action::None, false);
        // Never "back" to a lower priority path.
        let r = record(
            "fiber",
            &[("fiber", Healthy, 0), ("lte", Healthy, 60 * MIN)],
            &[],
        );
        check(&after, &r, &[], Action::None, false);
    }

    #[test]
    fn the_flap_guard_waits_out_the_minimum_interval_and_freezes_over_the_hourly_limit() {
        let s = service(Failback::Manual, 3);
        let states = [("fiber", Failed, 0), ("lte", Healthy, MIN)];
        check(
            &s,
            &record("fiber", &states, &[30_000]),
            &[],
            Action::Wait,
            false,
        );
        check(
            &s,
            &record("fiber", &states, &[2 * MIN]),
            &[],
            decide("lte", DecisionKind::Failover),
            false,
        );
        let flapping = record("fiber", &states, &[50 * MIN, 30 * MIN, 2 * MIN]);
        assert!(matches!(
            super::super::choose(&s, &flapping, &HashSet::new(), NOW).action,
            Action::Freeze(reason) if reason.contains("3 automatic switches")
        ));
        // Switches older than an hour do not count.
        let old = record("fiber", &states, &[70 * MIN, 65 * MIN, 2 * MIN]);
        check(&s, &old, &[], decide("lte", DecisionKind::Failover), false);
    }
}
