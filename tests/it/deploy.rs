//! The example configurations in deploy/ load with the real loaders.

use std::path::Path;

#[test]
fn example_configurations_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let controller = leitstand_controller::ControllerConfig::load(&root.join("controller.toml"))
        .unwrap_or_else(|e| panic!("deploy/examples/controller.toml: {e}"));
    assert_eq!(controller.node_id.get(), 1);
    assert_eq!(controller.peers.len(), 3, "a three-node cluster");
    assert_eq!(
        controller.raft,
        leitstand_controller::RaftSettings::default(),
        "the commented keys are the defaults"
    );
    assert_eq!(controller.rbac.admin, vec!["leitstelle-admin"]);
    let operator = leitstand_tui::OperatorConfig::load(&root.join("operator.toml"))
        .unwrap_or_else(|e| panic!("deploy/examples/operator.toml: {e}"));
    assert_eq!(operator.controllers.len(), 3);
    let agent = leitstand_agent::AgentConfig::load(&root.join("agent.toml"))
        .unwrap_or_else(|e| panic!("deploy/examples/agent.toml: {e}"));
    assert_eq!(agent.id.as_str(), "ww-hengsteysee-1");
    assert_eq!(agent.buffer_reports, 600, "10 minutes at 1 s");
}

#[test]
fn example_runbooks_are_valid() {
    use leitstand_controller::runbook::{Failback, Mode, Runbook};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/runbooks");
    let cases = [
        (
            "wasserwerk-hengsteysee.toml",
            "wasserwerk-scada",
            Mode::Auto,
            ["fiber", "lte"],
        ),
        (
            "leitstelle.toml",
            "leitstelle-uplink",
            Mode::Auto,
            ["fiber", "lte"],
        ),
        (
            "egov-portal.toml",
            "egov-portal",
            Mode::Approve,
            ["rz-nord", "rz-sued"],
        ),
    ];
    for (file, service, mode, paths) in cases {
        let (runbook, _) = Runbook::load(&root.join(file))
            .unwrap_or_else(|e| panic!("deploy/examples/runbooks/{file}: {e}"));
        let found = runbook
            .service(service)
            .unwrap_or_else(|| panic!("{file} declares {service}"));
        assert_eq!(found.mode, mode, "{file}");
        let names: Vec<&str> = found.paths.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, paths, "{file}: the paths in priority order");
    }
    let (portal, _) = Runbook::load(&root.join("egov-portal.toml")).expect("checked above");
    assert!(
        matches!(portal.services[0].failback, Failback::After(_)),
        "the portal goes back after a hold time"
    );

    // What the runbooks name on the example agents, those agents have.
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/agents");
    for (file, agent_file) in [
        ("wasserwerk-hengsteysee.toml", "wasserwerk-hengsteysee.toml"),
        ("leitstelle.toml", "leitstelle.toml"),
        ("egov-portal.toml", "egov-portal.toml"),
    ] {
        let (runbook, _) = Runbook::load(&root.join(file)).expect("checked above");
        let agent = leitstand_agent::AgentConfig::load(&agents.join(agent_file))
            .unwrap_or_else(|e| panic!("deploy/examples/agents/{agent_file}: {e}"));
        let text = std::fs::read_to_string(agents.join(agent_file)).expect("read");
        let (checks, actions) = section_names(&text);
        let references = runbook.references();
        let mut named = 0;
        for vantage in references.checks.iter().filter(|v| v.agent == agent.id) {
            assert!(
                checks.contains(&vantage.check.as_str()),
                "runbooks/{file} names check {} on {}, which agents/{agent_file} lacks",
                vantage.check,
                vantage.agent
            );
            named += 1;
        }
        for activate in references.actions.iter().filter(|a| a.agent == agent.id) {
            assert!(
                actions.contains(&activate.action.as_str()),
                "runbooks/{file} names action {} on {}, which agents/{agent_file} lacks",
                activate.action,
                activate.agent
            );
            named += 1;
        }
        assert!(named >= 4, "runbooks/{file} uses agents/{agent_file}");
    }
}

/// The `name`s of `[[check]]` and of `[[action]]` tables in an agent.toml.
fn section_names(text: &str) -> (Vec<&str>, Vec<&str>) {
    let (mut checks, mut actions) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if let Some(value) = line.strip_prefix("name = ") {
            let name = value.split('"').nth(1).unwrap_or_default();
            match section {
                "[[check]]" => checks.push(name),
                "[[action]]" => actions.push(name),
                _ => {}
            }
        }
    }
    (checks, actions)
}
