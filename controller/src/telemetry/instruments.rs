//! The observable instruments and what their callbacks read: a snapshot of
//! the registry's latest reports (taken once per collection, so the
//! registry's lock is held for one pass that only copies numbers), the
//! input counters, the TLS handshake counters, the Raft node's status and
//! the peer links' counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leitstand_proto::domain::{CheckStatus, NodeId};
use leitstand_proto::tls::HandshakeRejection;
use leitstand_proto::v1;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{EngineState, Sources, names};
use crate::counters::Rejection;
use crate::raft::{NodeHandle, ReplicationStatus};
use crate::registry::Registry;

/// One registry pass serves every callback of a collection.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(250);
/// How often the leader's view of its followers is refreshed.
const INSPECT_INTERVAL: Duration = Duration::from_secs(1);
/// Older follower figures are not exported.
const INSPECT_MAX_AGE: Duration = Duration::from_secs(3);

/// What one agent looks like to monitoring.
struct AgentSample {
    id: KeyValue,
    connected: bool,
    host: Option<v1::HostMetrics>,
    /// Check name, Nagios status code (0 OK … 3 UNKNOWN), duration.
    checks: Vec<(String, i64, f64)>,
}

struct Fleet {
    registry: Arc<Registry>,
    cache: Mutex<Option<(Instant, Arc<Vec<AgentSample>>)>>,
}

