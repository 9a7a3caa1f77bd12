//! The command line: every subcommand of DESIGN.md §9 exists; those whose
//! work comes later say so and exit 2; configuration errors are located.

use crate::support::{run, text};

#[test]
fn later_commands_exist_and_say_they_are_not_available_yet() {
    let cases: &[&[&str]] = &[
        &["dashboard", "--config", "operator.toml"],
        &["status", "--json"],
        &["approve", "d-1"],
        &["reject", "d-1", "--reason", "no"],
        &["switch", "svc", "lte", "--reason", "fiber cut"],
        &["freeze", "svc"],
        &["unfreeze", "svc"],
        &["runbook", "check", "runbook.toml"],
        &["runbook", "apply", "runbook.toml"],
        &["runbook", "render", "runbook.toml"],
        &["audit", "export", "--format", "md"],
        &["audit", "verify", "audit.jsonl"],
        &["cluster", "status"],
        &["cluster", "add", "4", "127.0.0.1:7404"],
        &["cluster", "remove", "4"],
        &["cluster", "transfer", "2"],
        &["drill", "list"],
        &["drill", "run", "leader-killed", "--seed", "7"],
    ];
    for args in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "leitstand {args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("not available yet"),
            "leitstand {args:?} says why: {stderr}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["pki", "issue", "--kind", "robot"][..],
        &["controller"][..],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "leitstand {args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn configuration_errors_name_file_line_and_column_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "controller",
            "node_id = 1\nlisten = \"127.0.0.1:7401\"\nlisen = \"x\"\n",
            "controller.toml:3:1",
            "unknown field `lisen`",
        ),
        (
            "controller",
            "node_id = 1\nlisten = \"localhost\"\ndata_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[cluster]\npeers = { 1 = \"127.0.0.1:7401\" }\n",
            "controller.toml:2:10",
            "not an IP address with a port",
        ),
        (
            "agent",
            "id = \"ww 1\"\ncontrollers = [\"127.0.0.1:7401\"]\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
            "agent.toml:1:6",
            "id:",
        ),
        (
            "agent",
            "id = \"ww-1\"\ncontrollers = [\"127.0.0.1:7401\", \"nowhere\"]\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
            "agent.toml:2:34",
            "is not host:port",
        ),
        (
            "agent",
            "id = \"ww-1\"\ncontrollers = [\"127.0.0.1:7401\"]\ninterval = \"soon\"\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
            "agent.toml:3:12",
            "is not a duration",
        ),
    ];
    for (command, toml, location, message) in cases {
        let path = dir.path().join(format!("{command}.toml"));
        std::fs::write(&path, toml).expect("write config");
        let out = run(&[command, "--config", path.to_str().expect("utf-8")]);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command} with {toml:?}: {stderr}"
        );
        assert!(stderr.contains(location), "{stderr:?} names {location}");
        assert!(stderr.contains(message), "{stderr:?} says {message:?}");
    }
}

#[test]
fn missing_certificate_files_are_configuration_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("controller.toml");
    std::fs::write(
        &path,
        "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/c.pem\"\nkey = \"pki/c.key\"\n[cluster]\npeers = { 1 = \"127.0.0.1:7401\" }\n",
    )
    .expect("write config");
    let out = run(&["controller", "--config", path.to_str().expect("utf-8")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pki/ca.pem"),
        "names the missing file: {stderr}"
    );
}
