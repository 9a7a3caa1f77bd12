//! The failover engine end to end: three controller processes, a real
//! agent process whose checks watch two local endpoints standing in for a
//! fiber uplink and an LTE backup (the test breaks one by closing it), and
//! actions that append to a journal. What the executor ran is read from
//! the journal; what was decided, from the audit export.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use leitstand_tui::{OperatorClient, OperatorConfig};

use crate::support::{Process, free_port, must_succeed, run, site_pki, text, wait_until};

/// A local endpoint a tcp check can reach until it is broken.
struct Endpoint {
    address: String,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn open() -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an endpoint");
        let address = listener.local_addr().expect("its address").to_string();
        let task = tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                drop(connection);
            }
        });
        Endpoint { address, task }
    }

    /// Closes the listening socket: checks now get "connection refused".
    fn break_it(&self) {
        self.task.abort();
    }
}

struct Site {
    dir: tempfile::TempDir,
    addresses: Vec<String>,
    controllers: Vec<Option<Process>>,
    agent: Option<Process>,
    runtime: tokio::runtime::Runtime,
    endpoints: Vec<Endpoint>,
    client: Arc<OperatorClient>,
}

const RUNBOOK: &str = r#"
[[service]]
name = "dispatch-uplink"
mode = "auto"
failback = "manual"
flap_guard = { min_interval = "1s", max_per_hour = 10 }

[[service.path]]
name = "fiber"
vantage = [{ agent = "leitstelle-1", check = "uplink-fiber" }]
quorum = 1
fail_after = 3
recover_after = 2
stale_after = "3s"
silence_means = "unknown"
activate = { agent = "leitstelle-1", action = "activate-fiber" }
verify = { agent = "leitstelle-1", check = "uplink-fiber" }

[[service.path]]
name = "lte"
vantage = [{ agent = "leitstelle-1", check = "uplink-lte" }]
quorum = 1
fail_after = 3
recover_after = 2
stale_after = "3s"
silence_means = "unknown"
activate = { agent = "leitstelle-1", action = "activate-lte" }
verify = { agent = "leitstelle-1", check = "uplink-lte" }

[[service]]
name = "portal"
mode = "approve"
failback = "manual"

[[service.path]]
name = "primary"
vantage = [{ agent = "leitstelle-1", check = "portal-primary" }]
quorum = 1
fail_after = 3
recover_after = 2
stale_after = "3s"
activate = { agent = "leitstelle-1", action = "activate-primary" }