impl Fleet {
    fn snapshot(&self) -> Arc<Vec<AgentSample>> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((taken, snapshot)) = cache.as_ref()
            && taken.elapsed() < SNAPSHOT_MAX_AGE
        {
            return snapshot.clone();
        }
        let mut agents = Vec::new();
        self.registry.visit(|agent, connected, report| {
            agents.push(AgentSample {
                id: KeyValue::new(names::AGENT_ID, agent.as_str().to_owned()),
                connected,
                host: report
                    .and_then(|r| r.host.as_ref())
                    .map(|h| v1::HostMetrics {
                        // Per-core figures would multiply the series by the
                        // core count; the total is exported.
                        cpu_utilization_per_core: Vec::new(),
                        filesystems: h.filesystems.clone(),
                        network_interfaces: h.network_interfaces.clone(),
                        temperatures: h.temperatures.clone(),
                        ..*h
                    }),
                checks: report
                    .map(|r| {
                        r.checks
                            .iter()
                            .map(|c| {
                                (
                                    c.name.as_str().to_owned(),
                                    nagios_code(c.status),
                                    c.duration.as_secs_f64(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        });
        let snapshot = Arc::new(agents);
        *cache = Some((Instant::now(), snapshot.clone()));
        snapshot
    }
}

fn nagios_code(status: CheckStatus) -> i64 {
    match status {
        CheckStatus::Ok => 0,
        CheckStatus::Warning => 1,
        CheckStatus::Critical => 2,
        CheckStatus::Unknown => 3,
    }
}

/// Figures of the Raft node that need its task (`inspect`) or a history
/// (leader changes), kept current by [`watch_raft`].
#[derive(Debug, Default)]
pub(super) struct RaftWatch {
    leader_changes: AtomicU64,
    replication: Mutex<Option<(Instant, ReplicationStatus)>>,
}

impl RaftWatch {
    fn replication(&self) -> Option<ReplicationStatus> {
        let guard = self
            .replication
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < INSPECT_MAX_AGE)
            .map(|(_, r)| r.clone())
    }
}

/// Counts leader changes and refreshes the replication picture each second
/// until `stop`.
pub(super) async fn watch_raft(
    raft: NodeHandle,
    watch: Arc<RaftWatch>,
    mut stop: watch::Receiver<bool>,
) {
    let mut status = raft.watch_status();
    let mut leader = status.borrow_and_update().leader;
    if leader.is_some() {
        watch.leader_changes.fetch_add(1, Ordering::Relaxed);
    }
    let mut tick = tokio::time::interval(INSPECT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => return,
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = status.borrow_and_update().leader;
                if now.is_some() && now != leader {
                    watch.leader_changes.fetch_add(1, Ordering::Relaxed);
                    leader = now;
                }
            }
            _ = tick.tick() => {
                if let Ok(Some(replication)) =
                    tokio::time::timeout(INSPECT_INTERVAL, raft.inspect()).await
                {
                    *watch
                        .replication
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((Instant::now(), replication));
                }
            }
        }
    }
}

/// Registers every observable instrument on `meter`. The SDK keeps the
/// callbacks for the provider's lifetime.
pub(super) fn register(meter: &Meter, sources: &Sources, raft: Arc<RaftWatch>) {
    let fleet = Arc::new(Fleet {
        registry: sources.registry.clone(),
        cache: Mutex::new(None),
    });
    register_host(meter, &fleet);
    register_checks(meter, &fleet);
    register_inputs(meter, sources);
    register_raft(meter, sources, raft);
}

/// A gauge of one f64 per agent that has host metrics.
fn host_gauge(
    meter: &Meter,
    fleet: &Arc<Fleet>,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    value: fn(&v1::HostMetrics) -> Option<f64>,
) {
    let fleet = fleet.clone();
    meter
        .f64_observable_gauge(name)
        .with_unit(unit)
        .with_description(description)
        .with_callback(move |observer| {
            for agent in fleet.snapshot().iter() {
                if let Some(value) = agent.host.as_ref().and_then(value) {
                    observer.observe(value, std::slice::from_ref(&agent.id));
                }
            }
        })
        .build();
}

fn ratio(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 / total as f64)
}

fn bytes(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn register_host(meter: &Meter, fleet: &Arc<Fleet>) {
    host_gauge(
        meter,
        fleet,
        names::CPU_UTILIZATION,
        "1",
        "CPU time in use over all cores, 0 to 1, as the agent reported it",
        |h| Some(h.cpu_utilization),
    );
    for (name, value) in [
        (
            names::LOAD_AVERAGE_1M,
            (|h: &v1::HostMetrics| Some(h.load_average_1m)) as fn(&v1::HostMetrics) -> Option<f64>,
        ),
        (names::LOAD_AVERAGE_5M, |h| Some(h.load_average_5m)),
        (names::LOAD_AVERAGE_15M, |h| Some(h.load_average_15m)),
    ] {
        host_gauge(meter, fleet, name, "{thread}", "Load average", value);
    }
    host_gauge(
        meter,
        fleet,
        names::MEMORY_UTILIZATION,
        "1",
        "Memory in use, 0 to 1",
        |h| ratio(h.memory_used_bytes, h.memory_total_bytes),
    );
    host_gauge(
        meter,
        fleet,
        names::PAGING_UTILIZATION,
        "1",
        "Swap in use, 0 to 1",
        |h| ratio(h.swap_used_bytes, h.swap_total_bytes),
    );
    host_gauge(
        meter,
        fleet,
        names::UPTIME,
        "s",
        "Time since the host booted",
        |h| Some(h.uptime_seconds as f64),
    );

    let f = fleet.clone();
    meter
        .i64_observable_up_down_counter(names::MEMORY_USAGE)
        .with_unit("By")
        .with_description("Memory used and free")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                let Some(h) = &agent.host else { continue };
                let free = h.memory_total_bytes.saturating_sub(h.memory_used_bytes);
                for (state, value) in [("used", h.memory_used_bytes), ("free", free)] {
                    observer.observe(
                        bytes(value),
                        &[agent.id.clone(), KeyValue::new(names::MEMORY_STATE, state)],
                    );
                }
            }
        })
        .build();
    let f = fleet.clone();
    meter
        .i64_observable_up_down_counter(names::MEMORY_LIMIT)
        .with_unit("By")
        .with_description("Total memory")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                if let Some(h) = &agent.host {
                    observer.observe(bytes(h.memory_total_bytes), std::slice::from_ref(&agent.id));
                }
            }
        })
        .build();
    let f = fleet.clone();
    meter
        .i64_observable_up_down_counter(names::PAGING_USAGE)
        .with_unit("By")
        .with_description("Swap used and free")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                let Some(h) = &agent.host else { continue };
                let free = h.swap_total_bytes.saturating_sub(h.swap_used_bytes);
                for (state, value) in [("used", h.swap_used_bytes), ("free", free)] {
                    observer.observe(
                        bytes(value),
                        &[agent.id.clone(), KeyValue::new(names::PAGING_STATE, state)],
                    );
                }
            }
        })
        .build();
    register_filesystems(meter, fleet);
    register_network(meter, fleet);
    let f = fleet.clone();
    meter
        .f64_observable_gauge(names::HW_TEMPERATURE)
        .with_unit("Cel")
        .with_description("Hardware temperatures where the host has sensors")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                let Some(h) = &agent.host else { continue };
                for t in &h.temperatures {
                    observer.observe(
                        t.celsius,
                        &[
                            agent.id.clone(),
                            KeyValue::new(names::HW_ID, t.sensor.clone()),
                            KeyValue::new(names::HW_TYPE, "temperature"),
                        ],
                    );
                }
            }
        })
        .build();
}

