//! Runbook parsing, validation and rendering, as data: one `check` helper
//! per area, the cases are TOML texts and the mistakes they must produce.
//!
//! The rendered document is pinned in `tests_render.md`; after an intended
//! change, refresh it with
//! `LEITSTAND_BLESS=1 cargo test -p leitstand-controller --lib runbook`
//! and read the diff before committing.

use std::path::Path as FsPath;
use std::time::Duration;

use super::parse::{
    DEFAULT_FAIL_AFTER, DEFAULT_FLAP_GUARD, DEFAULT_RECOVER_AFTER, DEFAULT_STALE_AFTER,
    MAX_REPORTED_MISTAKES,
};
use super::*;

/// A valid runbook; the cases change one line of it at a time, so their
/// expected locations can be read off these line numbers.
const BASE: &str = r#"[[service]]
name = "dispatch-uplink"
mode = "auto"
failback = "manual"
flap_guard = { min_interval = "60s", max_per_hour = 3 }

[[service.path]]
name = "fiber"
vantage = [{ agent = "leitstelle-1", check = "uplink-fiber" },
           { agent = "rz-nord-1", check = "leitstelle-via-fiber" }]
quorum = 1
fail_after = 3
recover_after = 5
stale_after = "3s"
silence_means = "unknown"
activate = { agent = "leitstelle-1", action = "activate-fiber" }
verify = { agent = "leitstelle-1", check = "uplink-fiber" }

[[service.path]]
name = "lte"
vantage = [{ agent = "leitstelle-1", check = "uplink-lte" }]
activate = { agent = "leitstelle-1", action = "activate-lte" }
"#;

/// `BASE` with `from` (which must occur exactly once) replaced by `to`.
fn base_with(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "{from:?} must occur exactly once in BASE"
    );
    BASE.replacen(from, to, 1)
}

/// Parses `text` and compares every mistake with `expected`: (line,
/// column, a fragment of the message), in order. Empty: must be valid.
fn check(text: &str, expected: &[(usize, usize, &str)]) {
    if let Err(why) = compare(text, expected) {
        panic!("{why}");
    }
}

/// Mistakes a case must produce: (line, column, a fragment of the message).
type Expected<'a> = Vec<(usize, usize, &'a str)>;

