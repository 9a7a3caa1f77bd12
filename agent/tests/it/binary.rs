//! The lean binary refuses bad configuration with a located error and exit 2.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs the agent, which must exit within 30 s (a bad configuration stops
/// it before it connects anywhere).
fn agent(config: &std::path::Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leitstand-agent"))
        .arg("--config")
        .arg(config)
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
        &["agent.toml:4:3", "unknown field `check`"],
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