fn filesystem_attributes(agent: &AgentSample, fs: &v1::FilesystemUsage) -> Vec<KeyValue> {
    vec![
        agent.id.clone(),
        KeyValue::new(names::DEVICE, fs.device.clone()),
        KeyValue::new(names::FILESYSTEM_MOUNTPOINT, fs.mountpoint.clone()),
        KeyValue::new(names::FILESYSTEM_TYPE, fs.r#type.clone()),
    ]
}

fn register_filesystems(meter: &Meter, fleet: &Arc<Fleet>) {
    let f = fleet.clone();
    meter
        .i64_observable_up_down_counter(names::FILESYSTEM_USAGE)
        .with_unit("By")
        .with_description("File system space used and free, per mount point")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                let Some(h) = &agent.host else { continue };
                for fs in &h.filesystems {
                    let free = fs.total_bytes.saturating_sub(fs.used_bytes);
                    for (state, value) in [("used", fs.used_bytes), ("free", free)] {
                        let mut attributes = filesystem_attributes(agent, fs);
                        attributes.push(KeyValue::new(names::FILESYSTEM_STATE, state));
                        observer.observe(bytes(value), &attributes);
                    }
                }
            }
        })
        .build();
    let f = fleet.clone();
    meter
        .i64_observable_up_down_counter(names::FILESYSTEM_LIMIT)
        .with_unit("By")
        .with_description("File system size, per mount point")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                let Some(h) = &agent.host else { continue };
                for fs in &h.filesystems {
                    observer.observe(bytes(fs.total_bytes), &filesystem_attributes(agent, fs));
                }
            }
        })
        .build();
    let f = fleet.clone();
    meter
        .f64_observable_gauge(names::FILESYSTEM_UTILIZATION)
        .with_unit("1")
        .with_description("File system space in use, 0 to 1, per mount point")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                let Some(h) = &agent.host else { continue };
                for fs in &h.filesystems {
                    if let Some(value) = ratio(fs.used_bytes, fs.total_bytes) {
                        observer.observe(value, &filesystem_attributes(agent, fs));
                    }
                }
            }
        })
        .build();
}

/// One counter per interface and direction, from the agent's counters
/// since boot.
fn network_counter(
    meter: &Meter,
    fleet: &Arc<Fleet>,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    value: fn(&v1::NetworkInterface) -> (u64, u64),
) {
    let f = fleet.clone();
    meter
        .u64_observable_counter(name)
        .with_unit(unit)
        .with_description(description)
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                let Some(h) = &agent.host else { continue };
                for interface in &h.network_interfaces {
                    let (received, transmitted) = value(interface);
                    for (direction, value) in [("receive", received), ("transmit", transmitted)] {
                        observer.observe(
                            value,
                            &[
                                agent.id.clone(),
                                KeyValue::new(names::INTERFACE, interface.name.clone()),
                                KeyValue::new(names::DIRECTION, direction),
                            ],
                        );
                    }
                }
            }
        })
        .build();
}