[[service.path]]
name = "standby"
vantage = [{ agent = "leitstelle-1", check = "portal-standby" }]
quorum = 1
fail_after = 3
recover_after = 2
stale_after = "3s"
activate = { agent = "leitstelle-1", action = "activate-standby" }
"#;

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = dir.path().join("pki");
        site_pki(&pki, &["1", "2", "3"], &["leitstelle-1"]);
        must_succeed(&[
            "pki",
            "issue",
            "--dir",
            pki.to_str().expect("utf-8"),
            "--kind",
            "operator",
            "--name",
            "admin",
        ]);
        let addresses: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = format!(
            "{{ 1 = \"{}\", 2 = \"{}\", 3 = \"{}\" }}",
            addresses[0], addresses[1], addresses[2]
        );
        for id in 1..=3 {
            std::fs::write(
                dir.path().join(format!("controller-{id}.toml")),
                format!(
                    "node_id = {id}\nlisten = \"{}\"\ndata_dir = \"data-{id}\"\n\
                     [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller-{id}.pem\"\nkey = \"pki/controller-{id}.key\"\n\
                     [cluster]\npeers = {peers}\n[rbac]\nadmin = [\"admin\"]\n",
                    addresses[id - 1]
                ),
            )
            .expect("controller.toml");
        }
        let listed: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(
            dir.path().join("operator.toml"),
            format!(
                "controllers = [{}]\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-admin.pem\"\nkey = \"pki/operator-admin.key\"\n",
                listed.join(", ")
            ),
        )
        .expect("operator.toml");
        std::fs::write(dir.path().join("runbook.toml"), RUNBOOK).expect("runbook.toml");
        let script = dir.path().join("activate.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"$1 $LEITSTAND_DECISION_ID $LEITSTAND_FENCING_TOKEN\" >> \"$JOURNAL\"\necho \"activated $1\"\n",
        )
        .expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let endpoints: Vec<Endpoint> = runtime.block_on(async {
            let mut endpoints = Vec::new();
            for _ in 0..4 {
                endpoints.push(Endpoint::open().await);
            }
            endpoints
        });
        let check = |name: &str, endpoint: &Endpoint| {
            format!(
                "[[check]]\nname = \"{name}\"\nkind = \"tcp\"\ntarget = \"{}\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\n",
                endpoint.address
            )
        };
        let action = |name: &str, argument: &str| {
            format!(
                "[[action]]\nname = \"{name}\"\nargv = [\"{}\", \"{argument}\"]\nenv = {{ JOURNAL = \"{}\" }}\ntimeout = \"5s\"\n",
                script.display(),
                dir.path().join("journal").display()
            )
        };
        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "id = \"leitstelle-1\"\ncontrollers = [{}]\ninterval = \"200ms\"\nstate_dir = \"agent-state\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-leitstelle-1.pem\"\nkey = \"pki/agent-leitstelle-1.key\"\n\
                 {}{}{}{}{}{}{}{}",
                listed.join(", "),
                check("uplink-fiber", &endpoints[0]),
                check("uplink-lte", &endpoints[1]),
                check("portal-primary", &endpoints[2]),
                check("portal-standby", &endpoints[3]),
                action("activate-fiber", "fiber"),
                action("activate-lte", "lte"),
                action("activate-primary", "primary"),
                action("activate-standby", "standby"),
            ),
        )
        .expect("agent.toml");

        let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
        let controllers = (1..=3)
            .map(|id| {
                let p = Process::start(
                    &format!("controller {id}"),
                    &[
                        "controller",
                        "--config",
                        &path(&format!("controller-{id}.toml")),
                    ],
                );
                p.must_log(&["controller serving"]);
                Some(p)
            })
            .collect();
        let agent = Process::start("agent", &["agent", "--config", &path("agent.toml")]);
        agent.must_log_n(1, &["reports acknowledged"], Duration::from_secs(30));
        let config =
            OperatorConfig::load(&dir.path().join("operator.toml")).expect("operator.toml");
        let client = Arc::new(OperatorClient::new(&config).expect("an operator client"));
        Site {
            dir,
            addresses,
            controllers,
            agent: Some(agent),
            runtime,
            endpoints,
            client,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("journal"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn status(&self) -> leitstand_proto::v1::View {
        self.runtime
            .block_on(raw_status(&self.path("pki"), &self.addresses))
    }

    fn path_state(&self, service: &str, path: &str) -> i32 {
        let view = self.status();
        view.services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.paths.iter().find(|p| p.name == path))
            .map_or(0, |p| p.state)
    }

    fn active_path(&self, service: &str) -> String {
        self.status()
            .services
            .into_iter()
            .find(|s| s.name == service)
            .map(|s| s.active_path)
            .unwrap_or_default()
    }
}

/// Operator.Status from whichever controller leads (the view's agents are
/// the leader's).
async fn raw_status(pki: &Path, addresses: &[String]) -> leitstand_proto::v1::View {
    use leitstand_proto::identity::PeerKind;
    use leitstand_proto::tls::ClientTls;
    let tls = Arc::new(
        ClientTls::load(leitstand_proto::pki::peer_files(
            pki,
            PeerKind::Operator,
            "admin",
        ))
        .expect("operator TLS"),
    );
    let mut best: Option<leitstand_proto::v1::View> = None;
    for address in addresses {
        let Ok(channel) = tls.channel(address).await else {
            continue;
        };
        let mut client = leitstand_proto::v1::operator_client::OperatorClient::new(channel);
        let Ok(view) = client.status(leitstand_proto::v1::StatusRequest {}).await else {
            continue;
        };
        let view = view.into_inner();
        let leads = view
            .cluster
            .as_ref()
            .is_some_and(|c| c.leader_id == c.answered_by && c.leader_id != 0);
        if leads {
            return view;
        }
        best.get_or_insert(view);
    }
    best.unwrap_or_default()
}

const HEALTHY: i32 = leitstand_proto::v1::PathState::Healthy as i32;
const FAILED: i32 = leitstand_proto::v1::PathState::Failed as i32;

