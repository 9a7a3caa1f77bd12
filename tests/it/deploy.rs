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

/// The three controllers of the example cluster, and agents at a water
/// works, an emergency dispatch centre and an e-government portal; and the
/// lab of deploy/docker (three controllers, two agents).
#[test]
fn cluster_site_and_lab_configurations_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let load_controller = |path: &Path| {
        leitstand_controller::ControllerConfig::load(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let load_agent = |path: &Path| {
        leitstand_agent::AgentConfig::load(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let examples = root.join("examples");
    let cluster: Vec<_> = ["controller.toml", "controller-2.toml", "controller-3.toml"]
        .iter()
        .map(|name| load_controller(&examples.join(name)))
        .collect();
    for (i, node) in cluster.iter().enumerate() {
        assert_eq!(node.node_id.get(), i as u64 + 1);
        assert_eq!(
            node.peers, cluster[0].peers,
            "every member lists the same peers"
        );
        assert_eq!(
            node.peers.get(&node.node_id).map(String::as_str),
            Some(node.listen.to_string().as_str()),
            "node {} listens where the others dial it",
            i + 1
        );
        assert_eq!(node.rbac.admin, cluster[0].rbac.admin);
        assert!(
            node.metrics_listen.is_some(),
            "node {} serves /metrics",
            i + 1
        );
        assert_eq!(
            node.telemetry,
            leitstand_controller::TelemetrySettings::default()
        );
        assert_eq!(
            node.data_dir,
            Path::new("/var/lib/leitstand"),
            "the systemd unit's ReadWritePaths"
        );
    }

    let agents = examples.join("agents");
    let mut ids = Vec::new();
    for (file, id, min_checks) in [
        ("wasserwerk-hengsteysee.toml", "ww-hengsteysee-1", 4),
        ("leitstelle.toml", "leitstelle-1", 6),
        ("egov-portal.toml", "egov-portal-lb-1", 4),
    ] {
        let agent = load_agent(&agents.join(file));
        assert_eq!(agent.id.as_str(), id, "{file}");
        // The loader validated every check and action; count them.
        let text = std::fs::read_to_string(agents.join(file)).expect("read");
        let checks = text.matches("\n[[check]]").count();
        assert!(checks >= min_checks, "{file}: {checks} checks");
        assert_eq!(
            text.matches("\n[[action]]").count(),
            2,
            "{file}: one action per path"
        );
        assert_eq!(
            agent.state_dir,
            Path::new("/var/lib/leitstand-agent"),
            "{file}"
        );
        let controllers: Vec<String> = cluster[0].peers.values().cloned().collect();
        assert_eq!(
            agent.controllers, controllers,
            "{file} reports to the example cluster"
        );
        ids.push(id);
    }
    let listed = std::fs::read_dir(&agents)
        .expect("deploy/examples/agents")
        .count();
    assert_eq!(
        listed,
        ids.len(),
        "every file in deploy/examples/agents is checked"
    );

    let lab = root.join("docker/lab");
    for id in 1..=3 {
        let node = load_controller(&lab.join(format!("controller-{id}.toml")));
        assert_eq!(node.node_id.get(), id);
        assert_eq!(node.peers.len(), 3);
        assert!(node.metrics_listen.is_some());
    }
    for name in ["agent-wasserwerk.toml", "agent-leitstelle.toml"] {
        let agent = load_agent(&lab.join(name));
        assert_eq!(agent.controllers.len(), 3, "{name}");
    }
}

/// `systemd-analyze verify` accepts both units (with ExecStart pointing at
/// the built binary, since verify wants an executable there), and they keep
/// the hardening deploy/README.md promises.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = env!("CARGO_BIN_EXE_leitstand");
    let mut files = Vec::new();
    for (name, data_dir) in [
        ("leitstand-controller.service", "/var/lib/leitstand"),
        ("leitstand-agent.service", "/var/lib/leitstand-agent"),
    ] {
        let text = std::fs::read_to_string(units.join(name))
            .unwrap_or_else(|e| panic!("deploy/systemd/{name}: {e}"));
        for directive in [
            "NoNewPrivileges=yes".to_owned(),
            "ProtectSystem=strict".to_owned(),
            "ProtectHome=yes".to_owned(),
            "PrivateTmp=yes".to_owned(),
            format!("ReadWritePaths={data_dir}"),
            "ExecReload=/bin/kill -HUP $MAINPID".to_owned(),
            "CapabilityBoundingSet=\n".to_owned(),
            "SystemCallFilter=@system-service".to_owned(),
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX".to_owned(),
            "RestartPreventExitStatus=2".to_owned(),
        ] {
            assert!(text.contains(&directive), "{name} lacks {directive:?}");
        }
        let read_write: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ReadWritePaths="))
            .collect();
        assert_eq!(read_write, [format!("ReadWritePaths={data_dir}")], "{name}");
        assert!(
            text.lines().any(|l| l.starts_with("User=leitstand")),
            "{name}: a dedicated user"
        );
        assert!(
            text.lines().any(|l| l.starts_with("Restart=")),
            "{name}: a restart policy"
        );
        let local = text
            .replace("/usr/local/bin/leitstand-agent ", &format!("{binary} "))
            .replace("/usr/local/bin/leitstand ", &format!("{binary} "));
        let path = dir.path().join(name);
        std::fs::write(&path, local).expect("write unit");
        files.push(path);
    }

    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze is not installed: run the install step of .ci/run \
                 (apt-get install systemd, as CI does) and run the tests again"
            )
        });
    let log = dir.path().join("verify.log");
    let mut child = std::process::Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&files)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("verify.err")).expect("log"))
        .spawn()
        .expect("run systemd-analyze");
    let mut status = None;
    crate::support::wait_until(
        "systemd-analyze verify to finish",
        std::time::Duration::from_secs(60),
        || {
            status = child.try_wait().expect("wait");
            status.is_some()
        },
    );
    let output = std::fs::read_to_string(dir.path().join("verify.err")).unwrap_or_default()
        + &std::fs::read_to_string(&log).unwrap_or_default();
    let about_ours: Vec<&str> = output.lines().filter(|l| l.contains("leitstand")).collect();
    assert!(
        status.is_some_and(|s| s.success()) && about_ours.is_empty(),
        "systemd-analyze verify ({status:?}):\n{output}"
    );
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