fn register_network(meter: &Meter, fleet: &Arc<Fleet>) {
    network_counter(
        meter,
        fleet,
        names::NETWORK_IO,
        "By",
        "Bytes received and transmitted per interface since boot",
        |i| (i.received_bytes, i.transmitted_bytes),
    );
    network_counter(
        meter,
        fleet,
        names::NETWORK_PACKET_COUNT,
        "{packet}",
        "Packets received and transmitted per interface since boot",
        |i| (i.received_packets, i.transmitted_packets),
    );
    network_counter(
        meter,
        fleet,
        names::NETWORK_ERRORS,
        "{error}",
        "Receive and transmit errors per interface since boot",
        |i| (i.receive_errors, i.transmit_errors),
    );
}

fn register_checks(meter: &Meter, fleet: &Arc<Fleet>) {
    let f = fleet.clone();
    meter
        .i64_observable_gauge(names::AGENT_CONNECTED)
        .with_description("1 while the agent has a session with this controller (the leader)")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                observer.observe(i64::from(agent.connected), std::slice::from_ref(&agent.id));
            }
        })
        .build();
    let f = fleet.clone();
    meter
        .i64_observable_gauge(names::CHECK_STATUS)
        .with_description(
            "The latest result of each check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios codes)",
        )
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                for (check, code, _) in &agent.checks {
                    observer.observe(
                        *code,
                        &[agent.id.clone(), KeyValue::new(names::CHECK, check.clone())],
                    );
                }
            }
        })
        .build();
    let f = fleet.clone();
    meter
        .f64_observable_gauge(names::CHECK_DURATION)
        .with_unit("s")
        .with_description("How long the latest run of each check took")
        .with_callback(move |observer| {
            for agent in f.snapshot().iter() {
                for (check, _, duration) in &agent.checks {
                    observer.observe(
                        *duration,
                        &[agent.id.clone(), KeyValue::new(names::CHECK, check.clone())],
                    );
                }
            }
        })
        .build();
}

fn register_inputs(meter: &Meter, sources: &Sources) {
    let counters = sources.counters.clone();
    meter
        .u64_observable_counter(names::REPORTS_ACCEPTED)
        .with_unit("{report}")
        .with_description("Agent reports accepted (new sequence numbers)")
        .with_callback(move |observer| {
            observer.observe(counters.reports_accepted.load(Ordering::Relaxed), &[]);
        })
        .build();
    let counters = sources.counters.clone();
    meter
        .u64_observable_counter(names::REPORTS_DUPLICATE)
        .with_unit("{report}")
        .with_description("Agent reports whose sequence number was seen already (replays)")
        .with_callback(move |observer| {
            observer.observe(counters.reports_duplicate.load(Ordering::Relaxed), &[]);
        })
        .build();
    let counters = sources.counters.clone();
    meter
        .u64_observable_counter(names::OBSERVATIONS_DROPPED)
        .with_unit("{observation}")
        .with_description("Reports and action results the failover engine's full inbox dropped")
        .with_callback(move |observer| {
            observer.observe(counters.observations_dropped.load(Ordering::Relaxed), &[]);
        })
        .build();
    let counters = sources.counters.clone();
    meter
        .u64_observable_counter(names::INPUTS_REJECTED)
        .with_unit("{input}")
        .with_description("Input refused after the TLS handshake, by reason")
        .with_callback(move |observer| {
            for why in Rejection::ALL {
                observer.observe(
                    counters.rejected(why),
                    &[KeyValue::new(names::REASON, why.as_str())],
                );
            }
        })
        .build();
    let tls = sources.tls.clone();
    meter
        .u64_observable_counter(names::TLS_HANDSHAKES_ACCEPTED)
        .with_unit("{handshake}")
        .with_description("TLS handshakes completed with a valid client certificate")
        .with_callback(move |observer| observer.observe(tls.counters().accepted(), &[]))
        .build();
    let tls = sources.tls.clone();
    meter
        .u64_observable_counter(names::TLS_HANDSHAKES_REJECTED)
        .with_unit("{handshake}")
        .with_description("TLS handshakes refused, by reason")
        .with_callback(move |observer| {
            for why in HandshakeRejection::ALL {
                observer.observe(
                    tls.counters().rejected(why),
                    &[KeyValue::new(names::REASON, why.as_str())],
                );
            }
        })
        .build();
}