#[test]
fn a_broken_active_path_fails_over_once_and_an_approval_waits_for_a_person() {
    let site = Site::start();
    let out = must_succeed(&[
        "runbook",
        "apply",
        site.path("runbook.toml").to_str().expect("utf-8"),
        "--config",
        site.path("operator.toml").to_str().expect("utf-8"),
    ]);
    assert!(
        text(&out.stdout).contains("version 1"),
        "{}",
        text(&out.stdout)
    );
    wait_until("every path to be healthy", Duration::from_secs(30), || {
        [
            ("dispatch-uplink", "fiber"),
            ("dispatch-uplink", "lte"),
            ("portal", "primary"),
            ("portal", "standby"),
        ]
        .iter()
        .all(|(s, p)| site.path_state(s, p) == HEALTHY)
    });
    assert!(site.journal().is_empty(), "nothing runs while all is well");
    // The committed version, printed from the cluster as the procedures.
    let rendered = must_succeed(&[
        "runbook",
        "render",
        "--config",
        site.path("operator.toml").to_str().expect("utf-8"),
    ]);
    let document = text(&rendered.stdout);
    assert!(document.contains("version 1"), "{document}");
    assert!(
        document.contains("dispatch-uplink") && document.contains("activate-lte"),
        "{document}"
    );

    // The fiber breaks: exactly one activation of LTE, verified.
    site.endpoints[0].break_it();
    wait_until("the LTE activation", Duration::from_secs(20), || {
        !site.journal().is_empty()
    });
    wait_until(
        "the decision to be verified",
        Duration::from_secs(20),
        || {
            site.status().decisions.iter().any(|d| {
                d.service == "dispatch-uplink"
                    && d.stage == leitstand_proto::v1::DecisionStage::Verified as i32
            })
        },
    );
    assert_eq!(site.active_path("dispatch-uplink"), "lte");
    assert_eq!(site.path_state("dispatch-uplink", "fiber"), FAILED);
    let journal = site.journal();
    assert_eq!(journal.len(), 1, "exactly one execution: {journal:?}");
    assert!(journal[0].starts_with("lte d-"), "{journal:?}");

    // The evidence satisfies the runbook's thresholds when recomputed.
    let view = site.status();
    let decision = view
        .decisions
        .iter()
        .find(|d| d.service == "dispatch-uplink")
        .expect("the decision");
    let failing: Vec<_> = decision
        .evidence
        .iter()
        .filter(|e| e.path == "fiber")
        .collect();
    assert!(!failing.is_empty(), "{decision:?}");
    for e in failing {
        assert_eq!(
            e.status,
            leitstand_proto::v1::CheckStatus::Critical as i32,
            "{e:?}"
        );
        assert!(e.consecutive >= 3, "fail_after 3: {e:?}");
    }
    for e in decision.evidence.iter().filter(|e| e.path == "lte") {
        assert!(e.consecutive >= 2, "recover_after 2: {e:?}");
    }
    let token = decision.fencing_token.expect("a fencing token");
    assert!(
        journal[0].ends_with(&format!("{}.{}", token.term, token.index)),
        "the executor ran with the decision's token: {journal:?} {token:?}"
    );

    // Approve mode: the decision waits for a person.
    site.endpoints[2].break_it();
    wait_until(
        "the portal decision to be proposed",
        Duration::from_secs(20),
        || {
            site.status().decisions.iter().any(|d| {
                d.service == "portal"
                    && d.stage == leitstand_proto::v1::DecisionStage::Proposed as i32
            })
        },
    );
    let proposed = site
        .status()
        .decisions
        .into_iter()
        .find(|d| d.service == "portal")
        .expect("the portal decision");
    assert!(
        !site.journal().iter().any(|l| l.starts_with("standby")),
        "nothing ran before the approval"
    );
    site.runtime
        .block_on(site.client.approve(&proposed.decision_id))
        .expect("approve");
    wait_until("the standby activation", Duration::from_secs(20), || {
        site.journal().iter().any(|l| l.starts_with("standby"))
    });
    wait_until(
        "the portal to run on its standby",
        Duration::from_secs(20),
        || site.active_path("portal") == "standby",
    );

    // The audit export verifies; an edited, a removed and a reordered
    // entry are each named.
    let export = run(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--config",
        site.path("operator.toml").to_str().expect("utf-8"),
    ]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    let lines: Vec<String> = text(&export.stdout).lines().map(str::to_owned).collect();
    let kinds = |kind: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
            .count()
    };
    assert_eq!(kinds("runbook.applied"), 1);
    assert_eq!(kinds("operator.approve"), 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("operator/admin") && l.contains("operator.approve"))
    );
    let verify = |name: &str, lines: &[String]| {
        let file = site.path(name);
        std::fs::write(&file, lines.join("\n")).expect("write export");
        run(&["audit", "verify", file.to_str().expect("utf-8")])
    };
    let whole = verify("audit.jsonl", &lines);
    assert!(whole.status.success(), "{}", text(&whole.stderr));
    let mut edited = lines.clone();
    let mut entry: serde_json::Value = serde_json::from_str(&edited[2]).expect("a JSON line");
    entry["actor"] = serde_json::Value::from("operator/mallory");
    edited[2] = entry.to_string();
    let out = verify("edited.jsonl", &edited);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("entry 3") && text(&out.stderr).contains("edited"),
        "{}",
        text(&out.stderr)
    );
    let mut removed = lines.clone();
    removed.remove(3);
    let out = verify("removed.jsonl", &removed);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("removed"),
        "{}",
        text(&out.stderr)
    );
    let mut reordered = lines.clone();
    reordered.swap(3, 4);
    let out = verify("reordered.jsonl", &reordered);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("entry 4"),
        "{}",
        text(&out.stderr)
    );
    drop(site);
}

