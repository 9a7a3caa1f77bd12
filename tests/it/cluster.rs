//! Three real controller processes: Raft elects one leader, agents follow
//! it, and a SIGKILLed leader is replaced; the cluster keeps committing
//! through a leader's SIGKILL, and a node whose data directory was wiped
//! rejoins from a snapshot. A damaged Raft log stops a controller at start
//! with an error naming it.

use std::time::Duration;

use leitstand_proto::domain::NodeId;
use leitstand_tui::{ClusterStatus, OperatorClient, OperatorConfig};

use crate::support::{Process, free_port, must_succeed, run, site_pki, text, wait_until};

struct ThreeControllers {
    dir: tempfile::TempDir,
    addresses: Vec<String>,
}

impl ThreeControllers {
    fn new() -> Self {
        Self::with_cluster_keys("")
    }

    /// With extra `[cluster]` keys in every controller.toml, an operator
    /// certificate `admin` with the admin role, and `operator.toml`.
    fn with_cluster_keys(keys: &str) -> Self {
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
                     [cluster]\npeers = {peers}\n{keys}[rbac]\nadmin = [\"admin\"]\n",
                    addresses[id - 1]
                ),
            )
            .expect("controller.toml");
        }
        for (name, controllers) in std::iter::once(("operator".to_owned(), addresses.clone()))
            .chain((1..=3).map(|id| (format!("operator-{id}"), vec![addresses[id - 1].clone()])))
        {
            let listed: Vec<String> = controllers.iter().map(|a| format!("\"{a}\"")).collect();
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                format!(
                    "controllers = [{}]\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-admin.pem\"\nkey = \"pki/operator-admin.key\"\n",
                    listed.join(", ")
                ),
            )
            .expect("operator.toml");
        }
        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "id = \"leitstelle-1\"\ncontrollers = [\"{}\", \"{}\", \"{}\"]\ninterval = \"200ms\"\nstate_dir = \"agent-state\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/agent-leitstelle-1.pem\"\nkey = \"pki/agent-leitstelle-1.key\"\n",
                addresses[0], addresses[1], addresses[2]
            ),
        )
        .expect("agent.toml");
        ThreeControllers { dir, addresses }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    /// An operator client for every controller, or (`only`) just one.
    fn operator(&self, only: Option<usize>) -> OperatorClient {
        let name = only.map_or("operator.toml".to_owned(), |id| {
            format!("operator-{id}.toml")
        });
        let config = OperatorConfig::load(std::path::Path::new(&self.path(&name)))
            .expect("a valid operator.toml");
        OperatorClient::new(&config).expect("an operator client")
    }

    fn start(&self, id: usize) -> Process {
        let p = Process::start(
            &format!("controller {id}"),
            &[
                "controller",
                "--config",
                &self.path(&format!("controller-{id}.toml")),
            ],
        );
        p.must_log(&["controller serving"]);
        p
    }
}

#[test]
fn three_controllers_elect_one_leader_the_agent_follows_it_and_outlives_its_sigkill() {
    let cluster = ThreeControllers::new();
    let mut controllers: Vec<Option<Process>> = (1..=3).map(|id| Some(cluster.start(id))).collect();
    let agent = Process::start("agent", &["agent", "--config", &cluster.path("agent.toml")]);
    agent.must_log_n(1, &["reports acknowledged"], Duration::from_secs(30));

    let serving: Vec<usize> = (0..3)
        .filter(|&i| {
            controllers[i]
                .as_ref()
                .is_some_and(|c| c.count(&["agent connected"]) > 0)
        })
        .collect();
    assert_eq!(
        serving.len(),
        1,
        "exactly one controller (the leader) serves the agent"
    );
    let leader = serving[0];

    // SIGKILL the leader: the other two elect a new one and the agent follows.
    drop(controllers[leader].take());
    agent.must_log_n(2, &["connected to controller"], Duration::from_secs(30));
    agent.must_log_n(2, &["reports acknowledged"], Duration::from_secs(30));
    let reconnected = agent
        .lines()
        .into_iter()
        .filter(|l| l.contains("connected to controller"))
        .nth(1)
        .expect("a second connection");
    assert!(
        !reconnected.contains(&cluster.addresses[leader]),
        "the agent moved away from the killed leader: {reconnected}"
    );
    let new_leaders: Vec<usize> = (0..3)
        .filter(|&i| {
            controllers[i]
                .as_ref()
                .is_some_and(|c| c.count(&["agent connected"]) > 0)
        })
        .collect();
    assert_eq!(new_leaders.len(), 1, "one new leader serves the agent");

    // The killed node restarts from its files and rejoins as a follower.
    controllers[leader] = Some(cluster.start(leader + 1));
    let restarted = controllers[leader].as_ref().expect("restarted");
    assert!(
        !restarted
            .lines()
            .iter()
            .any(|l| l.contains("bootstrapped a new Raft log")),
        "it kept its log"
    );
}