fn register_raft(meter: &Meter, sources: &Sources, watch: Arc<RaftWatch>) {
    let node = sources.raft.clone();
    meter
        .u64_observable_gauge(names::RAFT_TERM)
        .with_description("This node's Raft term")
        .with_callback(move |observer| observer.observe(node.status().term, &[]))
        .build();
    let node = sources.raft.clone();
    meter
        .u64_observable_gauge(names::RAFT_LEADER)
        .with_description("The leader's node id as this node knows it; 0 when none")
        .with_callback(move |observer| observer.observe(node.status().leader.unwrap_or(0), &[]))
        .build();
    let node = sources.raft.clone();
    meter
        .i64_observable_gauge(names::RAFT_IS_LEADER)
        .with_description("1 on the leader, 0 elsewhere")
        .with_callback(move |observer| {
            let leading = node.status().role == ::raft::StateRole::Leader;
            observer.observe(i64::from(leading), &[]);
        })
        .build();
    let node = sources.raft.clone();
    meter
        .u64_observable_gauge(names::RAFT_COMMIT_INDEX)
        .with_unit("{entry}")
        .with_description("The highest log index this node knows to be committed")
        .with_callback(move |observer| observer.observe(node.status().commit, &[]))
        .build();
    let node = sources.raft.clone();
    meter
        .u64_observable_gauge(names::RAFT_APPLIED_INDEX)
        .with_unit("{entry}")
        .with_description("The highest log index this node has applied")
        .with_callback(move |observer| observer.observe(node.status().applied, &[]))
        .build();
    let w = watch.clone();
    meter
        .u64_observable_counter(names::RAFT_LEADER_CHANGES)
        .with_unit("{change}")
        .with_description("Times this node learned of a new leader")
        .with_callback(move |observer| {
            observer.observe(w.leader_changes.load(Ordering::Relaxed), &[]);
        })
        .build();
    let (w, node) = (watch.clone(), sources.raft.clone());
    meter
        .u64_observable_gauge(names::RAFT_FOLLOWER_LAG)
        .with_unit("{entry}")
        .with_description("On the leader: entries in its log a follower is not known to have")
        .with_callback(move |observer| {
            if node.status().role != ::raft::StateRole::Leader {
                return;
            }
            let Some(replication) = w.replication() else {
                return;
            };
            for follower in &replication.followers {
                observer.observe(
                    replication.last_index.saturating_sub(follower.matched),
                    &[KeyValue::new(names::PEER, follower.id.to_string())],
                );
            }
        })
        .build();
    let (w, node) = (watch.clone(), sources.raft.clone());
    meter
        .f64_observable_gauge(names::RAFT_FOLLOWER_LAST_CONTACT)
        .with_unit("s")
        .with_description("On the leader: time since a follower was last heard from")
        .with_callback(move |observer| {
            if node.status().role != ::raft::StateRole::Leader {
                return;
            }
            let Some(replication) = w.replication() else {
                return;
            };
            for follower in &replication.followers {
                if let Some(since) = follower.last_contact {
                    observer.observe(
                        since.as_secs_f64(),
                        &[KeyValue::new(names::PEER, follower.id.to_string())],
                    );
                }
            }
        })
        .build();
    register_links(meter, sources, watch);
}