/// [`check`] for many cases: every case runs, the failures are shown together.
fn check_all(cases: &[(String, Expected<'_>)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(text, expected)| compare(text, expected).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

fn compare(text: &str, expected: &[(usize, usize, &str)]) -> Result<(), String> {
    let result = Runbook::parse(FsPath::new("/etc/leitstand/runbook.toml"), text);
    let mut mistakes: Vec<(usize, usize, String)> = Vec::new();
    if let Err(e) = &result {
        for m in e.mistakes() {
            match m {
                leitstand_proto::Error::Config {
                    path,
                    line,
                    column,
                    message,
                } if path == FsPath::new("/etc/leitstand/runbook.toml") => {
                    mistakes.push((*line, *column, message.clone()));
                }
                other => return Err(format!("a mistake without its location: {other}")),
            }
        }
    }
    let shown = mistakes
        .iter()
        .map(|(l, c, m)| format!("  {l}:{c}: {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    let excerpt: String = text.lines().take(30).collect::<Vec<_>>().join("\n");
    let fits = mistakes.len() == expected.len()
        && mistakes
            .iter()
            .zip(expected)
            .all(|((line, column, message), (l, c, fragment))| {
                (line, column) == (l, c) && message.contains(fragment)
            });
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{excerpt}\n--- expected {expected:?}\n--- got:\n{shown}"
        ))
    }
}

#[test]
fn the_base_runbook_parses_with_its_defaults() {
    let runbook = Runbook::parse(FsPath::new("runbook.toml"), BASE).expect("BASE is valid");
    let service = runbook.service("dispatch-uplink").expect("the service");
    assert_eq!(service.mode, Mode::Auto);
    assert_eq!(service.failback, Failback::Manual);
    assert_eq!(service.flap_guard, DEFAULT_FLAP_GUARD);
    let fiber = service.path("fiber").expect("fiber");
    assert_eq!(fiber.vantage.len(), 2);
    assert_eq!(fiber.quorum, 1);
    assert_eq!((fiber.fail_after, fiber.recover_after), (3, 5));
    assert_eq!(fiber.stale_after, Duration::from_secs(3));
    assert_eq!(
        fiber.verify.as_ref().map(|v| v.check.as_str()),
        Some("uplink-fiber")
    );
    let lte = service.path("lte").expect("lte");
    assert_eq!(lte.quorum, 1, "one vantage point: quorum 1 by default");
    assert_eq!(lte.fail_after, DEFAULT_FAIL_AFTER);
    assert_eq!(lte.recover_after, DEFAULT_RECOVER_AFTER);
    assert_eq!(lte.stale_after, DEFAULT_STALE_AFTER);
    assert_eq!(lte.silence_means, Silence::Unknown);
    assert_eq!(lte.verify, None);
    assert_eq!(lte.activate.action.as_str(), "activate-lte");
    assert_eq!(
        service
            .paths
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["fiber", "lte"],
        "priority order is the order written"
    );
}

#[test]
fn accepted_variants() {
    let cases = [
        base_with("failback = \"manual\"", "failback = { after = \"10m\" }"),
        base_with("failback = \"manual\"\n", ""),
        base_with(
            "flap_guard = { min_interval = \"60s\", max_per_hour = 3 }\n",
            "",
        ),
        base_with(
            "flap_guard = { min_interval = \"60s\", max_per_hour = 3 }",
            "flap_guard = { min_interval = \"0s\" }",
        ),
        base_with("mode = \"auto\"", "mode = \"approve\""),
        base_with("mode = \"auto\"", "mode = \"dry-run\""),
        base_with("silence_means = \"unknown\"", "silence_means = \"failed\""),
        base_with("stale_after = \"3s\"", "stale_after = \"100ms\""),
        base_with("quorum = 1", "quorum = 2"),
        // An executor that is none of the path's vantage agents is fine.
        base_with(
            "action = \"activate-lte\"",
            "action = \"activate-lte\", agent = \"router-1\"",
        )
        .replacen(
            "activate = { agent = \"leitstelle-1\", action = \"activate-lte\", agent",
            "activate = { action = \"activate-lte\", agent",
            1,
        ),
        // The same action name on another agent is another action.
        base_with(
            "activate = { agent = \"leitstelle-1\", action = \"activate-lte\" }",
            "activate = { agent = \"rz-nord-1\", action = \"activate-fiber\" }",
        ),
        // Vantage points written as tables of their own.
        base_with(
            "vantage = [{ agent = \"leitstelle-1\", check = \"uplink-lte\" }]\n",
            "",
        ) + "[[service.path.vantage]]\nagent = \"leitstelle-1\"\ncheck = \"uplink-lte\"\n",
    ];
    let cases: Vec<(String, Expected<'_>)> =
        cases.into_iter().map(|text| (text, Vec::new())).collect();
    check_all(&cases);
}

#[test]
fn mistakes_are_located_and_say_what_to_do() {
    let cases: Vec<(String, Expected<'_>)> = vec![
        // Syntax and schema: the TOML library's message, with a hint.
        (
            base_with("mode = \"auto\"", "mode = \"auto"),
            vec![(3, 13, "invalid basic string")],
        ),
        (
            base_with("quorum = 1", "qourum = 1"),
            vec![(11, 1, "unknown field `qourum`")],
        ),
        (
            base_with("quorum = 1", "quorum = \"1\""),
            vec![(11, 10, "invalid type")],
        ),
        (
            "[service]\nname = \"x\"\n".to_owned(),
            vec![(1, 1, "[[service]]")],
        ),
        (
            "sevice = 1\n".to_owned(),
            vec![(1, 1, "unknown field `sevice`")],
        ),
        // The runbook as a whole.
        ("".to_owned(), vec![(1, 1, "declares no services")]),
        (
            "# only a comment\n".to_owned(),
            vec![(1, 1, "declares no services")],
        ),
        // Identifiers.
        (
            base_with("name = \"dispatch-uplink\"", "name = \"dispatch uplink\""),
            vec![(2, 8, "service name \"dispatch uplink\": ' ' is not allowed")],
        ),
        (
            base_with("name = \"fiber\"", "name = \"\""),
            vec![(8, 8, "path name \"\": must be 1 to 64 bytes")],
        ),
        (
            base_with("check = \"uplink-lte\"", "check = \"uplink/lte\""),
            vec![(21, 46, "check \"uplink/lte\": '/' is not allowed")],
        ),
        (
            base_with("{ agent = \"rz-nord-1\"", "{ agent = \"rz nord 1\""),
            vec![(10, 22, "agent \"rz nord 1\" is not an agent id")],
        ),
        (
            base_with("action = \"activate-lte\"", "action = \"activate lte\""),
            vec![(22, 47, "activate action \"activate lte\"")],
        ),
        // Missing keys, located at their table.
        (
            base_with("mode = \"auto\"\n", ""),
            vec![(
                1,
                1,
                "mode is missing; write mode = \"auto\", \"approve\" or \"dry-run\"",
            )],
        ),
        (
            base_with("name = \"dispatch-uplink\"\n", ""),
            vec![(1, 1, "this [[service]] has no name")],
        ),
        (
            base_with("name = \"lte\"\n", ""),
            vec![(19, 1, "this [[service.path]] has no name")],
        ),
        (
            base_with(
                "vantage = [{ agent = \"leitstelle-1\", check = \"uplink-lte\" }]\n",
                "",
            ),
            vec![(19, 1, "path lte: vantage is missing")],
        ),
        (
            base_with(
                "activate = { agent = \"leitstelle-1\", action = \"activate-lte\" }\n",
                "",
            ),
            vec![(19, 1, "path lte: activate is missing")],
        ),
        (
            base_with(
                "activate = { agent = \"leitstelle-1\", action = \"activate-lte\" }",
                "activate = { agent = \"leitstelle-1\" }",
            ),
            vec![(22, 12, "activate has no action")],
        ),
        (
            base_with(
                "verify = { agent = \"leitstelle-1\", check = \"uplink-fiber\" }",
                "verify = { check = \"uplink-fiber\" }",
            ),
            vec![(17, 10, "path fiber: verify: agent is missing")],
        ),
        (
            base_with("quorum = 1\n", ""),
            vec![(
                7,
                1,
                "quorum is missing; with 2 vantage points say how many must agree: 1 (any one decides) to 2 (all must agree)",
            )],
        ),
        // Words.
        (
            base_with("mode = \"auto\"", "mode = \"automatic\""),
            vec![(3, 8, "mode = \"automatic\" is not a mode")],
        ),
        (
            base_with("silence_means = \"unknown\"", "silence_means = \"ok\""),
            vec![(15, 17, "silence_means = \"ok\"; write \"unknown\"")],
        ),
        (
            base_with("failback = \"manual\"", "failback = \"auto\""),
            vec![(4, 12, "failback must be \"manual\" or { after = \"10m\" }")],
        ),
        (
            base_with("failback = \"manual\"", "failback = { after = 10 }"),
            vec![(4, 12, "failback must be")],
        ),
        (
            base_with("failback = \"manual\"", "failback = { afterr = \"10m\" }"),
            vec![(4, 12, "\"afterr\" is not a key of failback")],
        ),
        // Durations and their bounds.
        (
            base_with("stale_after = \"3s\"", "stale_after = \"soon\""),
            vec![(14, 15, "stale_after = \"soon\" is not a duration")],
        ),
        (
            base_with("stale_after = \"3s\"", "stale_after = \"50ms\""),
            vec![(
                14,
                15,
                "stale_after = \"50ms\" is out of range; allowed is 100ms to 1day",
            )],
        ),
        (
            base_with("failback = \"manual\"", "failback = { after = \"8d\" }"),
            vec![(
                4,
                12,
                "failback.after = \"8d\" is out of range; allowed is 1s to 7days",
            )],
        ),
        (
            base_with("failback = \"manual\"", "failback = { after = \"500ms\" }"),
            vec![(4, 12, "out of range")],
        ),
        (
            base_with("min_interval = \"60s\"", "min_interval = \"2d\""),
            vec![(5, 31, "flap_guard.min_interval = \"2d\" is out of range")],
        ),
        // Counts and their bounds.
        (
            base_with("max_per_hour = 3", "max_per_hour = 0"),
            vec![(
                5,
                53,
                "flap_guard.max_per_hour = 0 is out of range; allowed is 1 to 60",
            )],
        ),
        (
            base_with("max_per_hour = 3", "max_per_hour = 61"),
            vec![(5, 53, "allowed is 1 to 60")],
        ),
        (
            base_with("quorum = 1", "quorum = 3"),
            vec![(
                11,
                10,
                "quorum = 3 is out of range; allowed is 1 to 2 (1 (any one decides) to 2 (all must agree)",
            )],
        ),
        (
            base_with("quorum = 1", "quorum = 0"),
            vec![(11, 10, "quorum = 0 is out of range")],
        ),
        (
            base_with("quorum = 1", "quorum = -1"),
            vec![(11, 10, "quorum = -1 is out of range")],
        ),
        (
            base_with("fail_after = 3", "fail_after = 0"),
            vec![(
                12,
                14,
                "fail_after = 0 is out of range; allowed is 1 to 100",
            )],
        ),
        (
            base_with("recover_after = 5", "recover_after = 101"),
            vec![(
                13,
                17,
                "recover_after = 101 is out of range; allowed is 1 to 100",
            )],
        ),
        (
            base_with("fail_after = 3", "fail_after = 5000000000"),
            vec![(12, 14, "fail_after = 5000000000 is out of range")],
        ),
        // Vantage lists.
        (
            base_with(
                "vantage = [{ agent = \"leitstelle-1\", check = \"uplink-lte\" }]",
                "vantage = []",
            ),
            vec![(21, 11, "vantage lists 0 points; list 1 to 32")],
        ),
        (
            base_with(
                "{ agent = \"rz-nord-1\", check = \"leitstelle-via-fiber\" }",
                "{ agent = \"leitstelle-1\", check = \"uplink-fiber\" }",
            ),
            vec![(
                10,
                12,
                "check uplink-fiber on agent leitstelle-1 is listed twice (first at line 9, column 12)",
            )],
        ),
        (
            base_with(
                "vantage = [{ agent = \"leitstelle-1\", check = \"uplink-lte\" }]",
                "vantage = [{ agent = \"leitstelle-1\", check = \"uplink-lte\", via = \"x\" }]",
            ),
            vec![(21, 60, "unknown field `via`, expected `agent` or `check`")],
        ),
        // Names within a runbook and a service.
        (
            base_with("name = \"lte\"", "name = \"fiber\""),
            vec![(
                20,
                8,
                "path \"fiber\" is declared twice (first at line 8, column 8)",
            )],
        ),
        (
            format!("{BASE}\n{BASE}"),
            vec![(
                25,
                8,
                "service \"dispatch-uplink\" is declared twice (first at line 2, column 8)",
            )],
        ),
        (
            base_with("action = \"activate-lte\"", "action = \"activate-fiber\""),
            vec![(
                22,
                12,
                "action activate-fiber on agent leitstelle-1 already activates the path at line 16, column 12",
            )],
        ),
        // Path counts.
        (
            BASE.split("\n[[service.path]]\nname = \"lte\"")
                .next()
                .unwrap_or_default()
                .to_owned(),
            vec![(
                1,
                1,
                "service dispatch-uplink has 1 path(s); a service needs at least 2",
            )],
        ),
        (
            format!("{BASE}{}", extra_paths(15)),
            vec![(94, 1, "has 17 paths; at most 16")],
        ),
        // Several mistakes at once, in the order of the text.
        (
            base_with("mode = \"auto\"", "mode = \"automatic\"")
                .replacen("fail_after = 3", "fail_after = 0", 1)
                .replacen("name = \"lte\"", "name = \"l t e\"", 1),
            vec![
                (3, 8, "not a mode"),
                (12, 14, "fail_after = 0"),
                (20, 8, "path name \"l t e\""),
            ],
        ),
    ];
    check_all(&cases);
}

/// `n` more valid paths for BASE's service, 5 lines each.
fn extra_paths(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "\n[[service.path]]\nname = \"extra-{i}\"\nvantage = [{{ agent = \"a-{i}\", check = \"c\" }}]\nactivate = {{ agent = \"a-{i}\", action = \"go\" }}\n"
            )
        })
        .collect()
}

