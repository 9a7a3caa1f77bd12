//! Metric and attribute names, in OpenTelemetry form. Host metrics use the
//! host-metrics semantic conventions (checked against
//! opentelemetry-semantic-conventions in the tests); Leitstand's own start
//! with `leitstand.`. The Prometheus exporter turns dots into underscores
//! and appends the unit (`_bytes`, `_seconds`, `_ratio`) and `_total` for
//! counters: deploy/README.md lists both forms.

// Host metrics: OpenTelemetry host-metrics semantic conventions.
pub(crate) const CPU_UTILIZATION: &str = "system.cpu.utilization";
/// Not (any longer) in the conventions; the OpenTelemetry Collector's
/// hostmetrics receiver uses these names.
pub(crate) const LOAD_AVERAGE_1M: &str = "system.cpu.load_average.1m";
pub(crate) const LOAD_AVERAGE_5M: &str = "system.cpu.load_average.5m";
pub(crate) const LOAD_AVERAGE_15M: &str = "system.cpu.load_average.15m";
pub(crate) const MEMORY_USAGE: &str = "system.memory.usage";
pub(crate) const MEMORY_LIMIT: &str = "system.memory.limit";
pub(crate) const MEMORY_UTILIZATION: &str = "system.memory.utilization";
pub(crate) const PAGING_USAGE: &str = "system.paging.usage";
pub(crate) const PAGING_UTILIZATION: &str = "system.paging.utilization";
pub(crate) const UPTIME: &str = "system.uptime";
pub(crate) const FILESYSTEM_USAGE: &str = "system.filesystem.usage";
pub(crate) const FILESYSTEM_LIMIT: &str = "system.filesystem.limit";
pub(crate) const FILESYSTEM_UTILIZATION: &str = "system.filesystem.utilization";
pub(crate) const NETWORK_IO: &str = "system.network.io";
pub(crate) const NETWORK_PACKET_COUNT: &str = "system.network.packet.count";
pub(crate) const NETWORK_ERRORS: &str = "system.network.errors";
pub(crate) const HW_TEMPERATURE: &str = "hw.temperature";

// Their attributes (semantic conventions), and ours.
pub(crate) const AGENT_ID: &str = "agent.id";
pub(crate) const MEMORY_STATE: &str = "system.memory.state";
pub(crate) const PAGING_STATE: &str = "system.paging.state";
pub(crate) const DEVICE: &str = "system.device";
pub(crate) const FILESYSTEM_MOUNTPOINT: &str = "system.filesystem.mountpoint";
pub(crate) const FILESYSTEM_TYPE: &str = "system.filesystem.type";
pub(crate) const FILESYSTEM_STATE: &str = "system.filesystem.state";
pub(crate) const INTERFACE: &str = "network.interface.name";
pub(crate) const DIRECTION: &str = "network.io.direction";
pub(crate) const HW_ID: &str = "hw.id";
pub(crate) const HW_TYPE: &str = "hw.type";

// Agents and checks.
pub(crate) const AGENT_CONNECTED: &str = "leitstand.agent.connected";
pub(crate) const CHECK_STATUS: &str = "leitstand.check.status";
pub(crate) const CHECK_DURATION: &str = "leitstand.check.duration";
pub(crate) const CHECK: &str = "check";

// Input.
pub(crate) const REPORTS_ACCEPTED: &str = "leitstand.reports.accepted";
pub(crate) const REPORTS_DUPLICATE: &str = "leitstand.reports.duplicate";
pub(crate) const OBSERVATIONS_DROPPED: &str = "leitstand.engine.observations.dropped";
pub(crate) const INPUTS_REJECTED: &str = "leitstand.inputs.rejected";
pub(crate) const TLS_HANDSHAKES_ACCEPTED: &str = "leitstand.tls.handshakes.accepted";
pub(crate) const TLS_HANDSHAKES_REJECTED: &str = "leitstand.tls.handshakes.rejected";
pub(crate) const REASON: &str = "reason";

// Raft.
pub(crate) const RAFT_TERM: &str = "leitstand.raft.term";
pub(crate) const RAFT_IS_LEADER: &str = "leitstand.raft.is_leader";
pub(crate) const RAFT_LEADER: &str = "leitstand.raft.leader";
pub(crate) const RAFT_LEADER_CHANGES: &str = "leitstand.raft.leader.changes";
pub(crate) const RAFT_COMMIT_INDEX: &str = "leitstand.raft.commit.index";
pub(crate) const RAFT_APPLIED_INDEX: &str = "leitstand.raft.applied.index";
pub(crate) const RAFT_FOLLOWER_LAG: &str = "leitstand.raft.follower.lag";
pub(crate) const RAFT_FOLLOWER_LAST_CONTACT: &str = "leitstand.raft.follower.last_contact";
pub(crate) const PEER_MESSAGES_SENT: &str = "leitstand.raft.peer.messages.sent";
pub(crate) const PEER_BATCHES_SENT: &str = "leitstand.raft.peer.batches.sent";
pub(crate) const PEER_CONNECTS: &str = "leitstand.raft.peer.connects";
pub(crate) const PEER_FAILURES: &str = "leitstand.raft.peer.failures";
pub(crate) const PEER_MESSAGES_DROPPED: &str = "leitstand.raft.peer.messages.dropped";
pub(crate) const PEER: &str = "peer";

// The failover engine (recorded through `Recorder`).
pub(crate) const PATH_STATE: &str = "leitstand.path.state";
pub(crate) const ACTIVE_PATH: &str = "leitstand.service.active_path";
pub(crate) const DECISIONS: &str = "leitstand.decisions";
pub(crate) const DETECTION_DURATION: &str = "leitstand.failover.detection.duration";
pub(crate) const FAILOVER_DURATION: &str = "leitstand.failover.duration";
pub(crate) const SERVICE: &str = "service";
pub(crate) const PATH: &str = "path";
pub(crate) const STATE: &str = "state";
pub(crate) const OUTCOME: &str = "outcome";
