//! The Operator gRPC service: cluster membership and replication status,
//! and write probes, for the `leitstand cluster` commands, the dashboard
//! and monitoring. The failover engine adds its calls (status, approvals,
//! runbooks, audit) here.
//!
//! Every call requires an `operator` certificate; the name in it maps to a
//! role through `[rbac]` (DESIGN.md §7): viewers read, operators also
//! probe (and later approve, switch, freeze), admins also change
//! membership. A refused call is counted (`permission_denied`) and logged.
//!
//! Writes on a follower end with [`leitstand_proto::operator::not_leader`]:
//! the client follows the leader's address. Membership changes go one at a
//! time, each a single-node ConfChangeV2:
//! - **add**: the node joins as a learner, and is promoted to voter only once
//!   it has caught up with the log, so a new, empty node never counts
//!   towards the quorum it cannot yet serve;
//! - **remove the leader**: leadership goes first to the most caught-up
//!   voter, and the client is sent there to finish the removal (raft-rs 0.7
//!   does not step a removed leader down cleanly);
//! - **transfer**: the leader asks raft-rs to hand over, and the call
//!   returns once the new leader is known.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leitstand_proto::domain::NodeId;
use leitstand_proto::domain::bounds::{MAX_ADDRESS_BYTES, MAX_MEMBERS};
use leitstand_proto::identity::{PeerInfo, PeerKind, require_kind};
use leitstand_proto::operator::not_leader;
use leitstand_proto::v1::{self, operator_server::Operator};
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::config::Rbac;
use crate::counters::{Counters, Rejection};
use crate::raft::{NodeHandle, ProposeError, ReplicationStatus, WeakStorage};
use crate::state::{ClusterState, Command, MembershipContext, now_unix_ms};

/// How long a read waits for a quorum to confirm it before the status is
/// answered from this node's own view.
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new learner may take to catch up before the call returns
/// (it stays a learner; `cluster add` again promotes it).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a membership change waits for the one before it, or for a
/// new leader's first entry, before it is refused as busy.
const MEMBERSHIP_BUSY_WAIT: Duration = Duration::from_secs(3);
/// How long a leadership transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_PROBE_PAYLOAD_BYTES: usize = 64;
/// Audit entries read from the state per step of an Audit stream.
const AUDIT_CHUNK: usize = 256;

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The highest role `[rbac]` gives `name` ("*" matches every name).
pub(crate) fn role_of(rbac: &Rbac, name: &str) -> Option<Role> {
    let listed = |names: &[String]| names.iter().any(|n| n == name || n == "*");
    if listed(&rbac.admin) {
        Some(Role::Admin)
    } else if listed(&rbac.operator) {
        Some(Role::Operator)
    } else if listed(&rbac.viewer) {
        Some(Role::Viewer)
    } else {
        None
    }
}

/// Node id → address of the members, for leader hints and status: the
/// replicated records, and `[cluster] peers` for members bootstrapped
/// before their addresses were recorded. These are the advertised
/// addresses, the only ones ever told to a client or recorded; `routes`
/// (`[cluster] peer_routes`) changes only where this node's Raft transport
/// dials ([`AddressBook::dial_targets`]).
#[derive(Debug, Clone)]
pub(crate) struct AddressBook {
    pub(crate) configured: Arc<BTreeMap<NodeId, String>>,
    pub(crate) replicated: watch::Receiver<BTreeMap<NodeId, String>>,
    pub(crate) routes: Arc<BTreeMap<NodeId, String>>,
}

impl AddressBook {
    pub(crate) fn get(&self, id: u64) -> Option<String> {
        let id = NodeId::new(id)?;
        self.replicated
            .borrow()
            .get(&id)
            .or_else(|| self.configured.get(&id))
            .cloned()
    }

    /// Every known advertised address; the replicated one wins.
    pub(crate) fn all(&self) -> BTreeMap<NodeId, String> {
        let mut all = (*self.configured).clone();
        all.extend(self.replicated.borrow().clone());
        all
    }

    /// Where the Raft transport dials each known member: its route when
    /// `[cluster] peer_routes` has one, else its advertised address. A
    /// route for a node that is not (yet) a known member adds nothing: the
    /// membership decides whom to dial, the route only how.
    pub(crate) fn dial_targets(&self) -> BTreeMap<NodeId, String> {
        let mut targets = self.all();
        for (id, address) in &mut targets {
            if let Some(route) = self.routes.get(id) {
                address.clone_from(route);
            }
        }
        targets
    }
}