#[test]
fn too_many_mistakes_are_cut_short_with_a_note() {
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!(
            "[[service]]\nname = \"s{i}\"\nmode = \"sometimes\"\n[[service.path]]\nname = \"a\"\nvantage = [{{ agent = \"x\", check = \"c\" }}]\nactivate = {{ agent = \"x\", action = \"a\" }}\n[[service.path]]\nname = \"b\"\nvantage = [{{ agent = \"x\", check = \"c\" }}]\nactivate = {{ agent = \"x\", action = \"b\" }}\n"
        ));
    }
    let error = Runbook::parse(FsPath::new("r.toml"), &text).expect_err("30 bad modes");
    let mistakes: Vec<String> = error.mistakes().map(ToString::to_string).collect();
    assert_eq!(mistakes.len(), MAX_REPORTED_MISTAKES + 1);
    assert!(
        mistakes[0].starts_with("r.toml:3:8: service s0: mode"),
        "{}",
        mistakes[0]
    );
    assert!(
        mistakes[MAX_REPORTED_MISTAKES].contains("more than 20 mistakes"),
        "{mistakes:?}"
    );
    let shown = error.to_string();
    assert_eq!(shown.lines().count(), MAX_REPORTED_MISTAKES + 1, "{shown}");
}

#[test]
fn limits_of_the_contract() {
    let big = format!("{BASE}#{}\n", "x".repeat(MAX_RUNBOOK_BYTES));
    check(&big, &[(1, 1, "a runbook is at most 1048576 bytes")]);

    let mut many = String::new();
    for i in 0..=MAX_SERVICES {
        many.push_str(&BASE.replacen("dispatch-uplink", &format!("s{i}"), 1));
    }
    let lines_per_service = BASE.lines().count();
    check(
        &many,
        &[(
            MAX_SERVICES * lines_per_service + 1,
            1,
            "declares 1001 services; at most 1000",
        )],
    );

    let vantage: Vec<String> = (0..=MAX_VANTAGE)
        .map(|i| format!("{{ agent = \"a{i}\", check = \"c\" }}"))
        .collect();
    let text = base_with(
        "vantage = [{ agent = \"leitstelle-1\", check = \"uplink-lte\" }]",
        &format!("vantage = [{}]", vantage.join(", ")),
    );
    check(&text, &[(21, 11, "vantage lists 33 points; list 1 to 32")]);
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runbook.toml");
    std::fs::write(&path, BASE).expect("write");
    let (runbook, text) = Runbook::load(&path).expect("valid");
    assert_eq!(text, BASE);
    assert_eq!(runbook.services.len(), 1);

    let missing = dir.path().join("nope.toml");
    match Runbook::load(&missing) {
        Err(RunbookError::Read(e)) => {
            assert!(e.to_string().contains("nope.toml"), "{e}");
        }
        other => panic!("a missing file is a read error, got {other:?}"),
    }

    std::fs::write(&path, base_with("quorum = 1", "quorum = 9")).expect("write");
    let error = Runbook::load(&path).expect_err("quorum 9 of 2");
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{}:11:10: ", path.display())),
        "{shown}"
    );
}