/// The example runbooks and the example agents agree: every check and
/// action a runbook names on an agent of deploy/examples/agents is in that
/// agent's configuration (the loaders check each file alone).
#[test]
fn example_runbooks_name_the_example_agents_checks_and_actions() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut agents = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(examples.join("agents")).expect("deploy/examples/agents") {
        let path = entry.expect("entry").path();
        let config = leitstand_agent::AgentConfig::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(&path).expect("read");
        agents.insert(config.id.as_str().to_owned(), (path, text));
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(examples.join("runbooks")).expect("deploy/examples/runbooks") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        // `{ agent = "A", check = "C" }` and `{ agent = "A", action = "X" }`.
        for reference in text.split("agent = \"").skip(1) {
            let Some((agent, rest)) = reference.split_once('"') else {
                continue;
            };
            let rest = rest.trim_start_matches([',', ' ']);
            let Some((kind, rest)) = rest.split_once(" = \"") else {
                continue;
            };
            let Some((name, _)) = rest.split_once('"') else {
                continue;
            };
            let Some((agent_file, agent_text)) = agents.get(agent) else {
                continue;
            };
            assert!(
                matches!(kind, "check" | "action")
                    && agent_text.contains(&format!("name = \"{name}\"")),
                "{} names {kind} {name:?} on agent {agent}, which {} does not have",
                path.display(),
                agent_file.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 6,
        "only {checked} references to the example agents"
    );
}