impl Site {
    fn leader(&self) -> usize {
        let view = self.status();
        view.cluster.map_or(0, |c| c.leader_id as usize)
    }

    fn decision(&self, service: &str) -> Option<leitstand_proto::v1::DecisionView> {
        self.status()
            .decisions
            .into_iter()
            .find(|d| d.service == service)
    }

    fn apply_runbook(&self) {
        must_succeed(&[
            "runbook",
            "apply",
            self.path("runbook.toml").to_str().expect("utf-8"),
            "--config",
            self.path("operator.toml").to_str().expect("utf-8"),
        ]);
        wait_until("every path to be healthy", Duration::from_secs(30), || {
            [
                ("dispatch-uplink", "fiber"),
                ("dispatch-uplink", "lte"),
                ("portal", "primary"),
                ("portal", "standby"),
            ]
            .iter()
            .all(|(s, p)| self.path_state(s, p) == HEALTHY)
        });
    }
}

#[test]
fn a_decision_dispatched_by_a_leader_that_dies_runs_once_through_the_next_leader() {
    use nix::sys::signal::Signal;
    let mut site = Site::start();
    site.apply_runbook();
    site.endpoints[2].break_it();
    wait_until(
        "the portal decision to be proposed",
        Duration::from_secs(20),
        || {
            site.decision("portal")
                .is_some_and(|d| d.stage == leitstand_proto::v1::DecisionStage::Proposed as i32)
        },
    );
    let id = site.decision("portal").expect("the decision").decision_id;

    // The executor freezes: the leader commits Dispatched and sends into a
    // socket nobody reads. Then the leader dies.
    let agent = site.agent.as_ref().expect("the agent");
    agent.signal(Signal::SIGSTOP);
    site.runtime
        .block_on(site.client.approve(&id))
        .expect("approve");
    wait_until(
        "the decision to be dispatched",
        Duration::from_secs(20),
        || {
            site.decision("portal")
                .is_some_and(|d| d.stage == leitstand_proto::v1::DecisionStage::Dispatched as i32)
        },
    );
    let leader = site.leader();
    assert!(leader > 0, "a leader");
    drop(site.controllers[leader - 1].take());
    site.agent
        .as_ref()
        .expect("the agent")
        .signal(Signal::SIGCONT);

    // The new leader finishes what the log shows in flight.
    wait_until(
        "the decision to be verified by the new leader",
        Duration::from_secs(30),
        || {
            site.decision("portal")
                .is_some_and(|d| d.stage == leitstand_proto::v1::DecisionStage::Verified as i32)
        },
    );
    assert_ne!(site.leader(), leader);
    let runs: Vec<String> = site
        .journal()
        .into_iter()
        .filter(|l| l.starts_with("standby"))
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "exactly one execution across the leader change: {runs:?}"
    );
    assert_eq!(site.active_path("portal"), "standby");
}

#[test]
fn a_silent_vantage_point_is_no_reason_to_fail_over() {
    let mut site = Site::start();
    site.apply_runbook();
    // The only vantage agent goes away (silence_means = "unknown").
    drop(site.agent.take());
    wait_until(
        "the vantage points to be seen as stale",
        Duration::from_secs(20),
        || {
            site.status()
                .services
                .iter()
                .all(|s| s.paths.iter().all(|p| p.vantage.iter().all(|v| v.stale)))
        },
    );
    // Stale counts for nothing: for twice stale_after, no path fails and
    // nothing is decided.
    // About 6 s of polls (each status call takes some milliseconds more).
    for _ in 0..300 {
        let view = site.status();
        assert!(
            view.decisions.is_empty(),
            "no decision: {:?}",
            view.decisions
        );
        for service in &view.services {
            for path in &service.paths {
                assert_eq!(
                    path.state, HEALTHY,
                    "{}/{} keeps its state",
                    service.name, path.name
                );
            }
        }
        crate::support::pause_between_polls();
    }
    assert!(site.journal().is_empty());
}

