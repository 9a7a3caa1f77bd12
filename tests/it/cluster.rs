//! Three real controller processes: Raft elects one leader, agents follow
//! it, and a SIGKILLed leader is replaced. A damaged Raft log stops a
//! controller at start with an error naming it.

use std::time::Duration;

use crate::support::{Process, free_port, run, site_pki, text};

struct ThreeControllers {
    dir: tempfile::TempDir,
    addresses: Vec<String>,
}

impl ThreeControllers {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        site_pki(&dir.path().join("pki"), &["1", "2", "3"], &["leitstelle-1"]);
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
                     [cluster]\npeers = {peers}\n",
                    addresses[id - 1]
                ),
            )
            .expect("controller.toml");
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
