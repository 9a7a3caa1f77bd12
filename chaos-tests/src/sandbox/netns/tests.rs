//! The fault → iptables/tc mapping, as data: which namespace gets which
//! rule for each fault of the proxy and for packet faults.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn topology() -> Topology {
    Topology {
        run: "ls-4242".into(),
        octet: 7,
        controllers: vec![1, 2, 3],
        agents: 2,
    }
}

/// The iptables rule lines each namespace gets for `faults`.
fn rules(faults: &[(Link, Fault)]) -> BTreeMap<String, Vec<String>> {
    let t = topology();
    let faults: BTreeMap<Link, Fault> = faults.iter().cloned().collect();
    plan(&t, &faults, &BTreeMap::new())
        .into_iter()
        .map(|(node, rules)| {
            let lines = ruleset(&rules)
                .lines()
                .filter(|l| l.starts_with("-A"))
                .map(str::to_owned)
                .collect();
            (t.namespace(node), lines)
        })
        .filter(|(_, lines): &(String, Vec<String>)| !lines.is_empty())
        .collect()
}

fn check(faults: &[(Link, Fault)], expected: &[(&str, &[&str])]) {
    let expected: BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(ns, lines)| {
            (
                (*ns).to_owned(),
                lines.iter().map(|l| (*l).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(rules(faults), expected, "faults {faults:?}");
}

const PEER_1_2: Link = Link::Peer { from: 1, to: 2 };

#[test]
fn names_and_addresses_follow_the_convention() {
    let t = topology();
    assert_eq!(t.namespace(Node::Controller(3)), "ls-4242-c3");
    assert_eq!(t.namespace(Node::Agent(0)), "ls-4242-a1");
    assert_eq!(t.bridge(), "ls-4242-br");
    assert_eq!(t.gateway().to_string(), "10.213.7.1");
    assert_eq!(t.address(Node::Controller(2)).to_string(), "10.213.7.12");
    assert_eq!(t.address(Node::Agent(1)).to_string(), "10.213.7.102");
    // Interface names have at most 15 bytes, also for the largest pid.
    assert!(format!("{PREFIX}4194304-c99").len() <= 15);
    assert_eq!(owner("ls-123-c1"), Some(123));
    assert_eq!(owner("ls-123-br"), Some(123));
    assert_eq!(
        owner("lsb123m"),
        None,
        "the keepalived bench's names are not ours"
    );
    assert_eq!(owner("eth0"), None);
}

#[test]
fn a_blackhole_drops_per_direction_in_the_sending_namespace() {
    check(
        &[(
            PEER_1_2,
            Fault::Blackhole {
                direction: Direction::Both,
            },
        )],
        &[
            (
                "ls-4242-c1",
                &["-A LEITSTAND -p tcp -d 10.213.7.12/32 --dport 7400 -j DROP"],
            ),
            (
                "ls-4242-c2",
                &["-A LEITSTAND -p tcp -d 10.213.7.11/32 --sport 7400 -j DROP"],
            ),
        ],
    );
    check(
        &[(
            PEER_1_2,
            Fault::Blackhole {
                direction: Direction::Forward,
            },
        )],
        &[(
            "ls-4242-c1",
            &["-A LEITSTAND -p tcp -d 10.213.7.12/32 --dport 7400 -j DROP"],
        )],
    );
    check(
        &[(
            PEER_1_2,
            Fault::Blackhole {
                direction: Direction::Backward,
            },
        )],
        &[(
            "ls-4242-c2",
            &["-A LEITSTAND -p tcp -d 10.213.7.11/32 --sport 7400 -j DROP"],
        )],
    );
}

#[test]
fn an_agent_link_covers_every_agent_and_only_the_agents() {
    check(
        &[(
            Link::Agents { controller: 3 },
            Fault::Blackhole {
                direction: Direction::Both,
            },
        )],
        &[
            (
                "ls-4242-a1",
                &["-A LEITSTAND -p tcp -d 10.213.7.13/32 --dport 7400 -j DROP"],
            ),
            (
                "ls-4242-a2",
                &["-A LEITSTAND -p tcp -d 10.213.7.13/32 --dport 7400 -j DROP"],
            ),
            (
                "ls-4242-c3",
                &[
                    "-A LEITSTAND -p tcp -d 10.213.7.101/32 --sport 7400 -j DROP",
                    "-A LEITSTAND -p tcp -d 10.213.7.102/32 --sport 7400 -j DROP",
                ],
            ),
        ],
    );
}

#[test]
fn refuse_drops_and_half_open_become_resets() {
    check(
        &[(PEER_1_2, Fault::Refuse)],
        &[
            (
                "ls-4242-c1",
                &[
                    "-A LEITSTAND -p tcp -d 10.213.7.12/32 --dport 7400 -j REJECT --reject-with tcp-reset",
                ],
            ),
            (
                "ls-4242-c2",
                &[
                    "-A LEITSTAND -p tcp -d 10.213.7.11/32 --sport 7400 -j REJECT --reject-with tcp-reset",
                ],
            ),
        ],
    );
    check(
        &[(PEER_1_2, Fault::DropConnections { probability: 0.1 })],
        &[
            (
                "ls-4242-c1",
                &[
                    "-A LEITSTAND -p tcp -d 10.213.7.12/32 --dport 7400 -m statistic --mode random --probability 0.1000 -j REJECT --reject-with tcp-reset",
                ],
            ),
            (
                "ls-4242-c2",
                &[
                    "-A LEITSTAND -p tcp -d 10.213.7.11/32 --sport 7400 -m statistic --mode random --probability 0.1000 -j REJECT --reject-with tcp-reset",
                ],
            ),
        ],
    );
    // The controller's side is reset, the dialler's packets vanish.
    check(
        &[(PEER_1_2, Fault::HalfOpen)],
        &[
            (
                "ls-4242-c1",
                &["-A LEITSTAND -p tcp -d 10.213.7.12/32 --dport 7400 -j DROP"],
            ),
            (
                "ls-4242-c2",
                &[
                    "-A LEITSTAND -p tcp -d 10.213.7.11/32 --sport 7400 -j REJECT --reject-with tcp-reset",
                ],
            ),
        ],
    );
    check(
        &[(
            PEER_1_2,
            Fault::Bandwidth {
                bytes_per_second: 0,
            },
        )],
        &[
            (
                "ls-4242-c1",
                &["-A LEITSTAND -p tcp -d 10.213.7.12/32 --dport 7400 -j DROP"],
            ),
            (
                "ls-4242-c2",
                &["-A LEITSTAND -p tcp -d 10.213.7.11/32 --sport 7400 -j DROP"],
            ),
        ],
    );
    check(&[(PEER_1_2, Fault::None)], &[]);
}

#[test]
fn the_ruleset_replaces_the_chain_in_one_transaction() {
    assert_eq!(ruleset(&[]), "*filter\n:LEITSTAND - [0:0]\nCOMMIT\n");
}

#[test]
fn delay_and_bandwidth_become_htb_classes_with_netem_leaves() {
    let t = topology();
    let faults: BTreeMap<Link, Fault> = [
        (
            PEER_1_2,
            Fault::Delay {
                base: Duration::from_millis(50),
                jitter: Duration::from_millis(20),
            },
        ),
        (
            Link::Peer { from: 1, to: 3 },
            Fault::Bandwidth {
                bytes_per_second: 1 << 17,
            },
        ),
    ]
    .into_iter()
    .collect();
    let planned = plan(&t, &faults, &BTreeMap::new());
    let c1 = &planned[&Node::Controller(1)];
    assert_eq!(
        ruleset(c1),
        "*filter\n:LEITSTAND - [0:0]\nCOMMIT\n",
        "shaping is no iptables rule"
    );
    assert!(needs_netem(c1));
    let lines: Vec<String> = shaping(c1).iter().map(|argv| argv.join(" ")).collect();
    assert_eq!(
        lines,
        [
            "qdisc add dev eth0 root handle 1: htb default 1",
            "class add dev eth0 parent 1: classid 1:1 htb rate 10gbit",
            "class add dev eth0 parent 1: classid 1:10 htb rate 10gbit",
            "qdisc add dev eth0 parent 1:10 handle 10: netem delay 50000us 20000us",
            "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.213.7.12/32 match ip dport 7400 0xffff flowid 1:10",
            "class add dev eth0 parent 1: classid 1:11 htb rate 1048576bit",
            "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.213.7.13/32 match ip dport 7400 0xffff flowid 1:11",
        ]
    );
    // The answers are delayed in the other namespace, by source port.
    let c2: Vec<String> = shaping(&planned[&Node::Controller(2)])
        .iter()
        .map(|argv| argv.join(" "))
        .collect();
    assert!(
        c2.contains(&"filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.213.7.11/32 match ip sport 7400 0xffff flowid 1:10".to_owned()),
        "{c2:#?}"
    );
    assert!(shaping(&[]).is_empty());
}

#[test]
fn a_packet_fault_is_a_random_drop_and_a_netem_delay_each_way() {
    let t = topology();
    let packet: BTreeMap<Link, PacketFault> = [(
        Link::Agents { controller: 1 },
        PacketFault {
            loss: 0.25,
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
        },
    )]
    .into_iter()
    .collect();
    let planned = plan(&t, &BTreeMap::new(), &packet);
    assert_eq!(
        ruleset(&planned[&Node::Agent(0)]),
        "*filter\n:LEITSTAND - [0:0]\n\
         -A LEITSTAND -p tcp -d 10.213.7.11/32 --dport 7400 -m statistic --mode random --probability 0.2500 -j DROP\n\
         COMMIT\n"
    );
    assert!(needs_netem(&planned[&Node::Controller(1)]));
    let loss_only = PacketFault {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        ..packet[&Link::Agents { controller: 1 }]
    };
    let planned = plan(
        &t,
        &BTreeMap::new(),
        &[(Link::Agents { controller: 1 }, loss_only)]
            .into_iter()
            .collect(),
    );
    assert!(!needs_netem(&planned[&Node::Controller(1)]));
    assert!(shaping(&planned[&Node::Controller(1)]).is_empty());
}

#[test]
fn a_drop_comes_before_a_loss_on_the_same_packets() {
    let t = topology();
    let faults: BTreeMap<Link, Fault> = [(
        PEER_1_2,
        Fault::Blackhole {
            direction: Direction::Both,
        },
    )]
    .into_iter()
    .collect();
    let packet: BTreeMap<Link, PacketFault> = [(
        PEER_1_2,
        PacketFault {
            loss: 0.3,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
        },
    )]
    .into_iter()
    .collect();
    let text = ruleset(&plan(&t, &faults, &packet)[&Node::Controller(1)]);
    let drop = text.find("-j DROP\n").expect("a drop");
    let loss = text.find("statistic").expect("a loss");
    assert!(drop < loss, "{text}");
}

#[test]
fn lost_packets_are_read_from_the_loss_rules_counters() {
    let listing = "Chain LEITSTAND (1 references)\n\
    pkts      bytes target     prot opt in     out     source               destination\n\
      12      960 DROP       6    --  *      *       0.0.0.0/0            10.213.7.12          tcp dpt:7400\n\
      31     2480 DROP       6    --  *      *       0.0.0.0/0            10.213.7.11          tcp dpt:7400 statistic mode random probability 0.25000000000\n\
       4      240 REJECT     6    --  *      *       0.0.0.0/0            10.213.7.13          tcp dpt:7400 statistic mode random probability 0.10000000000 reject-with tcp-reset\n";
    assert_eq!(count_lost(listing), 31);
}

#[test]
fn the_preflight_says_what_is_missing_and_how_to_get_it() {
    let everything = |name: &str| Some(PathBuf::from(format!("/usr/sbin/{name}")));
    let tools = preflight_with(Some(0), everything).expect("root with every tool");
    assert_eq!(
        tools.iptables_restore,
        PathBuf::from("/usr/sbin/iptables-restore")
    );

    let not_root = preflight_with(Some(1000), everything).expect_err("not root");
    let text = format!("{not_root:#}");
    assert!(
        text.contains("needs root (effective uid 1000)") && text.contains("--network proxy"),
        "{text}"
    );

    let no_iptables = |name: &str| {
        (!name.starts_with("iptables"))
            .then(|| everything(name))
            .flatten()
    };
    let text = format!(
        "{:#}",
        preflight_with(Some(0), no_iptables).expect_err("no iptables")
    );
    assert!(
        text.contains("iptables, iptables-restore are not found")
            && text.contains("apt-get install iptables)"),
        "{text}"
    );

    let no_tc = |name: &str| (name != "tc").then(|| everything(name)).flatten();
    let text = format!("{:#}", preflight_with(Some(0), no_tc).expect_err("no tc"));
    assert!(
        text.contains("tc is not found") && text.contains("apt-get install iproute2)"),
        "{text}"
    );
}