#[test]
fn an_executor_refuses_a_fencing_token_lower_than_one_it_executed() {
    let site = Site::start();
    site.apply_runbook();
    // The executor has executed a far newer decision for this service (as
    // after a controller whose log was lost): it must refuse older tokens.
    std::fs::write(
        site.path("agent-state/fencing/dispatch-uplink.json"),
        r#"{"term":999,"index":999}"#,
    )
    .expect("the executor's fencing record");
    site.endpoints[0].break_it();
    wait_until(
        "the decision to be abandoned",
        Duration::from_secs(30),
        || {
            site.decision("dispatch-uplink")
                .is_some_and(|d| d.stage == leitstand_proto::v1::DecisionStage::Abandoned as i32)
        },
    );
    assert!(
        site.journal().is_empty(),
        "nothing ran: {:?}",
        site.journal()
    );
    assert_eq!(
        site.active_path("dispatch-uplink"),
        "fiber",
        "no switch without an activation"
    );
    let export = must_succeed(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--config",
        site.path("operator.toml").to_str().expect("utf-8"),
    ]);
    let audit = text(&export.stdout);
    assert!(
        audit.contains("stale fencing token") && audit.contains("refused"),
        "the refusal is in the audit log: {audit}"
    );
}

/// A dashboard running in a tmux session of its own (its own server
/// socket), driven with send-keys and read with capture-pane.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn tmux(&self, args: &[&str]) -> String {
        let mut child = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tmux runs (CI installs it; apt-get install tmux)");
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            use std::io::Read;
            let _ = stdout.by_ref().take(1 << 20).read_to_string(&mut out);
        }
        let _ = child.wait();
        out
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "dashboard"])
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "dashboard", keys]);
    }

    fn must_show(&self, what: &str, timeout: Duration) {
        let mut last = String::new();
        let found = (0..timeout.as_millis() / 20).any(|_| {
            last = self.screen();
            let found = last.contains(what);
            if !found {
                crate::support::pause_between_polls();
            }
            found
        });
        assert!(
            found,
            "the dashboard did not show {what:?}; it shows:\n{last}"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

#[test]
fn the_dashboard_shows_a_failover_and_an_approval_given_there_is_committed() {
    let site = Site::start();
    site.apply_runbook();
    let tmux = Tmux {
        socket: format!("leitstand-test-{}", std::process::id()),
    };
    let config = site.path("operator.toml");
    tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        "dashboard",
        "-x",
        "160",
        "-y",
        "48",
        "-e",
        "NO_COLOR=1",
        env!("CARGO_BIN_EXE_leitstand"),
        "dashboard",
        "--lang",
        "en",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    tmux.must_show("dispatch-uplink", Duration::from_secs(20));

    // The fiber breaks: the Decisions view shows the failover verified.
    site.endpoints[0].break_it();
    wait_until("the failover", Duration::from_secs(20), || {
        site.active_path("dispatch-uplink") == "lte"
    });
    tmux.keys("3");
    tmux.must_show("verified", Duration::from_secs(20));

    // The portal's primary breaks: approve it from the dashboard.
    site.endpoints[2].break_it();
    wait_until(
        "the portal decision to be proposed",
        Duration::from_secs(20),
        || {
            site.decision("portal")
                .is_some_and(|d| d.stage == leitstand_proto::v1::DecisionStage::Proposed as i32)
        },
    );
    tmux.keys("4");
    tmux.must_show("portal", Duration::from_secs(10));
    let proposed = site.decision("portal").expect("the portal decision");
    tmux.keys("a");
    tmux.must_show(
        &format!("Approve decision {}?", proposed.decision_id),
        Duration::from_secs(5),
    );
    tmux.keys("y");
    wait_until(
        "the approval to be committed",
        Duration::from_secs(20),
        || {
            site.decision("portal")
                .is_some_and(|d| d.stage != leitstand_proto::v1::DecisionStage::Proposed as i32)
        },
    );
    let export = must_succeed(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    let audit = text(&export.stdout);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("operator.approve") && l.contains("operator/admin")),
        "the dashboard's approval is in the audit log: {audit}"
    );
    wait_until("the standby activation", Duration::from_secs(20), || {
        site.journal().iter().any(|l| l.starts_with("standby"))
    });
}
