//! `leitstand runbook check|render`: exit codes, the summary, the located
//! mistakes and the document, as a user runs them.

use crate::support::{must_succeed, run, text};

const VALID: &str = r#"[[service]]
name = "dispatch-uplink"
mode = "auto"

[[service.path]]
name = "fiber"
vantage = [{ agent = "leitstelle-1", check = "uplink-fiber" }]
activate = { agent = "leitstelle-1", action = "activate-fiber" }

[[service.path]]
name = "lte"
vantage = [{ agent = "leitstelle-1", check = "uplink-lte" }]
activate = { agent = "leitstelle-1", action = "activate-lte" }
"#;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write runbook");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn check_accepts_a_valid_runbook_with_a_one_line_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(&dir, "runbook.toml", VALID);
    let out = must_succeed(&["runbook", "check", &file]);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("runbook.toml: ok: 1 services, 2 paths, 2 checks and 2 actions"),
        "{stdout}"
    );
    let sha = leitstand_controller::runbook::content_sha256(VALID);
    assert!(stdout.contains(&sha), "names the SHA-256: {stdout}");
}

#[test]
fn check_and_render_locate_every_mistake_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let two_mistakes = VALID
        .replacen("mode = \"auto\"", "mode = \"automatic\"", 1)
        .replacen("check = \"uplink-lte\"", "check = \"uplink lte\"", 1);
    let cases = [
        (
            write(&dir, "bad.toml", &two_mistakes),
            vec![
                "bad.toml:3:8: service dispatch-uplink: mode = \"automatic\" is not a mode",
                "bad.toml:12:46: service dispatch-uplink, path lte: check \"uplink lte\"",
            ],
        ),
        (
            write(&dir, "syntax.toml", "[[service]\nname = \"x\"\n"),
            vec!["syntax.toml:1:"],
        ),
        (
            dir.path()
                .join("missing.toml")
                .to_str()
                .expect("utf-8")
                .to_owned(),
            vec!["cannot read", "missing.toml"],
        ),
    ];
    for (file, needles) in &cases {
        for command in ["check", "render"] {
            let out = run(&["runbook", command, file]);
            let stderr = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "runbook {command} {file}: {stderr}"
            );
            for needle in needles {
                assert!(
                    stderr.contains(needle),
                    "runbook {command} {file} says {needle:?}: {stderr}"
                );
            }
            assert!(
                out.stdout.is_empty(),
                "nothing on stdout: {:?}",
                text(&out.stdout)
            );
        }
    }
}

#[test]
fn render_prints_the_procedures_as_markdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(&dir, "runbook.toml", VALID);
    let out = must_succeed(&["runbook", "render", &file]);
    let document = text(&out.stdout);
    let sha = leitstand_controller::runbook::content_sha256(VALID);
    for needle in [
        "# Runbook (not applied: rendered from a file)",
        &format!("| SHA-256 of the text | `{sha}` |"),
        "## 1. Service `dispatch-uplink`",
        "### 1.2 Path `lte`",
        "leitstand switch dispatch-uplink lte --reason",
    ] {
        assert!(document.contains(needle), "{needle:?} in:\n{document}");
    }
    assert_eq!(
        document,
        text(&must_succeed(&["runbook", "render", &file]).stdout),
        "the same file renders the same document"
    );
}

#[test]
fn the_example_runbooks_pass_the_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/runbooks");
    for name in [
        "wasserwerk-hengsteysee.toml",
        "leitstelle.toml",
        "egov-portal.toml",
    ] {
        let file = root.join(name);
        let out = must_succeed(&["runbook", "check", file.to_str().expect("utf-8")]);
        assert!(text(&out.stdout).contains(": ok: 1 services"), "{name}");
    }
}

/// docs/runbook-reference.md shows each example file as it is, and every
/// TOML block in it passes the check.
#[test]
fn the_reference_shows_the_example_files_and_its_blocks_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("docs/runbook-reference.md"))
        .expect("docs/runbook-reference.md");
    for name in [
        "wasserwerk-hengsteysee.toml",
        "leitstelle.toml",
        "egov-portal.toml",
    ] {
        let text = std::fs::read_to_string(root.join("deploy/examples/runbooks").join(name))
            .expect("example runbook");
        let body = &text[text.find("[[service]]").expect("a service")..];
        assert!(
            reference.contains(body),
            "docs/runbook-reference.md shows deploy/examples/runbooks/{name} as it is"
        );
    }
    let blocks: Vec<&str> = reference
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(blocks.len() >= 4, "the shape and three examples");
    for block in blocks {
        if let Err(e) = leitstand_controller::runbook::Runbook::parse(
            std::path::Path::new("docs/runbook-reference.md"),
            block,
        ) {
            panic!("a block in docs/runbook-reference.md is refused: {e}\n{block}");
        }
    }
}