#[test]
fn a_damaged_raft_log_stops_the_controller_with_an_error_naming_it() {
    let cluster = ThreeControllers::new();
    // A one-member config over the same files is enough to create a log.
    let config = cluster.path("controller-1.toml");
    let single = std::fs::read_to_string(&config)
        .expect("read")
        .lines()
        .map(|l| {
            if l.starts_with("peers") {
                format!("peers = {{ 1 = \"{}\" }}", cluster.addresses[0])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, single).expect("write");
    let mut first = cluster.start(1);
    first.must_log(&["bootstrapped a new Raft log"]);
    assert!(first.stop().success());

    let log = cluster.dir.path().join("data-1/raft.redb");
    let length = std::fs::metadata(&log).expect("raft.redb exists").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open");
    file.set_len(length / 2).expect("truncate");
    drop(file);

    let out = run(&["controller", "--config", &config]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a damaged log is a runtime failure: {stderr}"
    );
    assert!(
        stderr.contains("raft.redb"),
        "the error names the file: {stderr}"
    );
    assert_eq!(
        std::fs::metadata(&log).expect("still there").len(),
        length / 2,
        "and never resets it"
    );
}

/// `leitstand cluster status --json`, parsed.
fn cluster_status_json(cluster: &ThreeControllers) -> serde_json::Value {
    let out = must_succeed(&[
        "cluster",
        "status",
        "--json",
        "--config",
        &cluster.path("operator.toml"),
    ]);
    serde_json::from_slice(&out.stdout).expect("cluster status --json prints JSON")
}

#[test]
fn the_cluster_commits_through_a_leader_sigkill_and_a_wiped_node_rejoins_from_a_snapshot() {
    let cluster = ThreeControllers::with_cluster_keys(
        "snapshot_after_entries = 40\nkeep_entries_after_snapshot = 10\n",
    );
    let mut controllers: Vec<Option<Process>> = (1..=3).map(|id| Some(cluster.start(id))).collect();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let client = cluster.operator(None);
    let probe = |n: usize| -> u64 {
        runtime.block_on(async {
            let mut last = 0;
            for _ in 0..n {
                last = client
                    .probe(b"p")
                    .await
                    .unwrap_or_else(|error| panic!("a probe: {error}"))
                    .committed_index;
            }
            last
        })
    };
    // What node `id` itself says (its applied index, as a follower too).
    let status_of = |id: usize| -> Result<ClusterStatus, String> {
        runtime
            .block_on(cluster.operator(Some(id)).cluster_status())
            .map_err(|error| error.to_string())
    };

    probe(60);
    let status = cluster_status_json(&cluster);
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status}");
    assert!(
        status["snapshot_index"].as_u64() >= Some(40),
        "a snapshot was taken: {status}"
    );
    let leader = status["leader_id"].as_u64().expect("a leader") as usize;

    // SIGKILL the leader: the client follows the new one; commits go on.
    drop(controllers[leader - 1].take());
    let last = probe(30);
    let status = cluster_status_json(&cluster);
    let new_leader = status["leader_id"].as_u64().expect("a new leader") as usize;
    assert_ne!(new_leader, leader, "{status}");

    // The killed node restarts from its files and catches up.
    controllers[leader - 1] = Some(cluster.start(leader));
    wait_until(
        "the restarted leader to apply what was committed without it",
        Duration::from_secs(20),
        || status_of(leader).is_ok_and(|s| s.applied_index >= last),
    );
    let restarted = controllers[leader - 1].as_ref().expect("restarted");
    assert_eq!(
        restarted.count(&["bootstrapped a new Raft log"]),
        0,
        "it kept its log"
    );

    // A follower loses its data directory. Under its old identity it is
    // refused (Raft cannot take back what it acknowledged); removed and
    // added again, it catches up from a snapshot.
    let wiped = (1..=3).find(|&id| id != new_leader).expect("a follower");
    drop(controllers[wiped - 1].take());
    std::fs::remove_dir_all(cluster.dir.path().join(format!("data-{wiped}"))).expect("wipe");
    let config = cluster.path(&format!("controller-{wiped}.toml"));
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("[cluster]\n", "[cluster]\njoin = true\n"),
    )
    .expect("write");
    controllers[wiped - 1] = Some(cluster.start(wiped));
    let rejoined = controllers[wiped - 1].as_ref().expect("rejoined");
    rejoined.must_log_n(
        1,
        &["missing entries it acknowledged before"],
        Duration::from_secs(20),
    );
    let operator = cluster.path("operator.toml");
    let id = wiped.to_string();
    must_succeed(&["cluster", "remove", "--node-id", &id, "--config", &operator]);
    let last = probe(60);
    must_succeed(&[
        "cluster",
        "add",
        "--node-id",
        &id,
        "--address",
        &cluster.addresses[wiped - 1],
        "--config",
        &operator,
    ]);
    rejoined.must_log_n(
        1,
        &["caught up from the leader's snapshot"],
        Duration::from_secs(20),
    );
    wait_until(
        "the wiped node to apply everything committed",
        Duration::from_secs(20),
        || status_of(wiped).is_ok_and(|s| s.applied_index >= last),
    );
    let status = runtime
        .block_on(client.cluster_status())
        .expect("cluster status");
    let member = status
        .members
        .iter()
        .find(|m| m.node_id == NodeId::new(wiped as u64).expect("id"))
        .expect("the wiped node is still a member");
    assert!(member.voter, "{status:?}");
    probe(5);
}
