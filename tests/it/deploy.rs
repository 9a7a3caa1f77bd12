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