pub(crate) struct OperatorService {
    pub(crate) node_id: NodeId,
    pub(crate) raft: NodeHandle,
    pub(crate) state: ClusterState,
    pub(crate) addresses: AddressBook,
    pub(crate) rbac: Rbac,
    pub(crate) counters: Arc<Counters>,
    pub(crate) registry: Arc<crate::registry::Registry>,
    /// The node's Raft log, read for the state digest (weak: an open
    /// stream must not keep the file open after the node stopped).
    pub(crate) storage: WeakStorage,
}

/// How often Watch looks for changes when nothing is committed.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two Watch events.
const WATCH_MIN_GAP: Duration = Duration::from_millis(200);

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// UNAUTHENTICATED, counted and logged, once `peer`'s certificate was
/// revoked by a CRL reloaded after the handshake or passed its notAfter.
fn certificate_still_valid(counters: &Counters, peer: &PeerInfo, call: &str) -> Result<(), Status> {
    peer.still_valid(SystemTime::now()).map_err(|invalid| {
        let why = Rejection::from(&invalid);
        counters.reject(why);
        tracing::warn!(
            operator = %peer.identity,
            peer = %peer.remote_addr,
            call,
            reason = why.as_str(),
            "operator call refused: {invalid}"
        );
        Status::unauthenticated(invalid.to_string())
    })
}

impl OperatorService {
    fn role_of_request<T>(&self, request: &Request<T>) -> v1::Role {
        let role = leitstand_proto::identity::peer_info(request)
            .ok()
            .and_then(|peer| role_of(&self.rbac, &peer.identity.name().to_string()));
        match role {
            Some(Role::Admin) => v1::Role::Admin,
            Some(Role::Operator) => v1::Role::Operator,
            Some(Role::Viewer) => v1::Role::Viewer,
            None => v1::Role::Unspecified,
        }
    }

    /// Proposes an operator's command on the leader; the reply names the
    /// committed index, the newest audit entry and the decision.
    async fn act(
        &self,
        command: Command,
        decision_id: String,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        self.require_leader()?;
        let index = self
            .raft
            .propose(command.encode())
            .await
            .map_err(|error| self.propose_error(error))?;
        Ok(Response::new(v1::OperatorActionReply {
            committed_index: index,
            audit_index: self.state.audit_len(),
            decision_id,
        }))
    }

    /// Freezes or unfreezes `service` for `operator` (Freeze, Unfreeze).
    async fn set_frozen(
        &self,
        operator: &str,
        service: String,
        reason: String,
        frozen: bool,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        identifier("service", &service)?;
        optional_reason(&reason)?;
        let by = format!("operator/{operator}");
        let at_unix_ms = now_unix_ms();
        let command = if frozen {
            Command::Freeze {
                service,
                by,
                reason,
                at_unix_ms,
            }
        } else {
            Command::Unfreeze {
                service,
                by,
                reason,
                at_unix_ms,
            }
        };
        self.act(command, String::new()).await
    }

    fn view(&self, role: v1::Role, cluster: Option<v1::ClusterStatusReply>) -> v1::View {
        crate::view::build(&self.state, &self.registry, role, cluster, now_unix_ms())
    }

