//! `leitstand drill`: the short set of chaos scenarios (real controller and
//! agent processes, fault-injecting proxies) holds every invariant, and a
//! fencing check switched off on purpose is caught as an I2 violation; the
//! network scenarios hold in the root mode too (`--network netns`: network
//! namespaces, iptables, tc), which leaves nothing behind.

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
        "lossy-links",
    ] {
        assert!(listed.contains(name), "{name} missing from:\n{listed}");
    }
    assert!(listed.contains("[short]"), "{listed}");
    assert!(listed.contains("lossy-links [netns]"), "{listed}");
    // Named on its own, a netns-only scenario without --network netns is a
    // usage error that says how to run it.
    let proxy = crate::support::run(&["drill", "run", "lossy-links"]);
    assert_eq!(proxy.status.code(), Some(2), "{}", text(&proxy.stderr));
    assert!(
        text(&proxy.stderr).contains("--network netns"),
        "{}",
        text(&proxy.stderr)
    );
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

/// Set (to anything but empty) to skip the netns test knowingly on a
/// machine that cannot run it (not root, no iproute2 or iptables). Unset,
/// such a machine fails the test: CI runs as root with both installed.
const SKIP_NETNS: &str = "LEITSTAND_TEST_SKIP_NETNS";
/// Three drills of 6–12 s each, plus the sandboxes' start. The other
/// network drills (partition-asymmetric, agents-cut-from-leader) run in the
/// documented full set in netns mode (docs/drills.md), to keep CI short.
const NETNS_WITHIN: Duration = Duration::from_secs(240);

#[allow(clippy::print_stderr)] // the one line that says the test skipped, and why
fn netns_opted_out() -> bool {
    match std::env::var(SKIP_NETNS) {
        Ok(v) if !v.is_empty() => {
            eprintln!("netns drills SKIPPED: {SKIP_NETNS}={v} is set");
            true
        }
        _ => false,
    }
}

fn ip(args: &[&str]) -> Output {
    std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|child| child.wait_with_output())
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e} (apt-get install iproute2)"))
}

/// Names of the netns mode (`ls-<pid>-…`) whose process is gone: leftovers.
fn dead_runs_names() -> Vec<String> {
    let namespaces = text(&ip(&["netns", "list"]).stdout);
    let links = text(&ip(&["-o", "link", "show"]).stdout);
    namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .chain(
            links
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n)),
        )
        .filter(|name| {
            name.strip_prefix("ls-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_owned)
        .collect()
}

/// A pid no process has now: that of a child that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait for true");
    pid
}

#[test]
fn network_drills_hold_in_netns_mode_and_leave_nothing_behind() {
    if netns_opted_out() {
        return;
    }
    // A dead run's leftovers: the next run removes them before it builds.
    let dead = dead_pid();
    let (stale_ns, stale_bridge) = (format!("ls-{dead}-c1"), format!("ls-{dead}-br"));
    let made = ip(&["netns", "add", &stale_ns]);
    assert!(
        made.status.success(),
        "the netns drills need root and iproute2 (set {SKIP_NETNS}=1 to skip knowingly): ip netns add: {}",
        text(&made.stderr)
    );
    let made = ip(&["link", "add", &stale_bridge, "type", "bridge"]);
    assert!(made.status.success(), "{}", text(&made.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("netns.md");
    let output = run_drill(
        &[
            "drill",
            "run",
            "leader-isolated,partition-symmetric,lossy-links",
            "--network",
            "netns",
            "--seed",
            "11",
            "--report",
            path.to_str().expect("utf-8"),
        ],
        &[],
        NETNS_WITHIN,
    );
    let markdown = std::fs::read_to_string(&path).unwrap_or_default();
    assert_ne!(
        output.status.code(),
        Some(2),
        "the netns mode cannot run here (set {SKIP_NETNS}=1 to skip knowingly):\n{}",
        text(&output.stderr)
    );
    assert!(
        output.status.success(),
        "a network drill failed in netns mode:\n{}\n{markdown}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let report = report(&path);
    assert_eq!(report["network"], "netns", "{report}");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{markdown}");
    for run in runs {
        assert_eq!(run["outcome"], "passed", "{markdown}");
        let invariants = run["invariants"].as_array().expect("invariants");
        assert_eq!(invariants.len(), 10, "I1–I8, election safety, convergence");
        assert!(invariants.iter().all(|v| v["held"] == true), "{markdown}");
    }
    // The loss was real: packets counted by the loss rules.
    let lossy = &runs[2]["expectations"];
    assert!(
        lossy.as_array().is_some_and(|all| all
            .iter()
            .any(|e| e["what"] == "the links really lost packets" && e["held"] == true)),
        "{markdown}"
    );
    assert!(
        markdown.contains("network netns") && markdown.contains("namespaces ls-"),
        "{markdown}"
    );
    let left = dead_runs_names();
    assert!(
        left.is_empty(),
        "names of dead runs remain (the stale ones were {stale_ns}, {stale_bridge}): {left:?}"
    );
}

#[test]
fn an_interrupted_netns_drill_removes_its_namespaces() {
    if netns_opted_out() {
        return;
    }
    let mut child = leitstand()
        .args(["drill", "run", "lossy-links", "--network", "netns"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leitstand drill");
    let pid = child.id();
    let prefix = format!("ls-{pid}-");
    crate::support::wait_until(
        "the drill's namespaces (root and iproute2 needed; set LEITSTAND_TEST_SKIP_NETNS=1 to skip knowingly)",
        Duration::from_secs(60),
        || {
            assert!(
                child.try_wait().expect("wait").is_none(),
                "the drill ended before it built its namespaces"
            );
            text(&ip(&["netns", "list"]).stdout)
                .matches(&prefix)
                .count()
                >= 5
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the drill");
    crate::support::wait_until(
        "the drill to exit after SIGTERM",
        Duration::from_secs(30),
        || child.try_wait().expect("wait").is_some(),
    );
    let output = child.wait_with_output().expect("output");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    // The failed run's report (on standard output) says why it stopped.
    assert!(
        text(&output.stdout).contains("interrupted (SIGTERM)"),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let namespaces = text(&ip(&["netns", "list"]).stdout);
    let links = text(&ip(&["-o", "link", "show"]).stdout);
    assert!(
        !namespaces.contains(&prefix) && !links.contains(&prefix),
        "left behind:\n{namespaces}\n{links}"
    );
}

#[test]
fn netns_mode_without_root_exits_2_and_says_why() {
    use std::os::unix::fs::PermissionsExt;
    // As root, run a copy (readable by everyone, wherever the checkout
    // lives) as nobody through setpriv; otherwise this test is not root.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.path().join("leitstand");
    std::fs::copy(env!("CARGO_BIN_EXE_leitstand"), &copy).expect("copy the binary");
    let root = std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    let mut command = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy);
        c
    } else {
        std::process::Command::new(&copy)
    };
    let output = command
        .args(["drill", "run", "leader-isolated", "--network", "netns"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|child| child.wait_with_output())
        .expect("run the drill as an unprivileged user (setpriv from util-linux)");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--network netns needs root") && stderr.contains("--network proxy"),
        "{stderr}"
    );
}