#[test]
fn references_list_every_check_and_action() {
    let runbook = Runbook::parse(FsPath::new("r.toml"), BASE).expect("valid");
    let references = runbook.references();
    let checks: Vec<String> = references
        .checks
        .iter()
        .map(|v| format!("{}/{}", v.agent, v.check))
        .collect();
    assert_eq!(
        checks,
        [
            "leitstelle-1/uplink-fiber",
            "leitstelle-1/uplink-lte",
            "rz-nord-1/leitstelle-via-fiber"
        ]
    );
    assert_eq!(references.actions.len(), 2);
}

/// The document for a runbook with every variant in it: all modes, both
/// failbacks, both silences, with and without verify, one to three
/// vantage points.
const RENDERED: &str = r#"[[service]]
name = "dispatch-uplink"
mode = "approve"

[[service.path]]
name = "fiber"
vantage = [{ agent = "leitstelle-1", check = "uplink-fiber" },
           { agent = "rz-nord-1", check = "leitstelle-via-fiber" },
           { agent = "rz-sued-1", check = "leitstelle-via-fiber" }]
quorum = 2
fail_after = 3
recover_after = 5
silence_means = "unknown"
activate = { agent = "leitstelle-1", action = "activate-fiber" }
verify = { agent = "leitstelle-1", check = "uplink-fiber" }