    /// The caller's name if its role is at least `needed`.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        needed: Role,
        call: &str,
    ) -> Result<String, Status> {
        // A connection opened before its certificate was revoked or expired
        // carries no further call (I8).
        if let Some(peer) = request.extensions().get::<PeerInfo>() {
            certificate_still_valid(&self.counters, peer, call)?;
        }
        let peer = require_kind(request, PeerKind::Operator)?;
        let name = peer.identity.name().to_string();
        match role_of(&self.rbac, &name) {
            Some(role) if role >= needed => Ok(name),
            role => {
                self.counters.reject(Rejection::PermissionDenied);
                let has = role.map_or("no role", Role::as_str);
                tracing::warn!(operator = %name, call, has, needs = needed.as_str(), "operator call refused");
                Err(Status::permission_denied(format!(
                    "{call} needs the {} role; operator {name:?} has {has}: an admin can add the name to [rbac] in controller.toml",
                    needed.as_str()
                )))
            }
        }
    }

    fn not_leader(&self, leader: Option<u64>) -> Status {
        let address = leader.and_then(|id| self.addresses.get(id));
        not_leader(leader, address.as_deref())
    }

    /// Fails with not-leader unless this node leads.
    fn require_leader(&self) -> Result<(), Status> {
        let status = self.raft.status();
        if status.role == raft::StateRole::Leader {
            Ok(())
        } else {
            Err(self.not_leader(status.leader))
        }
    }

    fn propose_error(&self, error: ProposeError) -> Status {
        match error {
            ProposeError::NotLeader { leader_hint } => self.not_leader(leader_hint),
            ProposeError::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
            ProposeError::Refused { .. } | ProposeError::MembershipChangeInProgress => {
                Status::failed_precondition(error.to_string())
            }
            ProposeError::Dropped | ProposeError::Unknown | ProposeError::Stopped => {
                Status::unavailable(error.to_string())
            }
        }
    }

    async fn inspect(&self) -> Result<ReplicationStatus, Status> {
        self.raft
            .inspect()
            .await
            .ok_or_else(|| Status::unavailable("this controller's Raft node has stopped"))
    }

    async fn status_reply(&self) -> Result<v1::ClusterStatusReply, Status> {
        // On a node cut off from the majority the read times out, and the
        // operator still gets this node's view, marked as such.
        let confirmed = self.raft.read_index(READ_TIMEOUT).await.is_ok();
        let replication = self.inspect().await?;
        let mut reply = self.describe(&replication, confirmed);
        let (applied, digest) = self.state_digest().await?;
        reply.state_digest = hex(&digest);
        reply.digest_applied_index = applied;
        Ok(reply)
    }

    /// The applied index and the SHA-256 of the applied state, from one
    /// read transaction of the redb file. It reads every record (a few MiB
    /// at most), so it runs on a blocking thread and only for the status
    /// calls, never for the Watch views built every second.
    async fn state_digest(&self) -> Result<(u64, [u8; 32]), Status> {
        let storage = self.storage.upgrade().ok_or_else(|| {
            Status::unavailable("this controller's Raft log is closed (it is stopping)")
        })?;
        tokio::task::spawn_blocking(move || storage.state_digest())
            .await
            .map_err(|error| Status::internal(format!("reading the state digest: {error}")))?
            .map_err(|error| {
                tracing::error!(error = %leitstand_proto::error_chain(&error), "reading the state digest failed");
                Status::internal(format!(
                    "reading the state digest: {}",
                    leitstand_proto::error_chain(&error)
                ))
            })
    }

    fn describe(&self, replication: &ReplicationStatus, confirmed: bool) -> v1::ClusterStatusReply {
        let conf = &replication.conf_state;
        let voters: BTreeSet<u64> = conf.voters.iter().copied().collect();
        let outgoing: BTreeSet<u64> = conf.voters_outgoing.iter().copied().collect();
        let ids: BTreeSet<u64> = voters
            .iter()
            .chain(&outgoing)
            .chain(&conf.learners)
            .copied()
            .collect();
        let status = &replication.status;
        let leading = status.role == raft::StateRole::Leader;
        let members = ids
            .into_iter()
            .map(|id| {
                let follower = replication.followers.iter().find(|f| f.id == id);
                let (match_index, catching_up, last_contact_ms_ago) = match follower {
                    Some(f) => (
                        f.matched,
                        f.catching_up,
                        f.last_contact
                            .map_or(-1, |ago| i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)),
                    ),
                    None if leading && id == status.id => (replication.last_index, false, 0),
                    None => (0, false, -1),
                };
                v1::Member {
                    node_id: id,
                    address: self.addresses.get(id).unwrap_or_default(),
                    voter: voters.contains(&id),
                    match_index,
                    lag: if leading {
                        replication.last_index.saturating_sub(match_index)
                    } else {
                        0
                    },
                    last_contact_ms_ago,
                    outgoing_voter: outgoing.contains(&id),
                    catching_up,
                }
            })
            .collect();
        v1::ClusterStatusReply {
            members,
            leader_id: status.leader.unwrap_or(0),
            term: status.term,
            commit_index: status.commit,
            applied_index: status.applied,
            answered_by: self.node_id.get(),
            confirmed_by_quorum: confirmed,
            joint_configuration: !conf.voters_outgoing.is_empty(),
            snapshot_index: replication.snapshot_index,
            first_index: replication.first_index,
            last_index: replication.last_index,
            // Filled in by `status_reply`; a Watch view goes without.
            state_digest: String::new(),
            digest_applied_index: 0,
        }
    }

    fn context(&self, operator: &str, address: Option<String>) -> Vec<u8> {
        MembershipContext {
            actor: format!("operator/{operator}"),
            at_unix_ms: now_unix_ms(),
            address,
        }
        .encode()
    }

    async fn change_membership(
        &self,
        kind: ConfChangeType,
        node: u64,
        context: Vec<u8>,
    ) -> Result<u64, Status> {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.node_id = node;
        let mut change = ConfChangeV2::default();
        change.set_changes(vec![single].into());
        change.context = context.into();
        // A leader just elected (after a transfer, say) takes no membership
        // change until it has applied its first entry; a change still being
        // committed finishes within moments too. Wait that out, bounded.
        let deadline = Instant::now() + MEMBERSHIP_BUSY_WAIT;
        loop {
            match self.raft.propose_membership(change.clone()).await {
                Err(ProposeError::MembershipChangeInProgress) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result => return result.map_err(|error| self.propose_error(error)),
            }
        }
    }

    /// Waits until learner `node` has every entry the leader had when
    /// asked; `Err` with what it reached otherwise.
    async fn wait_caught_up(&self, node: u64) -> Result<(), (u64, u64)> {
        let target = self.raft.status().commit;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut reached = 0;
        loop {
            let replication = self.raft.inspect().await;
            if let Some(follower) = replication
                .as_ref()
                .and_then(|r| r.followers.iter().find(|f| f.id == node))
            {
                reached = follower.matched;
                if follower.matched >= target && !follower.catching_up {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err((reached, target));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the node knows a leader for which `done` holds.
    async fn wait_for_leader(&self, done: impl Fn(u64) -> bool) -> Option<u64> {
        let mut status = self.raft.watch_status();
        let wait = status.wait_for(|s| s.leader.is_some_and(&done));
        match tokio::time::timeout(TRANSFER_TIMEOUT, wait).await {
            Ok(Ok(status)) => status.leader,
            _ => None,
        }
    }
}

fn audit_entry(entry: crate::state::AuditEntry) -> v1::AuditEntry {
    v1::AuditEntry {
        index: entry.index,
        log_index: entry.log_index,
        at_unix_ms: entry.at_unix_ms,
        actor: entry.actor,
        kind: entry.kind,
        body_json: entry.body_json,
        prev_hash: entry.prev_hash,
        hash: entry.hash,
    }
}

fn identifier(field: &str, value: &str) -> Result<(), Status> {
    leitstand_proto::domain::Identifier::new(value)
        .map(drop)
        .map_err(|error| Status::invalid_argument(format!("{field}: {error}")))
}

fn required_reason(reason: &str) -> Result<(), Status> {
    if reason.trim().is_empty() || reason.len() > leitstand_proto::domain::bounds::MAX_REASON_BYTES
    {
        return Err(Status::invalid_argument(
            "a reason is required: 1 to 1024 bytes, for the audit log",
        ));
    }
    Ok(())
}

fn optional_reason(reason: &str) -> Result<(), Status> {
    if reason.len() > leitstand_proto::domain::bounds::MAX_REASON_BYTES {
        return Err(Status::invalid_argument(
            "the reason may be at most 1024 bytes",
        ));
    }
    Ok(())
}

fn member_id(id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(Status::invalid_argument("node_id must be 1 or more"));
    }
    Ok(id)
}

#[tonic::async_trait]
impl Operator for OperatorService {
    type WatchStream = Stream<v1::WatchEvent>;
    type AuditStream = Stream<v1::AuditEntry>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.authorize(&request, Role::Viewer, "Watch")?;
        let role = self.role_of_request(&request);
        let certificate = request.extensions().get::<PeerInfo>().cloned();
        let counters = self.counters.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let state = self.state.clone();
        let registry = self.registry.clone();
        let mut status = self.raft.watch_status();
        let raft = self.raft.clone();
        let describe = OperatorService {
            node_id: self.node_id,
            raft: self.raft.clone(),
            state: self.state.clone(),
            addresses: self.addresses.clone(),
            rbac: self.rbac.clone(),
            counters: self.counters.clone(),
            registry: self.registry.clone(),
            storage: self.storage.clone(),
        };
        tokio::spawn(async move {
            let cluster = |replication: Option<ReplicationStatus>| {
                replication.map(|r| describe.describe(&r, false))
            };
            let mut previous = crate::view::build(
                &state,
                &registry,
                role,
                cluster(raft.inspect().await),
                now_unix_ms(),
            );
            if tx
                .send(Ok(v1::WatchEvent {
                    kind: Some(v1::watch_event::Kind::Full(previous.clone())),
                }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                    () = tx.closed() => return,
                }
                if let Some(peer) = &certificate
                    && let Err(status) = certificate_still_valid(&counters, peer, "Watch")
                {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                tokio::time::sleep(WATCH_MIN_GAP).await;
                let next = crate::view::build(
                    &state,
                    &registry,
                    role,
                    cluster(raft.inspect().await),
                    now_unix_ms(),
                );
                if let Some(delta) = crate::view::delta(&previous, &next) {
                    if tx
                        .send(Ok(v1::WatchEvent {
                            kind: Some(v1::watch_event::Kind::Delta(delta)),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    previous = next;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::View>, Status> {
        self.authorize(&request, Role::Viewer, "Status")?;
        let role = self.role_of_request(&request);
        let cluster = self.status_reply().await?;
        Ok(Response::new(self.view(role, Some(cluster))))
    }

    async fn approve(
        &self,
        request: Request<v1::ApproveRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        let operator = self.authorize(&request, Role::Operator, "Approve")?;
        let id = request.into_inner().decision_id;
        identifier("decision_id", &id)?;
        tracing::info!(%operator, decision = %id, "operator approves");
        let command = Command::Approve {
            decision: id.clone(),
            operator,
            at_unix_ms: now_unix_ms(),
        };
        self.act(command, id).await
    }

    async fn reject(
        &self,
        request: Request<v1::RejectRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        let operator = self.authorize(&request, Role::Operator, "Reject")?;
        let v1::RejectRequest {
            decision_id,
            reason,
        } = request.into_inner();
        identifier("decision_id", &decision_id)?;
        required_reason(&reason)?;
        tracing::info!(%operator, decision = %decision_id, "operator rejects");
        let command = Command::Reject {
            decision: decision_id.clone(),
            operator,
            reason,
            at_unix_ms: now_unix_ms(),
        };
        self.act(command, decision_id).await
    }

    async fn switch(
        &self,
        request: Request<v1::SwitchRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        let operator = self.authorize(&request, Role::Operator, "Switch")?;
        let v1::SwitchRequest {
            service,
            path,
            reason,
        } = request.into_inner();
        identifier("service", &service)?;
        identifier("path", &path)?;
        required_reason(&reason)?;
        let from = self
            .state
            .with_failover(|f| f.services.get(&service).map(|s| s.active_path.clone()))
            .ok_or_else(|| {
                Status::not_found(format!("no service {service:?} in the current runbook"))
            })?;
        tracing::info!(%operator, %service, %from, to = %path, "operator switches");
        let command = Command::Decide {
            service,
            from_path: from,
            to_path: path,
            kind: crate::state::failover::DecisionKind::Manual,
            evidence: Vec::new(),
            operator,
            reason,
            at_unix_ms: now_unix_ms(),
        };
        let mut reply = self.act(command, String::new()).await?;
        let index = reply.get_ref().committed_index;
        let term = self.raft.status().term;
        reply.get_mut().decision_id = self
            .state
            .with_failover(|f| {
                f.decisions
                    .values()
                    .find(|d| d.fencing_index == index)
                    .map(|d| d.id.clone())
            })
            .unwrap_or_else(|| format!("d-{term}-{index}"));
        Ok(reply)
    }

    async fn freeze(
        &self,
        request: Request<v1::FreezeRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        let operator = self.authorize(&request, Role::Operator, "Freeze")?;
        let v1::FreezeRequest { service, reason } = request.into_inner();
        self.set_frozen(&operator, service, reason, true).await
    }

    async fn unfreeze(
        &self,
        request: Request<v1::UnfreezeRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        let operator = self.authorize(&request, Role::Operator, "Unfreeze")?;
        let v1::UnfreezeRequest { service, reason } = request.into_inner();
        self.set_frozen(&operator, service, reason, false).await
    }

    async fn apply_runbook(
        &self,
        request: Request<v1::ApplyRunbookRequest>,
    ) -> Result<Response<v1::ApplyRunbookReply>, Status> {
        let operator = self.authorize(&request, Role::Admin, "ApplyRunbook")?;
        let v1::ApplyRunbookRequest { toml, source_name } = request.into_inner();
        if toml.is_empty()
            || toml.len() > crate::runbook::MAX_RUNBOOK_BYTES
            || source_name.len() > 256
        {
            return Err(Status::invalid_argument(
                "the runbook must be 1 byte to 1 MiB, its source name at most 256 bytes",
            ));
        }
        let source_name = if source_name.is_empty() {
            "runbook.toml".to_owned()
        } else {
            source_name
        };
        let runbook = crate::runbook::Runbook::parse(std::path::Path::new(&source_name), &toml)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        self.require_leader()?;
        // Names no agent announced are warnings: the agent may not run yet.
        let references = runbook.references();
        let mut warnings = Vec::new();
        for vantage in &references.checks {
            match self.registry.announced(&vantage.agent) {
                None => warnings.push(format!(
                    "agent {} has not connected to this leader yet (check {})",
                    vantage.agent, vantage.check
                )),
                Some((checks, _)) if !checks.iter().any(|c| c == vantage.check.as_str()) => {
                    warnings.push(format!(
                        "agent {} did not announce a check {}",
                        vantage.agent, vantage.check
                    ));
                }
                _ => {}
            }
        }
        for activate in &references.actions {
            match self.registry.announced(&activate.agent) {
                None => warnings.push(format!(
                    "agent {} has not connected to this leader yet (action {})",
                    activate.agent, activate.action
                )),
                Some((_, actions)) if !actions.iter().any(|a| a == activate.action.as_str()) => {
                    warnings.push(format!(
                        "agent {} did not announce an action {}",
                        activate.agent, activate.action
                    ));
                }
                _ => {}
            }
        }
        warnings.sort();
        warnings.dedup();
        warnings.truncate(1000);
        let sha256 = crate::runbook::content_sha256(&toml);
        tracing::info!(%operator, %sha256, services = runbook.services.len(), "operator applies a runbook");
        let command = Command::ApplyRunbook {
            text: toml,
            source_name,
            actor: format!("operator/{operator}"),
            at_unix_ms: now_unix_ms(),
        };
        let index = self
            .raft
            .propose(command.encode())
            .await
            .map_err(|error| self.propose_error(error))?;
        Ok(Response::new(v1::ApplyRunbookReply {
            version: self.state.with_failover(|f| f.current_version()),
            content_sha256: sha256,
            committed_index: index,
            warnings,
        }))
    }

    async fn runbook(
        &self,
        request: Request<v1::RunbookRequest>,
    ) -> Result<Response<v1::RunbookReply>, Status> {
        self.authorize(&request, Role::Viewer, "Runbook")?;
        let wanted = request.into_inner().version;
        self.raft.read_index(READ_TIMEOUT).await.map_err(|error| {
            Status::unavailable(format!("the runbook cannot be read linearizably: {error}"))
        })?;
        let found = self.state.with_failover(|f| {
            let version = if wanted == 0 {
                f.current_version()
            } else {
                wanted
            };
            f.runbooks.iter().find(|r| r.version == version).cloned()
        });
        let version = found.ok_or_else(|| {
            Status::not_found(if wanted == 0 {
                "no runbook has been applied yet: `leitstand runbook apply FILE`".to_owned()
            } else {
                format!("there is no runbook version {wanted}")
            })
        })?;
        Ok(Response::new(v1::RunbookReply {
            version: version.version,
            content_sha256: version.sha256,
            toml: version.text,
            source_name: version.source_name,
            applied_by: version.applied_by,
            applied_at_unix_ms: version.at_unix_ms,
        }))
    }

    async fn audit(
        &self,
        request: Request<v1::AuditRequest>,
    ) -> Result<Response<Self::AuditStream>, Status> {
        self.authorize(&request, Role::Viewer, "Audit")?;
        let v1::AuditRequest { from_index, limit } = request.into_inner();
        // The chain as of everything committed before the call.
        self.raft.read_index(READ_TIMEOUT).await.map_err(|error| {
            Status::unavailable(format!(
                "the audit chain cannot be read linearizably: {error}"
            ))
        })?;
        let state = self.state.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(AUDIT_CHUNK);
        tokio::spawn(async move {
            let mut next = from_index.max(1);
            let mut left = if limit == 0 { u64::MAX } else { limit };
            while left > 0 {
                let chunk = AUDIT_CHUNK.min(usize::try_from(left).unwrap_or(AUDIT_CHUNK));
                let entries = state.audit_entries(next, chunk);
                if entries.is_empty() {
                    return;
                }
                for entry in entries {
                    next = entry.index + 1;
                    left -= 1;
                    if tx.send(Ok(audit_entry(entry))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cluster_status(
        &self,
        request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        self.authorize(&request, Role::Viewer, "ClusterStatus")?;
        Ok(Response::new(self.status_reply().await?))
    }

    async fn add_member(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        let operator = self.authorize(&request, Role::Admin, "AddMember")?;
        let v1::AddMemberRequest { node_id, address } = request.into_inner();
        let node = member_id(node_id)?;
        if address.len() > MAX_ADDRESS_BYTES || !leitstand_proto::config::is_host_port(&address) {
            return Err(Status::invalid_argument(format!(
                "address must be host:port, at most {MAX_ADDRESS_BYTES} bytes"
            )));
        }
        self.require_leader()?;
        let conf = self.inspect().await?.conf_state;
        if conf.voters.contains(&node) {
            return Err(Status::already_exists(format!(
                "node {node} is already a voting member"
            )));
        }
        let is_learner = conf.learners.contains(&node);
        let members = conf.voters.len() + conf.learners.len();
        if !is_learner && members >= MAX_MEMBERS {
            return Err(Status::failed_precondition(format!(
                "the cluster has {members} members, the most Leitstand allows: remove one first"
            )));
        }
        if !is_learner {
            let index = self
                .change_membership(
                    ConfChangeType::AddLearnerNode,
                    node,
                    self.context(&operator, Some(address.clone())),
                )
                .await?;
            tracing::info!(node, %address, index, %operator, "added a learner");
        }
        if let Err((reached, target)) = self.wait_caught_up(node).await {
            return Err(Status::failed_precondition(format!(
                "node {node} is a learner but has not caught up within {} s (it has the log through {reached} of {target}): \
                 check that it runs at {address} with [cluster] join = true, then run `leitstand cluster add` again to make it a voter",
                CATCH_UP_TIMEOUT.as_secs()
            )));
        }
        let index = self
            .change_membership(
                ConfChangeType::AddNode,
                node,
                self.context(&operator, Some(address.clone())),
            )
            .await?;
        tracing::info!(node, %address, index, %operator, "promoted a learner to voter");
        Ok(Response::new(self.status_reply().await?))
    }

    async fn remove_member(
        &self,
        request: Request<v1::RemoveMemberRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        let operator = self.authorize(&request, Role::Admin, "RemoveMember")?;
        let node = member_id(request.into_inner().node_id)?;
        self.require_leader()?;
        let replication = self.inspect().await?;
        let conf = &replication.conf_state;
        if !conf.voters.contains(&node) && !conf.learners.contains(&node) {
            return Err(Status::not_found(format!("node {node} is not a member")));
        }
        if conf.voters == [node] {
            return Err(Status::failed_precondition(format!(
                "node {node} is the last voter; a cluster cannot remove all its voters"
            )));
        }
        if node == self.node_id.get() {
            // Hand leadership to the most caught-up voter, then send the
            // client there to remove this node.
            let successor = replication
                .followers
                .iter()
                .filter(|f| conf.voters.contains(&f.id) && !f.catching_up)
                .max_by_key(|f| f.matched)
                .map(|f| f.id)
                .ok_or_else(|| {
                    Status::unavailable(
                        "no caught-up voter can take over leadership; try again shortly",
                    )
                })?;
            self.raft
                .transfer_leader(successor)
                .await
                .map_err(|error| self.propose_error(error))?;
            let me = self.node_id.get();
            let leader = self.wait_for_leader(|leader| leader != me).await;
            tracing::info!(node, successor, ?leader, %operator, "handed leadership over before removing this node");
            return Err(self.not_leader(leader));
        }
        let index = self
            .change_membership(
                ConfChangeType::RemoveNode,
                node,
                self.context(&operator, None),
            )
            .await?;
        tracing::info!(node, index, %operator, "removed a member");
        Ok(Response::new(self.status_reply().await?))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        let operator = self.authorize(&request, Role::Admin, "TransferLeader")?;
        let to = member_id(request.into_inner().to_node_id)?;
        self.require_leader()?;
        if to != self.node_id.get() {
            let conf = self.inspect().await?.conf_state;
            if !conf.voters.contains(&to) {
                return Err(Status::failed_precondition(format!(
                    "node {to} is not a voting member"
                )));
            }
            self.raft
                .transfer_leader(to)
                .await
                .map_err(|error| self.propose_error(error))?;
            if self.wait_for_leader(|leader| leader == to).await.is_none() {
                return Err(Status::deadline_exceeded(format!(
                    "node {to} did not take over within {} s: it may be behind or unreachable",
                    TRANSFER_TIMEOUT.as_secs()
                )));
            }
            tracing::info!(to, %operator, "leadership transferred");
        }
        Ok(Response::new(self.status_reply().await?))
    }

    async fn probe(
        &self,
        request: Request<v1::ProbeRequest>,
    ) -> Result<Response<v1::ProbeReply>, Status> {
        self.authorize(&request, Role::Operator, "Probe")?;
        let payload = request.into_inner().payload;
        if payload.len() > MAX_PROBE_PAYLOAD_BYTES {
            return Err(Status::invalid_argument(format!(
                "the probe payload is {} bytes; at most {MAX_PROBE_PAYLOAD_BYTES} are allowed",
                payload.len()
            )));
        }
        let command = Command::Probe {
            at_unix_ms: now_unix_ms(),
        };
        let index = self
            .raft
            .propose(command.encode())
            .await
            .map_err(|error| self.propose_error(error))?;
        Ok(Response::new(v1::ProbeReply {
            committed_index: index,
            leader_id: self.node_id.get(),
            payload,
        }))
    }
}

/// Lower-case hex, two digits a byte.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(entries: &[(u64, &str)]) -> BTreeMap<NodeId, String> {
        entries
            .iter()
            .map(|&(id, address)| (NodeId::new(id).expect("a node id"), address.to_owned()))
            .collect()
    }

    #[test]
    fn the_transport_dials_routes_and_everything_else_tells_the_advertised_addresses() {
        let (recorded, replicated) = watch::channel(ids(&[(2, "10.0.0.2:7401")]));
        let book = AddressBook {
            configured: Arc::new(ids(&[(1, "a:1"), (2, "b:2"), (3, "c:3")])),
            replicated,
            // A route for node 9, not a member: dials no one.
            routes: Arc::new(ids(&[(2, "127.0.0.1:17402"), (9, "127.0.0.1:17409")])),
        };
        assert_eq!(
            book.dial_targets(),
            ids(&[(1, "a:1"), (2, "127.0.0.1:17402"), (3, "c:3")])
        );
        // Leader hints, status and recorded addresses: never the route.
        assert_eq!(
            book.all(),
            ids(&[(1, "a:1"), (2, "10.0.0.2:7401"), (3, "c:3")])
        );
        assert_eq!(book.get(2).as_deref(), Some("10.0.0.2:7401"));
        assert_eq!(book.get(9), None);

        // A member added later (replicated) is dialled through its route.
        recorded.send_modify(|addresses| {
            addresses.insert(NodeId::new(9).expect("id"), "i:9".into());
        });
        assert_eq!(
            book.dial_targets()
                .get(&NodeId::new(9).expect("id"))
                .map(String::as_str),
            Some("127.0.0.1:17409")
        );
        assert_eq!(book.get(9).as_deref(), Some("i:9"));
    }
}