/// The peer links' counters, one series per member this node sends to.
fn register_links(meter: &Meter, sources: &Sources, watch: Arc<RaftWatch>) {
    type Pick = fn(&crate::raft::LinkStats) -> u64;
    let counters: [(&'static str, &'static str, &'static str, Pick); 4] = [
        (
            names::PEER_MESSAGES_SENT,
            "{message}",
            "Raft messages handed to a peer's stream",
            |s| s.sent,
        ),
        (
            names::PEER_BATCHES_SENT,
            "{batch}",
            "Batches of Raft messages handed to a peer's stream",
            |s| s.batches,
        ),
        (
            names::PEER_CONNECTS,
            "{connection}",
            "Streams opened to a peer",
            |s| s.connects,
        ),
        (
            names::PEER_FAILURES,
            "{failure}",
            "Connection attempts and streams to a peer that failed",
            |s| s.failures,
        ),
    ];
    let local = sources.node_id;
    for (name, unit, description, pick) in counters {
        let (w, transport) = (watch.clone(), sources.transport.clone());
        meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                for (peer, stats) in links(&w, &transport, local) {
                    observer.observe(pick(&stats), &[KeyValue::new(names::PEER, peer)]);
                }
            })
            .build();
    }
    let (w, transport) = (watch, sources.transport.clone());
    meter
        .u64_observable_counter(names::PEER_MESSAGES_DROPPED)
        .with_unit("{message}")
        .with_description("Raft messages dropped on the way to a peer, by reason")
        .with_callback(move |observer| {
            for (peer, stats) in links(&w, &transport, local) {
                for (reason, value) in [
                    ("queue_full", stats.dropped_queue_full),
                    ("disconnected", stats.dropped_disconnected),
                    ("unsendable", stats.dropped_unsendable),
                ] {
                    observer.observe(
                        value,
                        &[
                            KeyValue::new(names::PEER, peer.clone()),
                            KeyValue::new(names::REASON, reason),
                        ],
                    );
                }
            }
            observer.observe(
                transport.dropped_unknown_peer(),
                &[
                    KeyValue::new(names::PEER, "none"),
                    KeyValue::new(names::REASON, "unknown_peer"),
                ],
            );
        })
        .build();
}

/// The link counters of every other member in the latest membership.
fn links(
    watch: &RaftWatch,
    transport: &crate::raft::GrpcTransport,
    local: NodeId,
) -> Vec<(String, crate::raft::LinkStats)> {
    let Some(replication) = watch.replication() else {
        return Vec::new();
    };
    let conf = &replication.conf_state;
    conf.voters
        .iter()
        .chain(&conf.learners)
        .filter(|&&id| id != local.get())
        .filter_map(|&id| {
            let peer = NodeId::new(id)?;
            Some((id.to_string(), transport.stats(peer)?))
        })
        .collect()
}

/// Path states and active paths, from what the engine recorded.
pub(super) fn register_engine(meter: &Meter, engine: Arc<Mutex<EngineState>>) {
    let e = engine.clone();
    meter
        .i64_observable_gauge(names::PATH_STATE)
        .with_description("1 for each path's current state, as the failover engine sees it")
        .with_callback(move |observer| {
            let engine = e.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for ((service, path), state) in &engine.path_states {
                observer.observe(
                    1,
                    &[
                        KeyValue::new(names::SERVICE, service.clone()),
                        KeyValue::new(names::PATH, path.clone()),
                        KeyValue::new(names::STATE, *state),
                    ],
                );
            }
        })
        .build();
    meter
        .i64_observable_gauge(names::ACTIVE_PATH)
        .with_description("1 for each service's active path")
        .with_callback(move |observer| {
            let engine = engine
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (service, path) in &engine.active {
                observer.observe(
                    1,
                    &[
                        KeyValue::new(names::SERVICE, service.clone()),
                        KeyValue::new(names::PATH, path.clone()),
                    ],
                );
            }
        })
        .build();
}