[[service.path]]
name = "lte"
vantage = [{ agent = "leitstelle-1", check = "uplink-lte" }]
fail_after = 1
recover_after = 1
stale_after = "1500ms"
silence_means = "failed"
activate = { agent = "leitstelle-1", action = "activate-lte" }

[[service]]
name = "buergerportal"
mode = "auto"
failback = { after = "1h30m" }
flap_guard = { min_interval = "0s", max_per_hour = 1 }

[[service.path]]
name = "primary-site"
vantage = [{ agent = "rz-nord-1", check = "portal-https" },
           { agent = "rz-sued-1", check = "portal-https" }]
quorum = 2
activate = { agent = "lb-1", action = "route-primary" }

[[service.path]]
name = "standby-site"
vantage = [{ agent = "rz-nord-1", check = "standby-https" },
           { agent = "rz-sued-1", check = "standby-https" }]
quorum = 1
activate = { agent = "lb-1", action = "route-standby" }
verify = { agent = "rz-sued-1", check = "portal-https" }

[[service]]
name = "ww-telemetry"
mode = "dry-run"
failback = { after = "10m" }

[[service.path]]
name = "fiber"
vantage = [{ agent = "ww-hengsteysee-1", check = "scada-fiber" }]
activate = { agent = "ww-hengsteysee-1", action = "uplink-fiber" }

