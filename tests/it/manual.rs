//! Shell completions and man pages, generated from the clap definitions:
//! `leitstand completions SHELL` and `leitstand man [--dir DIR]`.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{leitstand, text, wait_until};

/// What `leitstand args…` wrote and how it ended.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `leitstand args…` to completion (bounded to 60 s) with its output
/// going to files: a completion script is larger than a pipe's buffer, and
/// nothing reads a pipe while the run is awaited.
fn output(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = leitstand()
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn leitstand");
    let mut status = None;
    wait_until(
        &format!("leitstand {args:?} to finish"),
        Duration::from_secs(60),
        || {
            status = child.try_wait().expect("wait for leitstand");
            status.is_some()
        },
    );
    let read = |path: &std::path::Path| text(&std::fs::read(path).expect("read output"));
    Output {
        code: status.and_then(|s| s.code()),
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

#[test]
fn completions_for_every_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = output(&["completions", shell]);
        assert_eq!(
            out.code,
            Some(0),
            "leitstand completions {shell}: {}",
            out.stderr
        );
        let script = out.stdout.clone();
        for subcommand in [
            "dashboard",
            "approve",
            "freeze",
            "runbook",
            "audit",
            "cluster",
            "completions",
            "man",
        ] {
            assert!(
                script.contains(subcommand),
                "the {shell} completions know `{subcommand}`"
            );
        }
    }
    let bash = output(&["completions", "bash"]).stdout;
    assert!(bash.contains("complete -F"), "a bash completion script");
    assert!(
        bash.contains("leitstand__subcmd__cluster__subcmd__status")
            || bash.contains("leitstand__cluster__status"),
        "nested subcommands are completed too"
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = output(&["completions", "tcsh"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing on standard output");
    assert!(
        out.stderr.contains("tcsh"),
        "the error names the value: {}",
        out.stderr
    );
}

#[test]
fn man_writes_a_page_per_subcommand() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pages = dir.path().join("man1");
    let pages_arg = pages.to_str().expect("a UTF-8 temp path");
    let out = output(&["man", "--dir", pages_arg]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let main = std::fs::read_to_string(pages.join("leitstand.1")).expect("leitstand.1");
    assert!(main.contains(".TH leitstand 1"), "a man page title: {main}");
    assert!(main.contains(".SH NAME"), "a NAME section");
    assert!(main.contains("leitstand \\- "), "NAME says what it is");
    assert!(
        main.contains(".SH SUBCOMMANDS"),
        "the subcommands are listed"
    );

    let cluster =
        std::fs::read_to_string(pages.join("leitstand-cluster.1")).expect("leitstand-cluster.1");
    assert!(cluster.contains(".SH NAME"), "{cluster}");
    assert!(
        cluster.contains("leitstand\\-cluster"),
        "the page is named after its path: {cluster}"
    );
    let status = std::fs::read_to_string(pages.join("leitstand-cluster-status.1"))
        .expect("leitstand-cluster-status.1");
    assert!(
        status.contains("leitstand cluster status"),
        "the synopsis gives the words one types: {status}"
    );
    assert!(
        !pages.join("leitstand-help.1").exists(),
        "no page for the help subcommand"
    );
    for page in [
        "leitstand-pki-issue.1",
        "leitstand-completions.1",
        "leitstand-man.1",
    ] {
        assert!(pages.join(page).exists(), "{page} is written");
    }
    let listed = out.stdout.clone();
    assert!(
        listed
            .lines()
            .any(|line| line.ends_with("leitstand-cluster.1")),
        "the files written are listed: {listed}"
    );
}

#[test]
fn man_without_a_directory_prints_leitstand_1() {
    let out = output(&["man"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let page = out.stdout.clone();
    assert!(
        page.starts_with(".ie") || page.contains(".TH leitstand 1"),
        "{page}"
    );
    assert!(page.contains(".SH NAME"), "{page}");
}
