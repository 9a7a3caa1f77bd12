//! `leitstand drill`: the short set of chaos scenarios (real controller and
//! agent processes, fault-injecting proxies) holds every invariant, and a
//! fencing check switched off on purpose is caught as an I2 violation.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::support::{leitstand, pause_between_polls, text};

/// The short set runs about 70 s on an idle 2-core machine.
const SHORT_SET_WITHIN: Duration = Duration::from_secs(480);
const ONE_DRILL_WITHIN: Duration = Duration::from_secs(240);

#[allow(clippy::disallowed_types)]
fn run_drill(args: &[&str], env: &[(&str, &str)], within: Duration) -> Output {
    let mut child = leitstand()
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leitstand drill");
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().expect("wait for the drill").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "leitstand {args:?} did not finish within {within:?}; it wrote:\n{}\n{}",
                text(&output.stdout),
                text(&output.stderr)
            );
        }
        pause_between_polls();
    }
    child.wait_with_output().expect("output of the drill")
}

fn report(path: &Path) -> serde_json::Value {
    let json = std::fs::read_to_string(path.with_extension("json")).expect("the JSON report");
    serde_json::from_str(&json).expect("the JSON report parses")
}

fn verdict<'a>(run: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    run["invariants"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["id"] == id))
        .unwrap_or_else(|| panic!("no verdict {id} in {run}"))
}

#[test]
fn drill_list_names_the_scenarios_and_marks_the_short_set() {
    let output = crate::support::run(&["drill", "list"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed = text(&output.stdout);
    for name in [
        "leader-killed-during-dispatch",
        "leader-isolated",
        "partition-symmetric",
        "partition-asymmetric",
        "agents-cut-from-leader",
        "rolling-restart",
        "all-paths-down",
        "executor-down",
        "vantage-silent",
        "flapping-path",
        "controller-disk-full",
        "revoked-agent-certificate",
        "malformed-message-flood",
        "agent-clock-skew",
        "five-lose-two",
        "follower-needs-snapshot",
        "restored-from-old-backup",
    ] {
        assert!(listed.contains(name), "{name} missing from:\n{listed}");
    }
    assert!(listed.contains("[short]"), "{listed}");
    let unknown = crate::support::run(&["drill", "run", "no-such-drill"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
    assert!(
        text(&unknown.stderr).contains("drill list"),
        "{}",
        text(&unknown.stderr)
    );
}

#[test]
fn the_short_set_of_drills_holds_every_invariant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("short.md");
    let output = run_drill(
        &[
            "drill",
            "run",
            "short",
            "--seed",
            "7",
            "--report",
            path.to_str().expect("utf-8"),
        ],
        &[],
        SHORT_SET_WITHIN,
    );
    let markdown = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        output.status.success(),
        "the short set failed:\n{}\n{markdown}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let report = report(&path);
    let runs = report["runs"].as_array().expect("runs");
    assert!(runs.len() >= 5, "{report}");
    for run in runs {
        assert_eq!(run["outcome"], "passed", "{markdown}");
        let invariants = run["invariants"].as_array().expect("invariants");
        assert_eq!(invariants.len(), 10, "I1–I8, election safety, convergence");
        assert!(invariants.iter().all(|v| v["held"] == true), "{markdown}");
    }
    assert!(markdown.contains("| I7 liveness"), "{markdown}");
    assert!(markdown.contains("### Timeline"), "{markdown}");
}

#[test]
fn a_fencing_check_switched_off_is_caught_as_i2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.md");
    let output = run_drill(
        &[
            "drill",
            "run",
            "restored-from-old-backup",
            "--seed",
            "3",
            "--report",
            path.to_str().expect("utf-8"),
        ],
        &[("LEITSTAND_CHAOS_BREAK_FENCING", "1")],
        ONE_DRILL_WITHIN,
    );
    let markdown = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the drill must fail with fencing off:\n{markdown}\n{}",
        text(&output.stderr)
    );
    let report = report(&path);
    let run = &report["runs"][0];
    assert_eq!(run["outcome"], "failed", "{markdown}");
    let i2 = verdict(run, "I2");
    assert_eq!(i2["held"], false, "{markdown}");
    let evidence = i2["violations"][0].as_str().expect("evidence");
    assert!(
        evidence.contains("site-1") && evidence.contains("higher token"),
        "the violation names the agent and both tokens: {evidence}"
    );
    // Everything else about the run is sound: it is fencing that broke.
    for id in ["I4", "I5", "I6", "election", "convergence"] {
        assert_eq!(verdict(run, id)["held"], true, "{id}:\n{markdown}");
    }
}