[[service.path]]
name = "radio"
vantage = [{ agent = "ww-hengsteysee-1", check = "scada-radio" }]
activate = { agent = "ww-hengsteysee-1", action = "uplink-radio" }
"#;

#[test]
fn render_matches_the_pinned_document() {
    let runbook = Runbook::parse(FsPath::new("r.toml"), RENDERED).expect("valid");
    let sha = content_sha256(RENDERED);
    let document = render(&runbook, Some(7), &sha);
    assert_eq!(document, render(&runbook, Some(7), &sha), "deterministic");
    let pinned =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runbook/tests_render.md");
    if std::env::var_os("LEITSTAND_BLESS").is_some() {
        std::fs::write(&pinned, &document).expect("write the pinned document");
        return;
    }
    let expected = std::fs::read_to_string(&pinned).unwrap_or_default();
    if document != expected {
        let first = document
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| document.lines().count().min(expected.lines().count()));
        panic!(
            "the rendered runbook differs from {} from line {}:\n  now:    {:?}\n  pinned: {:?}\n\
             If the change is intended: LEITSTAND_BLESS=1 cargo test -p leitstand-controller --lib runbook",
            pinned.display(),
            first + 1,
            document.lines().nth(first),
            expected.lines().nth(first)
        );
    }
}

#[test]
fn render_says_the_essentials_in_words() {
    let runbook = Runbook::parse(FsPath::new("r.toml"), RENDERED).expect("valid");
    let document = render(&runbook, None, "abc");
    for needle in [
        "# Runbook (not applied: rendered from a file)",
        "| SHA-256 of the text | `abc` |",
        "**Failed** after 3 consecutive critical results at 2 or more of the 3 vantage points.",
        "**Healthy** after 5 consecutive ok results at 2 or more of the 3 vantage points",
        "**Failed** after 1 critical result at its vantage point.",
        "has sent nothing for 1 second 500 milliseconds is stale and counts as failing",
        "has sent nothing for 3 seconds is stale and counts neither way",
        "at both vantage points",
        "at any 1 of the 2 vantage points",
        "Failback: **after 1 hour 30 minutes**",
        "Failback: **manual**",
        "no minimum time between two automatic switches; at most 1 automatic switch within one hour; when one more is due, the service freezes instead",
        "no automatic switch sooner than 1 minute after the previous one; at most 3 automatic switches",
        "**Note:** while `ww-hengsteysee-1` is silent, too few vantage points are left for the quorum",
        "**Note:** the silence of `leitstelle-1` alone makes this path Failed.",
        "**Note:** while any one of `rz-nord-1`, `rz-sued-1` is silent",
        "**approve**: the controller proposes each switch",
        "**dry-run**: the controller records",
        "agent `lb-1` runs its action `route-standby`",
        "check `uplink-fiber` on agent `leitstelle-1` reporting ok",
        "the action's own success (no verify check)",
        "leitstand switch dispatch-uplink lte --reason \"…\" --config operator.toml",
        "leitstand unfreeze ww-telemetry --config operator.toml",
        "1. `dispatch-uplink` (mode approve): `fiber` → `lte`",
    ] {
        assert!(
            document.contains(needle),
            "{needle:?} missing in:\n{document}"
        );
    }
}
