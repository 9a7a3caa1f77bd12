//! The command line: subcommands without what they need exit 2 saying what
//! is missing; configuration errors are located.

use crate::support::{free_port, must_succeed, pki, run, text};

#[test]
fn cluster_commands_without_what_they_need_exit_2_saying_what_is_missing() {
    for (args, says) in [
        (&["runbook", "apply", "runbook.toml"][..], "--config"),
        (&["audit", "export", "--format", "md"][..], "--config"),
        (
            &["audit", "verify", "no-such-audit.jsonl"][..],
            "no-such-audit.jsonl",
        ),
    ] {
        let out = run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "leitstand {args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "leitstand {args:?} names {says}: {stderr}"
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

#[test]
fn cluster_commands_locate_mistakes_and_say_what_they_tried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki_dir = dir.path().join("pki");
    pki(&pki_dir, "stadt.example");
    let d = pki_dir.to_str().expect("utf-8 path");
    must_succeed(&[
        "pki", "issue", "--dir", d, "--kind", "operator", "--name", "alice",
    ]);
    let tls = "[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-alice.pem\"\nkey = \"pki/operator-alice.key\"\n";
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write operator.toml");
        path.to_str().expect("utf-8").to_owned()
    };

    let bad = write(
        "bad.toml",
        format!("controllers = [\"127.0.0.1:7401\", \"leitstand-2\"]\n{tls}"),
    );
    let (first, second) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let down = write(
        "down.toml",
        format!("controllers = [\"{first}\", \"{second}\"]\ntimeout = \"5s\"\n{tls}"),
    );
    let cases: &[(&[&str], u8, &str)] = &[
        (&["cluster", "status", "--config", &bad], 2, "bad.toml:1:34"),
        (&["cluster", "status"], 2, "--config"),
        (
            &[
                "cluster",
                "add",
                "--node-id",
                "0",
                "--address",
                "127.0.0.1:7404",
                "--config",
                &down,
            ],
            2,
            "not a node id",
        ),
        (
            &[
                "cluster",
                "add",
                "--node-id",
                "4",
                "--address",
                "nowhere",
                "--config",
                &down,
            ],
            2,
            "not host:port",
        ),
        (
            &["cluster", "status", "--json", "--config", &down],
            1,
            &format!(
                "no controller answered: tried {first} (connection refused), {second} (connection refused)"
            ),
        ),
        (
            &["cluster", "transfer", "--to", "2", "--config", &down],
            1,
            "connection refused",
        ),
    ];
    for (args, code, needle) in cases {
        let out = run(args);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(*code)),
            "leitstand {args:?}: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "leitstand {args:?} says {needle:?}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "leitstand {args:?} printed {:?}",
            text(&out.stdout)
        );
    }
}
