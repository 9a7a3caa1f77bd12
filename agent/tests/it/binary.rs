//! The lean binary refuses bad configuration with a located error and exit 2.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs the agent, which must exit within 30 s (a bad configuration stops
/// it before it connects anywhere).
fn agent(config: &std::path::Path) -> Output {
    run(&["--config".as_ref(), config.as_os_str()])
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leitstand-agent"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run leitstand-agent");
    for _ in 0..1500 {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        pause();
    }
    let _ = child.kill();
    panic!("leitstand-agent did not exit within 30 s");
}

#[allow(clippy::disallowed_methods)] // the poll interval of the bounded wait above
fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}

fn check(toml: Option<&str>, expected: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    if let Some(toml) = toml {
        std::fs::write(&path, toml).expect("write agent.toml");
    }
    let out = agent(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{toml:?}: {stderr}");
    for needle in expected {
        assert!(
            stderr.contains(needle),
            "{toml:?}: {stderr:?} lacks {needle:?}"
        );
    }
}

#[test]
fn bad_configuration_exits_2_naming_file_line_and_column() {
    check(None, &["cannot read", "agent.toml"]);
    check(
        Some("id = \"a\"\n"),
        &["agent.toml:1:1", "missing field `controllers`"],
    );
    check(
        Some(
            "id = \"a\"\ncontrollers = []\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        ),
        &["agent.toml:2:15", "1 to 16 addresses"],
    );
    check(
        Some(
            "id = \"a\"\ncontrollers = [\"127.0.0.1:7401\"]\ninterval = \"10ms\"\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        ),
        &["agent.toml:3:12", "out of range"],
    );
    check(
        Some(
            "id = \"a\"\ncontrollers = [\"127.0.0.1:7401\"]\nstate_dir = \"s\"\n[[check]]\nname = \"x\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        ),
        &["agent.toml:4:1", "missing field `kind`"],
    );
    check(
        Some(
            "id = \"a\"\ncontrollers = [\"127.0.0.1:7401\"]\nstate_dir = \"s\"\nmetrics_listen = \"0.0.0.0:9465\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        ),
        &["agent.toml:4:18", "must be a loopback address"],
    );
    check(
        Some(
            "id = \"a\"\ncontrollers = [\"127.0.0.1:7401\"]\nconnect_timeout = \"100ms\"\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        ),
        &["agent.toml:3:19", "out of range"],
    );
}

#[test]
fn missing_certificate_files_exit_2_naming_the_file() {
    check(
        Some(
            "id = \"a\"\ncontrollers = [\"127.0.0.1:7401\"]\nstate_dir = \"s\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"b\"\nkey = \"c\"\n",
        ),
        &["pki/ca.pem"],
    );
}

#[test]
fn print_inventory_prints_the_data_inventory() {
    let out = run(&["--print-inventory".as_ref()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("# Data inventory"), "{text}");
    for field in [
        "agent_id",
        "host.filesystems",
        "checks: name, status, summary",
        "never send",
    ] {
        assert!(text.contains(field), "the inventory lists {field:?}");
    }
}

#[test]
fn check_config_validates_configuration_and_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki_dir = dir.path().join("pki");
    leitstand_proto::pki::init(&pki_dir, "stadt.example", false).expect("pki init");
    leitstand_proto::pki::issue(
        &pki_dir,
        &leitstand_proto::pki::IssueRequest {
            kind: leitstand_proto::identity::PeerKind::Agent,
            name: "ww-1".into(),
            dns: vec![],
            ips: vec![],
            validity: leitstand_proto::pki::Validity::days_from_now(1),
            force: false,
        },
    )
    .expect("pki issue");
    let config = dir.path().join("agent.toml");
    let body = "controllers = [\"127.0.0.1:7401\"]\nstate_dir = \"s\"\n\
                [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-ww-1.pem\"\nkey = \"pki/agent-ww-1.key\"\n\
                [[check]]\nname = \"uplink\"\nkind = \"tcp\"\ntarget = \"10.0.0.1:502\"\n\
                [[action]]\nname = \"activate-lte\"\nargv = [\"/usr/local/lib/leitstand/uplink\", \"lte\"]\n";
    std::fs::write(&config, format!("id = \"ww-1\"\n{body}")).expect("write");
    let out = run(&["check-config".as_ref(), config.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 check(s), 1 action(s)"), "{stdout}");

    // A certificate for another agent is a configuration error at `id`.
    std::fs::write(&config, format!("id = \"ww-2\"\n{body}")).expect("write");
    let out = run(&["check-config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("agent.toml:1:6") && stderr.contains("agent/ww-1"),
        "{stderr}"
    );
}

/// DESIGN.md §2: the agent never links the controller, raft or ratatui.
#[test]
fn the_lean_agent_links_no_controller_raft_storage_or_dashboard() {
    let mut child = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "leitstand-agent",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
            "--locked",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo tree");
    let mut waited = 0;
    while child.try_wait().expect("wait").is_none() {
        waited += 1;
        assert!(waited < 3000, "cargo tree did not finish within 60 s");
        pause();
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"leitstand-proto"),
        "the tree was read: {tree}"
    );
    for forbidden in [
        "leitstand-controller",
        "leitstand-tui",
        "leitstand-chaos",
        "raft",
        "raft-proto",
        "redb",
        "ratatui",
        "rcgen",
        "opentelemetry",
        "opentelemetry_sdk",
        "prometheus",
    ] {
        assert!(
            !crates.contains(&forbidden),
            "leitstand-agent links {forbidden}"
        );
    }
}
