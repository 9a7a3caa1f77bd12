//! `--log-format json`: every line a controller and an agent write is one
//! JSON object, with node and agent ids as fields of their own (not inside
//! the message), so log pipelines can filter on them.

use std::time::Duration;

use crate::metrics::Lab;
use crate::support::Process;

fn json_lines(process: &Process) -> Vec<serde_json::Value> {
    process
        .lines()
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(value.get(key).is_some(), "no {key:?} in {line}");
            }
            value
        })
        .collect()
}

fn must_find<'a>(lines: &'a [serde_json::Value], message: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains(message)))
        .unwrap_or_else(|| panic!("no line with message {message:?} in {lines:#?}"))
}

#[test]
fn json_logs_are_one_object_per_line_with_ids_as_fields() {
    let lab = Lab::new(1, "");
    let controller = lab.start_controller(1, &["--log-format", "json"]);
    let agent = lab.start_agent(&["--log-format", "json"]);
    agent.must_log_n(1, &["connected to controller"], Duration::from_secs(20));
    controller.must_log_n(1, &["agent connected"], Duration::from_secs(20));
    controller.must_log_n(1, &["now leads the cluster"], Duration::from_secs(20));

    let lines = json_lines(&controller);
    let serving = must_find(&lines, "controller serving");
    assert_eq!(serving["node_id"], "1", "{serving}");
    assert_eq!(serving["level"], "INFO");
    let leads = must_find(&lines, "now leads the cluster");
    assert_eq!(leads["node"], "1", "{leads}");
    assert!(leads["term"].as_u64().is_some_and(|t| t >= 1), "{leads}");
    let connected = must_find(&lines, "agent connected");
    assert_eq!(connected["agent"], "leitstelle-1", "{connected}");

    let lines = json_lines(&agent);
    let started = lines
        .iter()
        .find(|l| l["agent"] == "leitstelle-1")
        .unwrap_or_else(|| panic!("no agent line with its id as a field: {lines:#?}"));
    assert_eq!(started["level"], "INFO");
    let welcome = must_find(&lines, "connected to controller");
    assert_eq!(welcome["node_id"], 1, "{welcome}");
}
